"""The foundation slice in real in-process Dagster runs: dataset -> candidate -> blocking gates -> production."""

import datetime as dt

import dagster as dg

from retrain_assets.defs.keys import TAG_REASON, TAG_TRIGGER, monitor_job_name
from retrain_assets.defs.definitions import build_definitions, resources_for
from retrain_assets.defs.metadata import root_cause
from retrain_assets.simulate import TrafficScenario
from tests.conftest import make_settings

DRIFTED = TrafficScenario(covariate_drift=0.6, concept_drift=True)


def _materialized(result, asset):
    return [e.asset_key.path[-1] for e in result.get_asset_materialization_events()].count(asset)


def test_definitions_load_with_one_group_per_model(settings):
    from retrain_assets.defs.definitions import build_definitions

    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"churn/training_dataset", "churn/candidate_model", "churn/production_model", "churn/drift_report",
                    "churn/performance_report", "churn/retrain_decision", "churn/model_card"}
    assert {graph.get(k).group_name for k in graph.get_all_asset_keys()} == {"churn"}
    checks = {k.name for k in graph.asset_check_keys}
    assert {"absolute_thresholds", "relative_to_production", "smoke_test", "min_rows"} <= checks
    assert defs.resolve_job_def("churn_retrain") and defs.resolve_job_def("churn_monitor")
    for sensor in ("retrain", "retrain_failure"):  # one trigger sensor: it acts on the fused decision
        assert defs.resolve_sensor_def(f"churn_{sensor}_sensor")
    assert defs.resolve_schedule_def("churn_scheduled_retrain").cron_schedule == "0 3 * * 0"


def test_good_data_promotes_v1_with_lineage_to_its_dataset(settings, harness_for):
    h = harness_for(settings)
    h.traffic(3000)
    result = h.retrain(reason="initial")
    assert result.success
    assert _materialized(result, "production_model") == 1
    assert all(e.passed for e in result.get_asset_check_evaluations())
    production = h.store.registry.production("churn")
    assert production.version == 1 and production.trigger == "manual"
    candidate_md = h.instance.get_latest_materialization_event(dg.AssetKey(["churn", "candidate_model"])).asset_materialization.metadata
    assert candidate_md["dataset_version"].value == production.dataset_tag
    dataset_md = h.instance.get_latest_materialization_event(dg.AssetKey(["churn", "training_dataset"])).asset_materialization.metadata
    assert dataset_md["dataset_version"].value == production.dataset_tag
    assert dataset_md["content_hash"].value == production.dataset_hash
    promoted = h.instance.get_latest_materialization_event(dg.AssetKey(["churn", "production_model"])).asset_materialization
    assert promoted.metadata["promoted_version"].value == "v1"
    assert promoted.metadata["previous_version"].value == "none"


def test_poisoned_labels_fail_the_gates_and_production_stays(tmp_path, harness_for):
    settings = make_settings(tmp_path, dataset={"strategy": "sliding", "window_rows": 3000})
    h = harness_for(settings)
    h.traffic(3000)
    assert h.retrain().success
    h.traffic(3000, TrafficScenario(poison_fraction=1.0))
    result = h.retrain(reason="poisoned batch", event=True)
    assert not result.success
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert "absolute_thresholds" in failed
    assert _materialized(result, "production_model") == 0
    assert h.store.registry.production("churn").version == 1
    # The rejection view: the failed run never planned production_model or the card, so the lineage keeps
    # them green and unchanged while the candidate shows its failed gates.
    planned = {e.dagster_event.asset_key.path[-1] for e in h.instance.all_logs(
        result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)}
    assert planned == {"training_dataset", "candidate_model"} and result.promotion is None
    rejected = h.store.registry.version("churn", 2)
    assert rejected.status == "rejected"
    assert {g["name"] for g in rejected.gate_results if not g["passed"]} == failed
    event = h.store.events.recent("churn")[0]
    assert event["execution_successful"] is False and event["retraining_model_version"] == "v2"
    assert h.store.events.open_p1_incidents("churn") == []  # one failure is not yet a pattern (default 3)


