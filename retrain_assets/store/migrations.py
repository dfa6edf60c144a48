"""Versioned migrations for the monitoring store.

Each migration is numbered and applied once, inside a transaction, and recorded in
``retrain_schema_migrations``; on PostgreSQL an advisory lock serializes concurrent starters (a webserver,
a daemon and a run may all open the store at once). Our own version table (not ``alembic_version``) lets
the store share a database with Dagster's storage or Optuna's without a clash.

To change the schema: append a :class:`Migration` with the next number; never edit an applied one.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, and_, func, inspect, select, update

from retrain_assets.store import schema

_ADVISORY_LOCK_ID = 72_616_911  # arbitrary constant naming "retrain-assets migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _initial_schema(conn: Connection) -> None:
    tables = [
        schema.prediction_log,
        schema.label_feedback,
        schema.dataset_versions,
        schema.model_versions,
        schema.model_retraining_events,
    ]
    schema.metadata.create_all(conn, tables=tables)


def _incidents(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.incidents])


PREDICTIONS_VIEW = """
CREATE VIEW ml_model_predictions AS
SELECT p.id, p.model_name AS model_id, p.model_version, p.request_id, p.features, p.prediction, p.score,
       l.label AS actual, p.ts AS predicted_at, l.labeled_at, p.safe_to_send
FROM prediction_log p
LEFT JOIN label_feedback l ON l.model_name = p.model_name AND l.request_id = p.request_id
"""

# check_retrain_needed(model): the newest metrics row against its baseline and the recent drift alerts.
# The same rule in Python (retrain_assets.store.history) serves SQLite. Renamed check_retrain_needed_detail
# by migration 8.
CHECK_RETRAIN_NEEDED = """
CREATE OR REPLACE FUNCTION check_retrain_needed(
    p_model_id text,
    p_mae_increase double precision DEFAULT 0.20,
    p_accuracy_drop double precision DEFAULT 0.10,
    p_psi double precision DEFAULT 0.2,
    p_alert_hours integer DEFAULT 24
) RETURNS TABLE(needs_retrain boolean, reason text) LANGUAGE sql STABLE AS $$
    WITH latest AS (
        SELECT * FROM ml_model_metrics WHERE model_id = p_model_id ORDER BY measured_at DESC LIMIT 1
    ), alerts AS (
        SELECT count(*) AS n FROM ml_drift_alerts
        WHERE model_id = p_model_id AND psi > p_psi AND detected_at >= now() - make_interval(hours => p_alert_hours)
    ), reasons AS (
        SELECT 'MAE ' || round(l.mae::numeric, 4) || ' > baseline ' || round(l.baseline_mae::numeric, 4)
               || ' x ' || (1 + p_mae_increase) AS reason
        FROM latest l WHERE l.mae > l.baseline_mae * (1 + p_mae_increase)
        UNION ALL
        SELECT 'accuracy ' || round(l.accuracy::numeric, 4) || ' < baseline ' || round(l.baseline_accuracy::numeric, 4)
               || ' x ' || (1 - p_accuracy_drop)
        FROM latest l WHERE l.accuracy < l.baseline_accuracy * (1 - p_accuracy_drop)
        UNION ALL
        SELECT a.n || ' drift alerts with PSI > ' || p_psi || ' in the last ' || p_alert_hours || ' h'
        FROM alerts a WHERE a.n > 0
    )
    SELECT count(*) > 0, coalesce(string_agg(reason, '; '), 'no retrain needed') FROM reasons
