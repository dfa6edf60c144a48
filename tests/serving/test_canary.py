"""Canary routing in a running server: the share of requests, the same version for a retried request, the
rows logged under the version that answered, and a canary that crashes answered for by production and
reported. Real uvicorn, real database (SQLite and PostgreSQL), registry writes from outside."""

import httpx
import numpy as np
import pytest

from retrain_assets.serving.api import create_app
from retrain_assets.serving.routing import CANARY_FAILURE, routes_to_canary
from tests.faults.conftest import logged, running, served_settings, traffic_rows, wait_until
from tests.serving.conftest import TOKEN, WrappedModel, quick, register
from tests.serving.test_follow import samples, value


def binomial_band(n: int, share: float) -> tuple[float, float]:
    """Five standard deviations around the expected count (a false failure about once in 3.5 million runs)."""
    sd = (n * share * (1 - share)) ** 0.5
    return n * share - 5 * sd, n * share + 5 * sd


@pytest.mark.parametrize("share", [0.05, 0.5])
def test_routing_gives_the_canary_its_share_of_request_ids_the_same_everywhere(share):
    ids = [f"request-{i}" for i in range(20_000)]
    routed = np.array([routes_to_canary(i, share) for i in ids])
    low, high = binomial_band(len(ids), share)
    assert low < routed.sum() < high
    assert (routed == np.array([routes_to_canary(i, share) for i in ids])).all()  # deterministic: a retry lands the same
    at_half = np.array([routes_to_canary(i, 0.5) for i in ids])
    assert (at_half | ~routed).all()  # monotone: a request sent to the canary at 5 % still goes there at 50 %
    assert not any(routes_to_canary(i, 0.0) for i in ids[:1000]) and all(routes_to_canary(i, 1.0) for i in ids[:1000])


def start_canary(settings, store, pipeline, share: float):
    candidate = register(settings, store, pipeline, 2, promote=False)
    store.registry.start_canary("churn", candidate.version, share, store.predictions.newest_id("churn"))
    return candidate


def test_a_server_routes_the_canary_share_and_logs_each_row_under_the_version_that_answered(backend, tmp_path,
                                                                                              churn_pipeline):
    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        start_canary(settings, store, churn_pipeline, 0.5)
        wait_until(lambda: http.get("/readyz").json()["models"]["churn"]["canary"] == "v2", 30, "the canary to load")
        assert http.get("/readyz").json()["models"]["churn"]["canary_share"] == 0.5
        rows = traffic_rows(2)
        answers = {}
        for i in range(300):
            ids = [f"canary-{i}-a", f"canary-{i}-b"]
            response = http.post("/predict/batch", json={"model": "churn", "rows": rows, "request_ids": ids})
            assert response.status_code == 200, response.text
            assert response.headers["X-Model-Version"] == response.json()["model_version"]
            answers[ids[0]] = response.json()["model_version"]
        on_canary = sum(v == "v2" for v in answers.values())
        low, high = binomial_band(300, 0.5)
        assert low < on_canary < high  # a request is routed as a whole, by its first request id
        assert all((v == "v2") == routes_to_canary(first, 0.5) for first, v in answers.items())
        again = http.post("/predict/batch", json={"model": "churn", "rows": rows, "request_ids": ["canary-7-a", "x"]})
        assert again.json()["model_version"] == answers["canary-7-a"]  # a retried request lands on the same version
        first_ids = list(answers)
        found = wait_until(lambda: (lambda f: f if len(f) == 300 else None)(logged(store, first_ids)), 30, "the log")
        assert {rid: f"v{row['model_version']}" for rid, row in found.items()} == answers

        store.registry.step_canary("churn", 2, 1.0, store.predictions.newest_id("churn"))  # a share the test can see
        wait_until(lambda: http.get("/readyz").json()["models"]["churn"]["canary_share"] == 1.0, 30, "the new share")
        assert http.post("/predict/batch", json={"model": "churn", "rows": rows}).json()["model_version"] == "v2"
        store.registry.promote("churn", 2)  # the last step: the canary becomes production, nothing loaded again
        wait_until(lambda: http.get("/readyz").json()["models"]["churn"]["canary"] is None, 30, "the promotion")
        assert http.post("/predict/batch", json={"model": "churn", "rows": rows}).json()["model_version"] == "v2"
        assert value(samples(http, "retrain_model_loads_total"), version="v2", outcome="loaded") == 1


