"""Rollback, the post-deploy watch and the model card in real in-process runs."""

from retrain_assets.defs.deployment.rollback import rollback_job_name
from retrain_assets.defs.keys import TAG_REASON, TAG_TRIGGER
from retrain_assets.simulate import TrafficScenario
from tests.conftest import make_settings

CONCEPT = TrafficScenario(concept_drift=True)
# These tests are about what happens after a promotion: the second model only has to be promotable.
LOOSE = {"max_f1_drop": 1.0, "max_auc_drop": 1.0, "max_relative_drop": 1.0, "significance_tolerance": 1.0}


def loose_settings(tmp_path):
    return make_settings(tmp_path, gates=LOOSE)


def two_versions(harness_for, settings):
    h = harness_for(settings)
    h.traffic(3000)
    assert h.retrain().success
    h.traffic(1000, serve=True)  # v1's live record
    h.traffic(2000)
    assert h.retrain().success
    assert (h.store.registry.production("churn").version, h.store.registry.with_status("churn", "standby").version) == (2, 1)
    return h


def test_rollback_job_restores_the_previous_version_and_is_logged(tmp_path, harness_for):
    h = two_versions(harness_for, loose_settings(tmp_path))
    result = h.run(rollback_job_name("churn"), run_config={"ops": {"churn_swap_production_and_standby": {
        "config": {"reason": "complaints from the retention team", "requester": "bob"}}}})
    assert result.success
    assert h.store.registry.production("churn").version == 1
    assert h.store.registry.with_status("churn", "standby").version == 2
    event = h.store.events.recent("churn")[0]
    assert (event["trigger_type"], event["execution_successful"], event["retraining_model_version"]) == ("rollback", True, "v1")
    history = h.instance.get_latest_materialization_event(h.defs.resolve_assets_def(["churn", "production_model"]).key)
    assert history.asset_materialization.metadata["promoted_version"].value == "v1"
    assert card_version(h) == "v1"  # the card follows production back


def card_version(h) -> str:
    card = h.instance.get_latest_materialization_event(h.defs.resolve_assets_def(["churn", "model_card"]).key)
    return card.asset_materialization.metadata["model_version"].value


def test_watch_rolls_back_on_a_live_f1_drop_and_leaves_a_healthy_model(tmp_path, harness_for):
    h = two_versions(harness_for, loose_settings(tmp_path))
    h.traffic(300, serve=True)  # v2 on the same population as v1: healthy
    healthy = h.sensor_tick("churn_post_deploy_watch")
    assert not healthy.run_requests and "watching v2: live F1" in healthy.skip_message
    assert "judging at 20" in healthy.skip_message  # one timed request each: latency is still being watched
    h.traffic(600, scenario=CONCEPT, serve=True)  # behaviour changed: v2 now misjudges churn live
    tick = h.sensor_tick("churn_post_deploy_watch")
    assert len(tick.run_requests) == 1, tick.skip_message
    request = tick.run_requests[0]
    assert request.tags[TAG_TRIGGER] == "post_deploy_watch" and "back to v1" in request.tags[TAG_REASON]
    assert request.tags["retrain/rollback_from"] == "v2"  # the verdict is about v2, and only v2 is swapped out
    stale = h.run(rollback_job_name("churn"), tags={**request.tags, "retrain/rollback_from": "v7"})
    assert not stale.success and h.store.registry.production("churn").version == 2  # production changed: no swap
    assert "requested for v7, but production is v2" in h.store.events.recent("churn")[0]["execution_metrics"]["error"]
    assert h.run(rollback_job_name("churn"), tags=request.tags).success
    assert h.store.registry.production("churn").version == 1
    # v1 is production again through the watch's own rollback: the watch never swings it back to v2 by itself.
    again = h.sensor_tick("churn_post_deploy_watch", cursor=tick.cursor)
    assert again.run_requests == [] and "production again through rollback" in again.skip_message


