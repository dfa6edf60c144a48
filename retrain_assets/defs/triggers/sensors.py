"""Trigger sensors per model: drift, performance, data volume, and the outcome of failed runs.

Sensors stay cheap: the report sensors read the newest report's materialization metadata (the heavy
statistics ran in the monitoring job), the volume sensor runs one COUNT over an index, and all of them
keep a cursor so a report or a label band is acted on once. Whether a signal becomes a run is decided in
one place, :func:`retrain_assets.defs.triggers.requests.request_retrain`.
"""

import dagster as dg

from retrain_assets.defs.automation import model_sensor
from retrain_assets.defs.keys import asset_key, monitor_job_name, retrain_job_name
from retrain_assets.defs.resources import DataSourceResource, MonitoringStoreResource
from retrain_assets.defs.triggers.requests import event_of_run, request_retrain
from retrain_assets.monitoring.policy import volume_severity
from retrain_assets.notify import Notifier
from retrain_assets.settings import ModelSettings


def _value(metadata, key, default=None):
    entry = metadata.get(key)
    return default if entry is None else entry.value


def build_report_sensor(model: ModelSettings, report: str, trigger: str, drift_type: str) -> dg.SensorDefinition:
    """A sensor that turns the newest ``report`` advising a retrain into one retrain request."""

    @model_sensor(
        model,
        name=f"{model.name}_{trigger}_sensor",
        job_name=retrain_job_name(model.name),
        description=(
            f"Requests {retrain_job_name(model.name)} when the newest {report} of {model.name} advises a retrain "
            "(guards and timing applied); acts once per report."
        ),
    )
    def report_sensor(
        context: dg.SensorEvaluationContext, monitoring_store: MonitoringStoreResource, data_source: DataSourceResource
    ):
        entry = context.instance.get_latest_materialization_event(asset_key(model.name, report))
        if entry is None:
            return dg.SkipReason(f"no {report} yet: the {monitor_job_name(model.name)} job produces it on its schedule")
        if context.cursor == entry.run_id:
            return dg.SkipReason(f"the newest {report} (run {entry.run_id[:8]}) was already acted on")
        metadata = entry.asset_materialization.metadata
        summary = _value(metadata, "summary", "")
        if not _value(metadata, "retrain_advised", False):
            context.update_cursor(entry.run_id)
            return dg.SkipReason(f"{report} of run {entry.run_id[:8]} advises no retrain: {summary}")
        severity = _value(metadata, "severity", "MEDIUM")
        outcome, handled = request_retrain(
            context.instance, monitoring_store.get(), data_source.for_model(model), model,
            trigger=trigger, severity=severity, reason=f"{summary} ({report} of run {entry.run_id[:8]})",
            run_key=f"{trigger}-{entry.run_id}", drift_type=drift_type,
            metrics={**dict(_value(metadata, "signals", {}) or {}), "report_run_id": entry.run_id},
        )
        if handled:
            context.update_cursor(entry.run_id)
        return outcome

    return report_sensor


def build_data_volume_sensor(model: ModelSettings) -> dg.SensorDefinition:
    triggers = model.triggers

    @model_sensor(
        model,
        name=f"{model.name}_data_volume_sensor",
        job_name=retrain_job_name(model.name),
        description=(
            f"Requests {retrain_job_name(model.name)} when enough labels arrived since the production model's "
            f"dataset: >= {triggers.new_labels_now:,} now, >= {triggers.new_labels_scheduled:,} in the quiet window."
        ),
    )
    def data_volume_sensor(
        context: dg.SensorEvaluationContext, monitoring_store: MonitoringStoreResource, data_source: DataSourceResource
    ):
        store, source = monitoring_store.get(), data_source.for_model(model)
        production = store.registry.production(model.name)
        if production is None:
            return dg.SkipReason(f"{model.name} has no production model yet: nothing to count new labels against")
        dataset = store.registry.dataset(model.name, production.dataset_tag)
        new_labels = source.count_labels_after(dataset.max_label_id, cap=triggers.new_labels_now)
        severity = volume_severity(new_labels, triggers)
        if severity is None:
            return dg.SkipReason(
                f"{new_labels:,} new labels since dataset {dataset.tag}: waiting for {triggers.new_labels_scheduled:,} "
                f"(quiet window) or {triggers.new_labels_now:,} (now)"
            )
        shown = f"{new_labels:,}+" if new_labels >= triggers.new_labels_now else f"{new_labels:,}"
        band = f"{dataset.tag}:{severity}"
        if context.cursor == band:
            return dg.SkipReason(f"already acted on {severity} label volume for dataset {dataset.tag}")
        outcome, handled = request_retrain(
            context.instance, store, source, model, trigger="data_volume", severity=severity,
            reason=f"{shown} new labels since dataset {dataset.tag}", run_key=f"volume-{band}",
            metrics={"new_labels": new_labels, "dataset": dataset.tag},
        )
        if handled:
            context.update_cursor(band)
        return outcome

    return data_volume_sensor


def build_retrain_failure_sensor(model: ModelSettings, retrain_job) -> dg.SensorDefinition:
    """Closes the retraining event of a failed retrain run, so no trigger is left without an outcome.

    Gate and data-quality failures complete their event themselves (with the failing checks); this
    sensor catches everything else: a crash, bad input raised by an asset, a cancelled or killed run.
    It also sends the failure notification.
    """

    @dg.run_failure_sensor(
        name=f"{model.name}_retrain_failure_sensor",
        monitored_jobs=[retrain_job],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Records the outcome of failed {retrain_job_name(model.name)} runs and alerts.",
    )
    def retrain_failure_sensor(context: dg.RunFailureSensorContext, monitoring_store: MonitoringStoreResource):
        run = context.dagster_run
        message = context.failure_event.message if context.failure_event else "run failed"
        store = monitoring_store.get()
        event_id = event_of_run(store, run)
        Notifier().notify(f"{model.name}: retrain run {run.run_id[:8]} failed: {message}",
                          model=model.name, run_id=run.run_id, event_id=event_id)
        if event_id is None:
            return dg.SkipReason(f"run {run.run_id[:8]} failed before it recorded a retraining event")
        event = store.events.get(int(event_id))
        if event is None or event["execution_completed_at"] is not None:
            return dg.SkipReason(f"event {event_id} of run {run.run_id[:8]} already has its outcome")
        store.events.complete(int(event_id), successful=False, execution_metrics={"run_id": run.run_id, "error": message})
        return dg.SkipReason(f"recorded the failure of run {run.run_id[:8]} in event {event_id}")

    return retrain_failure_sensor


def build_trigger_sensors(model: ModelSettings, retrain_job) -> list[dg.SensorDefinition]:
    return [
        build_report_sensor(model, "drift_report", "drift", "data"),
        build_report_sensor(model, "performance_report", "performance", "concept"),
        build_data_volume_sensor(model),
        build_retrain_failure_sensor(model, retrain_job),
    ]
