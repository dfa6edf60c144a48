"""Monitoring history for SQL users: the metrics of every performance report and every drift alert.

``retrain_needed`` answers the design documents' question "does this model need retraining?" from that
history alone, as they state it (a boolean over the 7-day averages): on PostgreSQL by the SQL function
``check_retrain_needed`` (so a DBA, a dashboard or a shell script can call it), on SQLite by the same rule
in Python. ``check_retrain_needed`` (Python) / ``check_retrain_needed_detail`` (SQL) also say why. The trigger sensors do not depend on it; it is the SQL-side view
of what they decide.
"""

import datetime as dt
from collections.abc import Iterable, Mapping

from sqlalchemy import Engine, func, select, text

from retrain_assets.store.schema import ml_drift_alerts, ml_model_metrics

METRICS = ("accuracy", "f1", "auc", "mae", "rmse", "r2")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class MonitoringHistory:
    def __init__(self, engine: Engine):
        self.engine = engine

    def record_metrics(
        self, model_id: str, model_version: int | None, n_samples: int, metrics: Mapping[str, float],
        baseline: Mapping[str, float], *, concept_drift: bool, degraded: bool, run_id: str | None = None,
    ) -> None:
        row = {m: metrics.get(m) for m in METRICS} | {f"baseline_{m}": baseline.get(m) for m in METRICS}
        with self.engine.begin() as conn:
            conn.execute(ml_model_metrics.insert().values(
                model_id=model_id, model_version=model_version, measured_at=_now(), n_samples=n_samples,
                concept_drift=concept_drift, degraded=degraded, run_id=run_id, **row,
            ))

    def record_drift_alerts(self, model_id: str, alerts: Iterable[Mapping], severity: str, run_id: str | None = None) -> int:
        rows = [{"model_id": model_id, "severity": severity, "detected_at": _now(), "run_id": run_id, **a} for a in alerts]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(ml_drift_alerts.insert(), rows)
        return len(rows)

    def check_retrain_needed(
        self, model_id: str, mae_increase: float = 0.20, accuracy_drop: float = 0.10, psi: float = 0.2,
        alert_hours: int = 24,
    ) -> tuple[bool, str]:
        """(needed, reason) from the newest metrics row and the recent drift alerts (the SQL function
        ``check_retrain_needed_detail`` on PostgreSQL)."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                needed, reason = conn.execute(
                    text("SELECT * FROM check_retrain_needed_detail(:m, :mae, :acc, :psi, :hours)"),
                    {"m": model_id, "mae": mae_increase, "acc": accuracy_drop, "psi": psi, "hours": alert_hours},
                ).one()
            return bool(needed), reason
        return self._check_in_python(model_id, mae_increase, accuracy_drop, psi, alert_hours)

    def retrain_needed(self, model_id: str, days: int = 7, mae_increase: float = 0.20, accuracy_drop: float = 0.10,
                       alert_hours: int = 24) -> bool:
        """The design documents' check, as a boolean: the ``days``-day average MAE above its baseline by
        ``mae_increase``, or the average accuracy below it by ``accuracy_drop``, or any drift alert in the
        last ``alert_hours``. On PostgreSQL this is ``SELECT check_retrain_needed('model')``, which a shell
        script can test (``psql -tAc`` prints ``t`` or ``f``)."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                return bool(conn.execute(text("SELECT check_retrain_needed(:m, :days, :mae, :acc, :hours)"),
                                         {"m": model_id, "days": days, "mae": mae_increase, "acc": accuracy_drop,
                                          "hours": alert_hours}).scalar_one())
        m, a = ml_model_metrics, ml_drift_alerts
        with self.engine.connect() as conn:
            recent = conn.execute(
                select(func.avg(m.c.mae), func.avg(m.c.baseline_mae), func.avg(m.c.accuracy), func.avg(m.c.baseline_accuracy))
                .where(m.c.model_id == model_id, m.c.measured_at > _now() - dt.timedelta(days=days))
            ).one()
            alerts = conn.execute(select(func.count()).select_from(a).where(
                a.c.model_id == model_id, a.c.detected_at > _now() - dt.timedelta(hours=alert_hours))).scalar_one()
        mae, baseline_mae, accuracy, baseline_accuracy = recent
        return bool(
            (mae is not None and baseline_mae is not None and mae > baseline_mae * (1 + mae_increase))
            or (accuracy is not None and baseline_accuracy is not None and accuracy < baseline_accuracy * (1 - accuracy_drop))
            or alerts
        )

    def _check_in_python(self, model_id, mae_increase, accuracy_drop, psi, alert_hours) -> tuple[bool, str]:
        m, a = ml_model_metrics, ml_drift_alerts
        with self.engine.connect() as conn:
            latest = conn.execute(
                select(m).where(m.c.model_id == model_id).order_by(m.c.measured_at.desc()).limit(1)
            ).first()
            alerts = conn.execute(
                select(func.count()).select_from(a).where(
                    a.c.model_id == model_id, a.c.psi > psi, a.c.detected_at >= _now() - dt.timedelta(hours=alert_hours)
                )
            ).scalar_one()
        reasons = []
        if latest is not None and latest.mae is not None and latest.baseline_mae is not None \
                and latest.mae > latest.baseline_mae * (1 + mae_increase):
            reasons.append(f"MAE {latest.mae:.4f} > baseline {latest.baseline_mae:.4f} x {1 + mae_increase:g}")
        if latest is not None and latest.accuracy is not None and latest.baseline_accuracy is not None \
                and latest.accuracy < latest.baseline_accuracy * (1 - accuracy_drop):
            reasons.append(f"accuracy {latest.accuracy:.4f} < baseline {latest.baseline_accuracy:.4f} x {1 - accuracy_drop:g}")
        if alerts:
            reasons.append(f"{alerts} drift alerts with PSI > {psi:g} in the last {alert_hours} h")
        return bool(reasons), "; ".join(reasons) or "no retrain needed"
