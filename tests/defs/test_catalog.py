"""What the Dagster catalog shows of each asset: the standard metadata keys the UI understands (row count,
column schema, URI), the drift report's sortable table, the candidate's pictures and its tuning trials in
the run log, and the freshness policies that say "monitoring has stopped"."""

import datetime as dt

import dagster as dg
import pytest

from retrain_assets.defs.definitions import build_definitions
from retrain_assets.defs.keys import monitor_job_name
from retrain_assets.defs.schedules import longest_gap
from tests.conftest import make_settings

MONITORING_REPORTS = ("drift_report", "performance_report", "retrain_decision")


def latest(h, asset: str) -> dict:
    event = h.instance.get_latest_materialization_event(dg.AssetKey([h.model.name, asset]))
    assert event is not None, f"{asset} was never materialized"
    return event.asset_materialization.metadata


@pytest.mark.parametrize("cron, timezone, gap", [
    ("0 * * * *", "UTC", dt.timedelta(hours=1)),
    ("*/15 * * * *", "UTC", dt.timedelta(minutes=15)),
    ("0 9 * * 1-5", "UTC", dt.timedelta(days=3)),  # Friday 09:00 to Monday 09:00
    ("0 2 * * 0", "Europe/Paris", dt.timedelta(days=7, hours=1)),  # the week the clocks go back
])
def test_the_longest_gap_of_a_cron_counts_weekends(cron, timezone, gap):
    assert longest_gap(cron, timezone) == gap


def test_monitoring_reports_go_stale_after_missed_ticks_of_their_own_cron(tmp_path):
    """A report warns after 1.5 periods of the model's monitoring cron without a new one, and fails after
    2.5; the periods follow each model's own cadence. Training assets have no such policy: they change
    when the evidence says so, not on a clock."""
    settings = make_settings(tmp_path, triggers={"monitoring_cron": "0 9 * * 1-5", "cooldown_hours": 0})
    specs = {spec.key.path[-1]: spec for spec in build_definitions(settings).resolve_all_asset_specs()}
    for name in MONITORING_REPORTS:
        policy = specs[name].freshness_policy
        assert policy is not None, name
        assert policy.warn_window.to_timedelta() == dt.timedelta(days=4.5), name
        assert policy.fail_window.to_timedelta() == dt.timedelta(days=7.5), name
    assert all(specs[name].freshness_policy is None for name in ("training_dataset", "candidate_model"))


def test_the_catalog_shows_standard_metadata_pictures_and_the_sortable_drift_table(tmp_path, harness_for):
    h = harness_for(make_settings(tmp_path, training={"tuning_trials": 3}))
    h.traffic(3000)
    result = h.retrain(reason="initial")
    assert result.success

    dataset = latest(h, "training_dataset")
    production = h.store.registry.production("churn")
    assert dataset["dagster/row_count"].value == sum(dataset["split_rows"].value.values()) > 0
    schema = dataset["dagster/column_schema"].schema
    assert {*h.model.feature_names, h.model.target} <= {c.name for c in schema.columns}
    assert {c.name: c.type for c in schema.columns}[h.model.numeric_features[0]] in {"float", "int", "number", "numeric"}
    assert dataset["dagster/uri"].value == h.artifacts.uri_of(h.store.registry.latest_dataset("churn").artifact_key)
    assert dataset["dagster/uri"].value.startswith("file://")

    candidate = latest(h, "candidate_model")
    assert candidate["dagster/uri"].value == h.artifacts.uri_of(production.artifact_key)
    for picture in ("tuning_history", "evaluation"):
        assert "data:image/png;base64," in candidate[picture].value, picture
    assert candidate["tuning_trials"].value == 3

    # Each Optuna trial is in the run log as it finishes, with its value and parameters.
    trials = [e.message for e in h.instance.all_logs(result.run_id) if "tuning trial" in (e.message or "")]
    assert len(trials) == 3 and all("CV " in t and "params {" in t for t in trials), trials
    assert [t.split("tuning trial ")[1].split("/")[0] for t in trials] == ["1", "2", "3"]

    h.traffic(2000, label=False)
    assert h.run(monitor_job_name("churn")).success
    drift = latest(h, "drift_report")
    table = drift["features"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [r.data["feature"] for r in table.records] == list(h.model.feature_names)
    assert {c.name for c in table.schema.columns} >= {"feature", "test", "statistic", "p_value", "psi", "drifted"}
    assert drift["dagster/row_count"].value == 2000
    assert "data:image/png;base64," in drift["distributions"].value
    # Seed 003's prediction drift: the model's scores on these inputs against its held-out rows.
    assert "of its scores on 2000 recent rows" in drift["prediction_drift"].value
    assert drift["prediction_psi"].value >= 0 and drift["prediction_psi_threshold"].value > 0
