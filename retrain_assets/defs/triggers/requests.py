"""One path from "something says retrain" to a run request: timing, guards, the event row, the alert.

Every automatic trigger (drift, performance, data volume) calls :func:`request_retrain`, so they all obey
the same guards, write the same kind of event row and carry the same run tags. The facts are gathered
with counts and small lookups, so a sensor evaluation stays cheap however large the log is.
"""

import datetime as dt
import os
import re
from pathlib import Path

import dagster as dg

from retrain_assets.defs.keys import (
    TAG_CANDIDATE_RUN,
    TAG_EVENT_ID,
    TAG_MODEL,
    TAG_REASON,
    TAG_SEVERITY,
    TAG_TRIGGER,
    promote_job_name,
    retrain_job_name,
    run_trigger,
    short,
)
from retrain_assets.datasource import DataSource
from retrain_assets.monitoring.guards import TriggerFacts, blocking_guards, new_labels_needed, timing
from retrain_assets.errors import RetrainError
from retrain_assets.notify import Notifier
from retrain_assets.settings import ModelSettings
from retrain_assets.store import MonitoringStore
from retrain_assets.store.events import ClaimTaken

# A claim whose run never started (the daemon was down, the request was dropped) stops counting after this.
PENDING_CLAIM_LIMIT = dt.timedelta(minutes=10)

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


WORKER_PID = re.compile(r"Started process for run \(pid: (\d+)\)")
# /proc/stat's boot time is whole seconds; a worker starts before it logs its pid, a reused pid long after.
START_TIME_SLACK_S = 2.0


def process_started_at(pid: int) -> float | None:
    """When the process now holding ``pid`` started (epoch seconds, from /proc), or None if it cannot be told."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        # Field 22 (starttime, in clock ticks after boot); the command name (field 2) may hold spaces, so
        # count from the closing parenthesis, after which field 3 comes first.
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def dead_local_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Why a started run's worker is gone, or None while it lives (or cannot be told).

    The default run launcher starts each run as a process on this machine and logs its pid; a worker killed
    with ``kill -9`` (or by the OOM killer) emits no failure, and run monitoring cannot ask this launcher
    about worker health, so the run would stay STARTED until its ``dagster/max_runtime``. Other launchers
    (Kubernetes, Docker) report worker health to run monitoring themselves.

    A pid that exists may have been reused by another process after the worker died. Its command line cannot
    tell (a code server starts workers with multiprocessing's ``spawn``, whose command line names no
    dagster module); its start time can: the worker started before it logged its pid.
    """
    if run.status != dg.DagsterRunStatus.STARTED or not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return None
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        match = WORKER_PID.search(record.message or "")
        if match:
            pid = int(match.group(1))
            why = None
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                why = f"its worker process {pid} is gone (killed?)"
            except PermissionError:
                return None  # it exists, under another user
            if why is None:
                started = process_started_at(pid)
                if started is not None and started > record.timestamp + START_TIME_SLACK_S:
                    why = f"its worker process {pid} is gone (the pid now belongs to a process started later)"
            # A worker records its run's end before it exits: read the status again *after* seeing it gone,
            # or a run that just succeeded (read as STARTED a moment ago) would be failed.
            fresh = instance.get_run_by_id(run.run_id) if why else None
            return why if fresh is not None and fresh.status == dg.DagsterRunStatus.STARTED else None
    return None


def reap_dead_runs(instance: dg.DagsterInstance, model: ModelSettings) -> list[str]:
    """Fail the model's retrain runs whose local worker died, so the failure sensor records their outcome
    and nothing waits on them; returns what was reaped."""
    reaped = []
    records = instance.get_run_records(
        dg.RunsFilter(job_name=retrain_job_name(model.name), statuses=[dg.DagsterRunStatus.STARTED]), limit=5)
    for record in records:
        why = dead_local_worker(instance, record.dagster_run)
        if why:
            instance.report_run_failed(record.dagster_run, f"retrain-assets: run {record.dagster_run.run_id[:8]} failed: {why}")
            reaped.append(f"{record.dagster_run.run_id[:8]}: {why}")
    return reaped