def test_watch_rolls_back_when_too_many_requests_fail_whatever_the_labels_say(tmp_path, harness_for):
    """Seed 002's "error rate > 5 %": the servers' request counts (every process's, summed) judge it in the
    watch and the close watch, without waiting for a label."""
    import datetime as dt

    h = two_versions(harness_for, loose_settings(tmp_path))
    v1, v2 = (h.store.registry.version("churn", v) for v in (1, 2))
    earlier = v2.promoted_at - dt.timedelta(days=3)  # an earlier promotion of v2 (or its canary days): not counted
    h.store.predictions.record_request_counts("host-a:1:x", {("churn", 2, v2.promoted_at): (60, 2),
                                                             ("churn", 1, v1.promoted_at): (500, 0),
                                                             ("churn", 2, earlier): (100_000, 0)})
    calm = h.sensor_tick("churn_post_deploy_watch")
    assert not calm.run_requests and "judging at 20" in calm.skip_message  # too few labels and timed requests yet
    h.store.predictions.record_request_counts("host-b:2:y", {("churn", 2, v2.promoted_at): (30, 8)})  # a second process
    assert h.store.predictions.request_counts("churn", 2, v2.promoted_at) == (90, 10)
    tick = h.sensor_tick("churn_post_deploy_watch", cursor=calm.cursor)
    assert len(tick.run_requests) == 1, tick.skip_message
    assert "10 of 100 requests failed (10.00% > 5%)" in tick.run_requests[0].tags[TAG_REASON]


def test_model_card_describes_the_production_model(tmp_path, harness_for):
    h = two_versions(harness_for, loose_settings(tmp_path))
    card = h.instance.get_latest_materialization_event(
        h.defs.resolve_assets_def(["churn", "model_card"]).key).asset_materialization.metadata["card"].value
    assert card.startswith("# churn v2")
    for section in ("## Intended use", "## Training", "## Metrics", "## Evaluation gates", "## Fairness slices",
                    "## Limitations"):
        assert section in card
    assert "| relative_to_production | passed |" in card


def test_a_model_serving_its_validation_period_is_proven_and_old_candidates_archived(tmp_path, harness_for):
    import datetime as dt

    from sqlalchemy import update

    from retrain_assets.store.schema import model_versions

    settings = make_settings(tmp_path, gates=LOOSE, deployment={"validation_days": 7, "keep_versions": 2})
    h = two_versions(harness_for, settings)
    stale = h.store.registry.register_candidate(  # a candidate nobody promoted or rejected
        "churn", artifact_key="x", artifact_sha256="0" * 64, size_bytes=1, dataset_tag="v1", dataset_hash="h",
        params={}, metrics={})
    h.traffic(300, serve=True)
    eight_days_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=8)
    with h.store.engine.begin() as conn:
        conn.execute(update(model_versions).where(model_versions.c.version == 2).values(promoted_at=eight_days_ago))
    with h.store.engine.begin() as conn:  # the stale candidate is older than the newest two versions
        conn.execute(update(model_versions).where(model_versions.c.version == stale.version).values(version=0))
    tick = h.sensor_tick("churn_post_deploy_watch")
    assert "proven" in tick.skip_message and "archived v0" in tick.skip_message
    production = h.store.registry.production("churn")
    assert production.proven_at is not None and set(production.baseline) >= {"accuracy", "f1"}
    assert production.baseline != production.metrics  # live metrics, not the test split's
    assert h.store.registry.version("churn", 0).status == "archived"
    assert h.store.registry.version("churn", 1).status == "standby"


