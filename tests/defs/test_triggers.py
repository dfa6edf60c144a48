"""The retrain sensor, evaluated with build contexts over a real monitoring database: it acts on the one fused
decision of the monitoring run (refreshing label count and age), once; guards, the quiet window, the seed
rule set's label bands, a stale decision, and a storm of evaluations yielding one run."""

import pytest

from retrain_assets.defs.keys import (
    TAG_EVENT_ID,
    TAG_REASON,
    TAG_SEVERITY,
    TAG_TRIGGER,
    asset_key,
    monitor_job_name,
    retrain_job_name,
)
from retrain_assets.simulate import TrafficScenario
from tests.conftest import make_settings

DRIFTED = TrafficScenario(covariate_drift=0.6, concept_drift=True)
IMMEDIATE = {"cooldown_hours": 0, "quiet_start_hour": 0, "quiet_end_hour": 24}
SENSOR = "churn_retrain_sensor"


def with_production(harness_for, settings):
    h = harness_for(settings)
    h.traffic(3000)
    assert h.retrain().success
    return h


def monitor(h, rows, scenario=TrafficScenario()):
    h.traffic(rows, scenario=scenario, serve=True)
    assert h.run(monitor_job_name("churn")).success
    return h.instance.get_latest_materialization_event(asset_key("churn", "retrain_decision")).asset_materialization.metadata


def test_the_sensor_acts_once_on_the_fused_decision_with_its_evidence(settings, harness_for):
    h = with_production(harness_for, settings)
    calm = monitor(h, 1000)
    assert calm["retrain_advised"].value is False and calm["trigger"].value == "none"
    tick = h.sensor_tick(SENSOR)
    assert not tick.run_requests and "advises no retrain" in tick.skip_message
    decision = monitor(h, 3000, DRIFTED)
    assert decision["retrain_advised"].value is True and decision["policy"].value == "evidence"
    signals = {s["kind"]: s for s in decision["signals_json"].value}
    assert set(signals) == {"performance", "concept_drift", "drift", "estimated_performance", "data_volume", "model_age",
                            "prediction_drift", "trend"}
    # The drifted population moves the model's scores, and its errors rise across the labeled windows since
    # deployment (the calm rows first): notices, named, never the deciding signal.
    assert signals["prediction_drift"]["status"] == "notice" and signals["prediction_drift"]["value"] > 0
    assert signals["trend"]["status"] == "notice" and "over 6 windows" in signals["trend"]["detail"]
    assert decision["trigger"].value == "performance" and "gradual decline" in decision["reason"].value
    assert signals["performance"]["status"] == "retrain" and signals["performance"]["threshold"] > 0
    assert "| performance | retrain |" in decision["signals"].value  # the UI's table: statistic vs threshold
    tick = h.sensor_tick(SENSOR, cursor=tick.cursor)
    assert len(tick.run_requests) == 1
    tags = tick.run_requests[0].tags
    assert tags[TAG_TRIGGER] == decision["trigger"].value == "performance" and tags[TAG_SEVERITY] in ("HIGH", "CRITICAL")
    event = h.store.events.get(int(tags[TAG_EVENT_ID]))
    assert event["trigger_type"] == "performance" and event["execution_attempted"] is True
    assert event["trigger_metrics"]["signals"]["performance"]["status"] == "retrain"
    assert event["trigger_reason"].startswith(decision["reason"].value)
    again = h.sensor_tick(SENSOR, cursor=tick.cursor)  # cursor round trip
    assert not again.run_requests and "already acted on" in again.skip_message


def test_an_open_p1_incident_blocks_and_is_logged(settings, harness_for):
    h = with_production(harness_for, settings)
    incident = h.store.events.open_incident("feature store outage", priority="P1")
    monitor(h, 3000, DRIFTED)
    tick = h.sensor_tick(SENSOR)
    assert not tick.run_requests and "open P1 incident" in tick.skip_message
    blocked = h.store.events.recent("churn")[0]
    assert blocked["execution_attempted"] is False and "feature store outage" in str(blocked["trigger_metrics"]["blocked_by"])
    assert h.sensor_tick(SENSOR, cursor=tick.cursor).skip_message.endswith("was already acted on")
    h.store.events.resolve_incident(incident)
    assert len(h.sensor_tick(SENSOR).run_requests) == 1  # a new evaluation of the decision fires


