"""Serving under faults, for real: a reused or over-long request id, a database outage while serving, a
shutdown while the database is down and the restart after it, hostile payloads.

Every test runs the API on a real uvicorn server (tests/faults/conftest.py) against a real database that
the test created; outages are real (PostgreSQL refuses our database's connections; SQLite's write lock is
held by another connection). Assertions are on counts, ids and files, never on durations: waits poll with
generous timeouts.
"""

import datetime as dt
import json
import threading

import httpx
import pytest
import yaml

from retrain_assets.serving.api import create_app
from retrain_assets.serving.log_writer import LoggedRequest, PredictionLogWriter
from retrain_assets.config.serving import ServingSettings
from retrain_assets.settings import load_settings
from retrain_assets.store import MonitoringStore
from retrain_assets.store.predictions import prediction_rows
from tests.conftest import make_settings
from tests.faults.conftest import (
    TOKEN,
    Backend,
    count_logged,
    deploy,
    log_text,
    logged,
    running,
    served_settings,
    table_locked,
    traffic_rows,
    wait_until,
)

SENTINEL_CATEGORY = "Sentinel-Region-X9"  # feature values no log line may ever show
SENTINEL_NUMBER = 4242.4242


def fast(tmp_path, **overrides) -> ServingSettings:
    """Serving settings that notice an outage in about a second (the defaults are for production)."""
    values = {"spill_dir": str(tmp_path / "spill"), "retry_attempts": 2, "retry_initial_seconds": 0.05,
              "retry_max_seconds": 0.5, "database_timeout_seconds": 1, "shutdown_seconds": 5}
    return ServingSettings(**(values | overrides))


def sentinel_rows(n: int, seed: int = 11) -> list[dict]:
    rows = traffic_rows(n, seed)
    for row in rows:
        row["region"], row["data_usage_gb"] = SENTINEL_CATEGORY, SENTINEL_NUMBER
    return rows


def assert_no_feature_values(logs) -> None:
    text = log_text(logs)
    assert SENTINEL_CATEGORY not in text and str(SENTINEL_NUMBER) not in text, "a log line shows feature values"


def spill_files(tmp_path, prefix="spill-"):
    return sorted((tmp_path / "spill").glob(f"{prefix}*.jsonl"))


def spilled_lines(tmp_path, prefix="spill-") -> list[dict]:
    return [json.loads(line) for path in spill_files(tmp_path, prefix) for line in path.read_text().splitlines()]


def predict(http: httpx.Client, rows: list[dict], ids: list[str] | None = None) -> httpx.Response:
    body = {"model": "churn", "rows": rows} | ({"request_ids": ids} if ids is not None else {})
    return http.post("/predict/batch", json=body)


class Load:
    """Clients posting 20-row requests until stopped; every answer is recorded (served ids, failures)."""

    def __init__(self, base: str, clients: int = 4):
        self.base, self.served, self.failures = base, [], []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, seed: int) -> None:
        rows = sentinel_rows(20, seed)
        with httpx.Client(base_url=self.base, timeout=60) as http:
            while not self.stop.is_set():
                try:
                    response = predict(http, rows)
                    outcome = response.json()["request_ids"] if response.status_code == 200 else response.text[:300]
                except httpx.HTTPError as error:
                    response, outcome = None, repr(error)
                with self.lock:
                    if response is not None and response.status_code == 200:
                        self.served.extend(outcome)
                    else:
                        self.failures.append(outcome)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        for thread in self.threads:
            thread.join(120)


