"""Fault: a database password must never be shown: not by `retrain config`, not in Dagster's definitions
(`dagster definitions validate`, the snapshot the UI's resource page shows), not in any log line or metadata.

The server trusts local connections, so the URL's password is not checked: it is a marker to grep for.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from retrain_assets.cli import main
from retrain_assets.simulate import generate_traffic, model_config

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "Pw-9f3kq-never-shown"
pytestmark = pytest.mark.postgres


@pytest.fixture
def secret_url(postgres_db, monkeypatch, tmp_path):
    url, dbname = postgres_db
    with_password = url.replace("postgres@", f"postgres:{PASSWORD}@")
    assert PASSWORD in with_password
    monkeypatch.setenv("RETRAIN_DATABASE_URL", with_password)
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump({"storage": {"artifact_root": str(tmp_path / "artifacts")},
                                      "models": [{**model_config(), "training": {"tuning_trials": 0}}]}))
    monkeypatch.setenv("RETRAIN_CONFIG", str(config))
    return config


def test_retrain_config_and_errors_never_print_the_password(secret_url, capsys, monkeypatch):
    assert main(["--config", str(secret_url), "config"]) == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out and json.loads(out)["storage"]["database_url"] == "env:RETRAIN_DATABASE_URL"
    monkeypatch.setenv("RETRAIN_DATABASE_URL", f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:1/nowhere")
    assert main(["--config", str(secret_url), "events"]) == 2  # an unreachable server: the error names it
    err = capsys.readouterr().err
    assert "cannot reach the monitoring database at postgresql+psycopg2://postgres:***@127.0.0.1:1" in err
    assert PASSWORD not in err


def test_dagster_definitions_and_snapshots_hold_no_password(secret_url, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    done = subprocess.run([str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w",
                           str(REPO / "workspace.yaml")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert PASSWORD not in done.stdout + done.stderr
    from retrain_assets.defs.definitions import build_definitions
    from retrain_assets.settings import load_settings

    defs = build_definitions(load_settings(str(secret_url)))
    repository = defs.get_repository_def()
    from dagster._core.remote_representation.external_data import RepositorySnap  # what the UI is served

    snapshot = RepositorySnap.from_def(repository)
    assert PASSWORD not in dg.serialize_value(snapshot)
    assert "env:RETRAIN_DATABASE_URL" in dg.serialize_value(snapshot)  # the reference is what is shown


def test_a_run_logs_and_records_no_password(secret_url, caplog):
    import datetime as dt

    from retrain_assets.defs.definitions import build_definitions
    from retrain_assets.settings import load_settings
    from retrain_assets.store import MonitoringStore

    settings = load_settings(str(secret_url))
    store = MonitoringStore(settings.storage.database_url)
    frame = generate_traffic(2000, start=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2), seed=4)
    model = settings.models[0]
    store.predictions.log_predictions(model.log_key, frame, model.feature_names)
    store.predictions.log_labels(model.log_key, frame["request_id"].tolist(), frame[model.target].tolist())
    defs = build_definitions(settings)
    with dg.DagsterInstance.ephemeral() as instance, caplog.at_level("DEBUG"):
        result = defs.resolve_job_def("churn_retrain").execute_in_process(instance=instance)
        assert result.success
        logged = "\n".join(record.getMessage() for record in caplog.records)
        events = "\n".join(str(e) for e in instance.all_logs(result.run_id))
    assert PASSWORD not in logged and PASSWORD not in events
    dataset = store.registry.latest_dataset("churn")
    assert PASSWORD not in str(dataset.source_query)
