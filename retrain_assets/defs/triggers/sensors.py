"""Trigger sensors per model: the retrain sensor acting on the fused decision, and the outcome of failed runs.

Sensors stay cheap: the retrain sensor reads the newest ``retrain_decision`` (the heavy statistics ran in
the monitoring job), refreshes the two cheap signals (one capped COUNT of new labels, the model's age),
fuses them with the same pure function the monitoring run used, and keeps a cursor so a decision is acted
on once. Whether a decision becomes a run is decided in one place,
:func:`retrain_assets.defs.triggers.requests.request_retrain` (guards, timing, the event row).
"""

import datetime as dt

import dagster as dg

from retrain_assets.defs.automation import model_sensor
from retrain_assets.defs.keys import asset_key, monitor_job_name, promote_job_name, retrain_job_name
from retrain_assets.defs.monitoring.assets import DECISION, verified_time
from retrain_assets.defs.resources import DataSourceResource, MonitoringStoreResource
from retrain_assets.defs.triggers.requests import event_of_run, fail_retrain, reap_dead_runs, request_retrain
from retrain_assets.monitoring.decision import (
    Decision,
    SignalEvidence,
    age_signal,
    fuse,
    label_volume_signal,
    worthwhile_labels,
)
from retrain_assets.notify import Notifier
from retrain_assets.settings import ModelSettings

# The seed's drift_type column of the event row (data drift on inputs, concept drift on labels).
DRIFT_TYPE = {"drift": "data", "estimated_performance": "data", "performance": "concept", "concept_drift": "concept"}


def _value(metadata, key, default=None):
    entry = metadata.get(key)
    return default if entry is None else entry.value


def refreshed_decision(store, source, model: ModelSettings, production, metadata, now: dt.datetime) -> Decision:
    """The monitoring run's decision with its cheap signals brought up to date (labels that arrived since,
    the model's age), fused again by the same pure function: a label count crossing its band between two
    monitoring runs is acted on within a sensor interval."""
    signals = [SignalEvidence(**raw) for raw in _value(metadata, "signals_json", []) or []]
    dataset = store.registry.dataset(model.name, production.dataset_tag)
    cap = max(worthwhile_labels(dataset.rows, model), model.triggers.new_labels_now)
    new_labels = source.counted_labels_after(dataset.max_label_id, cap=cap)
    challenged = production.promoted_at or production.created_at
    failed = store.registry.last_failed_retrain(model.name)
    if failed is not None:
        challenged = max(challenged, failed[0].created_at)
    verified_at = verified_time(metadata)
    fresh = {"data_volume": label_volume_signal(new_labels, dataset.rows, model),
             "model_age": age_signal((now - challenged) / dt.timedelta(days=1), model,
                                     None if verified_at is None else (now - verified_at) / dt.timedelta(days=1))}
    signals = [fresh.pop(s.kind, s) for s in signals] + list(fresh.values())
    return fuse(signals, model)


def build_retrain_sensor(model: ModelSettings) -> dg.SensorDefinition:
    """The one trigger of a model: it acts on the fused decision, never on one signal alone."""

    @model_sensor(
        model,
        name=f"{model.name}_retrain_sensor",
        job_name=retrain_job_name(model.name),
        description=(
            f"Requests {retrain_job_name(model.name)} when the newest {DECISION} of {model.name} advises a retrain "
            f"(policy {model.decision.policy}; label count and model age refreshed each evaluation; guards and timing "
            "applied); acts once per decision."
        ),
    )
    def retrain_sensor(
        context: dg.SensorEvaluationContext, monitoring_store: MonitoringStoreResource, data_source: DataSourceResource
    ):
        for reaped in reap_dead_runs(context.instance, model):  # a killed worker never wedges the model
            context.log.warning(f"failed retrain run {reaped}")
        entry = context.instance.get_latest_materialization_event(asset_key(model.name, DECISION))
        if entry is None:
            return dg.SkipReason(f"no {DECISION} yet: the {monitor_job_name(model.name)} job produces it on its schedule")
        store, source = monitoring_store.get(), data_source.for_model(model)
        metadata = entry.asset_materialization.metadata
        production = store.registry.production(model.name)
        about = _value(metadata, "production_version")
        if production is None or about != production.label:
            return dg.SkipReason(f"the newest {DECISION} (run {entry.run_id[:8]}) judged {about}; production is now "
                                 f"{production.label if production else 'none'}: waiting for the next monitoring run")
        decision = refreshed_decision(store, source, model, production, metadata, dt.datetime.now(dt.timezone.utc))
        if not decision.retrain:
            return dg.SkipReason(f"{DECISION} of run {entry.run_id[:8]} advises no retrain ({decision.severity}): "
                                 f"{decision.reason}")
        key = f"{entry.run_id}:{decision.trigger}:{decision.severity}"
        if context.cursor == key:
            return dg.SkipReason(f"the {DECISION} of run {entry.run_id[:8]} ({decision.trigger}, {decision.severity}) "
                                 "was already acted on")
        outcome, handled = request_retrain(
            context.instance, store, source, model, trigger=decision.trigger, severity=decision.severity,
            reason=f"{decision.reason} ({DECISION} of run {entry.run_id[:8]})", run_key=f"decision-{key}",
            drift_type=DRIFT_TYPE.get(decision.trigger),
            metrics={"decision_run_id": entry.run_id, "policy": decision.policy, "confidence": decision.confidence,
                     "signals": {s.kind: {"status": s.status, "test": s.test, "value": s.value, "threshold": s.threshold}
                                 for s in decision.signals}},
        )
        if handled:
            context.update_cursor(key)
        return outcome

    return retrain_sensor