def test_cooldown_blocks_a_retrain_right_after_the_last(tmp_path, harness_for):
    h = with_production(harness_for, make_settings(tmp_path, triggers={**IMMEDIATE, "cooldown_hours": 24}))
    monitor(h, 3000, DRIFTED)
    decision = h.instance.get_latest_materialization_event(asset_key("churn", "retrain_decision"))
    tick = h.sensor_tick(SENSOR)
    if decision.asset_materialization.metadata["severity"].value == "CRITICAL":
        assert len(tick.run_requests) == 1  # CRITICAL bypasses the cooldown
    else:
        assert not tick.run_requests and "cooldown" in tick.skip_message


def test_medium_waits_for_the_quiet_window_without_moving_its_cursor(tmp_path, harness_for):
    import datetime as dt

    hour = dt.datetime.now(dt.timezone.utc).hour
    closed = {"cooldown_hours": 0, "quiet_start_hour": (hour + 2) % 24, "quiet_end_hour": (hour + 3) % 24 or 24}
    # A model unchecked for longer than its age limit retrains anyway (MEDIUM, in the quiet window): no label
    # has verified it since its promotion.
    h = with_production(harness_for, make_settings(tmp_path, triggers=closed, decision={"max_model_age_days": 1e-9}))
    h.traffic(1000, serve=True, label=False)
    assert h.run(monitor_job_name("churn")).success
    decision = h.instance.get_latest_materialization_event(asset_key("churn", "retrain_decision")).asset_materialization.metadata
    assert decision["trigger"].value == "model_age" and decision["severity"].value == "MEDIUM"
    tick = h.sensor_tick(SENSOR)
    assert not tick.run_requests and "waits for the quiet window" in tick.skip_message
    assert tick.cursor is None  # looked at again on the next evaluation
    verified = monitor(h, 1000)  # a fresh labeled batch judged it: the age clock restarts, no retrain
    assert verified["verified_at"].value and verified["trigger"].value == "none"


def test_seed_label_bands_are_refreshed_between_monitoring_runs(tmp_path, harness_for):
    seed = {**IMMEDIATE, "new_labels_scheduled": 500, "new_labels_now": 1000}
    h = with_production(harness_for, make_settings(tmp_path, triggers=seed, decision={"policy": "seed"}))
    monitor(h, 300)
    waiting = h.sensor_tick(SENSOR)
    assert not waiting.run_requests and "300 new labels" in waiting.skip_message
    h.traffic(300)  # no monitoring run in between: the sensor counts them itself
    medium = h.sensor_tick(SENSOR)
    assert [(r.tags[TAG_TRIGGER], r.tags[TAG_SEVERITY]) for r in medium.run_requests] == [("data_volume", "MEDIUM")]
    assert h.sensor_tick(SENSOR, cursor=medium.cursor).skip_message.endswith("already acted on")
    h.traffic(500)
    claimed = h.sensor_tick(SENSOR, cursor=medium.cursor)  # the MEDIUM retrain holds the model's one claim
    assert not claimed.run_requests and "already in flight" in claimed.skip_message
    h.store.events.complete(int(medium.run_requests[0].tags[TAG_EVENT_ID]), successful=False)  # its run ended
    high = h.sensor_tick(SENSOR, cursor=medium.cursor)
    assert [r.tags[TAG_SEVERITY] for r in high.run_requests] == ["HIGH"]
    assert high.run_requests[0].tags[TAG_REASON].startswith("1,000 new labels")


def test_label_volume_alone_never_retrains_under_the_evidence_policy(settings, harness_for):
    h = with_production(harness_for, settings)
    decision = monitor(h, 6000)
    signals = {s["kind"]: s["status"] for s in decision["signals_json"].value}
    assert signals["data_volume"] == "weak" and decision["retrain_advised"].value is False
    assert not h.sensor_tick(SENSOR).run_requests


def test_a_decision_about_an_older_production_model_is_not_acted_on(settings, harness_for):
    h = with_production(harness_for, settings)
    monitor(h, 3000, DRIFTED)
    assert h.retrain(reason="by hand").success  # production moved on before the sensor looked
    tick = h.sensor_tick(SENSOR)
    assert not tick.run_requests and "judged v1; production is now v2" in tick.skip_message


