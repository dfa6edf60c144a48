"""Real faults for the serving tests: a served model on a real database, the API on a real uvicorn server in
a thread, and database outages made for real on a database the test created.

* PostgreSQL outage: ``ALTER DATABASE <ours> ALLOW_CONNECTIONS false`` and its backends terminated, from an
  admin connection; restored with ``ALLOW_CONNECTIONS true``. Only ever on the test's own database.
* SQLite outage: another connection holds the write lock (``BEGIN EXCLUSIVE``) longer than the writer's
  ``database_timeout_seconds``: what a long transaction, a backup or a stuck process does to an embedded
  database.
"""

import datetime as dt
import logging
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import create_engine, func, select

from retrain_assets.simulate import generate_traffic
from retrain_assets.store import ArtifactStore, MonitoringStore
from retrain_assets.store.schema import prediction_log
from retrain_assets.training.pipeline import build_pipeline, default_params
from tests.conftest import PG_ADMIN_URL, make_settings

TOKEN = "fault-token"


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned), up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Backend:
    """A monitoring database made for one test, and a way to make it unavailable for real."""

    kind: str
    url: str
    name: str | None = None
    path: Path | None = None

    @contextmanager
    def outage(self):
        if self.kind == "postgres":
            with _pg_refusing(self.name):
                yield
        else:
            with _sqlite_locked(self.path):
                yield


@contextmanager
def _pg_refusing(name: str):
    """Our database refuses new connections and loses its current ones, until the block ends."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        yield
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.dispose()


@contextmanager
def _sqlite_locked(path: Path):
    """Another connection holds the database's write lock until the block ends."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


@contextmanager
def table_locked(backend: Backend):
    """prediction_log cannot be written (reads still work) until the block ends: holds a writer still."""
    if backend.kind == "postgres":
        engine = create_engine(backend.url)
        conn = engine.connect()
        transaction = conn.begin()
        conn.exec_driver_sql("LOCK TABLE prediction_log IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            transaction.rollback()
            conn.close()
            engine.dispose()
    else:
        with _sqlite_locked(backend.path):
            yield


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request, tmp_path) -> Backend:
    """The monitoring database of one test: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "monitoring.db"
        return Backend("sqlite", f"sqlite:///{path}", path=path)
    url, name = request.getfixturevalue("postgres_db")
    return Backend("postgres", url, name=name)


@pytest.fixture
def pg_backend(postgres_db) -> Backend:
    url, name = postgres_db
    return Backend("postgres", url, name=name)


@pytest.fixture(scope="session")
def churn_pipeline():
    """One fitted churn model for every test (trained once: the tests are about serving, not training)."""
    settings = make_settings(Path("/nonexistent"))
    model = settings.models[0]
    frame = generate_traffic(1500, seed=3)
    pipeline = build_pipeline(model, default_params(model, model.training), seed=0)
    return pipeline.fit(frame[model.feature_names], frame[model.target])


def deploy(settings, pipeline) -> MonitoringStore:
    """Register ``pipeline`` as the production churn model in the settings' database and artifact folder."""
    store = MonitoringStore(settings.storage.database_url)
    ref = ArtifactStore(settings.storage.artifact_root).put_model(pipeline)
    version = store.registry.register_candidate(
        "churn", artifact_key=ref.key, artifact_sha256=ref.sha256, size_bytes=ref.size_bytes,
        dataset_tag="v1-faults", dataset_hash="0" * 64, params={}, metrics={})
    store.registry.promote("churn", version.version)
    return store


def served_settings(tmp_path, backend: Backend, pipeline):
    """Settings on ``backend`` (artifacts under tmp_path) with the churn model in production."""
    settings = make_settings(tmp_path, database_url=backend.url)
    store = deploy(settings, pipeline)
    return settings, store


@contextmanager
def running(app):
    """``app`` on a real uvicorn server on 127.0.0.1 in a thread; stopping it runs the app's shutdown."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 60, "uvicorn to start")
        assert thread.is_alive(), "uvicorn stopped while starting"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(120)
        sock.close()


def traffic_rows(n: int, seed: int = 11) -> list[dict]:
    """``n`` valid churn rows as a client sends them (plain JSON values)."""
    frame = generate_traffic(n, seed=seed, start=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    from retrain_assets.simulate import model_config

    names = [f["name"] for f in model_config()["features"]]
    return frame[names].astype(object).where(frame[names].notna(), None).to_dict(orient="records")


def logged(store: MonitoringStore, request_ids) -> dict[str, dict]:
    """The prediction_log rows of ``request_ids`` (churn), by request id."""
    p = prediction_log
    ids = list(request_ids)
    found = {}
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            query = select(p).where(p.c.model_name == "churn", p.c.request_id.in_(ids[start:start + 500]))
            found.update({row.request_id: row._asdict() for row in conn.execute(query)})
    return found


def count_logged(store: MonitoringStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(prediction_log)).scalar_one()


def log_text(caplog) -> str:
    """Everything the tests' loggers said, messages and tracebacks alike."""
    return "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records)


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog
