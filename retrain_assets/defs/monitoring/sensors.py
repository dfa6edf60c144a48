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
