"""The Dagster UI in a real browser, on the instance `retrain demo` wrote: what a user opening `make ui` sees.

The other tests check the definitions and the instance through Python; only a browser shows that the UI
loads the code location from retrain.yaml and draws every model's group, assets and evaluation gates.
Screenshots land in .test-artifacts/browser/ (and the lineage one in $RETRAIN_SCREENSHOT_DIR when set, to
refresh docs/images/lineage.png); on a failure, a screenshot and the page source of that moment too.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from selenium.webdriver.common.by import By

from retrain_assets.settings import load_settings
from retrain_assets.training import gate_requirements

from tests.e2e.browser import (
    ARTIFACTS,
    check_statuses,
    chromium,
    click,
    dagster_webserver,
    dismiss_community_popup,
    evidence_on_failure,
    expand_all_groups,
    fit_graph,
    graphql,
    latest_evaluation,
    lineage_colors,
    lineage_groups,
    save_evidence,
    wait_until,
)

pytestmark = pytest.mark.slow

# Every model's group holds (at least) these assets; its candidate carries (at least) these gates.
MODEL_ASSETS = {"training_dataset", "candidate_model", "production_model", "drift_report"}
CORE_GATES = {"absolute_thresholds", "relative_to_production", "smoke_test"}


@pytest.fixture(scope="module")
def ui(demo_run):
    """The webserver on the demo's instance and a browser on its lineage page, the community pop-up gone."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # only this run's evidence
    with dagster_webserver(demo_run["config"], demo_run["home"]) as url, chromium(1600, 1400) as driver:
        expected = graphql(url, "{ shouldShowNux }")["shouldShowNux"]  # first visit to this instance
        with evidence_on_failure(driver, "community_popup"):
            driver.get(f"{url}/asset-groups")
            dismissed = dismiss_community_popup(driver, timeout_s=20 if expected else 2)
            # A first visit shows it (and it must go before anything is asserted); a later one does not.
            assert dismissed == expected, f"community pop-up expected: {expected}, dismissed: {dismissed}"
        yield url, driver


def model_names(config: Path) -> list[str]:
    return [model["name"] for model in yaml.safe_load(config.read_text())["models"]]


def failed_gates(summary: dict, default_model: str) -> tuple[str, set[str]]:
    """The model whose latest candidate failed its gates in the demo, and the names of those gates.

    The summary's ``gates`` reads "FAILED: a, b" or "passed (7 checks)"; the UI shows each check's latest
    evaluation, so the last evaluated step of each model is the one to compare with.
    """
    latest = {}
    for step in summary["steps"]:
        if step["gates"] != "-":
            latest[step.get("model", default_model)] = step["gates"]
    failed = {model: gates for model, gates in latest.items() if gates.startswith("FAILED: ")}
    assert failed, f"the demo left no candidate with failed gates to look at: {latest}"
    model, gates = next(iter(failed.items()))
    return model, set(gates.removeprefix("FAILED: ").split(", "))


def test_lineage_shows_every_model_group_with_its_assets(ui, demo_run):
    url, driver = ui
    models = model_names(demo_run["config"])
    with evidence_on_failure(driver, "lineage"):
        driver.get(f"{url}/asset-groups")
        # The left navigation and the asset tree take room from the graph: the screenshot is for the docs.
        click(driver, "//button[contains(., 'Hide navigation')]")
        click(driver, "//input[@placeholder='Jump to…']/following::button[.//*[@aria-label='panel_show_right']][1]")
        expand_all_groups(driver)
        wait_until(lambda: lineage_groups(driver), lambda g: any(g.values()), 30, "asset nodes in the groups")
        fit_graph(driver)
        # With a single model the UI draws its group without a box or name: its assets are all there is.
        expected = set(models) if len(models) > 1 else {None}
        wait_until(lambda: lineage_groups(driver),
                   lambda g: set(g) == expected and all(MODEL_ASSETS <= assets for assets in g.values()),
                   30, f"one group per model in the config {models}, each with {sorted(MODEL_ASSETS)}")
    publish(save_evidence(driver, "lineage")[0])