def test_watch_rolls_back_on_a_live_latency_spike(tmp_path, harness_for):
    h = two_versions(harness_for, loose_settings(tmp_path))
    # 150 requests each: v1 answered in ~5 ms, v2 in ~250 ms. Enough requests that v1's one real request of
    # two_versions (timed on this machine, however busy) is not its p99.
    for version, base_ms in ((1, 5.0), (2, 250.0)):
        for request in range(150):
            frame = h.traffic(5, label=False)  # unlabeled: latency needs no labels
            h.store.predictions.log_predictions("churn", frame.assign(request_id=frame["request_id"] + f"-v{version}"),
                                                h.model.feature_names, prediction=[0] * 5, model_version=version,
                                                latency_ms=base_ms + request * 0.01)
    tick = h.sensor_tick("churn_post_deploy_watch")
    assert len(tick.run_requests) == 1, tick.skip_message
    assert "p99 latency 251.5 ms vs 6.5 ms" in tick.run_requests[0].tags[TAG_REASON]


def test_the_close_watch_rolls_back_on_the_absolute_criteria_and_each_phase_is_shown(tmp_path, harness_for):
    """Past its 30-minute watch, a model is still rolled back when live accuracy falls under the floor
    (seed 002's close watch), but no longer for doing somewhat worse than its predecessor. Entering a
    phase is an event row and refreshes the model card, which names the phase."""
    import datetime as dt

    from sqlalchemy import update

    from retrain_assets.store.schema import model_versions

    settings = make_settings(tmp_path, gates=LOOSE, deployment={"rollback_min_accuracy": 0.8})
    h = two_versions(harness_for, settings)
    watched = h.sensor_tick("churn_post_deploy_watch")
    phase_rows = [e for e in h.store.events.recent("churn") if e["trigger_type"] == "deployment_phase"]
    assert phase_rows[0]["trigger_metrics"]["phase"] == "watch" and phase_rows[0]["execution_attempted"] is False
    card = h.instance.get_latest_materialization_event(h.defs.resolve_assets_def(["churn", "model_card"]).key)
    assert "phase: **watch**" in card.asset_materialization.metadata["card"].value
    two_hours_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    with h.store.engine.begin() as conn:
        conn.execute(update(model_versions).where(model_versions.c.version == 2).values(promoted_at=two_hours_ago))
    h.traffic(300, serve=True)  # v2 on its own population: accurate
    calm = h.sensor_tick("churn_post_deploy_watch", cursor=watched.cursor)
    assert not calm.run_requests and "close watch of v2: live accuracy" in calm.skip_message, calm.skip_message
    assert [e["trigger_metrics"]["phase"] for e in h.store.events.recent("churn")
            if e["trigger_type"] == "deployment_phase"][:2] == ["close_watch", "watch"]
    [card] = calm.asset_events  # the daemon records it as a model_card materialization
    assert card.asset_key.path == ["churn", "model_card"] and "v2 entered its close watch" in card.description
    assert "phase: **close watch**" in card.metadata["card"].value
    h.traffic(1500, scenario=CONCEPT, serve=True)  # behaviour changed: live accuracy falls under the floor
    tick = h.sensor_tick("churn_post_deploy_watch", cursor=calm.cursor)
    assert len(tick.run_requests) == 1, tick.skip_message
    assert "post-deploy close watch: v2 live accuracy" in tick.run_requests[0].tags[TAG_REASON]


def shadow_settings(tmp_path):
    return make_settings(tmp_path, gates=LOOSE, deployment={"shadow": True, "shadow_min_samples": 100})


