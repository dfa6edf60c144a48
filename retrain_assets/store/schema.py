"""The monitoring store's tables (SQLAlchemy Core), identical on SQLite and PostgreSQL.

Why Core tables rather than an ORM: every table is meant to be read with plain SQL by the people who run
the models (who retrained what, when, why, with which result), so the schema is written down plainly here
and created by the versioned migrations in :mod:`retrain_assets.store.migrations`.
"""

import datetime as dt

from pydantic_core import to_json
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

# BIGINT on PostgreSQL (10M+ rows), INTEGER on SQLite (only INTEGER PRIMARY KEY autoincrements there).
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


def json_text(value) -> str:
    """The text of a value in a JSON column, written by every path alike (the engine's serializer, the log
    writer's own engine and the prediction log's fast inserts). pydantic-core's encoder: about a third of
    ``json.dumps``' CPU on a served request's feature rows, which the log writer encodes for every row it
    writes. The same values read back (NaN and Infinity written as ``json.dumps`` writes them), in compact
    text, with non-ASCII characters escaped as ``json.dumps`` escapes them: SQLite's ``json()`` keeps escapes
    as written, so a class label logged by an earlier version must compare equal to the same label logged
    now (the ml_model_predictions view's prediction_error). DEL is the one character pydantic-core leaves
    raw and json.dumps escapes."""
    text = to_json(value, inf_nan_mode="constants", ensure_ascii=True).decode()
    return text.replace("\x7f", "\\u007f") if "\x7f" in text else text