def test_repeated_failed_retrains_open_a_p1_incident_that_blocks_retraining(tmp_path, harness_for):
    """Seed 004: "if repeated failures -> create incident". The Nth failed retrain in a row opens a P1 for
    the model (once), whatever failed: here the gates, then the data quality."""
    from retrain_assets.defs.triggers.requests import fail_retrain, gather_facts
    from retrain_assets.monitoring.guards import blocking_guards

    settings = make_settings(tmp_path, triggers={"incident_after_failures": 2, "cooldown_hours": 0,
                                                 "quiet_start_hour": 0, "quiet_end_hour": 24})
    h = harness_for(settings)
    h.traffic(3000)
    assert h.retrain().success
    h.traffic(3000, TrafficScenario(poison_fraction=1.0))
    assert not h.retrain(reason="poisoned batch", event=True).success  # rejected by the gates: 1 failure
    assert h.store.events.open_p1_incidents("churn") == []
    quiet = h.store.events.record_trigger("churn", trigger_type="manual", severity="LOW", reason="second")
    assert fail_retrain(h.store, h.model, quiet, execution_metrics={"failed_quality_checks": ["labels"]})
    [incident] = h.store.events.open_p1_incidents("churn")
    assert "2 retrains failed in a row" in incident and f"event #{quiet}" in incident
    source = resources_for(settings)["data_source"].for_model(h.model)  # the open P1 blocks automatic triggers
    facts = gather_facts(h.instance, h.store, source, h.model, "HIGH", dt.datetime.now(dt.timezone.utc))
    assert f"open P1 incident {incident}" in blocking_guards(facts, h.model.triggers)
    third = h.store.events.record_trigger("churn", trigger_type="manual", severity="LOW", reason="third")
    assert fail_retrain(h.store, h.model, third, execution_metrics={"error": "boom"}) is None  # one incident
    assert len(h.store.events.open_p1_incidents("churn")) == 1
    forced = h.store.events.record_trigger("churn", trigger_type="manual", severity="LOW", reason="superseded")
    h.store.events.complete(forced, successful=False, execution_metrics={"superseded": True})
    assert h.store.events.recent_outcomes("churn", 3)[:2] == [False, False]  # a superseded retrain is no outcome
    h.store.events.resolve_incident(int(incident[1:].split()[0]))
    first = h.store.events.record_trigger("churn", trigger_type="manual", severity="LOW", reason="first after")
    assert fail_retrain(h.store, h.model, first, execution_metrics={"error": "boom"}) is None  # resolving restarts the count
    assert h.store.events.open_p1_incidents("churn") == []
    succeeded = h.store.events.record_trigger("churn", trigger_type="manual", severity="LOW", reason="fixed")
    h.store.events.complete(succeeded, successful=True)
    after = h.store.events.record_trigger("churn", trigger_type="manual", severity="LOW", reason="after")
    assert fail_retrain(h.store, h.model, after, execution_metrics={"error": "boom"}) is None  # a success resets
    assert h.store.events.open_p1_incidents("churn") == []


def test_quality_check_stops_the_run_before_training(tmp_path, harness_for):
    settings = make_settings(tmp_path, dataset={"min_samples": 5000})
    h = harness_for(settings)
    h.traffic(1000)
    result = h.retrain(event=True)
    assert not result.success
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"min_rows"}
    assert _materialized(result, "candidate_model") == 0
    assert h.store.registry.versions("churn") == []
    dataset = h.store.registry.latest_dataset("churn")
    assert [q["name"] for q in dataset.quality if not q["passed"]] == ["min_rows"]
    event = h.store.events.recent("churn")[0]
    assert event["execution_successful"] is False
    assert event["execution_metrics"]["failed_quality_checks"] == ["min_rows"]


def test_labels_of_one_class_stop_at_the_labels_check(settings, harness_for):
    h = harness_for(settings)
    frame = h.traffic(1000, label=False)
    h.store.predictions.log_labels("churn", frame["request_id"].tolist(), [0] * len(frame))
    result = h.retrain()
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"labels"} and _materialized(result, "candidate_model") == 0