$$
"""


# Migration 8: the view gains prediction_error (prediction - actual for numbers, so AVG(ABS(...)) is the MAE
# the design documents compute, and 0/1 for a wrong/right class), and check_retrain_needed takes the
# documents' boolean form; the table-returning variant above is kept as check_retrain_needed_detail.
_ERROR = {
    "postgresql": """CASE WHEN jsonb_typeof(p.prediction) = 'number' AND jsonb_typeof(l.label) = 'number'
                 THEN (p.prediction #>> '{}')::double precision - (l.label #>> '{}')::double precision
                 WHEN jsonb_typeof(p.prediction) NOT IN ('null') AND jsonb_typeof(l.label) NOT IN ('null')
                 THEN CASE WHEN p.prediction = l.label THEN 0.0 ELSE 1.0 END END""",
    "sqlite": """CASE WHEN json_type(p.prediction) IN ('integer', 'real') AND json_type(l.label) IN ('integer', 'real')
                 THEN json_extract(p.prediction, '$') - json_extract(l.label, '$')
                 WHEN json_type(p.prediction) NOT IN ('null') AND json_type(l.label) NOT IN ('null')
                 THEN CASE WHEN json(p.prediction) = json(l.label) THEN 0.0 ELSE 1.0 END END""",
}
PREDICTIONS_VIEW_WITH_ERROR = """
CREATE VIEW ml_model_predictions AS
SELECT p.id, p.model_name AS model_id, p.model_version, p.request_id, p.features, p.prediction, p.score,
       l.label AS actual, {error} AS prediction_error, p.ts AS predicted_at, l.labeled_at, p.safe_to_send
FROM prediction_log p
LEFT JOIN label_feedback l ON l.model_name = p.model_name AND l.request_id = p.request_id
"""

CHECK_RETRAIN_NEEDED_BOOLEAN = """
CREATE OR REPLACE FUNCTION check_retrain_needed(
    p_model_id text,
    p_days integer DEFAULT 7,
    p_mae_increase double precision DEFAULT 0.20,
    p_accuracy_drop double precision DEFAULT 0.10,
    p_alert_hours integer DEFAULT 24
) RETURNS boolean LANGUAGE sql STABLE AS $$
    WITH recent AS (
        SELECT avg(mae) AS mae, avg(baseline_mae) AS baseline_mae,
               avg(accuracy) AS accuracy, avg(baseline_accuracy) AS baseline_accuracy
        FROM ml_model_metrics
        WHERE model_id = p_model_id AND measured_at > now() - make_interval(days => p_days)
    )
    SELECT coalesce(r.mae > r.baseline_mae * (1 + p_mae_increase), false)
        OR coalesce(r.accuracy < r.baseline_accuracy * (1 - p_accuracy_drop), false)
        OR EXISTS (SELECT 1 FROM ml_drift_alerts
                   WHERE model_id = p_model_id AND detected_at > now() - make_interval(hours => p_alert_hours))
    FROM recent r
$$
"""


def _prediction_error_view(conn: Connection) -> None:
    conn.exec_driver_sql("DROP VIEW IF EXISTS ml_model_predictions")
    conn.exec_driver_sql(PREDICTIONS_VIEW_WITH_ERROR.format(error=_ERROR[conn.dialect.name]))


def _prediction_error_and_boolean_check(conn: Connection) -> None:
    _prediction_error_view(conn)
    if conn.dialect.name == "postgresql":  # idempotent: replace, then drop the old signature if still there
        conn.exec_driver_sql(CHECK_RETRAIN_NEEDED.replace("FUNCTION check_retrain_needed(", "FUNCTION check_retrain_needed_detail("))
        conn.exec_driver_sql("DROP FUNCTION IF EXISTS check_retrain_needed(text, double precision, double precision, "
                             "double precision, integer)")
        conn.exec_driver_sql(CHECK_RETRAIN_NEEDED_BOOLEAN)


def _monitoring_history(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.ml_model_metrics, schema.ml_drift_alerts])
    conn.exec_driver_sql(PREDICTIONS_VIEW)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(CHECK_RETRAIN_NEEDED)


def _add_missing_columns(conn: Connection, table, names: tuple[str, ...]) -> None:
    """Add columns that schema.py declares on ``table`` to a store created before they existed.

    Stores created after a column was declared already have it (migration 1 creates the tables as
    schema.py declares them), so only absent columns are added, with the dialect's type for each.
    """
    present = {c["name"] for c in inspect(conn).get_columns(table.name)}
    for name in names:
        if name not in present:
            kind = table.c[name].type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}")


def _proven_versions(conn: Connection) -> None:
    _add_missing_columns(conn, schema.model_versions, ("proven_at", "baseline_metrics"))


def _latency_and_shadow(conn: Connection) -> None:
    _add_missing_columns(conn, schema.prediction_log, ("latency_ms",))
    schema.metadata.create_all(conn, tables=[schema.shadow_predictions])


def _reference_packs(conn: Connection) -> None:
    _add_missing_columns(conn, schema.model_versions, ("reference_key", "reference_sha256"))


def _canary_columns(conn: Connection) -> None:
    _add_missing_columns(conn, schema.model_versions, ("traffic_share", "step_started_at", "step_log_id"))


def _serving_requests(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.serving_requests])
    schema.PREDICTION_LOG_BY_VERSION.create(conn, checkfirst=True)


def _serving_requests_by_promotion(conn: Connection) -> None:
    """Counts since each promotion (a canary's days or an earlier promotion of the same version no longer
    dilute the watch's error rate): the table is rebuilt with promoted_at in its key. It held only counters
    of the running servers, which write their counts again under the new key at their next poll."""
    conn.exec_driver_sql("DROP TABLE IF EXISTS serving_requests")
    schema.metadata.create_all(conn, tables=[schema.serving_requests])


def _one_open_claim(conn: Connection) -> None:
    """Close all but the newest open retrain event of each model (left by runs that died before this
    migration existed), then make the claim unique."""
    e = schema.model_retraining_events
    open_claim = and_(e.c.execution_attempted.is_(True), e.c.execution_completed_at.is_(None), e.c.trigger_type != "rollback")
    newest = select(e.c.model_name, func.max(e.c.id).label("id")).where(open_claim).group_by(e.c.model_name).subquery()
    stale = select(e.c.id).where(open_claim, e.c.id.not_in(select(newest.c.id))).scalar_subquery()
    conn.execute(update(e).where(e.c.id.in_(stale)).values(
        execution_successful=False, execution_completed_at=dt.datetime.now(dt.timezone.utc),
        execution_metrics={"error": "closed by migration 7: a newer retrain of this model was triggered while it was open"}))
    schema.one_open_claim.create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "prediction log, labels, dataset versions, model registry, retraining events", _initial_schema),
    Migration(2, "incidents (an open P1 blocks automatic retraining)", _incidents),
    Migration(3, "ml_model_metrics, ml_drift_alerts, ml_model_predictions view, check_retrain_needed()",
              _monitoring_history),
    Migration(4, "model_versions.proven_at and baseline_metrics (validation period)", _proven_versions),
    Migration(5, "prediction_log.latency_ms, shadow_predictions (post-deploy latency, shadow evaluation)",
              _latency_and_shadow),
    Migration(6, "model_versions.reference_key and reference_sha256 (the evidence policy's reference pack)",
              _reference_packs),
    Migration(7, "one open retrain per model: a unique claim on model_retraining_events", _one_open_claim),
    Migration(8, "ml_model_predictions.prediction_error; check_retrain_needed() in the design documents' boolean "
                 "form, the table variant renamed check_retrain_needed_detail()", _prediction_error_and_boolean_check),
    Migration(9, "ml_model_predictions.prediction_error is NULL for a prediction logged as null (before any model)",
              _prediction_error_view),
    Migration(10, "model_versions.traffic_share, step_started_at and step_log_id (canary deployment)", _canary_columns),
    Migration(11, "serving_requests: requests each version answered and failed, per server process (error rate); "
                  "prediction_log indexed by model version (the watch and the canary read one version's rows)",
              _serving_requests),
    Migration(12, "serving_requests counts since each promotion (promoted_at in its key)", _serving_requests_by_promotion),
)


def applied_versions(conn: Connection) -> set[int]:
    return set(conn.execute(select(schema.schema_migrations.c.version)).scalars())


def migrate(engine: Engine) -> list[int]:
    """Apply every pending migration; returns the versions applied now."""
    applied_now = []
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_ID})")
        schema.metadata.create_all(conn, tables=[schema.schema_migrations])
        done = applied_versions(conn)
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            migration.apply(conn)
            conn.execute(
                schema.schema_migrations.insert().values(
                    version=migration.version,
                    description=migration.description,
                    applied_at=dt.datetime.now(dt.timezone.utc),
                )
            )
            applied_now.append(migration.version)
    return applied_now
