"""The monitoring store on SQLite and on a real PostgreSQL: same behaviour, same schema."""

import datetime as dt

import pandas as pd
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from retrain_assets.errors import DataError, StoreError
from retrain_assets.store import ArtifactStore, MonitoringStore
from retrain_assets.store.database import open_engine
from retrain_assets.store.migrations import MIGRATIONS, migrate

FEATURES = ["x", "color"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        return MonitoringStore(f"sqlite:///{tmp_path}/m.db")
    url, _ = request.getfixturevalue("postgres_db")
    return MonitoringStore(url)


def _frame(n, start=None, prefix="r"):
    start = start or dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    return pd.DataFrame(
        {
            "request_id": [f"{prefix}{i}" for i in range(n)],
            "timestamp": [start + dt.timedelta(minutes=i) for i in range(n)],
            "x": [float(i) for i in range(n)],
            "color": ["red", "blue"] * (n // 2) + ["red"] * (n % 2),
            "safe_to_send": [True] * n,
        }
    )


def test_predictions_and_late_labels_join(store):
    frame = _frame(6)
    store.predictions.log_predictions("m", frame, FEATURES, prediction=[1, 0, 1, 0, 1, 0], score=[0.9] * 6, model_version=3)
    assert store.predictions.labeled_rows("m", FEATURES, "y").empty  # no label yet
    store.predictions.log_labels("m", ["r1", "r3"], [0, 1])
    rows = store.predictions.labeled_rows("m", FEATURES, "y")
    assert rows["request_id"].tolist() == ["r1", "r3"]
    assert rows["y"].tolist() == [0, 1]
    assert str(rows["timestamp"].dt.tz) == "UTC"
    assert store.predictions.count_labels_after("m", None) == 2
    assert store.predictions.count_labels_after("m", int(rows["label_id"].max())) == 0


def test_recent_window_is_newest_rows_in_time_order(store):
    store.predictions.log_predictions("m", _frame(10), FEATURES)
    window = store.predictions.recent_window("m", FEATURES, rows=4)
    assert window["request_id"].tolist() == ["r6", "r7", "r8", "r9"]
    assert store.predictions.count_predictions("m") == 10
    assert store.predictions.recent_window("other", FEATURES, rows=4).empty


def test_missing_feature_in_log_is_a_clear_error(store):
    store.predictions.log_predictions("m", _frame(3), ["x"])
    with pytest.raises(DataError, match=r"no values for features \['color'\]"):
        store.predictions.recent_window("m", FEATURES, rows=3)


def test_duplicate_request_is_refused(store):
    store.predictions.log_predictions("m", _frame(2), FEATURES)
    with pytest.raises(IntegrityError):
        store.predictions.log_predictions("m", _frame(1), FEATURES)
    assert store.predictions.count_predictions("m") == 2  # nothing half-written


def _candidate(store, n):
    return store.registry.register_candidate(
        "m", artifact_key=f"k{n}", artifact_sha256="0" * 64, size_bytes=10, dataset_tag="v1-2026-01-01",
        dataset_hash="h", params={}, metrics={"accuracy": 0.9},
    )


def test_promotion_keeps_previous_as_standby_and_one_production(store):
    v1, v2, v3 = (_candidate(store, i) for i in (1, 2, 3))
    assert store.registry.promote("m", v1.version) is None
    assert store.registry.promote("m", v2.version).version == 1
    assert store.registry.promote("m", v3.version).version == 2
    statuses = {v.version: v.status for v in store.registry.versions("m")}
    assert statuses == {1: "archived", 2: "standby", 3: "production"}


def test_rollback_swaps_production_and_standby_and_can_be_undone(store):
    v1, v2 = (_candidate(store, i) for i in (1, 2))
    with pytest.raises(StoreError, match="needs a production and a standby"):
        store.registry.rollback("m")
    store.registry.promote("m", v1.version)
    store.registry.promote("m", v2.version)
    restored, demoted = store.registry.rollback("m", run_id="r1")
    assert (restored.version, restored.status, demoted.version, demoted.status) == (1, "production", 2, "standby")
    assert restored.promoted_by_run_id == "r1"
    store.registry.rollback("m")
    assert store.registry.production("m").version == 2


def test_a_crash_inside_promotion_leaves_the_previous_production(store, monkeypatch):
    """Crash injected between the registry writes of a promotion: the transaction rolls back whole."""
    import retrain_assets.store.registry as registry_module

    v1, v2 = (_candidate(store, i) for i in (1, 2))
    store.registry.promote("m", v1.version)
    real_update = registry_module.update
    calls = []

    def crashing_update(table):
        calls.append(table)
        if len(calls) == 3:  # after archiving the standby and demoting production, before the new one
            raise RuntimeError("power cut")
        return real_update(table)

    monkeypatch.setattr(registry_module, "update", crashing_update)
    with pytest.raises(RuntimeError, match="power cut"):
        store.registry.promote("m", v2.version)
    monkeypatch.setattr(registry_module, "update", real_update)
    statuses = {v.version: v.status for v in store.registry.versions("m")}
    assert statuses == {1: "production", 2: "candidate"}
    assert store.registry.promote("m", v2.version).version == 1  # and the promotion can simply be retried


def test_rejected_candidate_cannot_be_promoted(store):
    v1 = _candidate(store, 1)
    store.registry.record_gates("m", v1.version, [{"name": "smoke_test", "passed": False}], passed=False)
    with pytest.raises(StoreError, match="status is 'rejected'"):
        store.registry.promote("m", v1.version)
    assert store.registry.production("m") is None


def test_database_refuses_two_production_models(store):
    _candidate(store, 1), _candidate(store, 2)
    with pytest.raises(IntegrityError):
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE model_versions SET status = 'production' WHERE model_name = 'm'"))
    assert store.registry.production("m") is None  # the transaction rolled back whole


def test_dataset_versions_are_numbered_and_tagged(store):
    first = store.registry.record_dataset("m", content_hash="a", artifact_key="k", artifact_sha256="s", rows=5, summary={})
    second = store.registry.record_dataset("m", content_hash="b", artifact_key="k", artifact_sha256="s", rows=5, summary={}, run_id="run-2")
    assert (first.number, second.number) == (1, 2)
    assert second.tag.startswith("v2-") and len(second.tag) == len("v2-2026-01-01")
    assert store.registry.latest_dataset("m", run_id="nope").number == 2
    assert store.registry.latest_dataset("m", run_id="run-2").content_hash == "b"


def test_events_are_recorded_and_completed(store):
    event_id = store.events.record_trigger("m", trigger_type="drift", severity="HIGH", reason="PSI 0.4", metrics={"psi": 0.4})
    store.events.complete(event_id, successful=True, retraining_model_version="v2", retraining_accuracy=0.91)
    event = store.events.get(event_id)
    assert event["execution_successful"] is True and event["trigger_metrics"] == {"psi": 0.4}
    assert event["execution_completed_at"] >= event["triggered_at"]


def test_migrations_are_recorded_once(store):
    assert migrate(store.engine) == []
    with store.engine.connect() as conn:
        versions = conn.execute(text("SELECT version FROM retrain_schema_migrations")).scalars().all()
    assert versions == [m.version for m in MIGRATIONS]
    indexes = {i["name"] for i in inspect(store.engine).get_indexes("model_retraining_events")}
    assert {
        "idx_retraining_events_severity", "idx_retraining_events_trigger_type",
        "idx_retraining_events_triggered_at", "idx_retraining_events_success",
    } <= indexes


def test_a_store_created_at_migration_3_upgrades_and_keeps_its_rows(store):
    """Columns added by later migrations reach existing stores, with their rows untouched."""
    store.predictions.log_predictions("m", _frame(4), FEATURES, prediction=[1, 0, 1, 0], model_version=1)
    _candidate(store, 1)
    with store.engine.begin() as conn:  # back to what a store created before migrations 4 and 5 looked like
        conn.exec_driver_sql("DROP TABLE shadow_predictions")
        conn.exec_driver_sql("ALTER TABLE prediction_log DROP COLUMN latency_ms")
        for column in ("proven_at", "baseline_metrics", "reference_key", "reference_sha256", "traffic_share",
                       "step_started_at", "step_log_id"):
            conn.exec_driver_sql(f"ALTER TABLE model_versions DROP COLUMN {column}")
        conn.exec_driver_sql("DELETE FROM retrain_schema_migrations WHERE version >= 4")
    assert migrate(store.engine) == [4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert {"proven_at", "baseline_metrics", "reference_key", "reference_sha256", "traffic_share", "step_started_at",
            "step_log_id"} <= {c["name"] for c in inspect(store.engine).get_columns("model_versions")}
    assert store.registry.version("m", 1).reference_key is None  # trained before packs: decisions say so
    assert store.predictions.count_predictions("m") == 4
    store.registry.promote("m", 1)
    store.registry.mark_proven("m", 1, {"f1": 0.8}, keep=5)
    assert store.registry.production("m").baseline == {"f1": 0.8}
    store.predictions.log_predictions("m", _frame(2, prefix="new"), FEATURES, model_version=1, latency_ms=[3.0, 4.0])
    assert sorted(store.predictions.served_latencies("m", 1, last_rows=10)) == [3.0, 4.0]
    assert store.predictions.log_shadow("m", 1, ["new0"], [1]) == 1
    _candidate(store, 2)
    store.registry.start_canary("m", 2, 0.05, store.predictions.newest_id("m"))
    assert (store.registry.with_status("m", "canary").traffic_share, store.registry.version("m", 1).status) == (0.05, "production")


def test_unreachable_database_says_what_to_fix():
    with pytest.raises(StoreError, match="cannot reach the monitoring database at postgresql\\+psycopg2://u:\\*\\*\\*@127.0.0.1:1/x.*RETRAIN_DATABASE_URL"):
        open_engine("postgresql://u:secret@127.0.0.1:1/x")


def test_invalid_url_says_what_to_fix():
    with pytest.raises(StoreError, match="invalid database URL"):
        open_engine("not a url")


@pytest.mark.parametrize("backend", ["folder", "fsspec"])
def test_artifacts_are_content_addressed_and_verified(tmp_path, backend):
    """A local folder, or an fsspec URL (here fsspec's in-memory filesystem; s3:// and gs:// take the same
    path with s3fs / gcsfs installed)."""
    import uuid

    import fsspec

    root = str(tmp_path) if backend == "folder" else f"memory://artifacts-{uuid.uuid4().hex}"
    artifacts = ArtifactStore(root)
    ref = artifacts.put_model({"weights": [1, 2, 3]})
    assert artifacts.put_model({"weights": [1, 2, 3]}) == ref  # same bytes, same key
    assert artifacts.load_model(ref.key, ref.sha256) == {"weights": [1, 2, 3]}
    assert artifacts.path_of(ref.key).endswith(ref.key)
    fs, path = fsspec.core.url_to_fs(artifacts.path_of(ref.key))
    fs.pipe_file(path, fs.cat_file(path)[:-3] + b"xyz")  # corrupt it
    with pytest.raises(StoreError, match="corrupt or was modified.*not loaded"):
        artifacts.load_model(ref.key, ref.sha256)
    with pytest.raises(StoreError, match="missing"):
        artifacts.load_model("sha256/00/none.joblib", ref.sha256)
    with pytest.raises(StoreError, match="outside the artifact root"):
        artifacts.get_bytes("../../etc/passwd", ref.sha256)


def test_an_object_store_without_its_filesystem_package_says_what_to_install():
    with pytest.raises(StoreError, match="s3:// needs s3fs"):
        ArtifactStore("s3://models-bucket/retrain")


def test_two_simultaneous_triggers_claim_one_retrain(store):
    """Threads with their own connections insert at the same moment: the database lets exactly one win."""
    import threading

    from retrain_assets.store.events import ClaimTaken

    barrier, outcomes = threading.Barrier(4), []

    def trigger(kind):
        barrier.wait()
        try:
            outcomes.append(store.events.record_trigger("m", trigger_type=kind, severity="HIGH", reason=kind))
        except ClaimTaken as taken:
            outcomes.append(taken)

    threads = [threading.Thread(target=trigger, args=(k,)) for k in ("drift", "performance", "schedule", "manual")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [o for o in outcomes if isinstance(o, int)]
    assert len(won) == 1 and len(outcomes) == 4
    assert all(isinstance(o, ClaimTaken) and f"event #{won[0]}" in str(o) for o in outcomes if o not in won)
    assert store.events.record_trigger("m", trigger_type="drift", severity="LOW", reason="blocked", attempted=False)
    assert store.events.record_trigger("other", trigger_type="drift", severity="HIGH", reason="another model")
    store.events.complete(won[0], successful=True)
    assert store.events.record_trigger("m", trigger_type="drift", severity="HIGH", reason="after it ended")


def test_migration_7_closes_duplicate_open_claims_before_making_them_unique(store):
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX uq_retraining_events_one_open_claim")
        conn.exec_driver_sql("DELETE FROM retrain_schema_migrations WHERE version = 7")
    first = store.events.record_trigger("m", trigger_type="drift", severity="HIGH", reason="old, its run died")
    second = store.events.record_trigger("m", trigger_type="manual", severity="MEDIUM", reason="newer")
    assert migrate(store.engine) == [7]
    assert store.events.get(first)["execution_successful"] is False and store.events.get(second)["execution_completed_at"] is None
    assert store.events.open_claim("m")["id"] == second


def test_promotion_and_its_event_outcome_commit_together(store, monkeypatch):
    """A kill between the promotion and the event's outcome used to leave the event open; now the event
    update is the transaction's last statement: a crash there rolls the promotion back too."""
    import retrain_assets.store.registry as registry_module
    from retrain_assets.store.events import completion

    v1 = _candidate(store, 1)
    event = store.events.record_trigger("m", trigger_type="drift", severity="HIGH", reason="x")
    real_update, calls = registry_module.update, []

    def crashing_update(table):
        calls.append(table)
        if table.name == "model_retraining_events":
            raise RuntimeError("killed before the event's outcome")
        return real_update(table)

    monkeypatch.setattr(registry_module, "update", crashing_update)
    with pytest.raises(RuntimeError, match="killed"):
        store.registry.promote("m", v1.version, event_id=event, event_outcome=completion(True, retraining_model_version="v1"))
    monkeypatch.setattr(registry_module, "update", real_update)
    assert store.registry.production("m") is None and store.events.get(event)["execution_completed_at"] is None
    store.registry.promote("m", v1.version, event_id=event, event_outcome=completion(True, retraining_model_version="v1"))
    assert store.registry.production("m").version == 1
    outcome = store.events.get(event)
    assert outcome["execution_successful"] is True and outcome["retraining_model_version"] == "v1"


def test_a_canary_decision_changes_only_a_version_still_in_canary(store):
    """Two canary step runs deciding at once: the one that comes second neither rejects the model the other
    just promoted nor promotes the one the other just rejected."""
    for n in (1, 2, 3):
        _candidate(store, n)
    store.registry.promote("m", 1)
    store.registry.start_canary("m", 2, 0.05, store.predictions.newest_id("m"))
    store.registry.promote("m", 2, from_status="canary")  # the first run promoted it
    assert not store.registry.record_gates("m", 2, [{"name": "canary", "passed": False}], False, expected_status="canary")
    assert store.registry.production("m").version == 2  # the second run's rejection changed nothing
    store.registry.start_canary("m", 3, 0.05, store.predictions.newest_id("m"))
    assert store.registry.record_gates("m", 3, [{"name": "canary", "passed": False}], False, expected_status="canary")
    with pytest.raises(StoreError, match="no longer 'canary'"):  # rejected by one run, not promoted by the other
        store.registry.promote("m", 3, from_status="canary")
    assert (store.registry.version("m", 3).status, store.registry.production("m").version) == ("rejected", 2)