def test_shadow_candidate_is_promoted_only_after_scoring_live_traffic(tmp_path, harness_for):
    from retrain_assets.defs.deployment.shadow import shadow_job_name

    h = harness_for(shadow_settings(tmp_path))
    h.traffic(3000)
    assert h.retrain().success  # the first model has nothing to shadow: promoted directly
    h.traffic(1000, serve=True)
    h.traffic(2000)
    assert h.retrain(event=True).success
    registry = h.store.registry
    assert (registry.production("churn").version, registry.with_status("churn", "shadow").version) == (1, 2)
    production_key = h.defs.resolve_assets_def(["churn", "production_model"]).key
    assert h.instance.get_latest_materialization_event(production_key).asset_materialization.metadata[
        "promoted_version"].value == "v1"  # the shadow did not materialize production_model
    waiting = h.sensor_tick("churn_shadow_sensor")
    assert not waiting.run_requests and "0 of 100 labeled shadowed requests" in waiting.skip_message
    h.traffic(300, serve=True)  # production answers, v2 scores the same requests in shadow
    tick = h.sensor_tick("churn_shadow_sensor")
    assert len(tick.run_requests) == 1, tick.skip_message
    assert h.run(shadow_job_name("churn"), tags=tick.run_requests[0].tags).success
    assert (registry.production("churn").version, registry.with_status("churn", "standby").version) == (2, 1)
    shadow_gate = registry.version("churn", 2).gate_results[-1]
    assert shadow_gate["name"] == "shadow_comparison" and shadow_gate["passed"] and shadow_gate["value"]["requests"] == 300
    event = h.store.events.recent("churn")[0]
    assert (event["execution_successful"], event["retraining_model_version"]) == (True, "v2")
    materialized = h.instance.get_latest_materialization_event(production_key).asset_materialization
    assert materialized.metadata["promoted_version"].value == "v2" and materialized.metadata["trigger"].value == "shadow"
    assert card_version(h) == "v2"  # the card describes the model promoted from shadow


def test_a_shadow_candidate_that_does_worse_on_the_same_requests_is_rejected(tmp_path, harness_for):
    from sqlalchemy import delete

    from retrain_assets.defs.deployment.shadow import shadow_job_name
    from retrain_assets.store.schema import shadow_predictions

    h = harness_for(shadow_settings(tmp_path))
    h.traffic(3000)
    assert h.retrain().success
    h.traffic(2000)
    assert h.retrain(event=True).success
    frame = h.traffic(300, serve=True)
    with h.store.engine.begin() as conn:  # construct a shadow that gets every request wrong
        conn.execute(delete(shadow_predictions))
    h.store.predictions.log_shadow("churn", 2, frame["request_id"], (1 - frame[h.model.target]).tolist())
    assert h.run(shadow_job_name("churn")).success
    assert h.store.registry.production("churn").version == 1
    rejected = h.store.registry.version("churn", 2)
    assert rejected.status == "rejected" and not rejected.gate_results[-1]["passed"]
    assert "shadow F1" in rejected.gate_results[-1]["message"]
    assert h.store.events.recent("churn")[0]["execution_successful"] is False
    assert h.sensor_tick("churn_shadow_sensor").skip_message == "churn has no candidate in shadow"


def canary_settings(tmp_path):
    return make_settings(tmp_path, gates=LOOSE, deployment={"strategy": "canary", "canary_steps": [0.2, 0.6, 1.0],
                                                           "watch_min_samples": 100})


def canary_started(harness_for, tmp_path):
    """v1 promoted directly (nothing to compare a canary with), then v2 in canary at 20 %."""
    h = harness_for(canary_settings(tmp_path))
    h.traffic(3000)
    assert h.retrain().success
    h.traffic(2000)
    result = h.retrain(event=True)
    assert result.success and result.promotion is not None and result.promotion.success
    return h, result


def canary_steps(h) -> list[tuple]:
    rows = [e for e in reversed(h.store.events.recent("churn")) if e["trigger_type"] == "canary_step"]
    return [(e["trigger_metrics"]["outcome"], e["trigger_metrics"]["share"]) for e in rows]