class Crashing(WrappedModel):
    """A canary that raises on every request (a category it cannot encode, say)."""

    def predict_proba(self, frame):
        raise ValueError("cannot encode the value 'enterprise'")


def test_requests_a_crashing_canary_cannot_answer_are_answered_by_production_and_reported(backend, tmp_path,
                                                                                          churn_pipeline):
    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        start_canary(settings, store, Crashing(churn_pipeline), 0.5)
        wait_until(lambda: http.get("/readyz").json()["models"]["churn"]["canary"] == "v2", 30, "the canary to load")
        routed = [f"crash-{i}" for i in range(200) if routes_to_canary(f"crash-{i}", 0.5)][:5]
        for request_id in routed:
            response = http.post("/predict/batch", json={"model": "churn", "rows": traffic_rows(3),
                                                         "request_ids": [request_id, f"{request_id}-2", f"{request_id}-3"]})
            assert response.status_code == 200 and response.json()["model_version"] == "v1", response.text
        failures = samples(http, "retrain_canary_failures_total")
        assert value(failures, model="churn", version="v2") == 1  # the first failure; no request reaches it again here
        reported = wait_until(lambda: store.events.of_type("churn", CANARY_FAILURE, since=store.registry.version(
            "churn", 2).created_at), 30, "the failure in the event log")
        assert len(reported) == 1 and "cannot encode the value 'enterprise'" in reported[0]["trigger_reason"]
        assert reported[0]["trigger_metrics"] == {"version": "v2", "rows": 3,
                                                  "error": "ValueError: cannot encode the value 'enterprise'"}
        wait_until(lambda: len(logged(store, routed)) == len(routed), 30, "the rows in the log")
        assert {row["model_version"] for row in logged(store, routed).values()} == {1}


def test_the_demo_traffic_path_routes_rows_by_request_id_and_falls_back_on_a_crashing_canary(tmp_path, churn_pipeline):
    """``serve_and_log`` (the demo's traffic, each row a request) uses the same routing and the same
    fallback: rows a crashing canary cannot answer are answered by production and the failure recorded."""
    import datetime as dt

    from retrain_assets.serving.predict import serve_and_log
    from retrain_assets.simulate import generate_traffic
    from retrain_assets.store import ArtifactStore
    from tests.faults.conftest import Backend

    path = tmp_path / "monitoring.db"
    settings, store = served_settings(tmp_path, Backend("sqlite", f"sqlite:///{path}", path=path), churn_pipeline)
    model, artifacts = settings.model("churn"), ArtifactStore(settings.storage.artifact_root)
    frame = generate_traffic(400, seed=5, start=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), id_prefix="demo")
    start_canary(settings, store, churn_pipeline, 0.5)
    _, served = serve_and_log(store, artifacts, model, frame)
    versions = {rid: row["model_version"] for rid, row in logged(store, frame["request_id"]).items()}
    assert versions == {rid: 2 if routes_to_canary(rid, 0.5) else 1 for rid in frame["request_id"]}
    assert served["prediction"].notna().all() and len(served) == 400

    store.registry.record_gates("churn", 2, [], False)  # that canary is gone; a crashing one replaces it
    crashing = register(settings, store, Crashing(churn_pipeline), 3, promote=False)
    store.registry.start_canary("churn", crashing.version, 0.5, store.predictions.newest_id("churn"))
    more = generate_traffic(100, seed=6, start=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc), id_prefix="crash")
    _, served = serve_and_log(store, artifacts, model, more)
    assert served["prediction"].notna().all()
    assert {row["model_version"] for row in logged(store, more["request_id"]).values()} == {1}
    [failure] = store.events.of_type("churn", CANARY_FAILURE, since=crashing.created_at)
    assert failure["trigger_metrics"]["version"] == "v3" and "cannot encode" in failure["trigger_reason"]