def stale_claim(instance: dg.DagsterInstance | None, store: MonitoringStore, model: ModelSettings, event: dict,
                now: dt.datetime) -> str | None:
    """Why the model's open retrain event no longer stands, or None while it does.

    It stands while its run is queued or running, while the run's gated candidate waits for its promotion
    run (both within ``run_timeout_minutes``), while its candidate is in shadow or in canary, and for
    ``PENDING_CLAIM_LIMIT`` while no run carries it yet. Without an instance (a trigger
    sent to a remote webserver) only time can tell.
    """
    run_ids = [event["run_id"]] if event.get("run_id") else []
    if instance is not None and not run_ids:
        tagged = instance.get_run_records(dg.RunsFilter(tags={TAG_EVENT_ID: str(event["id"])}), limit=1)
        run_ids = [r.dagster_run.run_id for r in tagged]
    if instance is None or not run_ids:
        if now - event["triggered_at"] > (dt.timedelta(minutes=model.triggers.run_timeout_minutes) if run_ids
                                          else PENDING_CLAIM_LIMIT):
            return "no run took it up in time"
        return None
    record = instance.get_run_record_by_id(run_ids[0])
    if record is None:
        return f"its run {run_ids[0][:8]} is not in this Dagster instance"
    dead = dead_local_worker(instance, record.dagster_run)
    if dead:
        instance.report_run_failed(record.dagster_run, f"retrain-assets: run {run_ids[0][:8]} failed: {dead}")
        return f"its run {run_ids[0][:8]} died: {dead}"
    if record.dagster_run.status in IN_FLIGHT:
        if now - _created(record) > dt.timedelta(minutes=model.triggers.run_timeout_minutes):
            return f"its run {run_ids[0][:8]} has been in flight past run_timeout_minutes (its worker is presumed dead)"
        return None
    candidate = store.registry.candidate_of_run(model.name, run_ids[0])
    if candidate is not None and candidate.status in ("shadow", "canary"):
        return None  # the candidate is still being judged on live traffic (in shadow or in canary)
    if (record.dagster_run.status == dg.DagsterRunStatus.SUCCESS and candidate is not None
            and candidate.status == "candidate"):
        # Its gates passed and its promotion run is on its way (the promotion sensor), or in flight: an
        # in-flight promotion holds the claim (run monitoring stops it if it hangs); otherwise the wait
        # counts from the end of the retrain run, not its creation (queueing and training are not waiting).
        promoting = instance.get_run_records(dg.RunsFilter(job_name=promote_job_name(model.name), statuses=IN_FLIGHT,
                                                           tags={TAG_CANDIDATE_RUN: run_ids[0]}), limit=1)
        ended = (dt.datetime.fromtimestamp(record.end_time, dt.timezone.utc) if record.end_time else _created(record))
        if not promoting and now - ended > dt.timedelta(minutes=model.triggers.run_timeout_minutes):
            return (f"the candidate {candidate.label} of its run {run_ids[0][:8]} passed its gates but was not promoted "
                    "within run_timeout_minutes (is the promotion sensor running?)")
        return None
    return f"its run {run_ids[0][:8]} ended {record.dagster_run.status.value} without recording an outcome"


def fail_retrain(store: MonitoringStore, model: ModelSettings, event_id: int, **fields) -> int | None:
    """Record a retrain's failure in its event and, when it makes ``incident_after_failures`` failed retrains
    of the model in a row, open a P1 incident for the model: the same failure repeating is a problem a
    person must look at (seed 004), and the incident stops automatic retraining until they resolve it.
    Returns the incident opened, if any."""
    if not store.events.complete(event_id, successful=False, **fields):
        return None  # the event already had its outcome
    limit = model.triggers.incident_after_failures
    if not limit or store.events.open_p1_incidents(model.name):
        return None
    # Only failures since a person last resolved a P1: resolving it starts the count again.
    outcomes = store.events.recent_outcomes(model.name, limit, since=store.events.last_p1_resolved(model.name))
    if len(outcomes) < limit or any(outcomes):
        return None
    incident = store.events.open_incident(
        f"{model.name}: {limit} retrains failed in a row (the newest: event #{event_id}); investigate the data "
        "quality and the failed checks in the events; automatic retraining is blocked until this incident is resolved",
        priority="P1", model_name=model.name)
    Notifier().notify(f"{model.name}: P1 incident #{incident} opened after {limit} failed retrains in a row",
                      model=model.name, incident=incident, event_id=event_id)
    return incident


