"""`retrain trigger`, `retrain events` and `retrain incident` against real storage."""

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
import yaml

from retrain_assets.cli import main
from retrain_assets.simulate import generate_traffic, model_config
from retrain_assets.store import MonitoringStore

REPO = Path(__file__).resolve().parents[2]


def write_config(tmp_path, database_url=None, **model_overrides) -> str:
    config = {
        "storage": {"database_url": database_url or f"sqlite:///{tmp_path}/monitoring.db",
                    "artifact_root": str(tmp_path / "artifacts")},
        "models": [{**model_config(), "training": {"tuning_trials": 0}, **model_overrides}],
    }
    path = tmp_path / "retrain.yaml"
    path.write_text(yaml.safe_dump(config))
    store = MonitoringStore(config["storage"]["database_url"])
    frame = generate_traffic(3000, start=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=10), seed=3)
    store.predictions.log_predictions("churn", frame, [f["name"] for f in model_config()["features"]])
    store.predictions.log_labels("churn", frame["request_id"].tolist(), frame["churned"].tolist())
    return str(path)


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_manual_trigger_runs_records_and_reports(tmp_path, home, capsys):
    config = write_config(tmp_path)
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "new pricing", "--requester", "alice"]) == 0
    out = capsys.readouterr().out
    assert ": SUCCESS (event #1); production model: v1" in out
    assert main(["--config", config, "events", "--since", "1d", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    event = report["events"][0]
    assert (event["trigger_type"], event["attempted"], event["successful"], event["version"]) == ("manual", True, True, "v1")
    assert event["trigger_reason"] == "new pricing"
    assert report["trigger_frequency"] == [{"trigger_type": "manual", "triggers": 1, "attempted": 1, "successful": 1,
                                            "success_rate_pct": 100.0}]
    assert main(["--config", config, "events", "--since", "7d"]) == 0
    assert "Triggers and success rate (since 7d)" in capsys.readouterr().out


def test_trigger_errors_say_what_to_fix(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "x"]) == 2
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err
    assert main(["--config", config, "trigger", "--model", "fraud", "--reason", "x"]) == 2
    assert "declared models: ['churn']" in capsys.readouterr().err
    assert main(["--config", config, "events", "--since", "yesterday"]) == 2
    assert "e.g. 12h, 7d, 4w" in capsys.readouterr().err


def test_incidents_open_and_resolve(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["--config", config, "incident", "open", "--title", "label feed broken", "--model", "churn"]) == 0
    assert "automatic retraining of churn is blocked" in capsys.readouterr().out
    store = MonitoringStore(f"sqlite:///{tmp_path}/monitoring.db")
    assert store.events.open_p1_incidents("churn") == ["#1 label feed broken"]
    assert main(["--config", config, "incident", "resolve", "--id", "1"]) == 0
    assert store.events.open_p1_incidents("churn") == []


@pytest.mark.postgres
def test_audit_queries_run_unchanged_on_postgres(tmp_path, home, postgres_db, capsys):
    url, _ = postgres_db
    config = write_config(tmp_path, database_url=url)
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "on postgres"]) == 0
    capsys.readouterr()
    assert main(["--config", config, "events", "--since", "1d", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["events"][0]["trigger_reason"] == "on postgres"
    assert report["trigger_frequency"][0]["success_rate_pct"] == 100.0


def test_rollback_command(tmp_path, home, capsys):
    loose = {"max_f1_drop": 1.0, "max_auc_drop": 1.0, "max_relative_drop": 1.0, "significance_tolerance": 1.0}
    config = write_config(tmp_path, gates=loose)  # the second model only has to be promotable
    assert main(["--config", config, "rollback", "--model", "churn"]) == 2
    assert "needs a production and a standby" in capsys.readouterr().err
    for reason in ("first", "second"):
        main(["--config", config, "trigger", "--model", "churn", "--reason", reason])
    capsys.readouterr()
    store = MonitoringStore(f"sqlite:///{tmp_path}/monitoring.db")
    assert store.registry.with_status("churn", "standby").version == 1
    assert main(["--config", config, "rollback", "--model", "churn", "--reason", "bad week"]) == 0
    assert "production model is v1 again" in capsys.readouterr().out
    assert store.registry.production("churn").version == 1
    assert store.events.recent("churn")[0]["trigger_reason"] == "bad week"


def test_canary_abort_command(tmp_path, home, capsys):
    """A person stops a canary now, whatever its evidence: rolled back, its event failed, the reason kept."""
    loose = {"max_f1_drop": 1.0, "max_auc_drop": 1.0, "max_relative_drop": 1.0, "significance_tolerance": 1.0}
    config = write_config(tmp_path, gates=loose, deployment={"strategy": "canary"})
    assert main(["--config", config, "canary", "abort", "--model", "churn"]) == 2
    assert "no candidate in canary: nothing to abort" in capsys.readouterr().err
    for reason in ("first", "second"):  # the first is promoted directly, the second starts a canary at 5 %
        main(["--config", config, "trigger", "--model", "churn", "--reason", reason])
    store = MonitoringStore(f"sqlite:///{tmp_path}/monitoring.db")
    assert store.registry.with_status("churn", "canary").version == 2
    capsys.readouterr()
    assert main(["--config", config, "canary", "abort", "--model", "churn", "--reason", "pricing change today",
                 "--requester", "ana"]) == 0
    assert "canary v2 rolled back" in capsys.readouterr().out
    rejected = store.registry.version("churn", 2)
    assert rejected.status == "rejected" and rejected.gate_results[-1]["message"] == "aborted by ana: pricing change today"
    assert store.registry.production("churn").version == 1 and store.events.open_claim("churn") is None


def test_a_failing_in_process_trigger_says_one_line_and_closes_its_event(tmp_path, home, capsys):
    config = write_config(tmp_path, data_source={"kind": "sql_table", "table": "churn_scored",
                                                  "url": f"sqlite:///{tmp_path}/empty.db"})
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path}/empty.db")
    with engine.begin() as conn:  # the table exists, no row is labeled yet
        columns = ", ".join(f"{f['name']} {'REAL' if f['type'] == 'numeric' else 'TEXT'}" for f in model_config()["features"])
        conn.execute(text(f"CREATE TABLE churn_scored (id INTEGER, timestamp TEXT, {columns}, churned REAL)"))
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "no labels yet"]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "no labeled rows for model churn" in lines[0] and "Traceback" not in captured.err + captured.out
    event = MonitoringStore(f"sqlite:///{tmp_path}/monitoring.db").events.recent("churn")[0]
    assert event["execution_successful"] is False and "no labeled rows" in event["execution_metrics"]["error"]


