"""Shared fixtures: settings on temporary embedded storage, and a real PostgreSQL database per test module.

PostgreSQL tests use the server at 127.0.0.1:5432 (user postgres, trust auth; override with
RETRAIN_TEST_PG_URL). Without a server they skip with the reason, except when REQUIRE_POSTGRES=1
(set by .ci/run): then an unreachable server is a failure.
"""

import os
import uuid

# Under `make test` (pytest-xdist) the workers share the CPUs: OpenMP and BLAS pools sized to every core would
# put workers x cores spinning threads on them (scikit-learn's tree models ran several times slower). Each
# worker, and every process a test starts, gets its share; set before numpy or scikit-learn is imported.
NATIVE_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _name in NATIVE_THREAD_VARS:
        os.environ.setdefault(_name, _share)


def environment_without_thread_limits() -> dict:
    """This environment without native thread limits, nor the pytest-xdist worker variables (with them,
    a process importing this module would set the limits again): for a test about those limits."""
    unset = {*NATIVE_THREAD_VARS, "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"}
    return {k: v for k, v in os.environ.items() if k not in unset}


import pytest  # noqa: E402

from retrain_assets.settings import RetrainSettings, settings_from_dict  # noqa: E402
from retrain_assets.simulate import model_config  # noqa: E402

PG_ADMIN_URL = os.environ.get("RETRAIN_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def make_settings(tmp_path, models=None, database_url=None, **model_overrides) -> RetrainSettings:
    """Settings with the simulator's churn model on storage under tmp_path (fast training, immediate triggers)."""
    # Sensors act at once in tests (no cooldown, every hour quiet) unless a test sets "triggers" itself.
    immediate = {"cooldown_hours": 0, "quiet_start_hour": 0, "quiet_end_hour": 24}
    model = {**model_config(), "training": {"tuning_trials": 0}, "triggers": immediate, **model_overrides}
    return settings_from_dict(
        {
            "storage": {
                "database_url": database_url or f"sqlite:///{tmp_path}/monitoring.db",
                "artifact_root": str(tmp_path / "artifacts"),
            },
            "models": models or [model],
        }
    )


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


def _admin_engine():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


@pytest.fixture(scope="session")
def postgres_server():
    """The admin URL of a reachable PostgreSQL server (fail or skip when there is none)."""
    from sqlalchemy.exc import OperationalError

    try:
        with _admin_engine().connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except OperationalError as error:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {str(error.orig).strip()}"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(message + " (REQUIRE_POSTGRES=1: start it with pg_ctlcluster ... main start)")
        pytest.skip(message)
    return PG_ADMIN_URL


@pytest.fixture
def postgres_db(postgres_server):
    """A fresh, empty database for one test; dropped afterwards. Yields (url, dbname)."""
    name = f"retrain_test_{uuid.uuid4().hex[:10]}"
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url, name
    from retrain_assets.store.database import open_engine

    open_engine.cache_clear()  # DROP ... WITH (FORCE) below closes the pooled connections
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_demo_command(config_path, home, timeout=540):
    """`retrain demo --json` as `make demo` runs it, on the config at ``config_path`` (storage next to it)."""
    import subprocess
    import sys

    env = {**os.environ, "RETRAIN_CONFIG": str(config_path)}
    env.pop("RETRAIN_DATABASE_URL", None)
    env.pop("RETRAIN_ARTIFACT_ROOT", None)
    command = [sys.executable, "-m", "retrain_assets.cli", "demo", "--json", "--home", str(home),
               "--dagster-yaml", os.path.join(REPO, "dagster.yaml")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(str(config_path)))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One `retrain demo` on the repository's retrain.yaml, shared by the tests that inspect its result.

    Yields a dict: ``config`` (path), ``home`` (the Dagster home it wrote), ``summary`` (the parsed --json
    output). The demo takes a minute or two; running it once keeps the suite fast.
    """
    import json
    import shutil

    root = tmp_path_factory.mktemp("demo")
    config = root / "retrain.yaml"
    shutil.copy(os.path.join(REPO, "retrain.yaml"), config)  # storage lands next to it, under root
    home = root / "home"
    completed = run_demo_command(config, home)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return {"config": config, "home": home, "summary": json.loads(completed.stdout), "root": root}
