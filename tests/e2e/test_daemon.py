"""The real daemon: `dagster dev` on a temporary home with PostgreSQL storage launches a drift-triggered
retrain by itself, the promotion sensor launches the promotion of its gated candidate, and the event row
shows the trigger and the outcome."""

import datetime as dt
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from retrain_assets.defs.definitions import build_definitions
from retrain_assets.defs.deployment.promotion import retrain_in_process
from retrain_assets.defs.keys import TAG_CANDIDATE_RUN, TAG_TRIGGER, monitor_job_name, promote_job_name
from retrain_assets.serving.predict import serve_and_log
from retrain_assets.settings import load_settings
from retrain_assets.simulate import TrafficScenario, generate_traffic, model_config
from retrain_assets.store import ArtifactStore, MonitoringStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_daemon_launches_a_drift_retrain_that_promotes(tmp_path, postgres_db, monkeypatch):
    url, dbname = postgres_db
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432",
           "DAGSTER_PG_USER": "postgres", "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": dbname}
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"database_url": url, "artifact_root": str(tmp_path / "artifacts")},
        "models": [{**model_config(), "training": {"tuning_trials": 0},
                    "triggers": {"cooldown_hours": 0, "quiet_start_hour": 0, "quiet_end_hour": 24,
                                 "sensor_interval_s": 5}}],
    }))
    env["RETRAIN_CONFIG"] = str(config)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(str(config))
    model = settings.models[0]
    store, artifacts = MonitoringStore(url), ArtifactStore(settings.storage.artifact_root)
    defs = build_definitions(settings)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=6)

    def write(rows, seed, scenario=TrafficScenario(), serve=False):
        frame = generate_traffic(rows, start=start + dt.timedelta(minutes=seed * 60), interval=dt.timedelta(seconds=1),
                                 scenario=scenario, seed=seed, id_prefix=f"e{seed}")
        if serve:
            serve_and_log(store, artifacts, model, frame)
        else:
            store.predictions.log_predictions(model.log_key, frame, model.feature_names)
        store.predictions.log_labels(model.log_key, frame["request_id"].tolist(), frame[model.target].tolist())

    with dg.DagsterInstance.get() as instance:
        write(3000, seed=1)
        assert retrain_in_process(defs, instance, store, model, tags={}).success
        write(3000, seed=2, scenario=TrafficScenario(covariate_drift=0.6, concept_drift=True), serve=True)
        assert defs.resolve_job_def(monitor_job_name("churn")).execute_in_process(instance=instance).success

    process = subprocess.Popen(
        [str(Path(os.sys.executable).with_name("dagster")), "dev", "-h", "127.0.0.1", "-p", "3123",
         "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, stopped by its own id below
    )
    try:
        def promoted_by_a_sensor():
            with dg.DagsterInstance.get() as instance:
                runs = instance.get_runs(dg.RunsFilter(job_name=promote_job_name("churn"),
                                                       statuses=[dg.DagsterRunStatus.SUCCESS]))
                promoted = [r for r in runs if r.tags.get("dagster/sensor_name") == "churn_promotion_sensor"]
                return (instance.get_run_by_id(promoted[0].tags[TAG_CANDIDATE_RUN]), promoted[0]) if promoted else None

        # The retrain sensor launched the retrain; its gates passed, so the promotion sensor launched the promotion.
        run, promotion = wait_for(promoted_by_a_sensor, 300, "a sensor-launched retrain run to be promoted")
        assert run.tags["dagster/sensor_name"] == "churn_retrain_sensor"  # acting on the one fused decision
        assert promotion.tags["retrain/event_id"] == run.tags["retrain/event_id"]
        assert store.registry.production("churn").version == 2
        event = store.events.get(int(run.tags["retrain/event_id"]))
        assert event["trigger_type"] == run.tags[TAG_TRIGGER]
        with dg.DagsterInstance.get() as instance:  # the decision's evidence, as the UI shows it
            decision = instance.get_latest_materialization_event(dg.AssetKey(["churn", "retrain_decision"]))
        metadata = decision.asset_materialization.metadata
        assert metadata["trigger"].value == run.tags[TAG_TRIGGER] and metadata["retrain_advised"].value is True
        assert event["trigger_metrics"]["decision_run_id"] == decision.run_id
        deciding = event["trigger_metrics"]["signals"][event["trigger_type"]]
        assert deciding["status"] == "retrain" and deciding["value"] is not None and deciding["threshold"] is not None
        assert event["execution_attempted"] is True and event["execution_successful"] is True
        assert event["retraining_model_version"] == "v2" and event["execution_completed_at"] is not None
    except AssertionError as error:  # what the daemon said is the first thing to read
        failure = error
    else:
        failure = None
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        output = process.stdout.read().decode(errors="replace") if process.stdout else ""
    if failure is not None:
        raise AssertionError(f"{failure}\n--- dagster dev output (tail) ---\n{output[-6000:]}") from failure
    assert process.returncode is not None, output[-2000:]
    leftover = subprocess.run(["pgrep", "-f", "dagster dev -h 127.0.0.1 -p 3123"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "dagster dev is still running"
