"""Serving follows the registry by itself, for real: a uvicorn server in a thread over a database the test
made (SQLite and PostgreSQL), registry writes from outside, and nothing telling the server. Assertions are
on versions, counts and files; waits poll with generous timeouts."""

import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from retrain_assets.serving.api import create_app
from tests.faults.conftest import logged, running, served_settings, traffic_rows, wait_until
from tests.serving.conftest import TOKEN, WrappedModel, quick, register


def predict(http: httpx.Client, rows: list[dict], **extra) -> httpx.Response:
    return http.post("/predict/batch", json={"model": "churn", "rows": rows, **extra})


def version_served(http: httpx.Client) -> str:
    response = predict(http, traffic_rows(2))
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Version"] == response.json()["model_version"]
    return response.json()["model_version"]


def samples(http: httpx.Client, name: str) -> dict[tuple, float]:
    """The samples of one metric family (by its sample name) from /metrics, parsed by prometheus_client."""
    text = http.get("/metrics").text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples if sample.name == name}


def value(found: dict, **labels) -> float:
    return sum(v for (_, key), v in found.items() if all((k, str(w)) in key for k, w in labels.items()))


def test_a_promotion_and_a_rollback_reach_a_running_server_without_a_reload(backend, tmp_path, churn_pipeline):
    """v1 serves; a promotion in the registry (v2) reaches traffic, then a rollback returns to v1 even though
    v1's artifact file is gone from disk: the standby is kept in memory, a rollback reads nothing."""
    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        assert version_served(http) == "v1"
        register(settings, store, churn_pipeline, 2)
        wait_until(lambda: version_served(http) == "v2", 30, "the promotion to reach the server")
        ready = http.get("/readyz").json()
        assert ready["ready"] and ready["models"]["churn"] == {"serving": "v2", "standby": "v1", "shadow": None, "canary": None,
                                                                 "canary_share": None, "problem": None}
        v1 = store.registry.version("churn", 1)
        (Path(settings.storage.artifact_root) / v1.artifact_key).unlink()
        store.registry.rollback("churn")
        wait_until(lambda: version_served(http) == "v1", 30, "the rollback to reach the server")
        assert http.get("/readyz").json()["models"]["churn"]["standby"] == "v2"
        loads = samples(http, "retrain_model_loads_total")
        assert value(loads, version="v1", outcome="loaded") == 1  # at start, never again
        assert value(loads, version="v2", outcome="loaded") == 1
        assert value(loads, version="v1", outcome="reused") >= 1 and value(loads, outcome="failed") == 0
        assert value(samples(http, "retrain_model_swaps_total"), model="churn", slot="production") == 2
        status = http.get("/training/status", params={"model": "churn"})
        assert status.json()["serving"] == "v1" and status.json()["standby"] == "v2"
        assert status.headers["X-Model-Version"] == "v1"


class Gated(WrappedModel):
    """Predictions wait for the test's go (requests in flight, made visible)."""

    started = threading.Event()
    go = threading.Event()

    def predict_proba(self, frame):
        Gated.started.set()
        assert Gated.go.wait(60), "the test never let the prediction finish"
        return self.inner.predict_proba(frame)


def test_a_request_in_flight_finishes_on_the_model_it_started_with(tmp_path, churn_pipeline):
    """A request that started on v2 answers with v2 (and is logged as v2) although the registry rolled back
    to v1 meanwhile; a request that arrived after the swap answers with v1 (it waits for the first one:
    a process predicts one request at a time, but each keeps the version it arrived on)."""
    from tests.faults.conftest import Backend

    path = tmp_path / "monitoring.db"
    settings, store = served_settings(tmp_path, Backend("sqlite", f"sqlite:///{path}", path=path), churn_pipeline)
    Gated.started.clear()
    Gated.go.clear()
    register(settings, store, Gated(churn_pipeline), 2)
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        answers = {}

        def send(name, ids):
            with httpx.Client(base_url=base, timeout=90) as client:
                answers[name] = predict(client, traffic_rows(len(ids)), request_ids=ids)

        first_ids, later_ids = [f"in-flight-{i}" for i in range(3)], [f"after-swap-{i}" for i in range(2)]
        first = threading.Thread(target=send, args=("first", first_ids))
        later = threading.Thread(target=send, args=("later", later_ids))
        first.start()
        try:
            assert Gated.started.wait(30), "the request never reached v2"
            store.registry.rollback("churn")
            wait_until(lambda: http.get("/readyz").json()["models"]["churn"]["serving"] == "v1", 30,
                       "the rollback while a request is in flight")
            later.start()
            assert first.is_alive()  # still computing on v2
        finally:
            Gated.go.set()
            first.join(60)
            later.join(60)
        assert answers["first"].status_code == 200 and answers["first"].json()["model_version"] == "v2"
        assert answers["first"].headers["X-Model-Version"] == "v2"
        assert answers["later"].status_code == 200 and answers["later"].json()["model_version"] == "v1"
        wait_until(lambda: len(logged(store, first_ids + later_ids)) == 5, 30, "the rows in the log")
        versions = {rid: row["model_version"] for rid, row in logged(store, first_ids + later_ids).items()}
        assert versions == {**dict.fromkeys(first_ids, 2), **dict.fromkeys(later_ids, 1)}