def test_a_canary_steps_through_its_shares_and_is_promoted_at_the_last(tmp_path, harness_for):
    from retrain_assets.defs.deployment.canary import canary_job_name
    from retrain_assets.defs.triggers.requests import stale_claim
    from retrain_assets.serving.routing import routes_to_canary

    h, result = canary_started(harness_for, tmp_path)
    registry = h.store.registry
    canary = registry.with_status("churn", "canary")
    assert (registry.production("churn").version, canary.version, canary.traffic_share) == (1, 2, 0.2)
    production_key = h.defs.resolve_assets_def(["churn", "production_model"]).key
    assert h.instance.get_latest_materialization_event(production_key).asset_materialization.metadata[
        "promoted_version"].value == "v1"  # the canary is not production yet
    observed = [e.event_specific_data.asset_observation for e in result.promotion.all_events
                if e.event_type_value == "ASSET_OBSERVATION"]
    assert [(o.metadata["canary_version"].value, o.metadata["canary_share"].value) for o in observed] == [("v2", 0.2)]
    assert canary_steps(h) == [("started", 0.2)]
    card = h.instance.get_latest_materialization_event(h.defs.resolve_assets_def(["churn", "model_card"]).key)
    assert "canary: v2 answers 20 % of live requests" in card.asset_materialization.metadata["card"].value
    smoke = next(g for g in canary.gate_results if g["name"] == "serving_smoke_test")  # before any traffic
    assert smoke["passed"] and smoke["value"]["answered"] == 100
    claim = h.store.events.open_claim("churn")  # the retrain's event stays open (one retrain at a time) ...
    assert claim is not None and stale_claim(h.instance, h.store, h.model, claim, claim["triggered_at"]) is None
    assert "0 of 100 labeled requests" in h.sensor_tick("churn_canary_sensor").skip_message

    frame = h.traffic(800, serve=True)  # each row is a request: about 20 % go to v2, chosen by request id
    routed = sum(routes_to_canary(i, 0.2) for i in frame["request_id"])
    assert abs(routed - 160) < 4 * (800 * 0.2 * 0.8) ** 0.5  # binomial tolerance
    logged = h.store.predictions.served_outcomes("churn", 2, last_rows=10_000)
    assert len(logged) == routed  # exactly the routed rows were answered (and logged) by the canary
    tick = h.sensor_tick("churn_canary_sensor")
    assert len(tick.run_requests) == 1, tick.skip_message
    assert h.run(canary_job_name("churn"), tags=tick.run_requests[0].tags).success
    assert registry.with_status("churn", "canary").traffic_share == 0.6
    assert card_version(h) == "v1"  # the card names the canary beside production
    card = h.instance.get_latest_materialization_event(h.defs.resolve_assets_def(["churn", "model_card"]).key)
    assert "canary: v2 answers 60 % of live requests" in card.asset_materialization.metadata["card"].value
    assert "0 of 100 labeled requests" in h.sensor_tick("churn_canary_sensor").skip_message  # a new step, new evidence

    h.traffic(400, serve=True)
    tick = h.sensor_tick("churn_canary_sensor")
    assert len(tick.run_requests) == 1, tick.skip_message
    assert h.run(canary_job_name("churn"), tags=tick.run_requests[0].tags).success
    assert (registry.production("churn").version, registry.with_status("churn", "standby").version) == (2, 1)
    assert registry.with_status("churn", "canary") is None
    assert canary_steps(h) == [("started", 0.2), ("advanced", 0.6), ("promoted", 1.0)]
    gate = registry.version("churn", 2).gate_results[-1]
    assert gate["name"] == "canary" and gate["passed"] and gate["value"]["share"] == 0.6
    event = h.store.events.get(claim["id"])
    assert (event["execution_successful"], event["retraining_model_version"]) == (True, "v2")
    materialized = h.instance.get_latest_materialization_event(production_key).asset_materialization
    assert materialized.metadata["promoted_version"].value == "v2" and materialized.metadata["trigger"].value == "canary"
    assert card_version(h) == "v2"
    assert h.sensor_tick("churn_canary_sensor").skip_message == "churn has no candidate in canary"
    watch = h.sensor_tick("churn_post_deploy_watch")  # it judges what v2 serves from its promotion on ...
    assert not watch.run_requests and "0 labeled live predictions so far" in watch.skip_message  # ... not its canary days