def test_a_storm_of_50_evaluations_yields_one_run(settings, harness_for):
    h = with_production(harness_for, settings)
    monitor(h, 3000, DRIFTED)
    requests = []
    cursor = None
    for attempt in range(50):
        # every other evaluation forgets the cursor, as if another decision had come in meanwhile
        tick = h.sensor_tick(SENSOR, cursor=cursor if attempt % 2 else None)
        cursor = tick.cursor
        for request in tick.run_requests:
            requests.append(request)
            job = h.defs.resolve_job_def(retrain_job_name("churn"))
            h.instance.create_run_for_job(job, tags=request.tags)  # queued, as the daemon would submit it
    assert len(requests) == 1
    blocked = h.sensor_tick(SENSOR)
    assert "already queued or running" in blocked.skip_message


@pytest.mark.postgres
def test_retrain_sensor_on_postgres(tmp_path, postgres_db, harness_for):
    url, _ = postgres_db
    h = with_production(harness_for, make_settings(tmp_path, database_url=url))
    monitor(h, 3000, DRIFTED)
    tick = h.sensor_tick(SENSOR)
    assert len(tick.run_requests) == 1 and tick.run_requests[0].tags[TAG_TRIGGER] in ("performance", "drift")


def test_after_a_rejected_candidate_the_same_evidence_waits_for_new_labels(tmp_path, harness_for):
    h = with_production(harness_for, make_settings(tmp_path, dataset={"strategy": "sliding", "window_rows": 2000}))
    noise = TrafficScenario(covariate_drift=1.5, poison_fraction=1.0)  # drifted inputs, coin-flip labels
    monitor(h, 3000, noise)
    tick = h.sensor_tick(SENSOR)
    assert len(tick.run_requests) == 1
    assert not h.run(retrain_job_name("churn"), tags=tick.run_requests[0].tags).success  # the floors reject it
    failed = h.store.registry.last_failed_retrain("churn")
    assert failed is not None and any(reason.startswith("gate: ") for reason in failed[1])
    h.traffic(1000, scenario=TrafficScenario(covariate_drift=1.5), serve=True, label=False)  # inputs, no label
    assert h.run(monitor_job_name("churn")).success
    metadata = h.instance.get_latest_materialization_event(asset_key("churn", "retrain_decision")).asset_materialization.metadata
    assert metadata["evidence_since_label"].value == failed[0].max_label_id  # the failed dataset's labels count once
    # The inputs still drift, but nothing was labeled after the failed retrain: a candidate would learn
    # nothing new, so the decision itself waits (the sensor's failed-retrain guard is the second line).
    assert metadata["retrain_advised"].value is False and "not yet learnable" in metadata["reason"].value
    blocked = h.sensor_tick(SENSOR, cursor=tick.cursor)
    assert not blocked.run_requests
    h.traffic(500, scenario=TrafficScenario(covariate_drift=1.5))  # a newer labeled batch arrives
    assert h.run(monitor_job_name("churn")).success
    assert len(h.sensor_tick(SENSOR, cursor=blocked.cursor).run_requests) == 1


def test_a_run_stuck_past_its_timeout_no_longer_blocks_triggers(tmp_path, harness_for):
    """A worker killed without run monitoring leaves its run in flight for ever; past run_timeout_minutes it is
    presumed dead, so the model is not wedged. The retrain job also carries dagster/max_runtime, which run
    monitoring enforces."""
    import datetime as dt

    from retrain_assets.datasource import open_data_source
    from retrain_assets.defs.triggers.requests import gather_facts

    h = with_production(harness_for, make_settings(tmp_path, triggers={**IMMEDIATE, "run_timeout_minutes": 30}))
    job = h.defs.resolve_job_def(retrain_job_name("churn"))
    assert job.tags["dagster/max_runtime"] == "1800"
    stuck = h.instance.create_run_for_job(job, tags={"retrain/model": "churn"})
    source = open_data_source(h.model, h.settings.storage.database_url)
    now = dt.datetime.now(dt.timezone.utc)
    assert gather_facts(h.instance, h.store, source, h.model, "HIGH", now).runs_in_flight == [stuck.run_id]
    later = now + dt.timedelta(minutes=31)
    assert gather_facts(h.instance, h.store, source, h.model, "HIGH", later).runs_in_flight == []