def test_a_manual_trigger_never_joins_a_retrain_in_flight_unless_forced(tmp_path, home, capsys):
    config = write_config(tmp_path)
    store = MonitoringStore(f"sqlite:///{tmp_path}/monitoring.db")
    pending = store.events.record_trigger("churn", trigger_type="drift", severity="HIGH", reason="the sensor's claim")
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "now please"]) == 2
    error = capsys.readouterr().err
    assert f"already in flight (event #{pending}, drift" in error and "--force" in error
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "now please", "--force"]) == 0
    released = store.events.get(pending)
    assert released["execution_successful"] is False and "forced manual trigger" in released["execution_metrics"]["error"]
    forced = store.events.recent("churn")[0]
    assert forced["trigger_metrics"]["forced"] is True and forced["execution_successful"] is True


def test_a_claim_whose_run_died_is_released_not_held_for_ever(tmp_path, home, capsys):
    import dagster as dg

    config = write_config(tmp_path)
    store = MonitoringStore(f"sqlite:///{tmp_path}/monitoring.db")
    with dg.DagsterInstance.get() as instance:  # a run that failed without recording its event's outcome
        run = instance.create_run_for_job(_job(config), tags={"retrain/model": "churn"})
        instance.report_run_failed(run)
    dead = store.events.record_trigger("churn", trigger_type="drift", severity="HIGH", reason="x", run_id=run.run_id)
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "after the crash"]) == 0
    assert "ended FAILURE without recording an outcome" in store.events.get(dead)["execution_metrics"]["error"]


def _job(config):
    from retrain_assets.defs.definitions import build_definitions
    from retrain_assets.settings import load_settings

    return build_definitions(load_settings(config)).resolve_job_def("churn_retrain")


def test_a_submission_the_webserver_refuses_marks_its_event_failed(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "x", "--url", "http://127.0.0.1:9"]) == 2
    assert "could not submit the retrain to the Dagster webserver at http://127.0.0.1:9" in capsys.readouterr().err
    event = MonitoringStore(f"sqlite:///{tmp_path}/monitoring.db").events.recent("churn")[0]
    assert event["execution_successful"] is False and "could not submit" in event["execution_metrics"]["error"]
    # ...so the next trigger is not blocked by an open claim nobody will ever complete
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "y", "--url", "http://127.0.0.1:9"]) == 2
    assert "already in flight" not in capsys.readouterr().err


def test_a_retrain_on_an_exact_dataset_version_reproduces_it(tmp_path, home, capsys):
    """`retrain trigger --data-version v1` trains again on exactly v1's rows and splits, re-read from the
    artifact store and checked against v1's content hash, even after new labels arrived; an unknown
    version or a tampered artifact is one line naming it, and nothing is claimed."""
    from retrain_assets.settings import load_settings
    from retrain_assets.store import ArtifactStore, MonitoringStore

    config = write_config(tmp_path)
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "first"]) == 0
    settings = load_settings(config)
    store = MonitoringStore(settings.storage.database_url)
    v1 = store.registry.latest_dataset("churn")
    frame = generate_traffic(1000, start=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2), seed=9, id_prefix="new")
    store.predictions.log_predictions("churn", frame, [f["name"] for f in model_config()["features"]])
    store.predictions.log_labels("churn", frame["request_id"].tolist(), frame["churned"].tolist())
    capsys.readouterr()
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "again on v1", "--data-version",
                 "v1"]) == 0, capsys.readouterr().err
    again = store.registry.latest_dataset("churn")
    assert again.tag.startswith("v2-") and again.content_hash == v1.content_hash and again.rows == v1.rows
    assert again.source_query.startswith(f"{v1.tag} again (same rows and splits, hash verified)")
    assert store.registry.production("churn").dataset_tag == again.tag  # the candidate trained on it
    events = len(store.events.recent("churn"))
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "x", "--data-version", "v9"]) == 2
    assert "no dataset version 'v9'; the newest are: v2-" in capsys.readouterr().err
    assert len(store.events.recent("churn")) == events  # nothing claimed for a version that does not exist
    path = Path(ArtifactStore(settings.storage.artifact_root).path_of(v1.artifact_key))
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    assert main(["--config", config, "trigger", "--model", "churn", "--reason", "x", "--data-version", "v1"]) == 2
    assert "it was not loaded. Restore the file from backup" in capsys.readouterr().err  # refused before use