class UTCDateTime(TypeDecorator):
    """Timestamps are always timezone-aware UTC in Python.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as naive UTC and
    made aware again on the way out. Naive input is rejected: a silent local-time guess is how label
    joins and freshness checks go wrong.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass timezone-aware UTC timestamps")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


prediction_log = Table(
    "prediction_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model_name", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("ts", UTCDateTime, nullable=False, comment="When the prediction was served."),
    Column("features", Json, nullable=False, comment="Feature values as sent to the model."),
    Column("prediction", Json, comment="Predicted class or value (NULL for rows logged before any model)."),
    Column("score", Float, comment="Positive-class probability (classification)."),
    Column("model_version", Integer, comment="Registry version that served the prediction."),
    Column("safe_to_send", Boolean, comment="Quality flag from the serving side; FALSE rows never train."),
    Column("latency_ms", Float, comment="Model time of the request that served this row, in ms (migration 5)."),
    UniqueConstraint("model_name", "request_id", name="uq_prediction_log_request"),
)
Index("ix_prediction_log_model_ts", prediction_log.c.model_name, prediction_log.c.ts)
# What one version served, newest first (the watch, the canary's steps): an index range, not a scan of the log.
PREDICTION_LOG_BY_VERSION = Index("ix_prediction_log_model_version", prediction_log.c.model_name,
                                  prediction_log.c.model_version, prediction_log.c.id)

label_feedback = Table(
    "label_feedback",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model_name", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("label", Json, nullable=False, comment="The true outcome, arriving after the prediction."),
    Column("labeled_at", UTCDateTime, nullable=False),
    UniqueConstraint("model_name", "request_id", name="uq_label_feedback_request"),
)
Index("ix_label_feedback_model_id", label_feedback.c.model_name, label_feedback.c.id)

shadow_predictions = Table(
    "shadow_predictions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model_name", String(64), nullable=False),
    Column("request_id", String(64), nullable=False, comment="The served request it shadowed (prediction_log)."),
    Column("model_version", Integer, nullable=False, comment="The candidate in shadow that scored it."),
    Column("prediction", Json),
    Column("score", Float),
    Column("ts", UTCDateTime, nullable=False),
    UniqueConstraint("model_name", "model_version", "request_id", name="uq_shadow_predictions_request"),
)

serving_requests = Table(
    "serving_requests",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("process", String(128), nullable=False, comment="host:pid:random id of the server process that counted them."),
    Column("model_name", String(64), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("promoted_at", UTCDateTime, nullable=False,
           comment="The promotion these requests were served under: a re-promotion starts new counts (migration 12)."),
    Column("answered", BigInteger, nullable=False, comment="Requests it answered as production (cumulative)."),
    Column("failed", BigInteger, nullable=False, comment="Requests on which it raised (answered 500)."),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("process", "model_name", "model_version", "promoted_at", name="uq_serving_requests_process_promotion"),
)
Index("ix_serving_requests_promotion", serving_requests.c.model_name, serving_requests.c.model_version,
      serving_requests.c.promoted_at)

dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model_name", String(64), nullable=False),
    Column("number", Integer, nullable=False),
    Column("tag", String(64), nullable=False, comment="v{N}-{YYYY-MM-DD}"),
    Column("content_hash", String(64), nullable=False, comment="sha256 of the rows, order-independent."),
    Column("artifact_key", Text, nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("profile_key", Text, comment="Reference drift profile of the training split."),
    Column("profile_sha256", String(64)),
    Column("rows", Integer, nullable=False),
    Column("max_label_id", BigInteger, comment="Newest label_feedback.id included (for data-volume triggers)."),
    Column("summary", Json, nullable=False),
    Column("source_query", Text),
    Column("quality", Json, comment="Data-quality check results."),
    Column("run_id", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("model_name", "number", name="uq_dataset_versions_number"),
)

MODEL_STATUSES = ("candidate", "shadow", "canary", "production", "standby", "archived", "rejected")

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model_name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False, comment="|".join(MODEL_STATUSES)),
    Column("artifact_key", Text, nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("dataset_tag", String(64), nullable=False),
    Column("dataset_hash", String(64), nullable=False),
    Column("params", Json, nullable=False),
    Column("metrics", Json, nullable=False, comment="Test metrics on its own dataset's test split."),
    Column("gate_results", Json, comment="Evaluation gate outcomes, one object per gate."),
    Column("trigger", String(32)),
    Column("reason", Text),
    Column("run_id", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("promoted_at", UTCDateTime),
    Column("promoted_by_run_id", String(64)),
    Column("proven_at", UTCDateTime, comment="Validation period passed without incident (migration 4)."),
    Column("baseline_metrics", Json, comment="Live metrics over its validation period: the monitoring baseline."),
    Column("reference_key", Text, comment="Reference pack artifact: held-out losses, importances, drift calibration."),
    Column("reference_sha256", String(64)),
    Column("traffic_share", Float, comment="Canary: the share of live requests this version answers (migration 10)."),
    Column("step_started_at", UTCDateTime, comment="Canary: when its current traffic share began."),
    Column("step_log_id", BigInteger, comment="Canary: the newest prediction_log id when its current share began "
                                              "(the step's evidence is the rows logged after it)."),
    UniqueConstraint("model_name", "version", name="uq_model_versions_version"),
)
# At most one production model per name, enforced by the database itself.
Index(
    "uq_model_versions_one_production",
    model_versions.c.model_name,
    unique=True,
    sqlite_where=text("status = 'production'"),
    postgresql_where=text("status = 'production'"),
)

model_retraining_events = Table(
    "model_retraining_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model_name", String(64), nullable=False),
    Column("trigger_type", String(32), nullable=False, comment="drift|concept_drift|performance|data_volume|schedule|manual"),
    Column("severity", String(16), nullable=False, comment="LOW|MEDIUM|HIGH|CRITICAL"),
    Column("drift_type", String(32)),
    Column("trigger_reason", Text, nullable=False),
    Column("trigger_metrics", Json),
    Column("execution_attempted", Boolean, nullable=False, server_default=text("false")),
    Column("execution_successful", Boolean),
    Column("execution_metrics", Json),
    Column("retraining_model_version", String(32)),
    Column("retraining_r2", Float),
    Column("retraining_rmse", Float),
    Column("retraining_accuracy", Float),
    Column("comparison_previous_r2", Float),
    Column("improvement_r2_percent", Float),
    Column("improvement_rmse_percent", Float),
    Column("improvement_accuracy_percent", Float),
    Column("gate_summary", Json),
    Column("run_id", String(64)),
    Column("triggered_at", UTCDateTime, nullable=False),
    Column("execution_completed_at", UTCDateTime),
)
Index("idx_retraining_events_severity", model_retraining_events.c.severity)
Index("idx_retraining_events_trigger_type", model_retraining_events.c.trigger_type)
Index("idx_retraining_events_triggered_at", model_retraining_events.c.triggered_at.desc())
Index("idx_retraining_events_success", model_retraining_events.c.execution_successful)
# The claim: at most one open retrain per model (attempted, not yet completed; rollbacks are not retrains).
# A trigger claims by inserting its event; a second concurrent insert fails in the database itself, so two
# sensors, a schedule and a person can never start two retrains of one model.
OPEN_CLAIM = "execution_attempted = true AND execution_completed_at IS NULL AND trigger_type <> 'rollback'"
one_open_claim = Index(
    "uq_retraining_events_one_open_claim",
    model_retraining_events.c.model_name,
    unique=True,
    sqlite_where=text(OPEN_CLAIM),
    postgresql_where=text(OPEN_CLAIM),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model_name", String(64), comment="NULL: the incident concerns every model."),
    Column("priority", String(4), nullable=False, comment="P1 (highest) .. P4"),
    Column("title", Text, nullable=False),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime),
)
Index("ix_incidents_open", incidents.c.resolved_at, incidents.c.priority)

schema_migrations = Table(
    "retrain_schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)

# Monitoring history for SQL users: one row per performance report and per drifted feature. (The
# prediction history is the view ml_model_predictions, created by migration 3 over prediction_log and
# label_feedback, so it never duplicates the log.)
ml_model_metrics = Table(
    "ml_model_metrics",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model_id", String(64), nullable=False, comment="The model's name."),
    Column("model_version", Integer, comment="Registry version measured."),
    Column("measured_at", UTCDateTime, nullable=False),
    Column("n_samples", Integer, nullable=False, comment="Labeled predictions in the window."),
    Column("accuracy", Float),
    Column("f1", Float),
    Column("auc", Float),
    Column("mae", Float),
    Column("rmse", Float),
    Column("r2", Float),
    Column("baseline_accuracy", Float, comment="The metric at promotion (test split)."),
    Column("baseline_f1", Float),
    Column("baseline_auc", Float),
    Column("baseline_mae", Float),
    Column("baseline_rmse", Float),
    Column("baseline_r2", Float),
    Column("concept_drift", Boolean),
    Column("degraded", Boolean),
    Column("run_id", String(64)),
)
Index("ix_ml_model_metrics_model_time", ml_model_metrics.c.model_id, ml_model_metrics.c.measured_at.desc())

ml_drift_alerts = Table(
    "ml_drift_alerts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model_id", String(64), nullable=False),
    Column("feature", String(128), nullable=False),
    Column("test", String(16), nullable=False, comment="ks | chi2"),
    Column("statistic", Float),
    Column("p_value", Float),
    Column("psi", Float),
    Column("effect", Float),
    Column("severity", String(16), nullable=False, comment="Severity of the report's decision."),
    Column("detected_at", UTCDateTime, nullable=False),
    Column("run_id", String(64)),
)
Index("ix_ml_drift_alerts_model_time", ml_drift_alerts.c.model_id, ml_drift_alerts.c.detected_at.desc())