def test_a_canary_that_does_worse_than_production_over_the_same_requests_is_rolled_back(tmp_path, harness_for):
    import numpy as np

    from retrain_assets.defs.deployment.canary import canary_job_name
    from retrain_assets.serving.routing import routes_to_canary

    h, _ = canary_started(harness_for, tmp_path)
    claim = h.store.events.open_claim("churn")
    frame = h.traffic(1000, serve=True, label=False)
    to_canary = np.array([routes_to_canary(i, 0.2) for i in frame["request_id"]])
    truth = frame[h.model.target].to_numpy()
    h.store.predictions.log_labels("churn", frame["request_id"].tolist(), np.where(to_canary, 1 - truth, truth).tolist())
    tick = h.sensor_tick("churn_canary_sensor")
    assert len(tick.run_requests) == 1, tick.skip_message
    assert h.run(canary_job_name("churn"), tags=tick.run_requests[0].tags).success
    registry = h.store.registry
    rejected = registry.version("churn", 2)
    assert rejected.status == "rejected" and registry.production("churn").version == 1
    assert not rejected.gate_results[-1]["passed"] and "canary F1" in rejected.gate_results[-1]["message"]
    assert canary_steps(h) == [("started", 0.2), ("rolled_back", 0.2)]
    assert h.store.events.get(claim["id"])["execution_successful"] is False
    assert h.store.events.open_claim("churn") is None  # the next retrain may start
    h.traffic(200, serve=True)
    assert len(h.store.predictions.served_outcomes("churn", 2, last_rows=10_000)) == int(to_canary.sum())  # no more


def test_a_canary_a_server_saw_fail_is_rolled_back_without_waiting_for_labels(tmp_path, harness_for):
    from retrain_assets.defs.deployment.canary import canary_job_name
    from retrain_assets.serving.routing import record_canary_failure

    h, _ = canary_started(harness_for, tmp_path)
    canary = h.store.registry.with_status("churn", "canary")
    record_canary_failure(h.store, "churn", canary, "ValueError: a category it cannot encode", 3)  # as a server does
    tick = h.sensor_tick("churn_canary_sensor")
    assert len(tick.run_requests) == 1 and "failed 1 request" in tick.run_requests[0].tags[TAG_REASON]
    assert h.run(canary_job_name("churn"), tags=tick.run_requests[0].tags).success
    rejected = h.store.registry.version("churn", 2)
    assert rejected.status == "rejected" and "failed to score 1 request" in rejected.gate_results[-1]["message"]
    assert h.store.registry.production("churn").version == 1


def test_a_candidate_that_fails_the_serving_smoke_test_never_takes_traffic(tmp_path, harness_for):
    """Its training gates passed, but through the serving path its scores leave [0, 1]: the promote run
    fails, the candidate is rejected with the smoke test's result, its event is failed, production stays."""
    from sqlalchemy import update

    from retrain_assets.defs.deployment.promotion import promotion_request
    from retrain_assets.defs.keys import promote_job_name, retrain_job_name
    from retrain_assets.store.schema import model_versions
    from tests.serving.test_smoke import Overconfident

    h = harness_for(loose_settings(tmp_path))
    h.traffic(3000)
    assert h.retrain().success
    h.traffic(2000)
    event_id = h.store.events.record_trigger("churn", trigger_type="manual", severity="LOW", reason="test")
    retrain = h.defs.resolve_job_def(retrain_job_name("churn")).execute_in_process(
        instance=h.instance, tags={"retrain/model": "churn", "retrain/event_id": str(event_id)}, raise_on_error=False)
    assert retrain.success
    candidate = h.store.registry.version("churn", 2)
    broken = h.artifacts.put_model(Overconfident(h.artifacts.load_model(candidate.artifact_key, candidate.artifact_sha256)))
    with h.store.engine.begin() as conn:  # the same candidate, its artifact now scoring out of range
        conn.execute(update(model_versions).where(model_versions.c.model_name == "churn", model_versions.c.version == 2)
                     .values(artifact_key=broken.key, artifact_sha256=broken.sha256))
    request = promotion_request(h.store, h.model, h.instance.get_run_by_id(retrain.run_id))
    promotion = h.defs.resolve_job_def(promote_job_name("churn")).execute_in_process(
        instance=h.instance, tags=request.tags, raise_on_error=False)
    assert not promotion.success
    rejected = h.store.registry.version("churn", 2)
    assert rejected.status == "rejected" and rejected.gate_results[-1]["name"] == "serving_smoke_test"
    assert "outside [0, 1]" in rejected.gate_results[-1]["message"]
    assert h.store.registry.production("churn").version == 1
    event = h.store.events.get(event_id)
    assert event["execution_successful"] is False and event["execution_metrics"]["failed_gates"] == ["serving_smoke_test"]


