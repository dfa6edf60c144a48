"""Canary deployment: a gated candidate answers a growing share of live requests before it replaces production.

With ``deployment.strategy: canary`` the promote run's ``production_model`` step (once a production model
exists) puts the gated candidate in *canary* at the first of ``canary_steps`` (5 %) instead of promoting
it. Every server routes that share of request ids to it (deterministically: a retried request lands on the
same version). The ``<model>_canary_sensor`` counts the canary's labeled requests since its step began;
with ``watch_min_samples`` of them, or as soon as a server reported that the canary failed a request, it
launches ``<model>_canary_step``, which judges the step on the post-deploy watch's criteria (the canary
against production on the requests each answered since the step began, plus the absolute floors) and then
moves the canary to its next share, promotes it at the last one (100 %), or rolls it back (rejected, with
the comparison as its ``canary`` gate result; production alone answers again).

Every step is an event row (``trigger_type`` ``canary_step``), an observation of ``production_model`` and a
run in the UI; the model card names the canary and its share.
"""

import datetime as dt

import dagster as dg

from retrain_assets.defs.automation import model_sensor
from retrain_assets.defs.deployment.assets import model_card_materialization
from retrain_assets.defs.deployment.promotion import promote_candidate, promotion_refusal
from retrain_assets.defs.keys import TAG_CONCURRENCY, TAG_MODEL, TAG_REASON, TAG_TRIGGER, asset_key, short
from retrain_assets.defs.resources import ArtifactStoreResource, MonitoringStoreResource
from retrain_assets.defs.triggers.requests import IN_FLIGHT, fail_retrain
from retrain_assets.errors import StoreError
from retrain_assets.monitoring.watch import Verdict, canary_verdict
from retrain_assets.notify import Notifier
from retrain_assets.serving.routing import CANARY_FAILURE
from retrain_assets.settings import ModelSettings
from retrain_assets.store import ModelVersion, MonitoringStore

CANARY_GATE = "canary"
TAG_CANARY_STEP = "retrain/canary_step"  # the step a canary step run judges (version@share@evidence line)
STEP_TRIGGER = "canary_step"  # trigger_type of the event rows that record each canary step


class CanaryStepRequest(dg.Config):
    """A person's override (the launchpad, or ``retrain canary abort``): with ``abort_reason`` the canary is
    rolled back now, whatever its evidence says."""

    abort_reason: str = ""
    requester: str = ""


def canary_job_name(model_name: str) -> str:
    return f"{model_name}_canary_step"


def percent(share: float | None) -> str:
    return f"{100 * (share or 0):g} %"


def next_share(model: ModelSettings, share: float | None) -> float:
    """The step after ``share`` (1.0, the promotion, after the last partial one)."""
    return next((s for s in model.deployment.canary_steps if s > (share or 0) + 1e-12), 1.0)


def expired(model: ModelSettings, canary: ModelVersion, now: dt.datetime | None = None) -> bool:
    """The step began more than canary_max_hours ago (and is still not judged: it is rolled back)."""
    started = canary.step_started_at or canary.created_at
    return (now or dt.datetime.now(dt.timezone.utc)) - started > dt.timedelta(hours=model.deployment.canary_max_hours)


def canary_failures(store: MonitoringStore, model: ModelSettings, canary: ModelVersion) -> list[dict]:
    """The failures servers reported for this canary (event rows written since it was trained)."""
    return [e for e in store.events.of_type(model.name, CANARY_FAILURE, since=canary.created_at)
            if (e["trigger_metrics"] or {}).get("version") == canary.label]


def record_step(store: MonitoringStore, model: ModelSettings, canary: ModelVersion, outcome: str, message: str,
                share: float | None, severity: str = "LOW") -> dg.AssetObservation:
    """One canary step as an event row and as an observation of production_model (the UI's history)."""
    metrics = {"version": canary.label, "outcome": outcome, "share": share}
    store.events.record_trigger(model.name, trigger_type=STEP_TRIGGER, severity=severity, reason=message,
                                attempted=False, metrics=metrics)
    return dg.AssetObservation(asset_key=asset_key(model.name, "production_model"), description=message,
                               metadata={"canary_version": canary.label, "canary_outcome": outcome,
                                         "canary_share": share if share is not None else 0.0,
                                         "message": dg.MetadataValue.text(message)})


def start_canary(store: MonitoringStore, model: ModelSettings, candidate: ModelVersion) -> dg.AssetObservation:
    """The first step: the gated candidate answers the first of canary_steps."""
    share = model.deployment.canary_steps[0]
    replaced = store.registry.start_canary(model.name, candidate.version, share, store.predictions.newest_id(model.log_key))
    message = (f"{model.name} {candidate.label} passed its gates and answers {percent(share)} of live requests as a "
               f"canary{f' (replacing {replaced.label})' if replaced else ''}; each step needs "
               f"{model.deployment.watch_min_samples} labeled requests")
    return record_step(store, model, candidate, "started", message, share)


