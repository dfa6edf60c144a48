"""The audit trail: one row per retraining trigger, completed when its run ends.

An attempted trigger's row is also the model's **claim**: a unique index allows one open (attempted,
not completed) retrain event per model, so concurrent triggers cannot both start a retrain; the loser
gets :class:`ClaimTaken` naming the open event. Completing the event releases the claim.
"""

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Boolean, Engine, and_, bindparam, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from retrain_assets.errors import RetrainError
from retrain_assets.store.schema import UTCDateTime, incidents, model_retraining_events


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class ClaimTaken(RetrainError):
    """Another retrain of the model is open: ``event`` is its row."""

    def __init__(self, event: dict):
        self.event = event
        run = f", run {event['run_id'][:8]}" if event.get("run_id") else ""
        super().__init__(f"a retrain of {event['model_name']} is already in flight (event #{event['id']}, "
                         f"{event['trigger_type']}{run}, triggered {event['triggered_at']:%Y-%m-%d %H:%M} UTC)")


def completion(successful: bool, **fields: Any) -> dict:
    """The column values that complete an event (one definition for every way an event completes)."""
    return {"execution_successful": successful, "execution_completed_at": _now(), **fields}


_OPEN_CLAIM = and_(model_retraining_events.c.execution_attempted.is_(True),
                   model_retraining_events.c.execution_completed_at.is_(None),
                   model_retraining_events.c.trigger_type != "rollback")


