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

from sqlalchemy import Connection, Engine, select

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


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "prediction log, labels, dataset versions, model registry, retraining events", _initial_schema),
    Migration(2, "incidents (an open P1 blocks automatic retraining)", _incidents),
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