def judge_step(store: MonitoringStore, model: ModelSettings, canary: ModelVersion, production: ModelVersion,
               failures: list[dict]) -> Verdict:
    """The canary against production on the requests each answered since the step began (``failures``: the
    failures servers reported for it, from :func:`canary_failures`)."""
    after, window, log = canary.step_log_id or 0, model.monitoring.window_rows, store.predictions
    mine = log.served_outcomes(model.log_key, canary.version, last_rows=window, after_id=after).dropna(subset=["prediction", "label"])
    theirs = log.served_outcomes(model.log_key, production.version, last_rows=window, after_id=after).dropna(
        subset=["prediction", "label"])
    return canary_verdict(
        mine["prediction"], mine["label"], theirs["prediction"], theirs["label"], model.task, model.deployment,
        model.positive_label,
        canary_latency_ms=log.served_latencies(model.log_key, canary.version, last_rows=window, after_id=after),
        production_latency_ms=log.served_latencies(model.log_key, production.version, last_rows=window, after_id=after),
        failures=len(failures))


def build_canary_job(model: ModelSettings) -> dg.JobDefinition:
    settings = model.deployment

    @dg.op(name=f"{model.name}_judge_canary_step",
           description="Judges the canary's current step against production on the same period of live traffic: "
                       "moves it to its next share, promotes it at the last, or rolls it back.")
    def judge_canary_step(context: dg.OpExecutionContext, config: CanaryStepRequest,
                          monitoring_store: MonitoringStoreResource, artifact_store: ArtifactStoreResource):
        store = monitoring_store.get()
        canary = store.registry.with_status(model.name, "canary")
        production = store.registry.production(model.name)
        if canary is None or production is None:
            raise StoreError(f"{model.name} has no candidate in canary: a retrain with deployment.strategy: canary "
                             "puts one there once a production model exists")
        verdict = judge_step(store, model, canary, production, canary_failures(store, model, canary))
        if config.abort_reason:
            verdict = Verdict(True, True, f"aborted by {config.requester or 'a person'}: {config.abort_reason}")
        if not verdict.judged and expired(model, canary):
            verdict = Verdict(True, True, f"its step was not judged within canary_max_hours "
                                          f"({settings.canary_max_hours:g} h): {verdict.message} (are labels arriving, "
                                          "can the servers load it?)")
        if not verdict.judged:
            raise StoreError(f"{model.name} {canary.label}'s step at {percent(canary.traffic_share)} cannot be judged "
                             f"yet: {verdict.message}; the {model.name}_canary_sensor launches this job when it can")
        event_id = store.events.for_run(canary.run_id) if canary.run_id else None
        following = next_share(model, canary.traffic_share)
        refusal = promotion_refusal(store, model, canary, event_id) if following >= 1.0 and not verdict.worse else None
        gate = {"name": CANARY_GATE, "passed": not (verdict.worse or refusal), "applicable": True,
                "message": refusal or verdict.message,
                "value": {"share": canary.traffic_share, **{f"canary_{k}": v for k, v in verdict.new.items()},
                          **{f"production_{k}": v for k, v in verdict.old.items()}},
                "threshold": {"max_f1_drop": settings.watch_f1_drop, "max_mae_increase": settings.watch_mae_increase,
                              "min_accuracy": settings.rollback_min_accuracy,
                              "max_latency_ms": settings.rollback_max_latency_ms}}
        if verdict.worse or refusal:
            if not store.registry.record_gates(model.name, canary.version, [*(canary.gate_results or []), gate], False,
                                               expected_status="canary"):
                raise StoreError(f"{model.name} {canary.label} is no longer in canary: another run decided on it meanwhile")
            if event_id:
                fail_retrain(store, model, event_id, retraining_model_version=canary.label,
                             execution_metrics={"failed_gates": [CANARY_GATE], "canary": gate["message"]})
            message = (f"{model.name} canary {canary.label} rolled back at {percent(canary.traffic_share)}: "
                       f"{gate['message']}; production {production.label} answers every request again")
            Notifier().notify(message, model=model.name, candidate=canary.label)
            context.log.warning(message)
            context.log_event(record_step(store, model, canary, "rolled_back", message, canary.traffic_share, "HIGH"))
            context.log_event(model_card_materialization(store, artifact_store.get(), model, message))
            return dg.Output(f"rolled back {canary.label}", metadata={"verdict": dg.MetadataValue.text(message)})
        if following < 1.0:
            store.registry.step_canary(model.name, canary.version, following, store.predictions.newest_id(model.log_key))
            message = (f"{model.name} canary {canary.label} passed its step at {percent(canary.traffic_share)} "
                       f"({verdict.message}); it now answers {percent(following)} of live requests")
            context.log.info(message)
            context.log_event(record_step(store, model, canary, "advanced", message, following))
            context.log_event(model_card_materialization(store, artifact_store.get(), model, message))
            return dg.Output(f"{canary.label} at {percent(following)}", metadata={"verdict": dg.MetadataValue.text(message)})
        # The last step: the evidence line moves to now (the post-deploy watch judges what it serves from here
        # on, not what it served as a canary), then the promotion, refused if another run decided meanwhile.
        store.registry.step_canary(model.name, canary.version, 1.0, store.predictions.newest_id(model.log_key))
        store.registry.record_gates(model.name, canary.version, [*(canary.gate_results or []), gate], True)
        promoted = store.registry.version(model.name, canary.version)
        previous, metadata = promote_candidate(store, model, promoted, context.run.run_id, event_id, "canary",
                                               verdict.message, from_status="canary")
        message = (f"{model.name} canary {canary.label} passed its step at {percent(canary.traffic_share)} "
                   f"({verdict.message}): promoted, it answers every request (previous: "
                   f"{previous.label if previous else 'none'}, now the standby)")
        context.log.info(message)
        context.log_event(record_step(store, model, canary, "promoted", message, 1.0))
        context.log_event(dg.AssetMaterialization(
            asset_key=asset_key(model.name, "production_model"), description=f"promoted {canary.label} after its canary",
            metadata={**metadata, "canary": dg.MetadataValue.text(message)}))
        context.log_event(model_card_materialization(store, artifact_store.get(), model,
                                                     f"promoted {canary.label} after its canary"))
        return dg.Output(f"promoted {canary.label}", metadata={"verdict": dg.MetadataValue.text(message)})

    @dg.job(name=canary_job_name(model.name), tags={TAG_MODEL: model.name, TAG_CONCURRENCY: model.name},
            description=f"Judge {model.name}'s canary step: advance it, promote it at the last step, or roll it back.")
    def canary_job():
        judge_canary_step()

    return canary_job