class EventLog:
    def __init__(self, engine: Engine):
        self.engine = engine

    def record_trigger(
        self,
        model_name: str,
        *,
        trigger_type: str,
        severity: str,
        reason: str,
        metrics: Mapping[str, Any] | None = None,
        drift_type: str | None = None,
        attempted: bool = True,
        run_id: str | None = None,
    ) -> int:
        """Record a trigger; an attempted one (not a rollback) claims the model's one open retrain and raises
        :class:`ClaimTaken` when another is open."""
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    model_retraining_events.insert().values(
                        model_name=model_name,
                        trigger_type=trigger_type,
                        severity=severity,
                        drift_type=drift_type,
                        trigger_reason=reason,
                        trigger_metrics=dict(metrics or {}),
                        execution_attempted=attempted,
                        run_id=run_id,
                        triggered_at=_now(),
                    )
                )
                return int(result.inserted_primary_key[0])
        except IntegrityError:
            holder = self.open_claim(model_name)
            if holder is None:  # released between the insert and this read: the caller may simply try again
                raise ClaimTaken({"id": "?", "model_name": model_name, "trigger_type": "unknown", "run_id": None,
                                  "triggered_at": _now()}) from None
            raise ClaimTaken(holder) from None

    def open_claim(self, model_name: str) -> dict | None:
        """The model's open retrain event (attempted, not completed), if any."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(model_retraining_events).where(model_retraining_events.c.model_name == model_name, _OPEN_CLAIM)
            ).first()
        return None if row is None else dict(row._mapping)

    def complete(self, event_id: int, *, successful: bool, **fields: Any) -> bool:
        """Record the outcome; False when the event already had one (the first outcome stands)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(model_retraining_events)
                .where(model_retraining_events.c.id == event_id, model_retraining_events.c.execution_completed_at.is_(None))
                .values(**completion(successful, **fields))
            )
        return result.rowcount > 0

    def get(self, event_id: int) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(model_retraining_events).where(model_retraining_events.c.id == event_id)
            ).one_or_none()
        return None if row is None else dict(row._mapping)

    def recent(self, model_name: str | None = None, limit: int = 50) -> list[dict]:
        query = select(model_retraining_events).order_by(model_retraining_events.c.triggered_at.desc()).limit(limit)
        if model_name:
            query = query.where(model_retraining_events.c.model_name == model_name)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query).all()]

    def of_type(self, model_name: str, trigger_type: str, since: dt.datetime) -> list[dict]:
        """The model's event rows of one ``trigger_type`` recorded at or after ``since``, oldest first (e.g.
        the canary failures a server reported during a canary)."""
        e = model_retraining_events
        query = (select(e).where(e.c.model_name == model_name, e.c.trigger_type == trigger_type, e.c.triggered_at >= since)
                 .order_by(e.c.id))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query).all()]

    def recent_outcomes(self, model_name: str, limit: int, since: dt.datetime | None = None) -> list[bool]:
        """The outcomes of the model's newest completed retrains (rollbacks and superseded ones aside), newest
        first; with ``since``, only those completed after it."""
        e = model_retraining_events
        query = (select(e.c.execution_successful, e.c.execution_metrics)
                 .where(e.c.model_name == model_name, e.c.execution_attempted.is_(True),
                        e.c.execution_completed_at.is_not(None), e.c.trigger_type != "rollback",
                        e.c.execution_completed_at > since if since is not None else True)
                 .order_by(e.c.execution_completed_at.desc(), e.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        # A retrain a person superseded (retrain trigger --force) neither failed nor succeeded.
        return [bool(r.execution_successful) for r in rows if not (r.execution_metrics or {}).get("superseded")]

    def for_run(self, run_id: str) -> int | None:
        """The event a run completes (newest first, should a run ever have been attached twice)."""
        e = model_retraining_events
        with self.engine.connect() as conn:
            return conn.execute(select(e.c.id).where(e.c.run_id == run_id).order_by(e.c.id.desc()).limit(1)).scalar()

    def attach_run(self, event_id: int, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(model_retraining_events).where(model_retraining_events.c.id == event_id).values(run_id=run_id))

    def open_incident(self, title: str, *, priority: str = "P1", model_name: str | None = None) -> int:
        if priority not in ("P1", "P2", "P3", "P4"):
            raise ValueError(f"incident priority must be P1..P4, got {priority!r}")
        with self.engine.begin() as conn:
            result = conn.execute(
                incidents.insert().values(model_name=model_name, priority=priority, title=title, opened_at=_now())
            )
            return int(result.inserted_primary_key[0])

    def resolve_incident(self, incident_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(incidents).where(incidents.c.id == incident_id).values(resolved_at=_now()))

    def last_p1_resolved(self, model_name: str) -> dt.datetime | None:
        """When the newest resolved P1 incident of this model (or of every model) was resolved."""
        query = select(func.max(incidents.c.resolved_at)).where(
            incidents.c.priority == "P1", incidents.c.resolved_at.is_not(None),
            or_(incidents.c.model_name.is_(None), incidents.c.model_name == model_name))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def open_p1_incidents(self, model_name: str) -> list[str]:
        """Titles of unresolved P1 incidents of this model or of every model."""
        query = select(incidents.c.id, incidents.c.title).where(
            and_(
                incidents.c.resolved_at.is_(None),
                incidents.c.priority == "P1",
                or_(incidents.c.model_name.is_(None), incidents.c.model_name == model_name),
            )
        )
        with self.engine.connect() as conn:
            return [f"#{row.id} {row.title}" for row in conn.execute(query).all()]


# The audit queries `retrain events` prints; plain SQL that runs unchanged on PostgreSQL and SQLite.
AUDIT_QUERIES = {
    "events": """
SELECT id, model_name, trigger_type, severity, execution_attempted AS attempted,
       execution_successful AS successful, retraining_model_version AS version,
       triggered_at, execution_completed_at AS completed_at, trigger_reason
FROM model_retraining_events
WHERE triggered_at >= :since
ORDER BY triggered_at DESC""",
    "trigger_frequency": """
SELECT trigger_type,
       COUNT(*) AS triggers,
       SUM(CASE WHEN execution_attempted THEN 1 ELSE 0 END) AS attempted,
       SUM(CASE WHEN execution_successful THEN 1 ELSE 0 END) AS successful,
       ROUND(100.0 * SUM(CASE WHEN execution_successful THEN 1 ELSE 0 END)
             / NULLIF(SUM(CASE WHEN execution_attempted THEN 1 ELSE 0 END), 0), 1) AS success_rate_pct
FROM model_retraining_events
WHERE triggered_at >= :since
GROUP BY trigger_type
ORDER BY triggers DESC""",
    "improvement": """
SELECT model_name, retraining_model_version AS version, trigger_type,
       retraining_accuracy, improvement_accuracy_percent,
       retraining_rmse, improvement_rmse_percent,
       retraining_r2, comparison_previous_r2, improvement_r2_percent,
       execution_completed_at AS completed_at
FROM model_retraining_events
WHERE execution_successful AND triggered_at >= :since
ORDER BY execution_completed_at DESC""",
}


def audit_report(engine: Engine, since: dt.datetime) -> dict[str, tuple[list[str], list[tuple]]]:
    """Each audit query's column names and rows since ``since``."""
    typed = {"triggered_at": UTCDateTime(), "completed_at": UTCDateTime(), "attempted": Boolean(),
             "successful": Boolean()}
    out = {}
    with engine.connect() as conn:
        for name, sql in AUDIT_QUERIES.items():
            query = text(sql).bindparams(bindparam("since", type_=UTCDateTime()))
            query = query.columns(**{column: kind for column, kind in typed.items() if f" {column}" in sql})
            result = conn.execute(query, {"since": since})
            out[name] = (list(result.keys()), [tuple(row) for row in result.all()])
    return out
