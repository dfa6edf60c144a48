"""Rollback: swap production and standby (launchpad job, `retrain rollback`, or the post-deploy watch).

The swap is one registry transaction; the job then records a production_model materialization so the
asset's history (the promotion log) shows the rollback, the refreshed model card, and an event row with
its reason.
"""

import dagster as dg

from retrain_assets.defs.keys import TAG_MODEL, TAG_REASON, TAG_ROLLBACK_FROM, TAG_TRIGGER, asset_key
from retrain_assets.defs.deployment.assets import model_card_materialization
from retrain_assets.defs.resources import ArtifactStoreResource, MonitoringStoreResource
from retrain_assets.errors import StoreError
from retrain_assets.notify import Notifier
from retrain_assets.settings import ModelSettings


class RollbackRequest(dg.Config):
    """Why the rollback is done (filled by the watch sensor, or by hand in the launchpad)."""

    reason: str = "rolled back by hand"
    requester: str = ""


def rollback_job_name(model_name: str) -> str:
    return f"{model_name}_rollback"


def build_rollback_job(model: ModelSettings) -> dg.JobDefinition:
    @dg.op(name=f"{model.name}_swap_production_and_standby",
           description="Makes the standby model production again and the current one standby, atomically.")
    def swap(context: dg.OpExecutionContext, config: RollbackRequest, monitoring_store: MonitoringStoreResource,
             artifact_store: ArtifactStoreResource):
        store = monitoring_store.get()
        trigger = context.run.tags.get(TAG_TRIGGER, "manual")
        expected = context.run.tags.get(TAG_ROLLBACK_FROM, "").removeprefix("v")
        reason = context.run.tags.get(TAG_REASON) or config.reason
        event_id = store.events.record_trigger(
            model.name, trigger_type="rollback", severity="HIGH", reason=reason, run_id=context.run.run_id,
            metrics={"requested_by": trigger, "requester": config.requester},
        )
        try:
            restored, demoted = store.registry.rollback(model.name, run_id=context.run.run_id,
                                                        expected_production=int(expected) if expected.isdigit() else None)
        except StoreError as error:
            store.events.complete(event_id, successful=False, execution_metrics={"error": str(error)})
            raise
        store.events.complete(event_id, successful=True, retraining_model_version=restored.label,
                              execution_metrics={"restored": restored.label, "demoted": demoted.label})
        Notifier().notify(f"{model.name}: rolled back from {demoted.label} to {restored.label}: {reason}",
                          model=model.name, restored=restored.label, demoted=demoted.label)
        context.log.info(f"{model.name}: production is {restored.label} again; {demoted.label} is standby")
        yield dg.AssetMaterialization(
            asset_key=asset_key(model.name, "production_model"),
            description=f"rollback to {restored.label}",
            metadata={"promoted_version": restored.label, "previous_version": demoted.label, "trigger": "rollback",
                      "reason": dg.MetadataValue.text(reason)},
        )
        yield model_card_materialization(store, artifact_store.get(), model, f"rollback to {restored.label}")
        yield dg.Output(restored.label)

    @dg.job(name=rollback_job_name(model.name), tags={TAG_MODEL: model.name},
            description=f"Roll {model.name} back to its standby model (the previous production one).")
    def rollback_job():
        swap()

    return rollback_job
