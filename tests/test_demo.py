"""`retrain demo` end to end, as `make demo` runs it: a real persistent instance on embedded storage."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_plays_the_whole_lifecycle(tmp_path):
    config = tmp_path / "retrain.yaml"
    config.write_text((REPO / "retrain.yaml").read_text())  # storage lands next to it, under tmp_path
    home = tmp_path / "home"
    env = {**os.environ, "RETRAIN_CONFIG": str(config)}
    env.pop("RETRAIN_DATABASE_URL", None)
    env.pop("RETRAIN_ARTIFACT_ROOT", None)
    command = [sys.executable, "-m", "retrain_assets.cli", "demo", "--json", "--home", str(home),
               "--dagster-yaml", str(REPO / "dagster.yaml")]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout)
    steps = {s["step"][0]: s for s in summary["steps"]}
    assert steps["a"]["production"] == "v1" and steps["a"]["run_status"] == "SUCCESS"
    assert steps["b"]["run_status"] == "SKIPPED" and steps["b"]["production"] == "v1"
    assert steps["c"]["trigger"] == "drift sensor" and steps["c"]["production"] == "v2"
    assert steps["d"]["run_status"] == "FAILURE" and steps["d"]["gates"].startswith("FAILED")
    assert summary["final_production"] == "v2"
    # The runs are in the persistent instance that `make ui` opens.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) >= 6
        assert any(r.tags.get("retrain/trigger") == "drift" for r in runs)
    # Running it again starts from a clean state and gives the same story.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["final_production"] == "v2"


def test_demo_refuses_a_dagster_home_it_did_not_create(tmp_path):
    from retrain_assets.demo import prepare_home
    from retrain_assets.errors import RetrainError

    (tmp_path / "someone-elses-runs").mkdir()
    with pytest.raises(RetrainError, match="not created by the demo"):
        prepare_home(tmp_path, REPO / "dagster.yaml")
    assert (tmp_path / "someone-elses-runs").exists()