class Flaky(WrappedModel):
    """A production model that raises on rows with an absurd tenure (a bug on some inputs)."""

    def predict_proba(self, frame):
        if (frame["tenure_months"] > 1000).any():
            raise ValueError("overflow in the tenure transform")
        return self.inner.predict_proba(frame)


def test_each_server_process_counts_the_requests_a_version_answered_and_failed(backend, tmp_path, churn_pipeline):
    """The post-deploy watch's error rate comes from these counts (serving_requests), written at each poll."""
    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    register(settings, store, Flaky(churn_pipeline), 2)
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        wait_until(lambda: http.get("/readyz").json()["models"]["churn"]["serving"] == "v2", 30, "v2 to serve")
        good, bad = traffic_rows(3), [{**row, "tenure_months": 5000.0} for row in traffic_rows(3)]
        assert all(http.post("/predict/batch", json={"model": "churn", "rows": good}).status_code == 200 for _ in range(12))
        for _ in range(3):
            failed = http.post("/predict/batch", json={"model": "churn", "rows": bad})
            assert failed.status_code == 500 and failed.headers["X-Model-Version"] == "v2"
            assert "model churn v2 failed on this request (ValueError: overflow" in failed.json()["detail"]
        v2 = store.registry.version("churn", 2)
        wait_until(lambda: store.predictions.request_counts("churn", 2, v2.promoted_at) == (12, 3), 30,
                   "the counts in the database")
        candidate = register(settings, store, churn_pipeline, 3, promote=False)  # a canary answers them all now
        store.registry.start_canary("churn", candidate.version, 1.0, store.predictions.newest_id("churn"))
        wait_until(lambda: http.get("/readyz").json()["models"]["churn"]["canary"] == "v3", 30, "the canary")
        assert all(http.post("/predict/batch", json={"model": "churn", "rows": good}).json()["model_version"] == "v3"
                   for _ in range(4))
    # the server stopped: its last counts were written at shutdown; the canary's answers count for nobody
    assert store.predictions.request_counts("churn", 2, v2.promoted_at) == (12, 3)
    from sqlalchemy import func, select

    from retrain_assets.store.schema import serving_requests
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(serving_requests)
                            .where(serving_requests.c.model_version == 3)).scalar_one() == 0


def test_a_canary_the_server_cannot_load_is_reported_as_failed(tmp_path, churn_pipeline):
    """It would get no traffic and never its evidence: the server reports it, and the sensor rolls it back."""
    from pathlib import Path

    from tests.faults.conftest import Backend

    path = tmp_path / "monitoring.db"
    settings, store = served_settings(tmp_path, Backend("sqlite", f"sqlite:///{path}", path=path), churn_pipeline)
    candidate = register(settings, store, churn_pipeline, 2, promote=False)
    (Path(settings.storage.artifact_root) / candidate.artifact_key).unlink()
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        store.registry.start_canary("churn", 2, 0.5, store.predictions.newest_id("churn"))
        reported = wait_until(lambda: store.events.of_type("churn", CANARY_FAILURE, since=candidate.created_at), 30,
                              "the load failure in the event log")
        assert len(reported) == 1 and "not loaded" in reported[0]["trigger_reason"]
        assert "canary v2 not loaded" in http.get("/readyz").json()["models"]["churn"]["problem"]
        assert http.post("/predict/batch", json={"model": "churn", "rows": traffic_rows(2)}).json()["model_version"] == "v1"
