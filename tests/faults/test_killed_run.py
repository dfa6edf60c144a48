"""Fault: a retrain run's worker is killed with SIGKILL in the middle of training, under a real daemon.

No failure event is ever emitted for such a run. Before the fix it stayed STARTED for ever, its event stayed
open, and the "already running" guard and the per-model queue limit blocked every later retrain of the model.
Now the run is failed (by the code server that watches its child process, or else by the retrain sensor,
which finds the worker's pid gone), the failure sensor records the outcome in the event, and the next trigger
claims the model again.
"""

import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from retrain_assets.simulate import generate_traffic, model_config
from retrain_assets.store import MonitoringStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_a_killed_retrain_run_is_failed_recorded_and_does_not_wedge_the_model(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    instance_config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    instance_config["run_monitoring"]["poll_interval_seconds"] = 5
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    url = f"sqlite:///{tmp_path}/monitoring.db"
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"database_url": url, "artifact_root": str(tmp_path / "artifacts")},
        # Many tuning trials: candidate_model runs long enough to be killed in the middle of it.
        "models": [{**model_config(), "training": {"tuning_trials": 400, "tuning_timeout_s": 600},
                    "triggers": {"cooldown_hours": 0, "quiet_start_hour": 0, "quiet_end_hour": 24,
                                 "sensor_interval_s": 5}}],
    }))
    env = {**os.environ, "DAGSTER_HOME": str(home), "RETRAIN_CONFIG": str(config)}
    for key in ("DAGSTER_HOME", "RETRAIN_CONFIG"):
        monkeypatch.setenv(key, env[key])
    store = MonitoringStore(url)
    frame = generate_traffic(3000, start=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=6), seed=1)
    store.predictions.log_predictions("churn", frame, [f["name"] for f in model_config()["features"]])
    store.predictions.log_labels("churn", frame["request_id"].tolist(), frame["churned"].tolist())
    port = 3000 + os.getpid() % 1000
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "dev", "-h", "127.0.0.1", "-p", str(port), "-w",
         str(REPO / "workspace.yaml")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    retrain = str(Path(sys.executable).with_name("retrain"))
    try:
        def submitted(reason):
            done = subprocess.run([retrain, "trigger", "--model", "churn", "--reason", reason, "--url",
                                   f"http://127.0.0.1:{port}"], env=env, capture_output=True, text=True, timeout=120)
            return done if done.returncode == 0 else None

        first = wait_for(lambda: submitted("will be killed"), 180, "the webserver to accept a retrain")
        run_id = re.search(r"submitted run (\S+)", first.stdout).group(1)

        def worker_in_training():
            with dg.DagsterInstance.get() as instance:
                steps = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
                if not any(e.step_key == "churn__candidate_model" for e in steps):
                    return None
                engine = instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                pids = [re.search(r"pid: (\d+)", e.message) for e in engine if "Started process for run" in (e.message or "")]
                return int(pids[0].group(1)) if pids and pids[0] else None

        pid = wait_for(worker_in_training, 240, "the run to reach candidate_model")
        os.kill(pid, signal.SIGKILL)

        def failed():
            with dg.DagsterInstance.get() as instance:
                return instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE

        wait_for(failed, 120, "the killed run to be marked failed")
        event_id = store.events.for_run(run_id)
        assert event_id is not None
        event = wait_for(lambda: (lambda e: e if e["execution_completed_at"] else None)(store.events.get(event_id)),
                         120, "the failure sensor to record the outcome")
        # Failed by whoever noticed first (the code server watching its child, or the retrain sensor's pid check).
        assert event["execution_successful"] is False and event["execution_metrics"]["error"]
        second = submitted("the model is not wedged")  # the claim is free again: no "already in flight"
        assert second is not None
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        with dg.DagsterInstance.get() as instance:  # stop the second run's worker too
            for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
                for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
                    match = re.search(r"Started process for run \(pid: (\d+)\)", e.message or "")
                    if match:
                        try:
                            os.kill(int(match.group(1)), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
        shutil.rmtree(home, ignore_errors=True)
