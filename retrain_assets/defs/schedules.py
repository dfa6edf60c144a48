"""Time-based triggers per model: the scheduled retrain (`retrain_cron`, weekly by default) and the
monitoring cadence."""

import dagster as dg

from retrain_assets.defs.keys import TAG_MODEL, TAG_REASON, TAG_SEVERITY, TAG_TRIGGER, monitor_job_name, retrain_job_name
from retrain_assets.defs.resources import MonitoringStoreResource
from retrain_assets.settings import ModelSettings


def build_retrain_schedule(model: ModelSettings) -> dg.ScheduleDefinition:
    """The calendar's retrain: whatever the monitors say, but never during an open P1 incident (a person has
    stopped automatic retraining) and never beside a retrain of this model already queued or running."""
    from retrain_assets.defs.triggers.requests import IN_FLIGHT

    triggers = model.triggers
    when = f"{triggers.retrain_cron} {triggers.timezone}"

    @dg.schedule(
        name=f"{model.name}_scheduled_retrain",
        job_name=retrain_job_name(model.name),
        cron_schedule=triggers.retrain_cron,
        execution_timezone=triggers.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Retrains {model.name} on a fixed cadence ({when}) whatever the monitors say; skipped while a "
                    "P1 incident is open or a retrain of the model is in flight.",
    )
    def scheduled_retrain(context: dg.ScheduleEvaluationContext, monitoring_store: MonitoringStoreResource):
        incidents = monitoring_store.get().events.open_p1_incidents(model.name)
        if incidents:
            return dg.SkipReason(f"scheduled retrain of {model.name} skipped: open P1 incident {', '.join(incidents)}")
        in_flight = context.instance.get_run_records(
            dg.RunsFilter(job_name=retrain_job_name(model.name), statuses=IN_FLIGHT), limit=1)
        if in_flight:
            return dg.SkipReason(f"scheduled retrain of {model.name} skipped: run {in_flight[0].dagster_run.run_id[:8]} "
                                 "is already queued or running")
        return dg.RunRequest(tags={TAG_MODEL: model.name, TAG_TRIGGER: "schedule", TAG_SEVERITY: "LOW",
                                   TAG_REASON: f"scheduled retrain ({when})"})

    return scheduled_retrain


def build_schedules(model: ModelSettings) -> list[dg.ScheduleDefinition]:
    triggers = model.triggers
    return [
        build_retrain_schedule(model),
        dg.ScheduleDefinition(
            name=f"{model.name}_monitoring",
            job_name=monitor_job_name(model.name),
            cron_schedule=triggers.monitoring_cron,
            execution_timezone=triggers.timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            tags={TAG_MODEL: model.name, TAG_TRIGGER: "schedule",
                  TAG_REASON: f"monitoring cadence ({triggers.monitoring_cron} {triggers.timezone})"},
            description=f"Refreshes the monitoring reports of {model.name}.",
        ),
    ]
