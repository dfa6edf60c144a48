"""Whether an automatic retrain may start now: the playbook's prerequisites and timing, as pure rules.

Every automatic trigger (drift, performance, data volume) passes through the same two questions:

1. **Guards** - is anything blocking it? Too few labels since the last training to train on anything new
   (``min_samples``, and ``min_new_labels_fraction`` of the rows that training had: a window that barely
   changed gives back nearly the same model, however bad the current one looks); the latest
   retrain failed (its dataset failed data quality, or its candidate failed a gate) and no label has arrived
   since (the same evidence would fail again: a newer labeled batch lifts it); a dataset whose data
   quality was critical within ``quality_block_hours`` (seed 004's "not critical in the last day"); an open
   P1 incident; a retrain started less than ``cooldown_hours`` ago (CRITICAL bypasses the cooldown);
   a retrain of this model already queued or running (one at a time).
2. **Timing** - CRITICAL and HIGH retrain now; MEDIUM waits for the quiet window (``quiet_start_hour`` to
   ``quiet_end_hour`` in the trigger time zone); LOW is only monitored.

Manual and scheduled retrains are a person's or a calendar's decision: they bypass both.
"""

import datetime as dt
import math
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

URGENT = ("CRITICAL", "HIGH")


@dataclass(frozen=True)
class TriggerFacts:
    """What the guards look at, gathered cheaply (counts and small lookups) by the caller."""

    severity: str
    labeled_rows: int  # labeled rows since the last training (all of them before the first)
    now: dt.datetime
    last_attempt: dt.datetime | None = None
    last_failure: list[str] = field(default_factory=list)  # why the latest retrain failed, if no label arrived since
    open_p1: list[str] = field(default_factory=list)
    runs_in_flight: list[str] = field(default_factory=list)
    training_rows: int | None = None  # rows of the last training's dataset (None before the first)
    critical_quality: str = ""  # a dataset with critical data quality within quality_block_hours, described


def new_labels_needed(training_rows: int | None, settings) -> int:
    """Labels since the last training an automatic retrain needs (``settings``: TriggerSettings)."""
    return max(settings.min_samples, math.ceil(settings.min_new_labels_fraction * (training_rows or 0)))


def blocking_guards(facts: TriggerFacts, settings) -> list[str]:
    """Why the trigger may not start a retrain (empty: nothing blocks it). ``settings``: TriggerSettings."""
    reasons = []
    needed = new_labels_needed(facts.training_rows, settings)
    if facts.labeled_rows < needed:
        share = (f"; min_new_labels_fraction {settings.min_new_labels_fraction:g} of the {facts.training_rows:,} rows "
                 "of the last training" if needed > settings.min_samples else "")
        reasons.append(f"only {facts.labeled_rows} labeled rows since the last training (min_samples "
                       f"{settings.min_samples}{share})")
    if facts.last_failure:
        reasons.append(f"the latest retrain failed ({', '.join(facts.last_failure)}) and no label arrived since")
    if facts.critical_quality:
        reasons.append(f"data quality critical within the last {settings.quality_block_hours:g} h ({facts.critical_quality}): "
                       "fix the source; a newer dataset that passes (a manual retrain) lifts the block sooner")
    if facts.open_p1:
        reasons.append(f"open P1 incident {', '.join(facts.open_p1)}")
    if facts.last_attempt is not None and facts.severity != "CRITICAL":
        ready = facts.last_attempt + dt.timedelta(hours=settings.cooldown_hours)
        if facts.now < ready:
            reasons.append(
                f"cooldown: last retrain started {facts.last_attempt:%Y-%m-%d %H:%M} UTC, next allowed "
                f"{ready:%Y-%m-%d %H:%M} UTC (CRITICAL bypasses it)"
            )
    if facts.runs_in_flight:
        reasons.append(f"a retrain is already queued or running (run {', '.join(r[:8] for r in facts.runs_in_flight)})")
    return reasons


def in_quiet_window(now: dt.datetime, settings) -> bool:
    hour = now.astimezone(ZoneInfo(settings.timezone)).hour
    start, end = settings.quiet_start_hour, settings.quiet_end_hour
    return start <= hour < end if start < end else hour >= start or hour < end


def timing(severity: str, now: dt.datetime, settings) -> str:
    """'now', 'wait' (MEDIUM outside the quiet window) or 'monitor' (LOW)."""
    if severity in URGENT:
        return "now"
    if severity == "MEDIUM":
        return "now" if in_quiet_window(now, settings) else "wait"
    return "monitor"