def test_a_rejected_candidate_reads_as_a_rejection(ui, demo_run):
    """The demo's last retrain of each model is rightly rejected by its gates. The lineage says so: the
    candidate red, production and its card green, nothing else red; and production is unchanged, still
    the version promoted before (the rejected run never planned the promotion)."""
    url, driver = ui
    models = model_names(demo_run["config"])
    summary = demo_run["summary"]
    rejected = {}
    for step in summary["steps"]:
        rejected[step.get("model", models[0])] = step["candidate"] if step["gates"].startswith("FAILED") else None
    rejected = {model: version for model, version in rejected.items() if version}
    assert rejected, "the demo left no rejected candidate to look at"
    with evidence_on_failure(driver, "rejection"):
        driver.get(f"{url}/asset-groups")
        expand_all_groups(driver)
        fit_graph(driver)
        group_of = (lambda model: model) if len(models) > 1 else (lambda model: None)
        colors = wait_until(lambda: lineage_colors(driver),
                            lambda c: all(MODEL_ASSETS <= set(c.get(group_of(m), {})) for m in rejected)
                            and all(color != "none" for g in c.values() for color in g.values()),
                            30, "every node drawn with its state")
        for model in rejected:
            nodes = colors[group_of(model)]
            assert nodes["candidate_model"] == "red", (model, nodes)
            assert nodes["production_model"] == "green" and nodes["model_card"] == "green", (model, nodes)
            assert {name for name, color in nodes.items() if color == "red"} == {"candidate_model"}, (model, nodes)
        for model, candidate in rejected.items():
            driver.get(f"{url}/assets/{model}/production_model")
            text = wait_until(lambda: driver.find_element(By.TAG_NAME, "body").text,
                              lambda t: re.search(r"promoted_version\n[^\n]*\n(v\d+)", t), 30,
                              f"{model}/production_model's latest promotion")
            promoted = re.search(r"promoted_version\n[^\n]*\n(v\d+)", text).group(1)
            assert promoted == summary["final_production"][model] != candidate, (model, promoted, candidate)


def publish(screenshot: Path) -> None:
    """Copy a screenshot to $RETRAIN_SCREENSHOT_DIR when set (how docs/images/ is refreshed)."""
    if os.environ.get("RETRAIN_SCREENSHOT_DIR"):
        target = Path(os.environ["RETRAIN_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, target / screenshot.name)


def test_candidate_checks_show_the_gates_and_which_failed(ui, demo_run):
    url, driver = ui
    model, failed = failed_gates(demo_run["summary"], model_names(demo_run["config"])[0])
    with evidence_on_failure(driver, "candidate_checks"):
        driver.get(f"{url}/assets/{model}/candidate_model?view=checks")
        # The list fills in as the checks' latest evaluations load: wait for every expected gate's status.
        wanted = CORE_GATES | failed
        statuses = wait_until(lambda: check_statuses(driver), lambda s: wanted <= set(s) and all(s.values()),
                              30, f"the checks {sorted(wanted)} with their status")
        shown_failed = {name for name, status in statuses.items() if status == "Failed"}
        assert shown_failed == failed, f"{model}/candidate_model: the demo failed {sorted(failed)}; UI: {statuses}"
        # Open a failed gate: its latest evaluation (and, in the screenshot, why it failed).
        gate = sorted(failed)[0]
        click(driver, f"//*[contains(@class, 'checkRow')]//*[@title='{gate}']")
        wait_until(lambda: (driver.current_url, latest_evaluation(driver)),
                   lambda seen: gate in seen[0] and seen[1] == "Failed", 30, f"the failed evaluation of {gate}")
        # The gate states its rule with this model's thresholds, and its result the values against them.
        rule = gate_requirements(load_settings(demo_run["config"]).model(model))[gate]
        wait_until(lambda: driver.find_element(By.TAG_NAME, "body").text,
                   lambda text: rule in text and "values_vs_thresholds" in text, 30,
                   f"the rule of {gate} ({rule!r}) and its values_vs_thresholds")
    publish(save_evidence(driver, "candidate_checks")[0])


def test_a_drift_report_shows_its_feature_table_and_picture(ui, demo_run):
    """The drift report's per-feature table is on the asset page, and its picture opens from the metadata."""
    url, driver = ui
    model = model_names(demo_run["config"])[0]
    with evidence_on_failure(driver, "drift_report"):
        driver.get(f"{url}/assets/{model}/drift_report")
        # The feature table is a (sortable) table entry: one row per declared feature, with its test.
        features = {f["name"] for m in yaml.safe_load(demo_run["config"].read_text())["models"]
                    if m["name"] == model for f in m["features"]}
        rows = wait_until(lambda: {c.text for c in driver.find_elements(By.XPATH, "//td//table//tr/td[1]")},
                          lambda seen: features <= seen, 30, f"the feature table with {sorted(features)}")
        assert rows >= features
        row = driver.find_element(By.XPATH, "//tr[td[normalize-space()='distributions']]")
        row.find_element(By.XPATH, ".//*[contains(text(), 'Show Markdown')]").click()
        picture = wait_until(
            lambda: [i for i in driver.find_elements(By.XPATH, "//*[@role='dialog']//img")
                     if (i.get_attribute("src") or "").startswith("data:image/png;base64,")],
            lambda images: images and images[0].size["width"] > 300 and images[0].size["height"] > 100,
            30, "the reference vs current picture in the distributions dialog",
        )[0]
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", picture) > 300
    publish(save_evidence(driver, "drift_report")[0])
