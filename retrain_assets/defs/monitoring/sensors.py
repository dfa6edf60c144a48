"""Triggers: the drift sensor turns a drifted report into one retrain request, with a trace in the events table."""

import dagster as dg

from retrain_assets.defs.keys import (
    TAG_EVENT_ID,
    TAG_MODEL,
    TAG_REASON,
    TAG_SEVERITY,
    TAG_TRIGGER,
    asset_key,
    retrain_job_name,
    short,
)
from retrain_assets.defs.resources import MonitoringStoreResource
from retrain_assets.settings import ModelSettings


def _metadata_value(metadata, key, default=None):
    entry = metadata.get(key)
    return default if entry is None else entry.value


def build_drift_sensor(model: ModelSettings) -> dg.SensorDefinition:
    @dg.asset_sensor(
        asset_key=asset_key(model.name, "drift_report"),
        job_name=retrain_job_name(model.name),
        name=f"{model.name}_drift_sensor",
        minimum_interval_seconds=model.triggers.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={"monitoring_store"},
        description=f"Requests {retrain_job_name(model.name)} when the newest drift_report of {model.name} says drift.",
    )
    def drift_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
        materialization = asset_event.asset_materialization
        metadata = materialization.metadata if materialization else {}
        report_run = asset_event.run_id[:8]
        if not _metadata_value(metadata, "drift_detected", False):
            return dg.SkipReason(
                f"drift report of run {report_run} found no drift "
                f"(drift share {_metadata_value(metadata, 'drift_share', 0):.2f}, "
                f"aggregate PSI {_metadata_value(metadata, 'aggregate_psi', 0):.3f})"
            )
        severity = _metadata_value(metadata, "severity", "MEDIUM")
        drifted = _metadata_value(metadata, "drifted_features", [])
        reason = f"data drift in {', '.join(drifted) or 'the dataset'} (drift report of run {report_run})"
        store = context.resources.monitoring_store.get()
        event_id = store.events.record_trigger(
            model.name,
            trigger_type="drift",
            severity=severity,
            drift_type="data",
            reason=reason,
            metrics={
                "drifted_features": drifted,
                "drift_share": _metadata_value(metadata, "drift_share"),
                "aggregate_psi": _metadata_value(metadata, "aggregate_psi"),
                "report_run_id": asset_event.run_id,
            },
        )
        return dg.RunRequest(
            run_key=f"drift-{asset_event.run_id}",
            tags={
                TAG_MODEL: model.name,
                TAG_TRIGGER: "drift",
                TAG_SEVERITY: severity,
                TAG_REASON: short(reason),
                TAG_EVENT_ID: str(event_id),
            },
        )

    return drift_sensor


def build_retrain_failure_sensor(model: ModelSettings, retrain_job) -> dg.SensorDefinition:
    """Closes the retraining event of a failed retrain run, so no trigger is left without an outcome.

    Gate and data-quality failures complete their event themselves (with the failing checks); this
    sensor catches everything else: a crash, bad input raised by an asset, a cancelled or killed run.
    """

    @dg.run_failure_sensor(
        name=f"{model.name}_retrain_failure_sensor",
        monitored_jobs=[retrain_job],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Records the outcome of failed {retrain_job_name(model.name)} runs in model_retraining_events.",
    )
    def retrain_failure_sensor(context: dg.RunFailureSensorContext, monitoring_store: MonitoringStoreResource):
        run = context.dagster_run
        event_id = run.tags.get(TAG_EVENT_ID)
        if not event_id:
            return dg.SkipReason(f"run {run.run_id[:8]} carries no retraining event (started without a trigger)")
        store = monitoring_store.get()
        event = store.events.get(int(event_id))
        if event is None or event["execution_completed_at"] is not None:
            return dg.SkipReason(f"event {event_id} of run {run.run_id[:8]} already has its outcome")
        message = context.failure_event.message if context.failure_event else "run failed"
        store.events.complete(int(event_id), successful=False,
                              execution_metrics={"run_id": run.run_id, "error": message})
        return dg.SkipReason(f"recorded the failure of run {run.run_id[:8]} in event {event_id}")

    return retrain_failure_sensor
