"""The prediction log's fast SQLite insert stores every column exactly as SQLAlchemy's own insert does,
so every reader (training, monitoring, the watch) sees the same values whichever path wrote them."""

import datetime as dt
import json
import sqlite3

import numpy as np
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from retrain_assets.serving.log_writer import writer_engine
from retrain_assets.store import MonitoringStore
from retrain_assets.store.predictions import PredictionLog, _sqlite_params, prediction_rows
from retrain_assets.store.schema import json_text, prediction_log


def test_fast_sqlite_insert_stores_what_the_orm_insert_stores(tmp_path):
    path = tmp_path / "monitoring.db"
    store = MonitoringStore(f"sqlite:///{path}")
    ts = dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    features = [{"tenure_months": 3.5, "region": "Nord", "contract": None}, {"tenure_months": None, "region": "é\"x"}]

    def rows(prefix):
        return prediction_rows("churn", [f"{prefix}-0", f"{prefix}-1"], features, ts=ts, prediction=[1, None],
                               score=[0.25, 0.75], model_version=3, latency_ms=12.5, safe_to_send=[True, None])

    fast, orm = rows("fast"), rows("orm")
    store.predictions.insert_rows(fast)  # the fast path (SQLite)
    with store.engine.begin() as conn:
        conn.execute(prediction_log.insert(), orm)  # SQLAlchemy's own
    raw = sqlite3.connect(path)
    stored = raw.execute("SELECT request_id, ts, features, prediction, score, model_version, safe_to_send, latency_ms "
                         "FROM prediction_log ORDER BY id").fetchall()
    by_id = {row[0]: row[1:] for row in stored}
    assert by_id["fast-0"] == by_id["orm-0"] and by_id["fast-1"] == by_id["orm-1"]
    assert by_id["fast-0"][0] == "2026-03-04 03:06:07.891011"
    with store.engine.connect() as conn:
        back = {r.request_id: r for r in conn.execute(select(prediction_log))}
    assert back["fast-0"].ts == ts and back["fast-1"].features == features[1] and back["fast-1"].prediction is None
    with pytest.raises(ValueError, match="naive datetime"):
        store.predictions.insert_rows(prediction_rows("churn", ["naive"], [{}], ts=dt.datetime(2026, 1, 1)))


def test_sqlite_insert_takes_a_thousand_rows_per_statement(tmp_path):
    """Python's sqlite3 gives the GIL away at every statement step and waits for it back; one statement per
    row (``executemany``) let a busy prediction thread starve the log writer to a few thousand rows a
    second. Rows go in a thousand per statement, all of them or none."""
    store = MonitoringStore(f"sqlite:///{tmp_path / 'monitoring.db'}")
    store.engine.dispose()
    inserts: list[str] = []

    @event.listens_for(store.engine, "connect")
    def trace(dbapi_connection, _record):
        dbapi_connection.set_trace_callback(lambda sql: inserts.append(sql) if sql.startswith("INSERT") else None)

    ts = dt.datetime.now(dt.timezone.utc)
    rows = prediction_rows("churn", [f"r{i}" for i in range(2500)], [{"x": float(i)} for i in range(2500)], ts=ts,
                           prediction=[i % 2 for i in range(2500)], model_version=1)
    assert store.predictions.insert_rows(rows) == 2500
    assert len(inserts) == 3  # 1000 + 1000 + 500
    with store.engine.connect() as conn:
        stored = conn.execute(select(prediction_log.c.request_id, prediction_log.c.features)).all()
    assert len(stored) == 2500 and dict(stored)["r1999"] == {"x": 1999.0}
    again = prediction_rows("churn", [f"new{i}" for i in range(1500)] + ["r7"], [{}] * 1501, ts=ts)
    with pytest.raises(IntegrityError):  # SQLAlchemy's class, as the writer classifies it: the batch is split
        store.predictions.insert_rows(again)
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(prediction_log)).scalar() == 2500