def test_a_feature_missing_from_the_log_is_named(tmp_path, harness_for):
    h = harness_for(make_settings(tmp_path))
    frame = h.traffic(500, label=False).drop(columns=["region"])
    renamed = make_settings(tmp_path)  # the log holds rows written without 'region'
    h.store.predictions.log_predictions("churn", frame.assign(request_id=frame["request_id"] + "-x"),
                                        [f for f in renamed.models[0].feature_names if f != "region"])
    h.store.predictions.log_labels("churn", (frame["request_id"] + "-x").tolist(), frame["churned"].tolist())
    result = h.retrain()
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "region" in root_cause(failure.step_failure_data.error)


def test_empty_prediction_log_fails_with_a_clear_message(settings, harness_for):
    h = harness_for(settings)
    result = h.retrain()
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "no labeled rows for model churn" in root_cause(failure.step_failure_data.error)


def test_input_drift_alone_retrains_with_a_large_effect_once_a_retrain_could_learn_it(settings, harness_for):
    """Drifted traffic: the importance-weighted drift decides alone, once the rows a retrain would train
    on hold the drift (their labels arrived); before that a candidate would learn nothing new."""
    h = harness_for(settings)
    h.traffic(3000)
    assert h.retrain().success
    h.traffic(2000, serve=True)
    assert h.run(monitor_job_name("churn")).success
    tick = h.sensor_tick("churn_retrain_sensor")
    assert not tick.run_requests and "no drift that matters" in tick.skip_message
    drifted = h.traffic(2000, TrafficScenario(covariate_drift=1.5), serve=True, label=False)
    result = h.run(monitor_job_name("churn"))
    assert result.success and _materialized(result, "drift_report") == 1
    tick = h.sensor_tick("churn_retrain_sensor", cursor=tick.cursor)
    assert not tick.run_requests and "large drift" in tick.skip_message and "not yet learnable" in tick.skip_message
    h.store.predictions.log_labels(h.model.log_key, drifted["request_id"].tolist(), drifted[h.model.target].tolist())
    assert h.run(monitor_job_name("churn")).success
    tick = h.sensor_tick("churn_retrain_sensor", cursor=tick.cursor)
    assert len(tick.run_requests) == 1, tick.skip_message
    request = tick.run_requests[0]
    assert request.tags[TAG_TRIGGER] == "drift" and "large drift" in request.tags[TAG_REASON]
    event = h.store.events.get(int(request.tags["retrain/event_id"]))
    assert event["trigger_type"] == "drift" and event["drift_type"] == "data" and event["execution_successful"] is None
    # The same decision never triggers twice.
    assert not h.sensor_tick("churn_retrain_sensor", cursor=tick.cursor).run_requests


def test_drift_report_without_production_model_says_what_to_do(settings, harness_for):
    h = harness_for(settings)
    result = h.run(monitor_job_name("churn"))
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "has no production model yet" in root_cause(failure.step_failure_data.error)


