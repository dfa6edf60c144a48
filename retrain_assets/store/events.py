"""The audit trail: one row per retraining trigger, completed when its run ends."""

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, select, update

from retrain_assets.store.schema import model_retraining_events


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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

    def complete(self, event_id: int, *, successful: bool, **fields: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(model_retraining_events)
                .where(model_retraining_events.c.id == event_id)
                .values(execution_successful=successful, execution_completed_at=_now(), **fields)
            )

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