def claim_retrain(instance: dg.DagsterInstance | None, store: MonitoringStore, model: ModelSettings, *,
                  forced_by: str | None = None, now: dt.datetime | None = None, **fields) -> int:
    """Record an attempted retrain trigger, which claims the model's one open retrain in the database.

    A claim that no longer stands (see :func:`stale_claim`) is released with the reason first; a forced
    manual trigger releases a live one and says so. Otherwise :class:`ClaimTaken` tells who holds it.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    for _ in range(3):
        try:
            return store.events.record_trigger(model.name, attempted=True, **fields)
        except ClaimTaken as taken:
            if taken.event["id"] == "?":
                continue  # released meanwhile: claim again
            why = stale_claim(instance, store, model, taken.event, now)
            if why is None and forced_by is None:
                raise
            if why is not None:  # its run died, hung or never started: a failed retrain, counted as one
                fail_retrain(store, model, int(taken.event["id"]), execution_metrics={"error": f"claim released: {why}"})
            else:  # a person superseded a live retrain: not a failure of the model's retraining
                store.events.complete(int(taken.event["id"]), successful=False, execution_metrics={
                    "error": f"claim released: superseded by a forced manual trigger of {forced_by}", "superseded": True})
    return store.events.record_trigger(model.name, attempted=True, **fields)


def event_of_run(store: MonitoringStore, run: dg.DagsterRun) -> int | None:
    """The retraining event a run completes: the one its trigger recorded (tag), else the one the run
    opened for itself (schedule, launchpad)."""
    tagged = run.tags.get(TAG_EVENT_ID)
    return int(tagged) if tagged else store.events.for_run(run.run_id)


def open_run_event(instance: dg.DagsterInstance, store: MonitoringStore, model: ModelSettings, run: dg.DagsterRun,
                   reason: str, requester: str) -> int:
    """Make sure this retrain run has its event row, and that the row names the run.

    Sensor-triggered runs carry the event their trigger recorded; a scheduled run or one launched from
    the launchpad gets its event here, at its first step, so every retrain leaves a row in the audit
    table whatever started it. That row is the run's claim: while another retrain of the model is open,
    this run stops here with a message naming it.
    """
    event_id = event_of_run(store, run)
    if event_id is None:
        trigger, tag_reason = run_trigger(run.tags)
        try:
            return claim_retrain(
                instance, store, model, trigger_type=trigger, severity=run.tags.get(TAG_SEVERITY, "LOW"),
                reason=reason or tag_reason, metrics={"requester": requester} if requester else None, run_id=run.run_id,
            )
        except ClaimTaken as taken:
            raise RetrainError(f"{taken}: this run stops here; one retrain per model runs at a time") from None
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
    reap_dead_runs(instance, model)
    in_flight = instance.get_run_records(dg.RunsFilter(job_name=retrain_job_name(model.name), statuses=IN_FLIGHT), limit=5)
    # A run in flight for longer than its timeout has a dead worker (run monitoring fails it when the daemon
    # runs it): it must not block every later trigger for ever.
    limit = dt.timedelta(minutes=model.triggers.run_timeout_minutes)
    in_flight = [r for r in in_flight if now - _created(r) < limit]
    failed = store.registry.last_failed_retrain(model.name)
    last_failure = []
    if failed is not None and source.count_labels_after(failed[0].max_label_id, cap=1) == 0:
        last_failure = failed[1]
    hours = model.triggers.quality_block_hours
    critical = store.registry.critical_dataset_since(model.name, now - dt.timedelta(hours=hours)) if hours else None
    trained = store.registry.newest(model.name)
    last = store.registry.dataset(model.name, trained.dataset_tag) if trained is not None else None
    training_rows = last.rows if last is not None else None
    return TriggerFacts(
        severity=severity,
        labeled_rows=source.counted_labels_after(last.max_label_id if last is not None else None,
                                               cap=new_labels_needed(training_rows, model.triggers)),
        training_rows=training_rows,
        now=now,
        last_attempt=last_retrain_start(instance, model),
        last_failure=last_failure,
        open_p1=store.events.open_p1_incidents(model.name),
        critical_quality=(f"dataset {critical.tag}: " + ", ".join(q["name"] for q in critical.quality if not q["passed"])
                          + f" failed at {critical.created_at:%Y-%m-%d %H:%M} UTC; blocked until "
                          f"{critical.created_at + dt.timedelta(hours=hours):%Y-%m-%d %H:%M} UTC") if critical else "",
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
    try:
        event_id = claim_retrain(instance, store, model, now=now, trigger_type=trigger, severity=severity, reason=reason,
                                 drift_type=drift_type, metrics=metrics)
    except ClaimTaken as taken:
        return dg.SkipReason(f"{trigger} trigger ({severity}) not requested: {taken}. Signal: {reason}"), True
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
