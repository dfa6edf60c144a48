"""Trigger sensors evaluated with build contexts over a real monitoring database: fire, skip, blocked by
a guard, wait for the quiet window, cursor round trips, and a storm of evaluations yielding one run."""

import pytest

from retrain_assets.defs.keys import TAG_EVENT_ID, TAG_REASON, TAG_SEVERITY, TAG_TRIGGER, monitor_job_name, retrain_job_name
from retrain_assets.simulate import TrafficScenario
from tests.conftest import make_settings

DRIFTED = TrafficScenario(covariate_drift=0.6, concept_drift=True)
IMMEDIATE = {"cooldown_hours": 0, "quiet_start_hour": 0, "quiet_end_hour": 24}


def with_production(harness_for, settings, **traffic):
    h = harness_for(settings)
    h.traffic(3000)
    assert h.retrain().success
    return h


def drifted_reports(h):
    h.traffic(3000, scenario=DRIFTED, serve=True)
    assert h.run(monitor_job_name("churn")).success


def test_performance_sensor_fires_on_degradation_and_acts_once(settings, harness_for):
    h = with_production(harness_for, settings)
    h.traffic(1000, serve=True)
    assert h.run(monitor_job_name("churn")).success
    calm = h.sensor_tick("churn_performance_sensor")
    assert not calm.run_requests and "advises no retrain" in calm.skip_message
    assert h.store.history.check_retrain_needed("churn")[0] is False
    drifted_reports(h)
    needed, reason = h.store.history.check_retrain_needed("churn")  # the SQL-side view agrees
    assert needed and "drift alerts" in reason
    tick = h.sensor_tick("churn_performance_sensor", cursor=calm.cursor)
    assert len(tick.run_requests) == 1
    tags = tick.run_requests[0].tags
    assert tags[TAG_TRIGGER] == "performance" and tags[TAG_SEVERITY] in ("MEDIUM", "HIGH", "CRITICAL")
    assert "performance below baseline" in tags[TAG_REASON]
    event = h.store.events.get(int(tags[TAG_EVENT_ID]))
    assert event["trigger_type"] == "performance" and event["execution_attempted"] is True
    again = h.sensor_tick("churn_performance_sensor", cursor=tick.cursor)  # cursor round trip
    assert not again.run_requests and "already acted on" in again.skip_message


def test_an_open_p1_incident_blocks_and_is_logged(settings, harness_for):
    h = with_production(harness_for, settings)
    incident = h.store.events.open_incident("feature store outage", priority="P1")
    drifted_reports(h)
    tick = h.sensor_tick("churn_drift_sensor")
    assert not tick.run_requests and "open P1 incident" in tick.skip_message
    blocked = h.store.events.recent("churn")[0]
    assert blocked["execution_attempted"] is False and "feature store outage" in str(blocked["trigger_metrics"]["blocked_by"])
    assert h.sensor_tick("churn_drift_sensor", cursor=tick.cursor).skip_message.endswith("already acted on")
    h.store.events.resolve_incident(incident)
    assert len(h.sensor_tick("churn_drift_sensor").run_requests) == 1  # a new evaluation of the report fires


def test_cooldown_blocks_a_retrain_right_after_the_last(tmp_path, harness_for):
    h = with_production(harness_for, make_settings(tmp_path, triggers={**IMMEDIATE, "cooldown_hours": 24}))
    drifted_reports(h)
    tick = h.sensor_tick("churn_drift_sensor")
    assert not tick.run_requests and "cooldown" in tick.skip_message


def test_medium_waits_for_the_quiet_window_without_moving_its_cursor(tmp_path, harness_for):
    import datetime as dt

    hour = dt.datetime.now(dt.timezone.utc).hour
    closed = {"cooldown_hours": 0, "quiet_start_hour": (hour + 2) % 24, "quiet_end_hour": (hour + 3) % 24 or 24}
    h = with_production(harness_for, make_settings(tmp_path, triggers=closed))
    h.traffic(3000, scenario=TrafficScenario(covariate_drift=0.6), serve=True)  # drift only: MEDIUM
    assert h.run(monitor_job_name("churn")).success
    tick = h.sensor_tick("churn_drift_sensor")
    assert not tick.run_requests and "waits for the quiet window" in tick.skip_message
    assert tick.cursor is None  # looked at again on the next evaluation


def test_data_volume_bands_and_cursor(tmp_path, harness_for):
    volume = {**IMMEDIATE, "new_labels_scheduled": 500, "new_labels_now": 1000}
    h = with_production(harness_for, make_settings(tmp_path, triggers=volume))
    h.traffic(300)
    waiting = h.sensor_tick("churn_data_volume_sensor")
    assert not waiting.run_requests and "300 new labels" in waiting.skip_message
    h.traffic(300)
    medium = h.sensor_tick("churn_data_volume_sensor")
    assert [r.tags[TAG_SEVERITY] for r in medium.run_requests] == ["MEDIUM"]
    assert h.sensor_tick("churn_data_volume_sensor", cursor=medium.cursor).skip_message.startswith("already acted on")
    h.traffic(500)
    high = h.sensor_tick("churn_data_volume_sensor", cursor=medium.cursor)
    assert [r.tags[TAG_SEVERITY] for r in high.run_requests] == ["HIGH"]
    assert high.run_requests[0].tags[TAG_REASON].startswith("1,000+ new labels")


def test_a_storm_of_50_evaluations_yields_one_run(settings, harness_for):
    h = with_production(harness_for, settings)
    drifted_reports(h)
    requests = []
    cursor = None
    for attempt in range(50):
        # every other evaluation forgets the cursor, as if another report had come in meanwhile
        tick = h.sensor_tick("churn_drift_sensor", cursor=cursor if attempt % 2 else None)
        cursor = tick.cursor
        for request in tick.run_requests:
            requests.append(request)
            job = h.defs.resolve_job_def(retrain_job_name("churn"))
            h.instance.create_run_for_job(job, tags=request.tags)  # queued, as the daemon would submit it
    assert len(requests) == 1
    blocked = h.sensor_tick("churn_drift_sensor")
    assert "already queued or running" in blocked.skip_message


@pytest.mark.postgres
def test_drift_sensor_on_postgres(tmp_path, postgres_db, harness_for):
    url, _ = postgres_db
    h = with_production(harness_for, make_settings(tmp_path, database_url=url))
    drifted_reports(h)
    tick = h.sensor_tick("churn_drift_sensor")
    assert len(tick.run_requests) == 1 and tick.run_requests[0].tags[TAG_TRIGGER] == "drift"
