"""Time-based triggers per model: the scheduled retrain (`retrain_cron`, weekly by default) and the
monitoring cadence."""

import dagster as dg

from retrain_assets.defs.keys import TAG_MODEL, TAG_REASON, TAG_SEVERITY, TAG_TRIGGER, monitor_job_name, retrain_job_name
from retrain_assets.settings import ModelSettings


def build_schedules(model: ModelSettings) -> list[dg.ScheduleDefinition]:
    triggers = model.triggers
    return [
        dg.ScheduleDefinition(
            name=f"{model.name}_scheduled_retrain",
            job_name=retrain_job_name(model.name),
            cron_schedule=triggers.retrain_cron,
            execution_timezone=triggers.timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            tags={TAG_MODEL: model.name, TAG_TRIGGER: "schedule", TAG_SEVERITY: "LOW",
                  TAG_REASON: f"scheduled retrain ({triggers.retrain_cron} {triggers.timezone})"},
            description=f"Retrains {model.name} on a fixed cadence ({triggers.retrain_cron} {triggers.timezone}) "
                        "whatever the monitors say.",
        ),
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
