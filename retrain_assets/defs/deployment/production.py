"""``production_model``: the promotion step, materialized by the ``<model>_promote`` run that the promotion
sensor launches once a retrain run's candidate passed every blocking gate. Its history is the promotion
log; a rejected candidate never plans it, so the lineage keeps production green and unchanged."""

import dagster as dg

from retrain_assets.defs.deployment.assets import model_card_materialization
from retrain_assets.defs.deployment.canary import start_canary
from retrain_assets.defs.deployment.promotion import promote_candidate, promotion_refusal
from retrain_assets.defs.keys import TAG_CANDIDATE_RUN, asset_key, promote_job_name, retrain_job_name, run_trigger
from retrain_assets.config.serving import ServingSettings
from retrain_assets.defs.resources import ArtifactStoreResource, MonitoringStoreResource
from retrain_assets.defs.training.candidate import own_candidate
from retrain_assets.defs.triggers.requests import event_of_run, fail_retrain
from retrain_assets.errors import StoreError
from retrain_assets.serving.smoke import serving_smoke_test, smoke_samples
from retrain_assets.settings import ModelSettings


def smoke_through_serving(context, store, artifacts, model: ModelSettings, candidate, serving: ServingSettings):
    """The serving smoke test before the candidate takes any traffic; its result joins the candidate's gates
    (the model card lists it). A failure rejects the candidate, fails its retrain event and this run:
    production stays as it is. Returns the candidate as the registry now holds it."""
    requests = model.deployment.serving_smoke_requests
    if not requests:
        return candidate
    samples = smoke_samples(store, artifacts, model, candidate, requests)
    smoke = serving_smoke_test(model, serving, artifacts, candidate, samples, model.gates.max_latency_p99_s)
    store.registry.record_gates(model.name, candidate.version, [*(candidate.gate_results or []), smoke.to_dict()],
                                smoke.passed)
    if not smoke.passed:
        event_id = event_of_run(store, context.run)
        if event_id:
            fail_retrain(store, model, int(event_id), retraining_model_version=candidate.label,
                         execution_metrics={"failed_gates": [smoke.name], smoke.name: smoke.message})
        production = store.registry.production(model.name)
        raise dg.Failure(
            description=f"{model.name} {candidate.label} rejected before taking traffic: {smoke.message}; production "
                        f"stays {production.label if production else 'empty'}",
            metadata={"gate": smoke.name, "value": dg.MetadataValue.json(smoke.value)})
    context.log.info(f"{model.name} {candidate.label}: {smoke.message}")
    return store.registry.version(model.name, candidate.version)


def build_production_model(model: ModelSettings, serving: ServingSettings) -> dg.AssetsDefinition:
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
            + (" Canary deployment is on: a gated candidate first answers a growing share of live requests "
               f"({', '.join(f'{100 * s:g} %' for s in model.deployment.canary_steps)}); the {model.name}_canary_step "
               "job promotes it at the last step or rolls it back." if model.deployment.strategy == "canary" else "")
        ),
        kinds={"scikitlearn"},
        owners=list(model.owners),
        tags={"domain": "deployment"},
        output_required=False,  # nothing materializes while the candidate is in shadow or in canary
    )
    def production_model(context: dg.AssetExecutionContext, monitoring_store: MonitoringStoreResource,
                         artifact_store: ArtifactStoreResource):
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
        candidate = smoke_through_serving(context, store, artifact_store.get(), model, candidate, serving)
        has_production = store.registry.production(model.name) is not None
        if model.deployment.strategy == "canary" and has_production and model.deployment.canary_steps[0] < 1.0:
            observation = start_canary(store, model, candidate)
            context.log.info(observation.description)
            context.log_event(observation)
            context.log_event(model_card_materialization(store, artifact_store.get(), model, observation.description))
            return
        if model.deployment.shadow and has_production:
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
