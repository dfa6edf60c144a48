"""Promotion: make a gated candidate the production model, in one registry transaction, and say so.

A retrain run builds the dataset and trains and gates the candidate; its blocking gates fail the run when
the candidate is rejected. Promotion is a run of its own, the ``<model>_promote`` job (``production_model``
and ``model_card``), planned only for a retrain run that succeeded, i.e. whose every gate passed: by the
promotion sensor under the daemon, by :func:`retrain_in_process` without one. So a rejected candidate is
red in the lineage with its failed gates while production stays green and unchanged: the product did its
job, nothing broke.

:func:`promote_candidate` is used by ``production_model`` and by the shadow decision job, so a promotion
looks the same in the registry, the events table and the asset's metadata whichever way it happened.
"""

from dataclasses import dataclass

import dagster as dg

from retrain_assets.defs.keys import (
    TAG_CANDIDATE_RUN,
    TAG_CONCURRENCY,
    TAG_EVENT_ID,
    TAG_MODEL,
    TAG_REASON,
    TAG_SEVERITY,
    TAG_TRIGGER,
    promote_job_name,
    retrain_job_name,
    run_trigger,
)
from retrain_assets.defs.metadata import md_table, metric_metadata
from retrain_assets.defs.resources import MonitoringStoreResource
from retrain_assets.defs.training.candidate import own_candidate
from retrain_assets.defs.triggers.requests import event_of_run
from retrain_assets.settings import ModelSettings
from retrain_assets.store import ModelVersion, MonitoringStore
from retrain_assets.store.events import completion


def improvement_over_production(gate_results: list[dict]) -> dict:
    """Event columns comparing the promoted model with the one it replaced, both scored on the same new
    test rows (from the relative gate); positive percentages are improvements (RMSE: lower is better)."""
    relative = next((g for g in gate_results if g["name"] == "relative_to_production" and g["applicable"]), None)
    if relative is None:
        return {}
    value = relative["value"]

    def change(metric: str, lower_is_better: bool = False) -> float | None:
        new, old = value.get(f"candidate_{metric}"), value.get(f"production_{metric}")
        if new is None or old is None or old == 0:
            return None
        return round(100.0 * ((old - new) if lower_is_better else (new - old)) / abs(old), 4)

    return {
        "comparison_previous_r2": value.get("production_r2"),
        "improvement_r2_percent": change("r2"),
        "improvement_rmse_percent": change("rmse", lower_is_better=True),
        "improvement_accuracy_percent": change("accuracy"),
    }


def promote_candidate(
    store: MonitoringStore, model: ModelSettings, candidate: ModelVersion, run_id: str, event_id: str | int | None,
    trigger: str, reason: str, from_status: str | None = None,
) -> tuple[ModelVersion | None, dict]:
    """Promote ``candidate`` (the previous production model becomes the standby) and complete its retraining
    event in the same transaction; return (previous, metadata for the production_model materialization)."""
    gates = candidate.gate_results or []
    outcome = completion(
        True,
        retraining_model_version=candidate.label,
        retraining_accuracy=candidate.metrics.get("accuracy"),
        retraining_r2=candidate.metrics.get("r2"),
        retraining_rmse=candidate.metrics.get("rmse"),
        gate_summary={g["name"]: g["passed"] for g in gates},
        execution_metrics={"run_id": run_id, "metrics": candidate.metrics},
        **improvement_over_production(gates),
    )
    previous = store.registry.promote(model.name, candidate.version, run_id=run_id,
                                      event_id=int(event_id) if event_id else None, event_outcome=outcome,
                                      from_status=from_status)
    metadata = {
        "promoted_version": candidate.label,
        "previous_version": previous.label if previous else "none",
        "dataset_version": candidate.dataset_tag,
        "trigger": trigger,
        "reason": dg.MetadataValue.text(reason),
        **metric_metadata(candidate.metrics, prefix=""),
        "gates": dg.MetadataValue.md(md_table({g["name"]: "passed" if g["passed"] else "FAILED" for g in gates}, None)),
    }
    return previous, metadata


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


