"""Time-based triggers per model: the scheduled retrain (`retrain_cron`, weekly by default) and the
monitoring cadence."""

import datetime as dt
import itertools

import dagster as dg

from retrain_assets.defs.keys import TAG_MODEL, TAG_REASON, TAG_SEVERITY, TAG_TRIGGER, monitor_job_name, retrain_job_name
from retrain_assets.defs.resources import MonitoringStoreResource
from retrain_assets.settings import ModelSettings


def longest_gap(cron: str, timezone: str, ticks: int = 200) -> dt.timedelta:
    """The longest time between two consecutive ticks of ``cron`` (weekends and DST included), computed
    with the cron arithmetic Dagster's scheduler itself uses, so it agrees with the schedule."""
    from dagster._utils.schedules import schedule_execution_time_iterator  # no public equivalent yet

    times = list(itertools.islice(schedule_execution_time_iterator(dt.datetime.now(dt.timezone.utc).timestamp(), cron,
                                                                   timezone), ticks))
    return max(b - a for a, b in zip(times, times[1:]))


def monitoring_freshness(model: ModelSettings) -> dg.FreshnessPolicy:
    """Freshness of the monitoring reports, from the monitoring cadence: a warning once a tick was missed
    (one and a half periods without a report) and a failure after two (two and a half): "monitoring has
    stopped" shows on the asset instead of going unnoticed. The half period is the grace for a run that
    queues or takes long."""
    period = longest_gap(model.triggers.monitoring_cron, model.triggers.timezone)
    return dg.FreshnessPolicy.time_window(fail_window=period * 2.5, warn_window=period * 1.5)


def recently_trained(store, model: ModelSettings, now: dt.datetime) -> str | None:
    """Why the calendar's retrain is redundant now (the model's newest candidate was trained within
    ``min_days_between_scheduled``), or None."""
    limit = dt.timedelta(days=model.triggers.min_days_between_scheduled)
    newest = store.registry.newest(model.name) if limit else None
    if newest is None:
        return None
    age = now - newest.created_at
    if age >= limit:
        return None
    return (f"{newest.label} was trained {age.total_seconds() / 86400:.1f} days ago ({newest.trigger or 'manual'} trigger), "
            f"within min_days_between_scheduled ({model.triggers.min_days_between_scheduled:g} days)")


def build_retrain_schedule(model: ModelSettings) -> dg.ScheduleDefinition:
    """The calendar's retrain: whatever the monitors say, but never during an open P1 incident (a person has
    stopped automatic retraining), never beside a retrain of this model already queued or running, and not
    when the model was trained within ``min_days_between_scheduled`` (recorded as a skipped event)."""
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
                    "P1 incident is open, a retrain of the model is in flight, or it was trained within "
                    f"{model.triggers.min_days_between_scheduled:g} days (min_days_between_scheduled).",
    )
    def scheduled_retrain(context: dg.ScheduleEvaluationContext, monitoring_store: MonitoringStoreResource):
        store = monitoring_store.get()
        incidents = store.events.open_p1_incidents(model.name)
        if incidents:
            return dg.SkipReason(f"scheduled retrain of {model.name} skipped: open P1 incident {', '.join(incidents)}")
        in_flight = context.instance.get_run_records(
            dg.RunsFilter(job_name=retrain_job_name(model.name), statuses=IN_FLIGHT), limit=1)
        if in_flight:
            return dg.SkipReason(f"scheduled retrain of {model.name} skipped: run {in_flight[0].dagster_run.run_id[:8]} "
                                 "is already queued or running")
        recent = recently_trained(store, model, context.scheduled_execution_time)
        if recent:
            store.events.record_trigger(model.name, trigger_type="schedule", severity="LOW", reason=f"scheduled retrain ({when})",
                                        metrics={"blocked_by": [recent]}, attempted=False)
            return dg.SkipReason(f"scheduled retrain of {model.name} skipped: {recent}")
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
