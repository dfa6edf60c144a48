"""Shadow evaluation: a gated candidate scores live traffic beside production before it may replace it.

With ``deployment.shadow: true`` the retrain job's ``production_model`` step puts a candidate that passed
its gates in *shadow* instead of promoting it. Serving (the API and the demo traffic) then scores every
request with it too and logs its predictions in ``shadow_predictions``. The sensor only counts labeled
shadowed requests; once there are ``shadow_min_samples`` it launches the decision job, which compares the
candidate and production on the same labeled requests (the post-deploy watch's tolerances) and promotes
the candidate or rejects it with the comparison as its ``shadow_comparison`` gate result.
"""

import dagster as dg

from retrain_assets.defs.automation import model_sensor
from retrain_assets.defs.deployment.promotion import promote_candidate
from retrain_assets.defs.keys import TAG_MODEL, TAG_REASON, TAG_TRIGGER, asset_key, short
from retrain_assets.defs.deployment.assets import model_card_materialization
from retrain_assets.defs.resources import ArtifactStoreResource, MonitoringStoreResource
from retrain_assets.defs.triggers.requests import fail_retrain
from retrain_assets.errors import StoreError
from retrain_assets.monitoring.watch import shadow_verdict
from retrain_assets.notify import Notifier
from retrain_assets.settings import ModelSettings

SHADOW_GATE = "shadow_comparison"


def shadow_job_name(model_name: str) -> str:
    return f"{model_name}_shadow_decision"


def build_shadow_job(model: ModelSettings) -> dg.JobDefinition:
    settings = model.deployment

    @dg.op(name=f"{model.name}_judge_shadow",
           description="Compares the candidate in shadow with production on the same labeled requests; promotes "
                       "it if it does no worse, rejects it otherwise.")
    def judge_shadow(context: dg.OpExecutionContext, monitoring_store: MonitoringStoreResource,
                     artifact_store: ArtifactStoreResource):
        store = monitoring_store.get()
        shadow = store.registry.with_status(model.name, "shadow")
        if shadow is None:
            raise StoreError(f"{model.name} has no candidate in shadow: a retrain with deployment.shadow on puts one there")
        outcomes = store.predictions.shadow_outcomes(model.log_key, shadow.version, last_rows=model.monitoring.window_rows)
        outcomes = outcomes.dropna(subset=["shadow_prediction", "prediction", "label"])
        verdict = shadow_verdict(outcomes["shadow_prediction"], outcomes["prediction"], outcomes["label"], model.task,
                                 settings, model.positive_label)
        if not verdict.judged:
            raise StoreError(f"{model.name} {shadow.label} cannot be judged yet: {verdict.message}; the "
                             f"{model.name}_shadow_sensor launches this job when there are enough")
        gate = {"name": SHADOW_GATE, "passed": not verdict.worse, "applicable": True, "message": verdict.message,
                "value": {**{f"shadow_{k}": v for k, v in verdict.new.items()},
                          **{f"production_{k}": v for k, v in verdict.old.items()}, "requests": len(outcomes)},
                "threshold": {"max_f1_drop": settings.watch_f1_drop, "max_mae_increase": settings.watch_mae_increase}}
        store.registry.record_gates(model.name, shadow.version, [*(shadow.gate_results or []), gate], not verdict.worse)
        event_id = store.events.for_run(shadow.run_id) if shadow.run_id else None
        if verdict.worse:
            if event_id:
                fail_retrain(store, model, event_id, retraining_model_version=shadow.label,
                             execution_metrics={"failed_gates": [SHADOW_GATE], "shadow": verdict.message})
            Notifier().notify(f"{model.name}: {shadow.label} rejected after shadow evaluation: {verdict.message}",
                              model=model.name, candidate=shadow.label)
            context.log.warning(f"{model.name} {shadow.label} rejected: {verdict.message}")
            return dg.Output(f"rejected {shadow.label}", metadata={"verdict": verdict.message})
        previous, metadata = promote_candidate(store, model, store.registry.version(model.name, shadow.version),
                                               context.run.run_id, event_id, "shadow", verdict.message)
        context.log.info(f"promoted {model.name} {shadow.label} after shadow evaluation (previous: "
                         f"{previous.label if previous else 'none'})")
        context.log_event(dg.AssetMaterialization(
            asset_key=asset_key(model.name, "production_model"),
            description=f"promoted {shadow.label} after shadow evaluation",
            metadata={**metadata, "shadow_comparison": dg.MetadataValue.text(verdict.message)},
        ))
        context.log_event(model_card_materialization(store, artifact_store.get(), model,
                                                     f"promoted {shadow.label} after shadow evaluation"))
        return dg.Output(f"promoted {shadow.label}", metadata={"verdict": verdict.message})

    @dg.job(name=shadow_job_name(model.name), tags={TAG_MODEL: model.name},
            description=f"Decide on {model.name}'s candidate in shadow: promote it or reject it.")
    def shadow_job():
        judge_shadow()

    return shadow_job


def build_shadow_sensor(model: ModelSettings) -> dg.SensorDefinition:
    settings = model.deployment

    @model_sensor(
        model,
        name=f"{model.name}_shadow_sensor",
        job_name=shadow_job_name(model.name),
        description=(f"Launches the shadow decision for {model.name} once its candidate in shadow has scored "
                     f"{settings.shadow_min_samples} labeled requests (a capped count: cheap)."),
    )
    def shadow_sensor(monitoring_store: MonitoringStoreResource):
        if not settings.shadow:
            return dg.SkipReason(f"shadow evaluation is off for {model.name} (deployment.shadow: false)")
        store = monitoring_store.get()
        shadow = store.registry.with_status(model.name, "shadow")
        if shadow is None:
            return dg.SkipReason(f"{model.name} has no candidate in shadow")
        labeled = store.predictions.count_shadow_labeled(model.log_key, shadow.version, cap=settings.shadow_min_samples)
        if labeled < settings.shadow_min_samples:
            return dg.SkipReason(f"{shadow.label} in shadow: {labeled} of {settings.shadow_min_samples} labeled "
                                 "shadowed requests so far")
        reason = f"{shadow.label} scored {labeled} labeled requests in shadow"
        return dg.RunRequest(run_key=f"shadow-{shadow.label}-{shadow.created_at:%Y%m%d%H%M%S}",
                             tags={TAG_MODEL: model.name, TAG_TRIGGER: "shadow", TAG_REASON: short(reason)})

    return shadow_sensor