def promotion_request(store: MonitoringStore, model: ModelSettings, run: dg.DagsterRun) -> dg.RunRequest | dg.SkipReason:
    """The promotion run of a retrain run that succeeded (every blocking gate passed), or why there is none.

    The request carries the retrain run's trigger, reason and event, and names the run whose candidate it
    promotes; its run key is that run, so a promotion is requested once however often this is asked.
    """
    candidate = own_candidate(store, model, run)  # a re-execution from failure promotes its parent's candidate
    if candidate is None:
        return dg.SkipReason(f"retrain run {run.run_id[:8]} trained no candidate of {model.name} (a partial selection?)")
    if candidate.status != "candidate":
        return dg.SkipReason(f"{model.name} {candidate.label} of run {run.run_id[:8]} is already {candidate.status}")
    gates = candidate.gate_results or []
    if not gates or not all(g.get("passed") for g in gates):
        return dg.SkipReason(f"{model.name} {candidate.label} of run {run.run_id[:8]} has not passed its gates")
    trigger, reason = run_trigger(run.tags)
    event_id = event_of_run(store, run)
    return dg.RunRequest(
        run_key=f"promote-{run.run_id}",
        job_name=promote_job_name(model.name),
        tags={TAG_MODEL: model.name, TAG_CONCURRENCY: model.name, TAG_TRIGGER: trigger,
              TAG_SEVERITY: run.tags.get(TAG_SEVERITY, "LOW"), TAG_REASON: reason,
              TAG_CANDIDATE_RUN: candidate.run_id or run.run_id,
              **({TAG_EVENT_ID: str(event_id)} if event_id else {})},
    )


def build_promotion_sensor(model: ModelSettings, retrain_job, promote_job) -> dg.SensorDefinition:
    """Requests the promotion of every retrain run of the model that succeeded (all its gates passed)."""

    @dg.run_status_sensor(
        name=f"{model.name}_promotion_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[retrain_job],
        request_job=promote_job,
        minimum_interval_seconds=model.triggers.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Launches {promote_job_name(model.name)} for each {retrain_job_name(model.name)} run that "
                    "succeeded, i.e. whose candidate passed every blocking gate; a rejected candidate's run fails "
                    "and is never promoted.",
    )
    def promotion_sensor(context: dg.RunStatusSensorContext, monitoring_store: MonitoringStoreResource):
        return promotion_request(monitoring_store.get(), model, context.dagster_run)

    return promotion_sensor


@dataclass
class InProcessRetrain:
    """A retrain run executed in process and, when its candidate passed its gates, the promotion run."""

    retrain: dg.ExecuteInProcessResult
    promotion: dg.ExecuteInProcessResult | None = None
    skipped: str = ""  # why no promotion followed a successful retrain

    @property
    def success(self) -> bool:
        return self.retrain.success and (self.promotion is None or self.promotion.success)

    @property
    def run_id(self) -> str:
        return self.retrain.run_id

    @property
    def results(self) -> list[dg.ExecuteInProcessResult]:
        return [self.retrain, *([self.promotion] if self.promotion else [])]

    @property
    def all_events(self) -> list:
        return [event for result in self.results for event in result.all_events]

    def get_asset_check_evaluations(self) -> list:
        return self.retrain.get_asset_check_evaluations()

    def get_asset_materialization_events(self) -> list:
        return [event for result in self.results for event in result.get_asset_materialization_events()]


def retrain_in_process(defs: dg.Definitions, instance: dg.DagsterInstance, store: MonitoringStore,
                       model: ModelSettings, *, tags: dict, run_config: dict | None = None) -> InProcessRetrain:
    """Run the retrain job in process and, if it succeeded, the promotion the sensor would request: what
    ``retrain trigger``, the demo and the tests do where no daemon runs the promotion sensor (a run-status
    sensor only sees runs launched through a code location, never these). Like every in-process run, they
    do not pass the instance's run queue or its per-model concurrency limit; the claim keeps them one at a
    time."""
    run_config = run_config or {}
    retrain = defs.resolve_job_def(retrain_job_name(model.name)).execute_in_process(
        instance=instance, tags=tags, run_config=run_config, raise_on_error=False)
    if not retrain.success:
        return InProcessRetrain(retrain)
    request = promotion_request(store, model, instance.get_run_by_id(retrain.run_id))
    if isinstance(request, dg.SkipReason):
        return InProcessRetrain(retrain, skipped=request.skip_message or "")
    loggers = {"loggers": run_config["loggers"]} if "loggers" in run_config else {}
    promotion = defs.resolve_job_def(promote_job_name(model.name)).execute_in_process(
        instance=instance, tags=request.tags, run_config=loggers, raise_on_error=False)
    return InProcessRetrain(retrain, promotion)
