"""Faults in the retraining loop, in real in-process Dagster runs over a real monitoring store.

Each test injects one fault an operator meets in production and asserts the promise of docs/reliability.md:
production stays on the last good model, the event gets its outcome, and the message says what to fix.
"""

import datetime as dt
import multiprocessing
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import EngineEventData  # not exported: an engine event with an old timestamp

from retrain_assets.defs.keys import TAG_EVENT_ID, monitor_job_name, retrain_job_name
from retrain_assets.defs.metadata import root_cause
from retrain_assets.simulate import TrafficScenario, generate_traffic
from tests.conftest import make_settings
from tests.defs.conftest import Harness

IMMEDIATE = {"cooldown_hours": 0, "quiet_start_hour": 0, "quiet_end_hour": 24}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def harness(request, tmp_path):
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_db")[0]
    with dg.DagsterInstance.ephemeral() as instance:  # the newest 3,000 labeled rows train each model
        yield Harness(make_settings(tmp_path, database_url=url, triggers=IMMEDIATE,
                                    dataset={"strategy": "sliding", "window_rows": 3000}), instance)


def production(h) -> str:
    return h.store.registry.production("churn").label


def test_a_feature_that_leaks_the_label_never_reaches_training(harness):
    h = harness
    h.traffic(3000)
    assert h.retrain().success
    frame = generate_traffic(3000, start=h.clock, interval=dt.timedelta(seconds=5), seed=99, id_prefix="leak")
    frame["support_calls"] = frame["churned"] * 3 + 1  # a field filled in after the outcome
    h.store.predictions.log_predictions("churn", frame, h.model.feature_names)
    h.store.predictions.log_labels("churn", frame["request_id"].tolist(), frame["churned"].tolist())
    result = h.retrain(reason="with a leaked feature", event=True)
    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [e.check_name for e in failed] == ["leakage"] and "support_calls alone predicts churned" in failed[0].description
    assert production(h) == "v1" and h.store.registry.latest_dataset("churn").quality
    event = h.store.events.recent("churn")[0]
    assert event["execution_successful"] is False and event["execution_metrics"]["failed_quality_checks"] == ["leakage"]


def test_concurrent_triggers_of_one_model_start_one_retrain(harness):
    """The sensor, the schedule and a person at once: one claim wins in the database, the others say why."""
    h = harness
    h.traffic(3000)
    assert h.retrain().success
    h.traffic(3000, scenario=TrafficScenario(covariate_drift=0.6, concept_drift=True), serve=True)
    assert h.run(monitor_job_name("churn")).success
    tick = h.sensor_tick("churn_retrain_sensor")
    assert len(tick.run_requests) == 1
    claim = int(tick.run_requests[0].tags[TAG_EVENT_ID])
    scheduled = h.run(retrain_job_name("churn"), tags={"dagster/schedule_name": "churn_scheduled_retrain"})
    assert not scheduled.success  # a scheduled run that starts meanwhile stops at its first step, naming the claim
    failure = next(e for e in scheduled.all_events if e.is_step_failure)
    assert f"already in flight (event #{claim}" in root_cause(failure.step_failure_data.error)
    assert production(h) == "v1" and h.store.events.open_claim("churn")["id"] == claim
    triggered = h.run(retrain_job_name("churn"), tags=tick.run_requests[0].tags)  # the sensor's run goes ahead
    assert triggered.success and production(h) == "v2" and h.store.events.open_claim("churn") is None


def test_a_started_run_whose_local_worker_is_gone_is_reaped(tmp_path):
    """The code server that watched the worker may be gone too (dagster dev restarted): the run would stay
    STARTED until its max runtime. The retrain sensor checks the worker's pid and fails the run."""
    import subprocess
    import sys

    from retrain_assets.defs.triggers.requests import dead_local_worker, reap_dead_runs

    (tmp_path / "home").mkdir()
    settings = make_settings(tmp_path)
    with dg.DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        h = Harness(settings, instance)
        job = h.defs.resolve_job_def(retrain_job_name("churn"))
        finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        dead_pid = int(finished.stdout)
        # A code server starts its run workers with multiprocessing's spawn: their command line names no dagster
        # module, so nothing but the start time tells a live worker from a reused pid (a daemon test failed on it).
        worker = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(120,))
        worker.start()
        assert b"dagster" not in Path(f"/proc/{worker.pid}/cmdline").read_bytes()
        alive = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
        instance.report_engine_event(f"Started process for run (pid: {worker.pid}).", alive)
        dead = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
        instance.report_engine_event(f"Started process for run (pid: {dead_pid}).", dead)
        # A pid logged an hour ago that a process started since now holds: the worker is gone.
        reused = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
        instance.handle_new_event(dg.EventLogEntry(
            error_info=None, level="DEBUG", user_message="", run_id=reused.run_id, timestamp=time.time() - 3600,
            dagster_event=dg.DagsterEvent(dg.DagsterEventType.ENGINE_EVENT.value, reused.job_name,
                                          message=f"Started process for run (pid: {worker.pid}).",
                                          event_specific_data=EngineEventData())))
        assert dead_local_worker(instance, instance.get_run_by_id(alive.run_id)) is None
        reaped = sorted(reap_dead_runs(instance, settings.models[0]))
        assert len(reaped) == 2
        assert any(r.startswith(dead.run_id[:8]) and f"process {dead_pid} is gone (killed?)" in r for r in reaped)
        assert any(r.startswith(reused.run_id[:8]) and "started later" in r for r in reaped)
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(reused.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
        # A run read as STARTED whose worker then recorded success and exited is not failed (the race a
        # sensor tick lost once: the retrain succeeded, the reaper failed it, the promotion was refused).
        finished_run = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
        instance.report_engine_event(f"Started process for run (pid: {dead_pid}).", finished_run)
        read_before = instance.get_run_by_id(finished_run.run_id)
        instance.handle_new_event(dg.EventLogEntry(
            error_info=None, level="DEBUG", user_message="", run_id=finished_run.run_id, timestamp=time.time(),
            dagster_event=dg.DagsterEvent(dg.DagsterEventType.RUN_SUCCESS.value, finished_run.job_name)))
        assert instance.get_run_by_id(finished_run.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert dead_local_worker(instance, read_before) is None
        worker.kill()
        worker.join()