def test_weekly_schedule_requests_a_tagged_retrain_unless_a_p1_or_a_run_stops_it(settings, harness_for, tmp_path):
    (tmp_path / "home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "home"))  # a schedule context needs a persistent one
    h = harness_for(settings, instance=instance)
    schedule = h.defs.resolve_schedule_def("churn_scheduled_retrain")

    def tick():
        with dg.build_schedule_context(instance=h.instance, resources=resources_for(settings),
                                       scheduled_execution_time=dt.datetime.now(dt.timezone.utc)) as context:
            return schedule.evaluate_tick(context)

    assert tick().run_requests[0].tags[TAG_TRIGGER] == "schedule"
    assert schedule.execution_timezone == "UTC"
    incident = h.store.events.open_incident("label feed broken", priority="P1", model_name="churn")
    assert not tick().run_requests and "open P1 incident" in tick().skip_message
    h.store.events.resolve_incident(incident)
    h.instance.create_run_for_job(h.defs.resolve_job_def("churn_retrain"))  # queued, as the daemon would
    assert not tick().run_requests and "already queued or running" in tick().skip_message
    instance.dispose()


def test_the_scheduled_retrain_skips_a_model_trained_within_min_days(tmp_path, harness_for):
    """Seed 001's "days since last training": a model a trigger retrained two days ago needs no calendar
    retrain; the skip says why and is an event row. With min_days_between_scheduled 0 it always runs."""
    (tmp_path / "home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "home"))
    h = harness_for(make_settings(tmp_path), instance=instance)
    h.traffic(2000)
    assert h.retrain(reason="drift, two days ago").success

    def tick(settings, days_later):
        when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days_later)
        with dg.build_schedule_context(instance=h.instance, resources=resources_for(settings),
                                       scheduled_execution_time=when) as context:
            return build_definitions(settings).resolve_schedule_def("churn_scheduled_retrain").evaluate_tick(context)

    skipped = tick(h.settings, 2)
    assert not skipped.run_requests and "within min_days_between_scheduled (3 days)" in skipped.skip_message
    assert "v1 was trained 2.0 days ago (manual trigger)" in skipped.skip_message
    event = h.store.events.recent("churn")[0]
    assert event["trigger_type"] == "schedule" and event["execution_attempted"] is False
    assert "min_days_between_scheduled" in event["trigger_metrics"]["blocked_by"][0]
    assert tick(h.settings, 3.5).run_requests  # older than the limit: the calendar retrains
    always = make_settings(tmp_path, triggers={"min_days_between_scheduled": 0, "cooldown_hours": 0})
    assert tick(always, 0).run_requests
    instance.dispose()


def test_a_crashed_triggered_run_gets_its_event_closed_by_the_failure_sensor(tmp_path, harness_for):
    h = harness_for(make_settings(tmp_path))
    frame = h.traffic(500, label=False).drop(columns=["region"])
    ids = (frame["request_id"] + "-x").tolist()
    h.store.predictions.log_predictions("churn", frame.assign(request_id=ids), [f for f in h.model.feature_names if f != "region"])
    h.store.predictions.log_labels("churn", ids, frame["churned"].tolist())
    result = h.retrain(event=True)  # training_dataset raises: no check completes the event
    assert not result.success
    event_id = h.store.events.recent("churn")[0]["id"]
    assert h.store.events.get(event_id)["execution_completed_at"] is None
    sensor = h.defs.resolve_sensor_def("churn_retrain_failure_sensor")
    failure = h.instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[0].dagster_event
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=failure, dagster_instance=h.instance,
        dagster_run=h.instance.get_run_by_id(result.run_id), resources=resources_for(h.settings),
    ).for_run_failure()
    sensor(context)
    event = h.store.events.get(event_id)
    assert event["execution_successful"] is False and event["execution_metrics"]["run_id"] == result.run_id
    sensor(context)  # a second evaluation leaves the outcome as it is
    assert h.store.events.get(event_id)["execution_completed_at"] == event["execution_completed_at"]


def test_a_failed_monitor_run_alerts_too(settings, harness_for, caplog):
    h = harness_for(settings)
    result = h.run(monitor_job_name("churn"))  # no production model yet: the run fails
    assert not result.success
    sensor = h.defs.resolve_sensor_def("churn_retrain_failure_sensor")
    monitored = {job.name for job in sensor._monitored_jobs}  # noqa: SLF001 - what the daemon filters runs by
    assert monitored == {"churn_retrain", "churn_promote", "churn_monitor", "churn_rollback", "churn_shadow_decision",
                         "churn_canary_step"}
    failure = h.instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[0].dagster_event
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=failure, dagster_instance=h.instance,
        dagster_run=h.instance.get_run_by_id(result.run_id), resources=resources_for(h.settings),
    ).for_run_failure()
    with caplog.at_level("WARNING", logger="retrain_assets.notify"):
        outcome = sensor(context)
    assert "alerted on the failure of churn_monitor run" in outcome.skip_message
    assert any("churn_monitor run" in record.getMessage() for record in caplog.records)


def test_a_run_started_without_a_trigger_event_opens_and_completes_its_own(settings, harness_for):
    h = harness_for(settings)
    h.traffic(3000)
    schedule_tags = {"dagster/schedule_name": "churn_scheduled_retrain"}
    result = h.run("churn_retrain", tags=schedule_tags,
                   run_config={"ops": {"churn__training_dataset": {"config": {"reason": "", "requester": ""}}}})
    assert result.success
    event = h.store.events.recent("churn")[0]
    assert (event["trigger_type"], event["run_id"], event["execution_successful"]) == ("schedule", result.run_id, True)
    assert event["retraining_model_version"] == "v1"
    manual = h.run("churn_retrain", run_config={"ops": {"churn__training_dataset": {
        "config": {"reason": "checking the new label feed", "requester": "alice"}}}})
    event = h.store.events.recent("churn")[0]
    assert event["run_id"] == manual.run_id and event["trigger_type"] == "manual"
    assert event["trigger_reason"] == "checking the new label feed" and event["trigger_metrics"] == {"requester": "alice"}


def test_materializing_production_model_alone_never_promotes_someone_elses_candidate(settings, harness_for):
    """'Materialize' on production_model in the UI runs it alone: it must not promote the newest candidate of
    another run (stale, maybe never gated) over production."""
    h = harness_for(settings)
    h.traffic(3000)
    assert h.retrain().success
    v1 = h.store.registry.production("churn")
    stale = h.store.registry.register_candidate(
        "churn", artifact_key=v1.artifact_key, artifact_sha256=v1.artifact_sha256, size_bytes=v1.size_bytes,
        dataset_tag=v1.dataset_tag, dataset_hash=v1.dataset_hash, params={}, metrics={"f1": 0.1}, trigger="manual",
        reason="an old run's candidate", run_id="some-other-run")
    job = h.defs.resolve_job_def("churn_promote")
    result = job.execute_in_process(instance=h.instance, raise_on_error=False,
                                    asset_selection=[dg.AssetKey(["churn", "production_model"])])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "promotes only the candidate of the retrain run named by its" in root_cause(failure.step_failure_data.error)
    assert h.store.registry.production("churn").version == v1.version
    assert h.store.registry.version("churn", stale.version).status == "candidate"


def promotion_tick(h, run_id: str):
    """The promotion sensor evaluated on a finished retrain run, as the daemon would."""
    sensor = h.defs.resolve_sensor_def("churn_promotion_sensor")
    finished = next(iter(h.instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_SUCCESS))).dagster_event
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=finished, dagster_instance=h.instance,
        dagster_run=h.instance.get_run_by_id(run_id), resources=resources_for(h.settings))
    return sensor(context)


def test_the_promotion_sensor_promotes_a_retrain_that_passed_its_gates_once(settings, harness_for):
    import pytest

    from retrain_assets.defs.keys import TAG_CANDIDATE_RUN, TAG_EVENT_ID
    from retrain_assets.defs.triggers.requests import claim_retrain
    from retrain_assets.store.events import ClaimTaken

    h = harness_for(settings)
    h.traffic(3000)
    event_id = h.store.events.record_trigger("churn", trigger_type="manual", severity="LOW", reason="sensor test",
                                             attempted=True)
    retrain = h.defs.resolve_job_def("churn_retrain").execute_in_process(  # the retrain run alone, as the daemon runs it
        instance=h.instance, tags={TAG_EVENT_ID: str(event_id)}, raise_on_error=False)
    assert retrain.success and h.store.registry.production("churn") is None
    # Until it is promoted, the gated candidate's claim stands: no second retrain slips in.
    with pytest.raises(ClaimTaken):
        claim_retrain(h.instance, h.store, h.model, trigger_type="manual", severity="LOW", reason="too early")
    request = promotion_tick(h, retrain.run_id)
    assert isinstance(request, dg.RunRequest) and request.job_name == "churn_promote"
    assert request.tags[TAG_CANDIDATE_RUN] == retrain.run_id and request.tags[TAG_EVENT_ID] == str(event_id)
    assert h.run("churn_promote", tags=request.tags).success
    assert h.store.registry.production("churn").version == 1
    event = h.store.events.get(event_id)
    assert (event["execution_successful"], event["retraining_model_version"]) == (True, "v1")
    card = h.instance.get_latest_materialization_event(dg.AssetKey(["churn", "model_card"])).asset_materialization
    assert card.metadata["model_version"].value == "v1"
    again = promotion_tick(h, retrain.run_id)  # a second look (or a second daemon) promotes nothing
    assert isinstance(again, dg.SkipReason) and "already production" in again.skip_message