def canary_request(store: MonitoringStore, model: ModelSettings,
                   instance: dg.DagsterInstance | None = None) -> dg.RunRequest | dg.SkipReason:
    """The canary step's run once the step has its evidence, or at once when the canary failed a request, its
    latency or an absolute criterion already fails without labels, or the step expired; else why not.

    One step run at a time: none is requested while one is queued or running. A step run that failed
    (the database away, say) is retried at the next evaluation: the run key counts the step's earlier runs."""
    canary = store.registry.with_status(model.name, "canary")
    if canary is None:
        return dg.SkipReason(f"{model.name} has no candidate in canary")
    started = canary.step_started_at or canary.created_at
    step = f"{canary.label}@{canary.traffic_share}@{canary.step_log_id or 0}"
    earlier = []
    if instance is not None:
        earlier = instance.get_run_records(dg.RunsFilter(job_name=canary_job_name(model.name), tags={TAG_CANARY_STEP: step}))
        if any(r.dagster_run.status in IN_FLIGHT for r in earlier):
            return dg.SkipReason(f"a step run of canary {canary.label} is already queued or running")

    def request(reason: str) -> dg.RunRequest:
        return dg.RunRequest(run_key=f"canary-{step}-try{len(earlier) + 1}",
                             tags={TAG_MODEL: model.name, TAG_TRIGGER: "canary", TAG_REASON: short(reason),
                                   TAG_CANARY_STEP: step})

    failed = canary_failures(store, model, canary)
    if failed:
        return request(f"canary {canary.label} failed {len(failed)} request(s): {failed[0]['trigger_reason']}")
    need = model.deployment.watch_min_samples
    labeled = store.predictions.count_served_labeled(model.log_key, canary.version, canary.step_log_id or 0, cap=need)
    if labeled >= need:
        return request(f"canary {canary.label} answered {labeled} labeled requests at {percent(canary.traffic_share)}")
    if expired(model, canary):
        return request(f"canary {canary.label}'s step at {percent(canary.traffic_share)} was not judged within "
                       f"canary_max_hours ({model.deployment.canary_max_hours:g} h)")
    production = store.registry.production(model.name)
    early = judge_step(store, model, canary, production, failed) if production is not None else None
    if early is not None and early.worse:  # a latency spike or an absolute criterion needs no label
        return request(f"canary {canary.label} at {percent(canary.traffic_share)}: {early.message}")
    since = dt.datetime.now(dt.timezone.utc) - started
    return dg.SkipReason(f"canary {canary.label} at {percent(canary.traffic_share)}: {labeled} of {need} labeled "
                         f"requests since its step began ({since.total_seconds() / 60:.0f} min ago)")


def build_canary_sensor(model: ModelSettings) -> dg.SensorDefinition:
    @model_sensor(
        model,
        name=f"{model.name}_canary_sensor",
        job_name=canary_job_name(model.name),
        description=(f"Launches {canary_job_name(model.name)} when {model.name}'s canary has "
                     f"{model.deployment.watch_min_samples} labeled requests at its current step (a capped count: "
                     "cheap), or at once when a server reported that the canary failed a request."),
    )
    def canary_sensor(context: dg.SensorEvaluationContext, monitoring_store: MonitoringStoreResource):
        return canary_request(monitoring_store.get(), model, context.instance)

    return canary_sensor