# 1. One bad request never costs another's rows ------------------------------------------------------------
def test_a_reused_request_id_never_costs_the_innocent_rows_of_its_batch(backend, tmp_path, churn_pipeline, logs):
    """Three requests written in one transaction, one of them reusing an id already logged and one an id of
    another request in the same batch: every other row is logged, the two offending rows are quarantined
    with their reason, and the log says so without feature values."""
    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    app = create_app(settings, serving=ServingSettings(spill_dir=str(tmp_path / "spill"), database_timeout_seconds=60))
    writer = app.state.log_writer
    rows = traffic_rows(45)
    sentinel = sentinel_rows(10)
    a_ids = [f"r{i}" for i in range(10)]
    b_ids, d_ids = [f"b{i}" for i in range(10)], [f"d{i}" for i in range(10)]
    c_ids = [f"c{i}" for i in range(10)]
    c_ids[3], c_ids[5] = "r3", "b5"  # reuses A's id (already logged) and B's (same batch)
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        assert predict(http, rows[:10], a_ids).status_code == 200
        wait_until(lambda: writer.stats()["written"] == 10, what="request A logged")
        with table_locked(backend):  # hold the writer on a pilot request so that B, C and D queue up together
            assert predict(http, rows[10:15], [f"p{i}" for i in range(5)]).status_code == 200
            wait_until(lambda: writer.stats()["in_flight"] == 5, what="the writer to hold the pilot request")
            for ids, chunk in ((b_ids, rows[15:25]), (c_ids, sentinel), (d_ids, rows[35:45])):
                response = predict(http, chunk, ids)
                assert response.status_code == 200, response.text
            wait_until(lambda: writer.stats()["queued"] == 30, what="B, C and D queued as one batch")
        wait_until(lambda: writer.stats()["pending"] == 0, what="the batch settled")
        stats = writer.stats()

    assert (stats["written"], stats["quarantined"], stats["spilled"]) == (43, 2, 0)
    innocent = a_ids + [f"p{i}" for i in range(5)] + b_ids + d_ids + [i for i in c_ids if i not in ("r3", "b5")]
    found = logged(store, innocent)
    assert set(found) == set(innocent)
    assert found["r3"]["features"] == rows[3] and found["b5"]["features"] == rows[20]  # the first owners kept
    quarantined = spilled_lines(tmp_path, "quarantine-")
    assert sorted(q["row"]["request_id"] for q in quarantined) == ["b5", "r3"]
    assert all("request_id already in prediction_log" in q["reason"] for q in quarantined)
    assert all(q["row"]["features"]["region"] == SENTINEL_CATEGORY for q in quarantined)  # kept whole, on disk
    text = log_text(logs)
    assert "quarantined" in text and str(tmp_path / "spill" / "quarantine-") in text
    assert_no_feature_values(logs)


@pytest.mark.postgres
def test_the_writer_quarantines_only_the_row_the_database_refuses(pg_backend, tmp_path, logs):
    """An id longer than varchar(64) that reaches the writer (not through the API, which refuses it) is the
    only row lost to prediction_log: its request-mates are written, it is kept with PostgreSQL's reason."""
    settings = make_settings(tmp_path, database_url=pg_backend.url)
    store = MonitoringStore(pg_backend.url)
    writer = PredictionLogWriter(store, settings, fast(tmp_path))
    features = sentinel_rows(4)
    ids = ["ok-1", "x" * 70, "ok-2", "ok-3"]
    rows = prediction_rows("churn", ids, features, ts=_now(), prediction=[0, 1, 0, 1], score=[0.1, 0.9, 0.2, 0.8],
                           model_version=1, latency_ms=2.0)
    writer.put(LoggedRequest("churn", rows[:3]))
    writer.put(LoggedRequest("churn", rows[3:]))
    assert writer.flush(60)
    final = writer.close()
    assert (final["written"], final["quarantined"], final["spilled"]) == (3, 1, 0)
    assert set(logged(store, ["ok-1", "ok-2", "ok-3"])) == {"ok-1", "ok-2", "ok-3"}
    [entry] = spilled_lines(tmp_path, "quarantine-")
    assert entry["row"]["request_id"] == "x" * 70 and "value too long" in entry["reason"]
    assert_no_feature_values(logs)


