"""``production_model``: the promotion step, materialized by the ``<model>_promote`` run that the promotion
sensor launches once a retrain run's candidate passed every blocking gate. Its history is the promotion
log; a rejected candidate never plans it, so the lineage keeps production green and unchanged."""

import dagster as dg

from retrain_assets.defs.deployment.promotion import promote_candidate
from retrain_assets.defs.keys import TAG_CANDIDATE_RUN, asset_key, promote_job_name, retrain_job_name, run_trigger
from retrain_assets.defs.resources import MonitoringStoreResource
from retrain_assets.defs.training.candidate import own_candidate
from retrain_assets.defs.triggers.requests import event_of_run
from retrain_assets.errors import StoreError
from retrain_assets.settings import ModelSettings


def promotion_refusal(store, model: ModelSettings, candidate, event_id) -> str | None:
    """Why a gated candidate may no longer be promoted, or None: production changed since its gates
    compared it (it was never judged against the model it would replace), or its retrain event was closed
    while the promotion waited (the claim was released, e.g. after run_timeout_minutes)."""
    production = store.registry.production(model.name)
    current = production.version if production is not None else None
    compared = {g["production_version"] for g in candidate.gate_results or [] if "production_version" in g}
    if compared and compared != {current}:
        then = ", ".join(f"v{v}" if v else "none" for v in sorted(compared, key=lambda v: v or 0))
        return (f"not promoting {model.name} {candidate.label}: its gates compared it with production {then}, but production "
                f"is {production.label if production else 'none'} now; launch {retrain_job_name(model.name)} to train and "
                "gate a candidate against the current model")
    event = store.events.get(int(event_id)) if event_id else None
    if event is not None and event["execution_completed_at"] is not None and not event["execution_successful"]:
        why = (event.get("execution_metrics") or {}).get("error", "it was closed")
        return (f"not promoting {model.name} {candidate.label}: its retrain event #{event_id} was closed while the promotion "
                f"waited ({why}); launch {retrain_job_name(model.name)} again")
    return None


def build_production_model(model: ModelSettings) -> dg.AssetsDefinition:
    """The model's production_model asset."""
    candidate_key = asset_key(model.name, "candidate_model")
    production_key = asset_key(model.name, "production_model")

    @dg.asset(
        key=production_key,
        group_name=model.name,
        deps=[candidate_key],
        description=(
            f"The model serving `{model.name}`. Materializes only when a candidate passed every gate and was "
            "promoted (blue/green: the previous one stays as standby for instant rollback), so its history "
            "is the promotion log."
            + (" Shadow evaluation is on: a gated candidate first scores live traffic beside production and "
               f"the {model.name}_shadow_decision job promotes it if it does no worse." if model.deployment.shadow else "")
        ),
        kinds={"scikitlearn"},
        owners=list(model.owners),
        tags={"domain": "deployment"},
        output_required=False,  # nothing materializes while the candidate is in shadow
    )
    def production_model(context: dg.AssetExecutionContext, monitoring_store: MonitoringStoreResource):
        store = monitoring_store.get()
        candidate = own_candidate(store, model, context.run)
        gated = candidate is not None and candidate.gate_results is not None and all(
            g.get("passed") for g in candidate.gate_results)
        if candidate is None or candidate.status != "candidate" or not gated:
            raise StoreError(
                f"this run has no gated candidate of model {model.name} to promote: production_model promotes only the "
                f"candidate of the retrain run named by its {TAG_CANDIDATE_RUN} tag, once that candidate passed every "
                f"gate, never an older one; launch {retrain_job_name(model.name)} (its promotion sensor launches "
                f"{promote_job_name(model.name)} when the gates pass)"
            )
        refusal = promotion_refusal(store, model, candidate, event_of_run(store, context.run))
        if refusal:
            raise StoreError(refusal)
        if model.deployment.shadow and store.registry.production(model.name) is not None:
            replaced = store.registry.start_shadow(model.name, candidate.version)
            context.log.info(
                f"{model.name} {candidate.label} passed its gates and now scores live traffic in shadow"
                f"{f' (replacing {replaced.label})' if replaced else ''}; the {model.name}_shadow_sensor launches "
                f"the decision after {model.deployment.shadow_min_samples} labeled shadowed requests"
            )
            return
        trigger, reason = run_trigger(context.run.tags)
        previous, metadata = promote_candidate(store, model, candidate, context.run.run_id,
                                               event_of_run(store, context.run), trigger, reason)
        context.log.info(f"promoted {model.name} {candidate.label} (previous: {previous.label if previous else 'none'})")
        yield dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(candidate.artifact_sha256))

    return production_model