def test_the_label_guard_counts_only_labels_since_the_last_training(settings, harness_for):
    """min_samples (and min_new_labels_fraction) count the labels the last training did not have, as seed
    004's prerequisite says; before this they counted every label ever."""
    import datetime as dt

    from retrain_assets.defs.definitions import resources_for
    from retrain_assets.defs.triggers.requests import gather_facts
    from retrain_assets.monitoring.guards import blocking_guards

    h = with_production(harness_for, settings)  # trained on 3,000 labeled rows
    def facts():  # a fresh source each time, as each sensor evaluation opens one (it remembers its counts)
        source = resources_for(settings)["data_source"].for_model(h.model)
        return gather_facts(h.instance, h.store, source, h.model, "HIGH", dt.datetime.now(dt.timezone.utc))

    h.traffic(100)
    few = facts()
    assert (few.labeled_rows, few.training_rows) == (100, h.store.registry.latest_dataset("churn").rows)
    assert any("only 100 labeled rows since the last training" in r for r in blocking_guards(few, h.model.triggers))
    h.traffic(300)
    assert not any("since the last training" in r for r in blocking_guards(facts(), h.model.triggers))


def test_a_dataset_with_critical_data_quality_blocks_automatic_retraining_for_a_day(tmp_path, harness_for):
    """Seed 004's prerequisite "data quality not critical in the last day": after a retrain whose dataset
    failed a quality check (critical), automatic triggers are blocked for quality_block_hours, whatever their
    severity; a day later the block is gone (the dataset is aged in the database to get there)."""
    import datetime as dt

    from sqlalchemy import update

    from retrain_assets.defs.definitions import resources_for
    from retrain_assets.defs.triggers.requests import gather_facts
    from retrain_assets.monitoring.guards import blocking_guards
    from retrain_assets.store.schema import dataset_versions

    settings = make_settings(tmp_path, dataset={"max_age_hours": 1}, triggers=IMMEDIATE)  # the traffic is hours old
    h = harness_for(settings)
    h.traffic(3000)
    result = h.retrain()
    assert not result.success
    dataset = h.store.registry.latest_dataset("churn")
    assert [q["status"] for q in dataset.quality if not q["passed"]] == ["critical"]
    shown = {e.check_name: e.metadata for e in result.get_asset_check_evaluations()}  # what the UI shows per check
    assert shown["freshness"]["status"].value == "critical" and shown["min_rows"]["status"].value == "healthy"
    assert shown["min_rows"]["dataset_quality_status"].value == "critical"
    now = dt.datetime.now(dt.timezone.utc)

    def guards(severity="CRITICAL"):
        source = resources_for(settings)["data_source"].for_model(h.model)
        return blocking_guards(gather_facts(h.instance, h.store, source, h.model, severity, now), h.model.triggers)

    blocked = [r for r in guards() if r.startswith("data quality critical")]
    assert blocked and f"dataset {dataset.tag}: freshness failed at" in blocked[0] and "; blocked until" in blocked[0]
    with h.store.engine.begin() as conn:
        conn.execute(update(dataset_versions).where(dataset_versions.c.tag == dataset.tag)
                     .values(created_at=now - dt.timedelta(hours=25)))
    assert not [r for r in guards() if r.startswith("data quality critical")]
    with h.store.engine.begin() as conn:  # critical again, an hour ago ...
        conn.execute(update(dataset_versions).where(dataset_versions.c.tag == dataset.tag)
                     .values(created_at=now - dt.timedelta(hours=1)))
    assert [r for r in guards() if r.startswith("data quality critical")]
    fields = {k: getattr(dataset, k) for k in ("content_hash", "artifact_key", "artifact_sha256", "rows", "summary")}
    fixed = h.store.registry.record_dataset("churn", **fields)  # ... then a newer dataset passed: the source is fixed
    h.store.registry.record_quality("churn", fixed.tag, [{**q, "passed": True, "status": "healthy"} for q in dataset.quality])
    assert not [r for r in guards() if r.startswith("data quality critical")]
