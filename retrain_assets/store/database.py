"""Opening the monitoring database: one engine per URL, migrated on first use, with clear errors."""

import os
import re
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from retrain_assets.errors import StoreError
from retrain_assets.store.migrations import migrate
from retrain_assets.store.schema import json_text


ENV_PREFIX = "env:"


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def has_password(url: str) -> bool:
    return bool(re.search(r"://[^:/@]+:[^@]+@", url))


def resolve_url(url: str) -> str:
    """A URL or a reference ``env:NAME`` to the environment variable holding it.

    Settings, Dagster resources, snapshots and metadata only ever hold the reference: a password stays in
    the environment of the processes that connect, never in what is stored or shown.
    """
    if not url.startswith(ENV_PREFIX):
        return url
    name = url[len(ENV_PREFIX):]
    value = os.environ.get(name)
    if not value:
        raise StoreError(f"the database URL is read from the environment variable {name}, which is not set in this "
                         f"process: export {name}=postgresql+psycopg2://user:password@host:5432/db")
    return value


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg2 here, whatever SQLAlchemy's default driver becomes."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (UI, sensors) never block the writer
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_engine(url: str) -> Engine:
    """Create (once per URL and process), check and migrate the monitoring database. ``url`` may be an
    ``env:NAME`` reference (:func:`resolve_url`)."""
    return _open_engine(normalize_url(resolve_url(url)))


open_engine.cache_clear = lambda: _open_engine.cache_clear()  # forget every engine (tests drop databases)


@lru_cache(maxsize=16)
def _open_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            f"invalid database URL {redact(url)!r}: use sqlite:///path/to/file.db or "
            "postgresql+psycopg2://user@host:5432/dbname (RETRAIN_DATABASE_URL or storage.database_url)"
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(url, pool_pre_ping=True, json_serializer=json_text)
    except (ArgumentError, ImportError) as error:
        raise StoreError(f"cannot use database URL {redact(url)!r}: {error}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        migrate(engine)
    except OperationalError as error:
        engine.dispose()
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise StoreError(
            f"cannot reach the monitoring database at {redact(url)}: {reason}. Start the database server or "
            "point RETRAIN_DATABASE_URL (or storage.database_url in retrain.yaml) at a reachable one"
        ) from None
    except SQLAlchemyError as error:
        engine.dispose()
        raise StoreError(f"cannot prepare the monitoring database at {redact(url)}: {error}") from None
    return engine