def rejection(event: dict | None, run_id: str) -> str:
    """What the run's checks rejected, from the outcome they recorded in its event ("" for any other failure)."""
    if event is None or event["execution_successful"] is not False:
        return ""
    metrics = event.get("execution_metrics") or {}
    if metrics.get("run_id") != run_id:
        return ""
    if metrics.get("failed_gates"):
        return f"candidate {event.get('retraining_model_version') or ''}: failed gates {', '.join(metrics['failed_gates'])}"
    if metrics.get("failed_quality_checks"):
        return f"dataset {metrics.get('dataset_version', '')}: failed data-quality checks {', '.join(metrics['failed_quality_checks'])}"
    return ""


def build_retrain_failure_sensor(model: ModelSettings, jobs: list) -> dg.SensorDefinition:
    """Alerts on every failed run of the model's jobs (retrain, promote, monitor, rollback, shadow decision)
    and closes the retraining event of a failed retrain or promotion run, so no trigger is left without an
    outcome. A retrain run failed by its blocking checks is reported as the rejection it is.

    Gate and data-quality failures complete their event themselves (with the failing checks); this
    sensor catches everything else: a crash, bad input raised by an asset, or a killed run (run monitoring
    fails a run whose worker died). A cancelled run is not a failure to Dagster: its claim is released by
    the next trigger (see stale_claim), with the reason.
    """

    @dg.run_failure_sensor(
        name=f"{model.name}_retrain_failure_sensor",
        monitored_jobs=list(jobs),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Alerts on failed runs of {', '.join(j.name for j in jobs)} and records the outcome of a failed "
                    f"{retrain_job_name(model.name)} run in its retraining event.",
    )
    def retrain_failure_sensor(context: dg.RunFailureSensorContext, monitoring_store: MonitoringStoreResource):
        run = context.dagster_run
        message = context.failure_event.message if context.failure_event else "run failed"
        store = monitoring_store.get()
        if run.job_name not in (retrain_job_name(model.name), promote_job_name(model.name)):
            Notifier().notify(f"{model.name}: {run.job_name} run {run.run_id[:8]} failed: {message}",
                              model=model.name, run_id=run.run_id, job=run.job_name)
            return dg.SkipReason(f"alerted on the failure of {run.job_name} run {run.run_id[:8]}")
        event_id = event_of_run(store, run)
        event = store.events.get(int(event_id)) if event_id is not None else None
        rejected = rejection(event, run.run_id)
        if rejected:  # the gates or the data-quality checks did their job: say so, not "failed"
            Notifier().notify(f"{model.name}: retrain run {run.run_id[:8]} rejected its {rejected}",
                              model=model.name, run_id=run.run_id, event_id=event_id)
            return dg.SkipReason(f"run {run.run_id[:8]} rejected its {rejected} (event {event_id})")
        Notifier().notify(f"{model.name}: {run.job_name} run {run.run_id[:8]} failed: {message}",
                          model=model.name, run_id=run.run_id, event_id=event_id)
        if event is None:
            return dg.SkipReason(f"run {run.run_id[:8]} failed before it recorded a retraining event")
        if event["execution_completed_at"] is not None:
            return dg.SkipReason(f"event {event_id} of run {run.run_id[:8]} already has its outcome")
        fail_retrain(store, model, int(event_id), execution_metrics={"run_id": run.run_id, "error": message})
        return dg.SkipReason(f"recorded the failure of run {run.run_id[:8]} in event {event_id}")

    return retrain_failure_sensor


def build_trigger_sensors(model: ModelSettings, jobs: list) -> list[dg.SensorDefinition]:
    """``jobs``: the model's jobs, its retrain job first."""
    return [build_retrain_sensor(model), build_retrain_failure_sensor(model, jobs)]
