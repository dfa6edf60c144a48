"""The prediction log's fast SQLite insert stores every column exactly as SQLAlchemy's own insert does,
so every reader (training, monitoring, the watch) sees the same values whichever path wrote them."""

import datetime as dt
import sqlite3

import pytest
from sqlalchemy import select

from retrain_assets.store import MonitoringStore
from retrain_assets.store.predictions import prediction_rows
from retrain_assets.store.schema import prediction_log


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