def test_a_row_delivered_twice_is_logged_once_and_not_blamed(backend, tmp_path, logs):
    """The same served rows arriving again (a replay after a commit whose answer was lost) are recognised
    as already logged (same request id, time and model version), not quarantined as a reused id."""
    settings = make_settings(tmp_path, database_url=backend.url)
    store = MonitoringStore(backend.url)
    writer = PredictionLogWriter(store, settings, fast(tmp_path))
    rows = prediction_rows("churn", [f"twice-{i}" for i in range(5)], traffic_rows(5), ts=_now(), prediction=[0] * 5,
                           score=[0.5] * 5, model_version=1, latency_ms=1.0)
    writer.put(LoggedRequest("churn", rows))
    assert writer.flush(60)
    writer.put(LoggedRequest("churn", [dict(row) for row in rows[:3]] + prediction_rows(
        "churn", ["twice-new"], traffic_rows(1), ts=_now(), prediction=[1], score=[0.9], model_version=1)))
    assert writer.flush(60)
    final = writer.close()
    assert (final["written"], final["already_logged"], final["quarantined"]) == (6, 3, 0)
    assert count_logged(store) == 6 and not spill_files(tmp_path, "quarantine-")


def test_a_full_queue_spills_instead_of_growing(tmp_path, churn_pipeline):
    """With the writer held up, rows beyond log_queue_rows go straight to the spill folder (memory stays
    bounded, requests still succeed) and are written once the database takes rows again."""
    backend = Backend("sqlite", f"sqlite:///{tmp_path}/monitoring.db", path=tmp_path / "monitoring.db")
    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    app = create_app(settings, serving=fast(tmp_path, log_queue_rows=30, database_timeout_seconds=60))
    writer = app.state.log_writer
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        with table_locked(backend):
            assert predict(http, traffic_rows(20, 1)).status_code == 200
            wait_until(lambda: writer.stats()["in_flight"] == 20, what="the writer to hold the first request")
            for seed in (2, 3, 4):
                assert predict(http, traffic_rows(20, seed)).status_code == 200
            held = writer.stats()
            assert (held["spilled"], held["queued"], held["on_disk"]) == (60, 0, 60)
        wait_until(lambda: (lambda s: s["pending"] == 0 and s["on_disk"] == 0)(writer.stats()), what="the spill replayed")
        final = writer.stats()
    assert (final["written"], final["replayed"], final["accepted"]) == (80, 60, 80)
    assert count_logged(store) == 80 and not spill_files(tmp_path)


def test_request_ids_are_checked_at_the_api(tmp_path, churn_pipeline):
    """Over-long, empty, repeated or miscounted request ids are a 422 naming the field; nothing is logged."""
    backend = Backend("sqlite", f"sqlite:///{tmp_path}/monitoring.db", path=tmp_path / "monitoring.db")
    settings, _ = served_settings(tmp_path, backend, churn_pipeline)
    app = create_app(settings, serving=fast(tmp_path))
    rows = traffic_rows(3)
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        for ids, loc, words in ((["a", "x" * 65, "c"], ["body", "request_ids", 1], "at most 64"),
                                (["a", "", "c"], ["body", "request_ids", 1], "at least 1"),
                                (["a", "b", "a"], ["body", "request_ids", 2], "duplicate request id"),
                                (["a", "b"], ["body", "request_ids"], "one id per row")):
            response = predict(http, rows, ids)
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            assert detail[0]["loc"] == loc and words in detail[0]["msg"], detail
        assert app.state.log_writer.stats()["accepted"] == 0


# 2. The database goes away while serving ------------------------------------------------------------------
def test_serving_survives_a_database_outage_and_logs_every_row(backend, tmp_path, churn_pipeline, logs):
    """Clients keep posting through an outage: no request fails, rows served meanwhile wait on disk, and
    once the database is back every served row is in prediction_log, once."""
    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    app = create_app(settings, serving=fast(tmp_path))
    writer = app.state.log_writer
    with running(app) as base:
        with Load(base) as load:
            wait_until(lambda: writer.stats()["written"] >= 100, what="rows logged before the outage")
            with backend.outage():
                wait_until(lambda: writer.stats()["spilled"] >= 200, what="rows spilled during the outage")
                assert httpx.get(f"{base}/health").json()["status"] == "degraded"
                served = len(load.served)
                wait_until(lambda: len(load.served) >= served + 100, what="rows served during the outage")
            wait_until(lambda: writer.stats()["replayed"] > 0, what="the spill replayed after the outage")
        wait_until(lambda: (lambda s: s["pending"] == 0 and s["on_disk"] == 0)(writer.stats()), what="the log to catch up")
        stats = writer.stats()
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
    assert load.failures == []
    assert len(load.served) == len(set(load.served)) > 0
    assert set(logged(store, load.served)) == set(load.served)
    assert count_logged(store) == len(load.served)
    assert stats["written"] + stats["already_logged"] == stats["accepted"] == len(load.served)
    assert stats["quarantined"] == 0 and stats["spilled"] >= 200 and stats["retried"] > 0
    assert stats["replayed"] + stats["already_logged"] >= stats["spilled"]
    assert not spill_files(tmp_path)
    text = log_text(logs)
    assert "does not answer" in text and "answers again" in text
    assert_no_feature_values(logs)


def _shutdown_during_outage(backend, tmp_path, churn_pipeline):
    """Serve 20 rows (logged), take the database away, serve 100 more and stop the server while it is
    away. Returns (settings, store, serving, final stats, ids served during the outage)."""
    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    serving = fast(tmp_path, shutdown_seconds=2)
    app = create_app(settings, serving=serving)
    writer = app.state.log_writer
    during = []
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        assert predict(http, sentinel_rows(20, 1)).status_code == 200
        wait_until(lambda: writer.stats()["written"] == 20, what="rows logged before the outage")
        outage = backend.outage()
        outage.__enter__()
        try:
            for seed in range(5):
                response = predict(http, sentinel_rows(20, seed + 2))
                assert response.status_code == 200, response.text
                during += response.json()["request_ids"]
        except BaseException:
            outage.__exit__(None, None, None)
            raise
    return settings, store, serving, writer.stats(), during, outage  # the server stopped; still down


def test_shutdown_with_the_database_down_spills_and_reports(backend, tmp_path, churn_pipeline, logs):
    """Stopping the server while the database is away: the wait is bounded, every unwritten row goes to a
    spill file, and the last log line says how many rows went to which file (no feature values)."""
    _, _, _, final, during, outage = _shutdown_during_outage(backend, tmp_path, churn_pipeline)
    outage.__exit__(None, None, None)
    assert (final["written"], final["spilled"], final["on_disk"], final["pending"]) == (20, 100, 100, 0)
    assert sorted(row["request_id"] for row in spilled_lines(tmp_path)) == sorted(during)
    [closing] = [r.getMessage() for r in logs.records if r.getMessage().startswith("prediction log closed")]
    assert "100 rows kept on disk" in closing
    for path in spill_files(tmp_path):
        assert f"{len(path.read_text().splitlines())} rows in {path}" in closing
    assert_no_feature_values(logs)


def test_a_restarted_server_replays_the_spill_file(backend, tmp_path, churn_pipeline, logs):
    """What a stopped server left on disk is written by the next one once the database answers; the spill
    files are removed, every row is in prediction_log once."""
    settings, store, serving, _, during, outage = _shutdown_during_outage(backend, tmp_path, churn_pipeline)
    outage.__exit__(None, None, None)
    assert spill_files(tmp_path)
    app = create_app(settings, serving=serving)
    writer = app.state.log_writer
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        wait_until(lambda: writer.stats()["on_disk"] == 0, what="the spill replayed")
        after = predict(http, traffic_rows(20, 99))
        assert after.status_code == 200
        wait_until(lambda: writer.stats()["pending"] == 0, what="the new request logged")
        stats = writer.stats()
    assert stats["replayed"] == 100 and stats["written"] == 120 and stats["quarantined"] == 0
    assert set(logged(store, during)) == set(during)
    assert count_logged(store) == 20 + 100 + 20
    assert not spill_files(tmp_path)
    assert "left in" in log_text(logs)


# 3. What the API accepts --------------------------------------------------------------------------------
def test_rows_are_validated_strictly_and_logged_typed(backend, tmp_path, churn_pipeline):
    """Strings or booleans in numeric fields, NaN/Infinity, numbers in categorical fields and over-long
    categories are a 422 naming ["body", "rows", i, field] (never a 500); a valid request's logged features
    are floats and strings, exactly what the model scored."""
    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    app = create_app(settings, serving=fast(tmp_path))
    good = traffic_rows(3)
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        for field, value, kind in (("monthly_charges", "12.5", "float_type"), ("tenure_months", True, "float_type"),
                                   ("contract", 3, "string_type"), ("region", "x" * 257, "string_too_long")):
            rows = [dict(row) for row in good]
            rows[1][field] = value
            response = predict(http, rows)
            assert response.status_code == 422, response.text
            assert response.json()["detail"][0]["loc"] == ["body", "rows", 1, field]
            assert response.json()["detail"][0]["type"] == kind
        for literal in ("NaN", "Infinity", "-Infinity"):
            rows = [dict(row) for row in good]
            rows[1]["monthly_charges"] = "__VALUE__"
            body = json.dumps({"model": "churn", "rows": rows}).replace('"__VALUE__"', literal)
            response = http.post("/predict/batch", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 422, response.text
            [error] = response.json()["detail"]
            assert error["loc"] == ["body", "rows", 1, "monthly_charges"] and error["type"] == "finite_number"
        rows = [dict(row) for row in good]
        rows[1]["region"] = "__VALUE__"  # a lone surrogate: valid JSON text, no Unicode string
        body = json.dumps({"model": "churn", "rows": rows}).replace('"__VALUE__"', '"north\\ud800"')
        response = http.post("/predict/batch", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "rows", 1, "region"] and error["input"] == "north\\ud800"
        unknown = json.dumps({"model": "__VALUE__", "rows": good}).replace('"__VALUE__"', '"churn\\udfff"')
        response = http.post("/predict/batch", content=unknown, headers={"content-type": "application/json"})
        assert response.status_code in (404, 422), response.text
        rows = [dict(row) for row in good]
        rows[0]["tenure_months"], rows[2]["monthly_charges"], rows[2]["region"] = 12, None, None
        response = predict(http, rows, ["t0", "t1", "t2"])
        assert response.status_code == 200, response.text
        wait_until(lambda: app.state.log_writer.stats()["written"] == 3, what="the valid rows logged")
        assert app.state.log_writer.stats()["accepted"] == 3
    found = logged(store, ["t0", "t1", "t2"])
    numeric = ["tenure_months", "monthly_charges", "support_calls", "data_usage_gb"]
    assert found["t0"]["features"]["tenure_months"] == 12.0
    for request_id, row in found.items():
        for name, value in row["features"].items():
            assert value is None or isinstance(value, float if name in numeric else str), (request_id, name, value)
    assert found["t2"]["features"]["monthly_charges"] is None and found["t2"]["features"]["region"] is None


def test_request_size_limits(tmp_path, churn_pipeline):
    """Bodies above max_body_bytes are refused with 413 (declared or streamed), more rows than
    max_rows_per_request or a longer category than max_category_length with 422 naming the field."""
    backend = Backend("sqlite", f"sqlite:///{tmp_path}/monitoring.db", path=tmp_path / "monitoring.db")
    settings, _ = served_settings(tmp_path, backend, churn_pipeline)
    serving = fast(tmp_path, max_body_bytes=4096, max_rows_per_request=5, max_category_length=16)
    app = create_app(settings, serving=serving)
    rows = traffic_rows(6)
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        too_many = predict(http, rows)
        assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["body", "rows"]
        padded = json.dumps({"model": "churn", "rows": rows[:5], "pad": "x" * 5000}).encode()
        declared = http.post("/predict/batch", content=padded, headers={"content-type": "application/json"})
        assert declared.status_code == 413 and "4096 bytes" in declared.json()["detail"]
        streamed = http.post("/predict/batch", content=iter([padded[:3000], padded[3000:]]),
                             headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        long = [dict(row) for row in rows[:2]]
        long[1]["payment_method"] = "p" * 17
        response = predict(http, long)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "rows", 1, "payment_method"]
        assert predict(http, rows[:5]).status_code == 200
        small = json.dumps({"model": "churn", "rows": rows[:2]}).encode()
        chunked_ok = http.post("/predict/batch", content=iter([small[:100], small[100:]]),
                               headers={"content-type": "application/json"})
        assert chunked_ok.status_code == 200, chunked_ok.text


def test_the_config_files_serving_block_sets_the_limits(tmp_path, churn_pipeline):
    """`serving:` in retrain.yaml reaches `retrain serve`: its row limit answers 422, and a relative
    spill_dir is anchored at the config file's folder, not at wherever the server was started."""
    backend = Backend("sqlite", f"sqlite:///{tmp_path}/monitoring.db", path=tmp_path / "monitoring.db")
    settings, _ = served_settings(tmp_path, backend, churn_pipeline)
    config = tmp_path / "conf" / "retrain.yaml"
    config.parent.mkdir()
    raw = settings.model_dump(mode="json", exclude={"serving"})
    config.write_text(yaml.safe_dump(raw | {"serving": {"max_rows_per_request": 3, "spill_dir": "spill-here"}}))
    loaded = load_settings(config)
    assert loaded.serving.max_rows_per_request == 3
    assert loaded.serving.spill_dir == str(tmp_path / "conf" / "spill-here")
    app = create_app(loaded)
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        assert predict(http, traffic_rows(3)).status_code == 200
        refused = predict(http, traffic_rows(4))
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "rows"]
    assert app.state.log_writer.spill.path == tmp_path / "conf" / "spill-here"


