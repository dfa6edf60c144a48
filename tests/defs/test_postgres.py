"""The Postgres paths for real: Dagster's own storage (dagster-postgres) and the monitoring store on PostgreSQL."""

import shutil
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import make_settings

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parents[2]


def _pg_env(monkeypatch, dbname):
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", "5432")
    monkeypatch.setenv("DAGSTER_PG_USER", "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
    monkeypatch.setenv("DAGSTER_PG_DB", dbname)


def test_retrain_on_postgres_dagster_storage_and_postgres_monitoring_store(tmp_path, postgres_db, monkeypatch, harness_for):
    url, dbname = postgres_db
    # The documented production instance file, read with its env-var settings.
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    _pg_env(monkeypatch, dbname)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        settings = make_settings(tmp_path, database_url=url)  # both live in one database, side by side
        h = harness_for(settings, instance=instance)
        h.traffic(3000)
        result = h.retrain(reason="postgres")
        assert result.success
        assert h.store.registry.production("churn").version == 1
        engine = create_engine(url)
        with engine.connect() as conn:
            runs = conn.execute(text("SELECT run_id, status FROM runs")).all()
            versions = conn.execute(text("SELECT version, status FROM model_versions")).all()
        engine.dispose()
        assert (result.run_id, "SUCCESS") in [(r.run_id, r.status) for r in runs]
        assert [(v.version, v.status) for v in versions] == [(1, "production")]
    finally:
        instance.dispose()