def test_a_late_promotion_never_ships_a_candidate_gated_against_another_production(tmp_path, harness_for):
    """A retrain's claim was released while its promotion waited (say, past run_timeout_minutes) and a newer
    retrain promoted its own candidate meanwhile. The late promotion refuses: the old candidate was never
    compared with the model it would replace, and its event already has its outcome."""
    from retrain_assets.defs.deployment.promotion import promotion_request
    from retrain_assets.defs.keys import TAG_EVENT_ID

    loose = {"max_f1_drop": 1.0, "max_auc_drop": 1.0, "max_relative_drop": 1.0, "significance_tolerance": 1.0}
    h = harness_for(make_settings(tmp_path, gates=loose))
    h.traffic(3000)
    assert h.retrain().success  # v1 in production
    h.traffic(1000)
    waiting = h.store.events.record_trigger("churn", trigger_type="manual", severity="LOW", reason="slow one")
    late = h.defs.resolve_job_def("churn_retrain").execute_in_process(
        instance=h.instance, tags={TAG_EVENT_ID: str(waiting)}, raise_on_error=False)
    assert late.success and h.store.registry.candidate_of_run("churn", late.run_id).label == "v2"
    h.store.events.complete(waiting, successful=False, execution_metrics={"error": "claim released: test"})
    request = promotion_request(h.store, h.model, h.instance.get_run_by_id(late.run_id))
    refused = h.run("churn_promote", tags=request.tags)
    assert not refused.success and h.store.registry.production("churn").version == 1
    assert "its retrain event" in str(refused.all_events) and "was closed while the promotion waited" in str(refused.all_events)
    h.traffic(1000)
    assert h.retrain().success and h.store.registry.production("churn").version == 3  # gated against v1, promoted
    again = h.run("churn_promote", tags={**request.tags, "dagster/run_key": "again"})
    assert not again.success and h.store.registry.production("churn").version == 3
    assert "compared it with production v1, but production is v3 now" in str(again.all_events)


def test_a_gated_candidate_holds_its_claim_while_its_promotion_is_in_flight(settings, harness_for):
    """The claim of a retrain whose gated candidate awaits promotion stands for run_timeout_minutes after
    the retrain run ended, and for as long as its promotion run is queued or running."""
    import datetime as dt

    from retrain_assets.defs.keys import TAG_CANDIDATE_RUN, TAG_EVENT_ID
    from retrain_assets.defs.triggers.requests import stale_claim

    h = harness_for(settings)
    h.traffic(3000)
    event_id = h.store.events.record_trigger("churn", trigger_type="manual", severity="LOW", reason="claim test")
    retrain = h.defs.resolve_job_def("churn_retrain").execute_in_process(
        instance=h.instance, tags={TAG_EVENT_ID: str(event_id)}, raise_on_error=False)
    assert retrain.success
    event = h.store.events.get(event_id) | {"run_id": retrain.run_id}
    now = dt.datetime.now(dt.timezone.utc)
    assert stale_claim(h.instance, h.store, h.model, event, now) is None  # waiting for the promotion sensor
    late = now + dt.timedelta(minutes=h.model.triggers.run_timeout_minutes + 1)
    assert "passed its gates but was not promoted" in stale_claim(h.instance, h.store, h.model, event, late)
    h.instance.create_run_for_job(h.defs.resolve_job_def("churn_promote"),  # queued, as the sensor leaves it
                                  tags={TAG_CANDIDATE_RUN: retrain.run_id})
    assert stale_claim(h.instance, h.store, h.model, event, late) is None  # its promotion is in flight
