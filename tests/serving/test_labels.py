"""POST /labels on a real server and database: per-item answers, idempotency, conflicts, types."""

import datetime as dt

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from retrain_assets.serving.api import create_app
from retrain_assets.store.schema import label_feedback
from retrain_assets.store.predictions import prediction_rows
from tests.faults.conftest import logged, running, served_settings, traffic_rows, wait_until
from tests.serving.conftest import TOKEN, quick


def stored_labels(store) -> dict[str, object]:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(label_feedback.c.request_id, label_feedback.c.label)).all())


def test_labels_are_recorded_once_and_every_item_is_answered(backend, tmp_path, churn_pipeline, auth):
    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
    ids = [f"req-{i}" for i in range(4)]
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        served = http.post("/predict/batch", json={"model": "churn", "rows": traffic_rows(4), "request_ids": ids})
        assert served.status_code == 200
        wait_until(lambda: len(logged(store, ids)) == 4, 30, "the served rows in the log")

        def send(labels, headers=auth, model="churn"):
            return http.post("/labels", headers=headers, json={"model": model, "labels": labels})

        assert send([{"request_id": "req-0", "label": 1}], headers={}).status_code == 401
        assert send([{"request_id": "req-0", "label": 1}], headers={"Authorization": "Bearer no"}).status_code == 401
        assert send([{"request_id": "req-0", "label": 1}], model="fraud").status_code == 404
        assert send([]).status_code == 422

        first = send([{"request_id": "req-0", "label": 1}, {"request_id": "req-1", "label": 0},
                      {"request_id": "never-served", "label": 1}, {"request_id": "req-2", "label": "yes"},
                      {"request_id": "req-3", "label": 2}, {"request_id": "req-3", "label": 1.5},
                      {"request_id": "req-3", "label": True}, {"request_id": "req-3", "label": None}])
        assert first.status_code == 200, first.text
        body = first.json()
        assert [r["status"] for r in body["results"]] == [201, 201, 404, 422, 422, 422, 422, 422]
        assert [r["outcome"] for r in body["results"]][:3] == ["recorded", "recorded", "unknown_request"]
        assert [r["request_id"] for r in body["results"]] == ["req-0", "req-1", "never-served", "req-2", "req-3",
                                                             "req-3", "req-3", "req-3"]
        assert "not one of churn's classes [0, 1]" in body["results"][4]["detail"]
        assert (body["recorded"], body["unchanged"], body["rejected"]) == (2, 0, 6)
        assert stored_labels(store) == {"req-0": 1, "req-1": 0}

        again = send([{"request_id": "req-0", "label": 1}, {"request_id": "req-1", "label": 1},
                      {"request_id": "req-2", "label": 0}, {"request_id": "req-2", "label": 1}]).json()
        assert [(r["status"], r["outcome"]) for r in again["results"]] == [
            (200, "unchanged"), (409, "conflict"), (201, "recorded"), (409, "conflict")]
        assert "different label (0)" in again["results"][1]["detail"]
        assert stored_labels(store) == {"req-0": 1, "req-1": 0, "req-2": 0}  # never overwritten, never doubled
        outcomes = {s.labels["outcome"]: s.value for f in text_string_to_metric_families(http.get("/metrics").text)
                    if f.name == "retrain_labels" for s in f.samples if s.name == "retrain_labels_total"}
        assert outcomes == {"recorded": 3, "unknown_request": 1, "invalid": 5, "unchanged": 1, "conflict": 2}


def test_labels_need_a_configured_token(tmp_path, churn_pipeline):
    from tests.faults.conftest import Backend

    path = tmp_path / "monitoring.db"
    settings, _ = served_settings(tmp_path, Backend("sqlite", f"sqlite:///{path}", path=path), churn_pipeline)
    app = create_app(settings, token="", serving=quick(tmp_path))
    with running(app) as base:
        refused = httpx.post(f"{base}/labels", json={"model": "churn", "labels": [{"request_id": "x", "label": 1}]},
                             headers={"Authorization": "Bearer anything"})
        assert refused.status_code == 403 and "RETRAIN_API_TOKEN" in refused.json()["detail"]


@pytest.mark.parametrize("labels, expected", [([3.5, float("nan")], [201, 422]), ([True, 2], [422, 201])])
def test_regression_labels_take_finite_numbers(tmp_path, labels, expected):
    """The demand model (regression): numbers are labels, booleans and non-finite values are not."""
    from retrain_assets.store import MonitoringStore
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    model = settings.models[0].model_copy(update={"task": "regression", "name": "demand"})
    app_settings = settings.model_copy(update={"models": [model]})
    store = MonitoringStore(settings.storage.database_url)
    ids = ["r-0", "r-1"]
    store.predictions.insert_rows(prediction_rows(model.log_key, ids, [{}, {}], ts=dt.datetime.now(dt.timezone.utc)))
    app = create_app(app_settings, token=TOKEN, serving=quick(tmp_path))
    with running(app) as base:
        body = httpx.post(f"{base}/labels", headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, content=(
            '{"model": "demand", "labels": [' + ", ".join(
                f'{{"request_id": "{i}", "label": {"NaN" if v != v else str(v).lower()}}}' for i, v in zip(ids, labels))
            + "]}").encode(), timeout=60)
        assert body.status_code == 200, body.text
        assert [r["status"] for r in body.json()["results"]] == expected


def test_label_checks_for_string_classes_never_truncate():
    """Classes of a fixed-width string dtype: a longer label is not cut down into one of them."""
    from types import SimpleNamespace

    import numpy as np

    from retrain_assets.serving.api import _label_errors

    model = SimpleNamespace(task="classification", name="plan")
    slot = SimpleNamespace(pipeline=SimpleNamespace(classes_=np.array(["no", "yes"])))
    errors = _label_errors(model, slot, ["yes", "yesss", 1, "no"])
    assert sorted(errors) == [1, 2] and "not one of plan's classes ['no', 'yes']" in errors[1]


def test_concurrent_labels_for_the_same_requests_store_one_each(backend, tmp_path, churn_pipeline):
    """Two callers label the same 200 requests at once, one with 1s, one with 0s: every request ends with one
    label, and each item of the losing call is answered as a conflict, never dropped or doubled."""
    import threading

    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    ids = [f"race-{i}" for i in range(200)]
    store.predictions.insert_rows(prediction_rows("churn", ids, [{}] * len(ids), ts=dt.datetime.now(dt.timezone.utc)))
    barrier, outcomes = threading.Barrier(2), {}

    def label(value):
        barrier.wait()
        outcomes[value] = [outcome for outcome, _ in store.predictions.record_labels("churn", ids, [value] * len(ids))]

    threads = [threading.Thread(target=label, args=(v,)) for v in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stored = stored_labels(store)
    assert len(stored) == 200
    for index, request_id in enumerate(ids):
        pair = {outcomes[0][index], outcomes[1][index]}
        assert pair == {"recorded", "conflict"}, (request_id, pair)
        winner = 0 if outcomes[0][index] == "recorded" else 1
        assert stored[request_id] == winner
