"""One path from "something says retrain" to a run request: timing, guards, the event row, the alert.

Every automatic trigger (drift, performance, data volume) calls :func:`request_retrain`, so they all obey
the same guards, write the same kind of event row and carry the same run tags. The facts are gathered
with counts and small lookups, so a sensor evaluation stays cheap however large the log is.
"""

import datetime as dt

import dagster as dg

from retrain_assets.defs.keys import (
    TAG_EVENT_ID,
    TAG_MODEL,
    TAG_REASON,
    TAG_SEVERITY,
    TAG_TRIGGER,
    retrain_job_name,
    run_trigger,
    short,
)
from retrain_assets.datasource import DataSource
from retrain_assets.monitoring.guards import TriggerFacts, blocking_guards, timing
from retrain_assets.notify import Notifier
from retrain_assets.settings import ModelSettings
from retrain_assets.store import MonitoringStore

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def event_of_run(store: MonitoringStore, run: dg.DagsterRun) -> int | None:
    """The retraining event a run completes: the one its trigger recorded (tag), else the one the run
    opened for itself (schedule, launchpad)."""
    tagged = run.tags.get(TAG_EVENT_ID)
    return int(tagged) if tagged else store.events.for_run(run.run_id)


def open_run_event(store: MonitoringStore, model: ModelSettings, run: dg.DagsterRun, reason: str, requester: str) -> int:
    """Make sure this retrain run has its event row, and that the row names the run.

    Sensor-triggered runs carry the event their trigger recorded; a scheduled run or one launched from
    the launchpad gets its event here, at its first step, so every retrain leaves a row in the audit
    table whatever started it.
    """
    event_id = event_of_run(store, run)
    if event_id is None:
        trigger, tag_reason = run_trigger(run.tags)
        return store.events.record_trigger(
            model.name, trigger_type=trigger, severity=run.tags.get(TAG_SEVERITY, "LOW"),
            reason=reason or tag_reason, metrics={"requester": requester} if requester else None, run_id=run.run_id,
        )
    store.events.attach_run(event_id, run.run_id)
    return event_id


def _created(record) -> dt.datetime:
    return dt.datetime.fromtimestamp(record.create_timestamp.timestamp(), dt.timezone.utc)


def last_retrain_start(instance: dg.DagsterInstance, model: ModelSettings) -> dt.datetime | None:
    """When the newest retrain run of this model was created (any trigger, the launchpad included)."""
    records = instance.get_run_records(dg.RunsFilter(job_name=retrain_job_name(model.name)), limit=1)
    return _created(records[0]) if records else None


def gather_facts(
    instance: dg.DagsterInstance, store: MonitoringStore, source: DataSource, model: ModelSettings, severity: str,
    now: dt.datetime,
) -> TriggerFacts:
    in_flight = instance.get_run_records(dg.RunsFilter(job_name=retrain_job_name(model.name), statuses=IN_FLIGHT), limit=5)
    # A run in flight for longer than its timeout has a dead worker (run monitoring fails it when the daemon
    # runs it): it must not block every later trigger for ever.
    limit = dt.timedelta(minutes=model.triggers.run_timeout_minutes)
    in_flight = [r for r in in_flight if now - _created(r) < limit]
    failed = store.registry.last_failed_retrain(model.name)
    last_failure = []
    if failed is not None and source.count_labels_after(failed[0].max_label_id, cap=1) == 0:
        last_failure = failed[1]
    return TriggerFacts(
        severity=severity,
        labeled_rows=source.count_labels_after(None, cap=model.triggers.min_samples),
        now=now,
        last_attempt=last_retrain_start(instance, model),
        last_failure=last_failure,
        open_p1=store.events.open_p1_incidents(model.name),
        runs_in_flight=[r.dagster_run.run_id for r in in_flight],
    )


def request_retrain(
    instance: dg.DagsterInstance,
    store: MonitoringStore,
    source: DataSource,
    model: ModelSettings,
    *,
    trigger: str,
    severity: str,
    reason: str,
    run_key: str,
    metrics: dict | None = None,
    drift_type: str | None = None,
    notifier: Notifier | None = None,
    now: dt.datetime | None = None,
) -> tuple[dg.RunRequest | dg.SkipReason, bool]:
    """A RunRequest, or a SkipReason saying why not; and whether the trigger was dealt with (the caller
    advances its cursor) or must be looked at again (a MEDIUM trigger waiting for the quiet window)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    settings = model.triggers
    when = timing(severity, now, settings)
    if when == "monitor":
        return dg.SkipReason(f"{severity} signal, monitored without retraining: {reason}"), True
    if when == "wait":
        window = f"{settings.quiet_start_hour:02d}:00-{settings.quiet_end_hour:02d}:00 {settings.timezone}"
        return dg.SkipReason(f"MEDIUM signal waits for the quiet window {window}: {reason}"), False
    blocked = blocking_guards(gather_facts(instance, store, source, model, severity, now), settings)
    if blocked:
        store.events.record_trigger(
            model.name, trigger_type=trigger, severity=severity, reason=reason, drift_type=drift_type,
            metrics={**(metrics or {}), "blocked_by": blocked}, attempted=False,
        )
        return dg.SkipReason(f"{trigger} trigger ({severity}) blocked: {'; '.join(blocked)}. Signal: {reason}"), True
    event_id = store.events.record_trigger(
        model.name, trigger_type=trigger, severity=severity, reason=reason, drift_type=drift_type, metrics=metrics,
    )
    (notifier or Notifier()).notify(
        f"{model.name}: {trigger} trigger ({severity}) requested a retrain: {reason}",
        model=model.name, trigger=trigger, severity=severity, event_id=event_id,
    )
    request = dg.RunRequest(
        run_key=run_key,
        job_name=retrain_job_name(model.name),
        tags={TAG_MODEL: model.name, TAG_TRIGGER: trigger, TAG_SEVERITY: severity, TAG_REASON: short(reason),
              TAG_EVENT_ID: str(event_id)},
    )
    return request, True