def test_a_failed_step_run_is_retried_and_one_step_run_at_a_time(tmp_path, harness_for):
    from retrain_assets.defs.deployment.canary import TAG_CANARY_STEP, canary_job_name

    h, _ = canary_started(harness_for, tmp_path)
    h.traffic(800, serve=True)
    first = h.sensor_tick("churn_canary_sensor").run_requests[0]
    assert first.run_key.endswith("-try1")
    job = h.defs.resolve_job_def(canary_job_name("churn"))
    assert job.tags["retrain/concurrency"] == "churn"  # queued behind the model's other runs, one at a time
    run = h.instance.create_run_for_job(job, tags=first.tags)  # launched, not started yet
    assert "already queued or running" in h.sensor_tick("churn_canary_sensor").skip_message
    h.instance.report_run_failed(run)  # it failed (the database was away, say): the step is asked again
    again = h.sensor_tick("churn_canary_sensor").run_requests[0]
    assert again.run_key.endswith("-try2") and again.tags[TAG_CANARY_STEP] == first.tags[TAG_CANARY_STEP]
    assert h.run(canary_job_name("churn"), tags=again.tags).success


def test_a_canary_without_evidence_rolls_back_after_canary_max_hours(tmp_path, harness_for):
    import datetime as dt

    from sqlalchemy import update

    from retrain_assets.defs.deployment.canary import canary_job_name
    from retrain_assets.store.schema import model_versions

    h, _ = canary_started(harness_for, tmp_path)
    assert "0 of 100 labeled requests" in h.sensor_tick("churn_canary_sensor").skip_message
    with h.store.engine.begin() as conn:  # three days without a label for it (its servers could not load it, say)
        conn.execute(update(model_versions).where(model_versions.c.version == 2).values(
            step_started_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=73)))
    tick = h.sensor_tick("churn_canary_sensor")
    assert len(tick.run_requests) == 1 and "not judged within canary_max_hours" in tick.run_requests[0].tags[TAG_REASON]
    assert h.run(canary_job_name("churn"), tags=tick.run_requests[0].tags).success
    rejected = h.store.registry.version("churn", 2)
    assert rejected.status == "rejected" and "not judged within canary_max_hours (72 h)" in rejected.gate_results[-1]["message"]
    assert h.store.events.open_claim("churn") is None  # the model may retrain again


def test_a_canary_latency_spike_rolls_back_without_waiting_for_labels(tmp_path, harness_for):
    from retrain_assets.defs.deployment.canary import canary_job_name
    from retrain_assets.simulate import generate_traffic

    h, _ = canary_started(harness_for, tmp_path)
    for index in range(25):  # 25 timed requests of each version, no label yet
        for version, latency in ((1, 8.0 + index / 100), (2, 900.0 + index)):
            frame = generate_traffic(2, seed=100 + index, id_prefix=f"lat{version}-{index}-")
            h.store.predictions.log_predictions("churn", frame, h.model.feature_names, prediction=[0, 0],
                                                model_version=version, latency_ms=latency)
    tick = h.sensor_tick("churn_canary_sensor")
    assert len(tick.run_requests) == 1 and "p99 latency" in tick.run_requests[0].tags[TAG_REASON], tick.skip_message
    assert h.run(canary_job_name("churn"), tags=tick.run_requests[0].tags).success
    assert h.store.registry.version("churn", 2).status == "rejected"