def test_a_missing_artifact_keeps_the_current_model_says_why_and_is_retried(backend, tmp_path, churn_pipeline, logs):
    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        v2 = register(settings, store, churn_pipeline, 2, promote=False)
        artifact = Path(settings.storage.artifact_root) / v2.artifact_key
        aside = artifact.with_name("aside")
        artifact.rename(aside)
        store.registry.promote("churn", v2.version)
        wait_until(lambda: http.get("/readyz").json()["models"]["churn"]["problem"], 30, "the problem in /readyz")
        ready = http.get("/readyz")
        assert ready.status_code == 200  # still serving: ready, and saying what is wrong
        problem = ready.json()["models"]["churn"]["problem"]
        assert "production v2 not loaded" in problem and "missing" in problem and "still serving v1" in problem
        assert version_served(http) == "v1"
        assert "production v2 not loaded" in "\n".join(r.getMessage() for r in logs.records)
        wait_until(lambda: value(samples(http, "retrain_model_loads_total"), version="v2", outcome="failed") >= 2, 30,
                   "a retry of the load")
        aside.rename(artifact)  # the artifact store is restored: the next retry loads it
        wait_until(lambda: version_served(http) == "v2", 90, "the retried load")
        assert http.get("/readyz").json()["models"]["churn"]["problem"] is None


@pytest.mark.postgres
def test_readiness_follows_the_database_and_liveness_does_not(pg_backend, tmp_path, churn_pipeline):
    settings, store = served_settings(tmp_path, pg_backend, churn_pipeline)
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        assert http.get("/readyz").status_code == 200 and http.get("/healthz").json() == {"status": "ok"}
        with pg_backend.outage():
            down = http.get("/readyz")
            assert down.status_code == 503, down.text
            assert down.json()["ready"] is False and "does not answer" in down.json()["reasons"][0]
            assert http.get("/healthz").status_code == 200
            assert predict(http, traffic_rows(4)).status_code == 200  # serving goes on meanwhile
        wait_until(lambda: http.get("/readyz").status_code == 200, 60, "readiness after the outage")
        # The registry is followed again after the outage.
        register(settings, store, churn_pipeline, 2)
        wait_until(lambda: version_served(http) == "v2", 30, "a promotion after the outage")


def test_readiness_without_a_production_model(tmp_path, churn_pipeline):
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        down = http.get("/readyz")
        assert down.status_code == 503 and "model churn: no production version loaded" in down.json()["reasons"][0]
        assert predict(http, traffic_rows(2)).status_code == 503
        from retrain_assets.store import MonitoringStore

        register(settings, MonitoringStore(settings.storage.database_url), churn_pipeline, 1)
        wait_until(lambda: http.get("/readyz").status_code == 200, 30, "readiness once a model is promoted")
        assert version_served(http) == "v1"


def test_metrics_count_requests_rows_errors_and_the_log_backlog(tmp_path, churn_pipeline):
    from tests.faults.conftest import Backend

    path = tmp_path / "monitoring.db"
    settings, store = served_settings(tmp_path, Backend("sqlite", f"sqlite:///{path}", path=path), churn_pipeline)
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        for _ in range(3):
            assert predict(http, traffic_rows(10)).status_code == 200
        bad = traffic_rows(1)
        bad[0]["monthly_charges"] = "lots"
        assert predict(http, bad).status_code == 422
        assert http.post("/predict/batch", json={"model": "fraud", "rows": bad}).status_code == 404
        assert http.get("/no/such/path").status_code == 404
        wait_until(lambda: app.state.log_writer.flush(10), 30, "the log writer to drain")
        text = http.get("/metrics")
        assert text.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(text.text)}
        assert {"retrain_predict_requests", "retrain_predict_rows", "retrain_http_request_duration_seconds",
                "retrain_http_errors", "retrain_model_loads", "retrain_model_swaps", "retrain_prediction_log_queue_rows",
                "retrain_prediction_log_unwritten_rows", "retrain_prediction_log_spilled_rows"} <= set(families)
        assert value(samples(http, "retrain_predict_requests_total"), model="churn", version="v1") == 3
        assert value(samples(http, "retrain_predict_rows_total"), model="churn", version="v1") == 30
        assert value(samples(http, "retrain_predict_model_seconds_count"), model="churn") == 3
        errors = samples(http, "retrain_http_errors_total")
        assert value(errors, route="/predict/batch", status=422) == 1
        assert value(errors, route="/predict/batch", status=404) == 1
        assert value(errors, route="unmatched", status=404) == 1
        assert value(samples(http, "retrain_http_request_duration_seconds_count"), route="/predict/batch") == 5
        assert value(samples(http, "retrain_prediction_log_unwritten_rows"), ) == 0