# 4. Endpoints that need the database --------------------------------------------------------------------
@pytest.mark.postgres
def test_status_and_reload_answer_503_naming_what_to_fix_while_the_database_is_down(pg_backend, tmp_path, churn_pipeline,
                                                                                    monkeypatch):
    """While the database is away, /training/status and /model/reload answer 503 with one line naming the
    database (password hidden) and what to do; /predict/batch keeps serving; both recover by themselves."""
    password = "Hunter2secret"
    monkeypatch.setenv("RETRAIN_FAULTS_DB_URL", pg_backend.url.replace("postgres@", f"postgres:{password}@"))
    settings = make_settings(tmp_path, database_url="env:RETRAIN_FAULTS_DB_URL")
    deploy(settings, churn_pipeline)
    app = create_app(settings, token=TOKEN, serving=fast(tmp_path))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        assert http.get("/training/status", params={"model": "churn"}).status_code == 200
        with pg_backend.outage():
            for response in (http.get("/training/status", params={"model": "churn"}), http.post("/model/reload", headers=auth)):
                assert response.status_code == 503, response.text
                detail = response.json()["detail"]
                assert "does not answer" in detail and "start the database server" in detail and "\n" not in detail
                assert password not in response.text and "postgres:***@" in detail
            assert predict(http, traffic_rows(5)).status_code == 200
        wait_until(lambda: http.get("/training/status", params={"model": "churn"}).status_code == 200,
                   what="/training/status after the outage")
        assert http.post("/model/reload", headers=auth).status_code == 200


def _now():
    return dt.datetime.now(dt.timezone.utc)
