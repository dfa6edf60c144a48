"""Monitoring history tables, the ml_model_predictions view and check_retrain_needed on both databases."""

import datetime as dt

import pytest
from sqlalchemy import text

from retrain_assets.store import MonitoringStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return MonitoringStore(f"sqlite:///{tmp_path}/history.db")
    url, _ = request.getfixturevalue("postgres_db")
    return MonitoringStore(url)


def test_check_retrain_needed_follows_metrics_and_alerts(store):
    history = store.history
    assert history.check_retrain_needed("load") == (False, "no retrain needed")
    history.record_metrics("load", 1, 800, {"mae": 1.1, "rmse": 1.5}, {"mae": 1.0, "rmse": 1.4},
                           concept_drift=False, degraded=False)
    assert history.check_retrain_needed("load")[0] is False
    history.record_metrics("load", 1, 800, {"mae": 1.3}, {"mae": 1.0}, concept_drift=True, degraded=True)
    needed, reason = history.check_retrain_needed("load")
    assert needed and reason.startswith("MAE 1.3") and "baseline 1.0" in reason
    assert history.check_retrain_needed("load", mae_increase=0.5)[0] is False
    history.record_drift_alerts("churn", [{"feature": "x", "test": "ks", "statistic": 0.3, "p_value": 1e-9,
                                           "psi": 0.4, "effect": 0.3}], severity="HIGH")
    needed, reason = history.check_retrain_needed("churn")
    assert needed and reason == "1 drift alerts with PSI > 0.2 in the last 24 h"
    history.record_metrics("churn", 2, 500, {"accuracy": 0.7}, {"accuracy": 0.9}, concept_drift=False, degraded=True)
    assert history.check_retrain_needed("churn")[1].startswith("accuracy 0.7")


def test_predictions_view_joins_labels(store):
    import pandas as pd

    frame = pd.DataFrame({"request_id": ["a", "b"], "timestamp": [dt.datetime.now(dt.timezone.utc)] * 2,
                          "x": [1.0, 2.0], "safe_to_send": [True, False]})
    store.predictions.log_predictions("m", frame, ["x"], prediction=[0, 1], model_version=3)
    store.predictions.log_labels("m", ["a"], [1])
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT request_id, model_version, prediction, actual FROM ml_model_predictions "
                                 "WHERE model_id = 'm' ORDER BY request_id")).all()
    assert [(r[0], r[1]) for r in rows] == [("a", 3), ("b", 3)]
    assert rows[1][3] is None


def test_check_retrain_needed_in_the_design_documents_boolean_form(store, request):
    """The 7-day average of the metrics against the baseline (not the newest row alone), or any drift alert
    in 24 h; on PostgreSQL the shell check of the documents prints t/f."""
    import subprocess

    history = store.history
    assert history.retrain_needed("load") is False
    history.record_metrics("load", 1, 800, {"mae": 1.5}, {"mae": 1.0}, concept_drift=False, degraded=True)
    history.record_metrics("load", 1, 800, {"mae": 1.0}, {"mae": 1.0}, concept_drift=False, degraded=False)
    assert history.check_retrain_needed("load")[0] is False  # the newest row is fine...
    assert history.retrain_needed("load") is True  # ...the week's average (1.25 > 1.2) is not
    assert history.retrain_needed("load", mae_increase=0.3) is False
    history.record_metrics("churn", 1, 500, {"accuracy": 0.88}, {"accuracy": 0.9}, concept_drift=False, degraded=False)
    assert history.retrain_needed("churn") is False
    history.record_drift_alerts("churn", [{"feature": "x", "test": "ks", "statistic": 0.3, "p_value": 1e-9,
                                           "psi": 0.1, "effect": 0.3}], severity="MEDIUM")
    assert history.retrain_needed("churn") is True
    if store.engine.dialect.name == "postgresql":
        url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        printed = [subprocess.run(["psql", url, "-tAc", f"SELECT check_retrain_needed('{m}')"], capture_output=True,
                                  text=True, timeout=60).stdout.strip() for m in ("load", "other")]
        assert printed == ["t", "f"]
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT needs_retrain FROM check_retrain_needed_detail('load')")).scalar_one() is False


def test_the_predictions_view_carries_the_prediction_error(store):
    import pandas as pd

    now = dt.datetime.now(dt.timezone.utc)
    frame = pd.DataFrame({"request_id": ["r1", "r2", "r3"], "timestamp": [now] * 3, "x": [1.0, 2.0, 3.0]})
    store.predictions.log_predictions("demand", frame, ["x"], prediction=[3.0, 1.0, 2.0], model_version=1)
    store.predictions.log_labels("demand", ["r1", "r2"], [2.5, 1.0])
    store.predictions.log_predictions("churn", frame, ["x"], prediction=["yes", "no", "no"], model_version=1)
    store.predictions.log_labels("churn", ["r1", "r2"], ["no", "no"])
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT model_id, request_id, prediction_error FROM ml_model_predictions "
                                 "ORDER BY model_id, request_id")).all()
    errors = {(m, r): e for m, r, e in rows}
    assert errors[("demand", "r1")] == pytest.approx(0.5) and errors[("demand", "r2")] == 0
    assert errors[("churn", "r1")] == 1 and errors[("churn", "r2")] == 0
    assert errors[("demand", "r3")] is None and errors[("churn", "r3")] is None  # no label yet
    store.predictions.log_predictions("early", frame.iloc[:1], ["x"], prediction=None)  # before any model
    store.predictions.log_labels("early", ["r1"], [1])
    with store.engine.connect() as conn:
        early = conn.execute(text("SELECT prediction_error FROM ml_model_predictions WHERE model_id = 'early'")).scalar_one()
    assert early is None


def test_a_label_logged_before_and_after_an_upgrade_compares_equal(store):
    """Earlier versions stored JSON with json.dumps (non-ASCII escaped, spaces after separators); SQLite's
    json() keeps escapes as written, so the JSON text of a class label must not change between versions, or
    a prediction logged before an upgrade and labelled after it would count as wrong."""
    import json

    import pandas as pd

    from retrain_assets.store.schema import json_text

    now = dt.datetime.now(dt.timezone.utc)
    label = "Café ☃ 😀\x7f"  # DEL: json.dumps escapes it, pydantic-core does not by itself
    frame = pd.DataFrame({"request_id": ["old", "new"], "timestamp": [now] * 2, "x": [1.0, 2.0]})
    store.predictions.log_predictions("cafe", frame, ["x"], prediction=[label, label], model_version=1)
    with store.engine.begin() as conn:  # the row as an earlier version wrote it
        cast = "CAST(:p AS jsonb)" if store.engine.dialect.name == "postgresql" else ":p"
        conn.execute(text(f"UPDATE prediction_log SET prediction = {cast} WHERE request_id = 'old'"),
                     {"p": json.dumps(label)})
    store.predictions.log_labels("cafe", ["old", "new"], [label, label])
    with store.engine.connect() as conn:
        errors = dict(conn.execute(text("SELECT request_id, prediction_error FROM ml_model_predictions "
                                        "WHERE model_id = 'cafe'")).all())
    assert errors == {"old": 0.0, "new": 0.0}
    every_character = "".join(map(chr, [*range(0xD800), *range(0xE000, 0x110000)]))  # all but lone surrogates
    for value in ["Café", "☃", "😀", "\u2028", "\x7f", every_character, {"é": ["ü", 1.5]}, [1, "x"]]:
        assert json.loads(json_text(value)) == value and json_text(value) == json.dumps(value, separators=(",", ":"))