def test_the_log_writer_s_sqlite_engine_sends_its_inserts_and_nothing_else(tmp_path):
    """Each statement gives the GIL away and waits for it back beside a busy prediction thread: the writer's
    own SQLite engine sends no pre-ping (a file has no connection to go stale) before each batch."""
    store = MonitoringStore(f"sqlite:///{tmp_path / 'monitoring.db'}")
    engine, owned = writer_engine(store.engine, timeout=5)
    statements: list[str] = []

    @event.listens_for(engine, "connect")
    def trace(dbapi_connection, _record):
        dbapi_connection.set_trace_callback(lambda sql: statements.append(sql.split()[0].upper()))

    ts = dt.datetime.now(dt.timezone.utc)
    for batch in range(3):
        rows = prediction_rows("churn", [f"b{batch}-{i}" for i in range(10)], [{"x": 1.0}] * 10, ts=ts)
        assert PredictionLog(engine).insert_rows(rows) == 10
    assert owned and statements == ["BEGIN", "INSERT", "COMMIT"] * 3
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_equal_predictions_of_other_types_keep_their_own_json(tmp_path, request, backend):
    """The fast inserts (SQLite's multi-row INSERT, PostgreSQL's COPY) make each distinct label's JSON once
    per batch: 1, 1.0, True and "1" are equal or alike as dictionary keys but not as JSON. Stored as
    SQLAlchemy's own insert stores them; each text reads back as its own value and type (0.0 and -0.0 too,
    which neither database keeps apart)."""
    url = request.getfixturevalue("postgres_db")[0] if backend == "postgres" else f"sqlite:///{tmp_path / 'm.db'}"
    store = MonitoringStore(url)
    values = [1, 1.0, True, "1", None, 1, 2.5, True]
    ts = dt.datetime.now(dt.timezone.utc)

    def rows(prefix):
        return prediction_rows("churn", [f"{prefix}{i}" for i in range(len(values))], [{"x": 1.5}] * len(values),
                               ts=ts, prediction=values)

    store.predictions.insert_rows(rows("fast"))
    with store.engine.begin() as conn:
        conn.execute(prediction_log.insert(), rows("orm"))
    as_text = "prediction::text" if backend == "postgres" else "quote(prediction)"
    with store.engine.connect() as conn:
        raw = dict(conn.exec_driver_sql(f"SELECT request_id, {as_text} FROM prediction_log").all())
        back = {r.request_id: r for r in conn.execute(select(prediction_log))}
    assert [raw[f"fast{i}"] for i in range(len(values))] == [raw[f"orm{i}"] for i in range(len(values))]
    assert raw["fast2"] == raw["fast7"] != raw["fast0"] and raw["fast3"] not in (raw["fast0"], raw["fast2"])
    assert back["fast0"].ts == ts and back["fast0"].features == {"x": 1.5} and back["fast4"].prediction is None
    odd = values + [0.0, -0.0, [1, 2], [1.0, 2.0]]
    texts = [params[4] for params in _sqlite_params(prediction_rows("churn", [str(i) for i in range(len(odd))],
                                                                     [{}] * len(odd), ts=ts, prediction=odd))]
    assert texts == [json_text(value) for value in odd]
    assert [(type(v), v) for v in map(json.loads, texts)] == [(type(v), v) for v in json.loads(json.dumps(odd))]
    store.engine.dispose()


def test_sqlite_insert_keeps_under_the_variable_limit(tmp_path):
    """A SQLite built with a low limit on statement variables gets smaller statements, not an error (which
    the log writer would take for an outage)."""
    store = MonitoringStore(f"sqlite:///{tmp_path / 'monitoring.db'}")
    store.engine.dispose()
    inserts: list[str] = []

    @event.listens_for(store.engine, "connect")
    def low_limit(dbapi_connection, _record):
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 20)  # 2 rows of 9 columns
        dbapi_connection.set_trace_callback(lambda sql: inserts.append(sql) if sql.startswith("INSERT") else None)

    rows = prediction_rows("churn", [f"r{i}" for i in range(25)], [{}] * 25, ts=dt.datetime.now(dt.timezone.utc))
    assert store.predictions.insert_rows(rows) == 25
    assert len(inserts) == 13
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(prediction_log)).scalar() == 25


def test_prediction_rows_converts_numpy_columns():
    ts = dt.datetime.now(dt.timezone.utc)
    rows = prediction_rows("m", ["a", "b", "c"], [{}] * 3, ts=ts, prediction=np.array([0.5, -0.0, np.nan], dtype=np.float32),
                           score=np.array([0.25, np.nan, 1.0]), latency_ms=3.5, safe_to_send=[True, None, np.nan])
    assert [r["prediction"] for r in rows] == [0.5, -0.0, None] and type(rows[0]["prediction"]) is float
    assert [r["score"] for r in rows] == [0.25, None, 1.0] and [r["latency_ms"] for r in rows] == [3.5] * 3
    assert [r["safe_to_send"] for r in rows] == [True, None, None]
    labels = prediction_rows("m", ["a", "b"], [{}] * 2, ts=ts, prediction=np.array([1, 0]))
    assert [type(r["prediction"]) for r in labels] == [int, int]
    with pytest.raises(ValueError, match="2 scores for 3 rows"):
        prediction_rows("m", ["a", "b", "c"], [{}] * 3, ts=ts, score=[0.1, 0.2])


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_every_engine_writes_json_columns_with_the_same_text(tmp_path, request, backend):
    """The store's engine and the log writer's own engine (whose plain insert is the fallback for other
    PostgreSQL drivers) serialize JSON columns with the same function as the fast inserts."""
    from retrain_assets.serving.log_writer import writer_engine

    url = request.getfixturevalue("postgres_db")[0] if backend == "postgres" else f"sqlite:///{tmp_path / 'm.db'}"
    store = MonitoringStore(url)
    own, owned = writer_engine(store.engine, 5)
    assert owned and store.engine.dialect._json_serializer is json_text and own.dialect._json_serializer is json_text
    own.dispose()
    store.engine.dispose()
