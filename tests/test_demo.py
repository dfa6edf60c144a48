"""`retrain demo` end to end, as `make demo` runs it: a real persistent instance on embedded storage."""

import json
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import run_demo_command

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_plays_both_models_lifecycles(demo_run):
    summary = demo_run["summary"]
    steps = {(s["model"], s["step"][0]): s for s in summary["steps"]}
    assert {model for model, _ in steps} == {"churn", "demand"}
    for model in ("churn", "demand"):
        assert steps[model, "a"]["production"] == "v1" and steps[model, "a"]["run_status"] == "SUCCESS"
        assert steps[model, "b"]["run_status"] == "SKIPPED" and steps[model, "b"]["production"] == "v1"
        assert steps[model, "c"]["trigger"] == "performance (retrain sensor)" and steps[model, "c"]["production"] == "v2"
        assert steps[model, "d"]["run_status"] == "FAILURE" and steps[model, "d"]["gates"].startswith("FAILED")
    # Each model is judged by its task's metrics: the regressor's poisoned candidate learned nothing.
    assert set(steps["demand", "a"]["candidate_metrics"]) == {"mae", "rmse", "r2"}
    assert steps["demand", "a"]["candidate_metrics"]["r2"] > 0.8 > steps["demand", "d"]["candidate_metrics"]["r2"]
    assert steps["churn", "a"]["candidate_metrics"]["auc"] > 0.9
    assert summary["final_production"] == {"churn": "v2", "demand": "v2"}
    # The runs are in the persistent instance that `make ui` opens, each model's under its own jobs.
    with dg.DagsterInstance.from_config(str(demo_run["home"])) as instance:
        runs = instance.get_runs()
        jobs = {r.job_name for r in runs}
        assert {"churn_retrain", "churn_monitor", "demand_retrain", "demand_monitor"} <= jobs
        triggered = [r for r in runs if r.tags.get("dagster/sensor_name", "").endswith("_retrain_sensor")]
        assert {r.tags["retrain/model"] for r in triggered} == {"churn", "demand"}
        assert {r.tags["retrain/trigger"] for r in triggered} == {"performance"}  # the labels showed the decay


@pytest.mark.slow
def test_demo_starts_again_from_a_clean_state(demo_run):
    """A second demo in the same home wipes the first one's state and tells the same story."""
    completed = run_demo_command(demo_run["config"], demo_run["home"])
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout)["final_production"] == {"churn": "v2", "demand": "v2"}
    with dg.DagsterInstance.from_config(str(demo_run["home"])) as instance:
        assert len(instance.get_runs(dg.RunsFilter(job_name="churn_retrain"))) == 3


def test_demo_refuses_a_dagster_home_it_did_not_create(tmp_path):
    from retrain_assets.demo import prepare_home
    from retrain_assets.errors import RetrainError

    (tmp_path / "someone-elses-runs").mkdir()
    with pytest.raises(RetrainError, match="not created by the demo"):
        prepare_home(tmp_path, REPO / "dagster.yaml")
    assert (tmp_path / "someone-elses-runs").exists()
