"""The HTTP API against a real uvicorn server on 127.0.0.1 (stopped by its process id afterwards)."""

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from retrain_assets.defs.deployment.promotion import retrain_in_process
from retrain_assets.defs.definitions import build_definitions
from retrain_assets.settings import load_settings
from retrain_assets.simulate import generate_traffic, model_config
from retrain_assets.store import MonitoringStore

REPO = Path(__file__).resolve().parents[1]
LOOSE = {"max_f1_drop": 1.0, "max_auc_drop": 1.0, "max_relative_drop": 1.0, "significance_tolerance": 1.0}
TOKEN = "s3cret-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """Two promoted versions (v1 standby, v2 production) on SQLite, and a running `retrain serve`."""
    import dagster as dg

    root = tmp_path_factory.mktemp("api")
    config = root / "retrain.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"database_url": f"sqlite:///{root}/monitoring.db", "artifact_root": str(root / "artifacts")},
        "models": [{**model_config(), "training": {"tuning_trials": 0}, "gates": LOOSE}],
        "serving": {"registry_poll_seconds": 0.5},
    }))
    settings = load_settings(str(config))
    model = settings.models[0]
    store = MonitoringStore(settings.storage.database_url)
    defs = build_definitions(settings)
    for seed in (1, 2):
        frame = generate_traffic(2000, start=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3 - seed), seed=seed,
                                 id_prefix=f"a{seed}")
        store.predictions.log_predictions(model.log_key, frame, model.feature_names)
        store.predictions.log_labels(model.log_key, frame["request_id"].tolist(), frame[model.target].tolist())
        with dg.DagsterInstance.ephemeral() as instance:
            assert retrain_in_process(defs, instance, store, model, tags={}).success
    assert store.registry.production("churn").version == 2
    port, dagster_port = free_port(), free_port()
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {**os.environ, "RETRAIN_API_TOKEN": TOKEN, "RETRAIN_DAGSTER_URL": f"http://127.0.0.1:{dagster_port}",
           "RETRAIN_CONFIG": str(config), "DAGSTER_HOME": str(home)}
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("retrain")), "--config", str(config), "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/docs", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    else:
        process.kill()
        raise AssertionError(process.stdout.read().decode()[-2000:])
    yield base, store, settings, generate_traffic(200, seed=9)[model.feature_names], (env, dagster_port)
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def rows(frame):
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def test_predict_batch_scores_and_logs(deployment):
    base, store, _, frame, _ = deployment
    before = store.predictions.count_predictions("churn")
    response = httpx.post(f"{base}/predict/batch", json={"model": "churn", "rows": rows(frame.head(100))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "v2" and len(body["predictions"]) == 100
    assert all(0.0 <= s <= 1.0 for s in body["scores"]) and set(body["predictions"]) <= {0, 1}
    again = httpx.post(f"{base}/predict/batch", json={"model": "churn", "rows": rows(frame.head(100))}).json()
    generated = body["request_ids"] + again["request_ids"]  # sent without ids: the server makes them
    assert len(set(generated)) == 200 and all(0 < len(request_id) <= 64 for request_id in generated)
    deadline = time.monotonic() + 15  # written by the server's background log writer
    while store.predictions.count_predictions("churn") < before + 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.predictions.count_predictions("churn") == before + 200
    assert sorted(store.predictions.logged_requests("churn", generated)) == sorted(generated)


def test_predict_batch_rejects_bad_payloads_with_the_field(deployment):
    base, _, _, frame, _ = deployment
    missing = rows(frame.head(2))
    del missing[1]["region"]
    response = httpx.post(f"{base}/predict/batch", json={"model": "churn", "rows": missing})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "rows", 1, "region"]
    wrong = rows(frame.head(1))
    wrong[0]["monthly_charges"] = "a lot"
    detail = httpx.post(f"{base}/predict/batch", json={"model": "churn", "rows": wrong}).json()["detail"]
    assert detail[0]["loc"][-1] == "monthly_charges"
    assert httpx.post(f"{base}/predict/batch", json={"model": "fraud", "rows": wrong}).status_code == 404


def test_a_json_body_is_answered_the_same_by_the_typed_path_and_by_the_documented_one(deployment):
    """A body sent as ``application/json`` is validated from its bytes in one pass; any other JSON content
    type goes through FastAPI's parser and the documented body: the same rows get the same answer, and the
    same mistake the same 422."""
    base, _, _, frame, _ = deployment
    body = {"model": "churn", "rows": rows(frame.head(50))}
    answers = []
    for index, content_type in enumerate(["application/json", "application/vnd.api+json"]):
        ids = [f"paths-{index}-{row}" for row in range(50)]
        response = httpx.post(f"{base}/predict/batch", content=json.dumps({**body, "request_ids": ids}),
                              headers={"content-type": content_type})
        assert response.status_code == 200, response.text
        assert response.json()["request_ids"] == ids
        answers.append((response.headers["content-type"], response.headers["x-model-version"],
                        {k: v for k, v in response.json().items() if k != "request_ids"}))
    assert answers[0] == answers[1]
    wrong = {"model": "churn", "rows": rows(frame.head(2))}
    wrong["rows"][1]["tenure_months"] = "12"
    refusals = [httpx.post(f"{base}/predict/batch", content=json.dumps(wrong), headers={"content-type": content_type})
                for content_type in ["application/json", "application/vnd.api+json"]]
    assert [r.status_code for r in refusals] == [422, 422] and refusals[0].json() == refusals[1].json()
    assert refusals[0].json()["detail"][0]["loc"] == ["body", "rows", 1, "tenure_months"]


def test_mutating_endpoints_need_the_token(deployment):
    base, *_ = deployment
    assert httpx.post(f"{base}/model/reload").status_code == 401
    assert httpx.post(f"{base}/model/reload", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.post(f"{base}/training/trigger", json={"model": "churn", "reason": "x"}).status_code == 401
    assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "retrain-assets"


def test_the_design_documents_trigger_body_is_resolved_or_refused_with_the_choices(deployment):
    """{"model_type", "data_version"}: a task names the one model that has it (a name works too); a task
    no model has, two models sharing one, or an unknown dataset version answer with what to send instead,
    before anything is claimed."""
    from fastapi import HTTPException

    from retrain_assets.serving.api import model_of_type
    from retrain_assets.settings import settings_from_dict

    base, store, *_ = deployment
    auth = {"Authorization": f"Bearer {TOKEN}"}
    events = len(store.events.recent("churn"))
    unknown = httpx.post(f"{base}/training/trigger", headers=auth, timeout=60,
                         json={"model_type": "classification", "data_version": "v999"})
    assert unknown.status_code == 404 and "no dataset version 'v999'" in unknown.json()["detail"]
    regression = httpx.post(f"{base}/training/trigger", headers=auth, timeout=60, json={"model_type": "regression"})
    assert regression.status_code == 404 and "no declared model is named or has the task 'regression'" in regression.text
    both = httpx.post(f"{base}/training/trigger", headers=auth, timeout=60, json={"model": "churn", "model_type": "churn"})
    assert both.status_code == 422 and "exactly one of 'model' and 'model_type'" in both.text
    assert len(store.events.recent("churn")) == events
    two = settings_from_dict({"models": [model_config("churn"), model_config("fraud")]})
    with pytest.raises(HTTPException) as ambiguous:
        model_of_type(two, "classification")
    assert ambiguous.value.status_code == 422 and "ambiguous (2 declared models are 'classification'" in ambiguous.value.detail
    assert model_of_type(two, "fraud").name == "fraud"


def test_status_reports_the_newest_retrain(deployment):
    base, *_ = deployment
    body = httpx.get(f"{base}/training/status", params={"model": "churn"}).json()
    assert body["candidate"]["version"] == "v2" and body["production"]["version"] == "v2"
    assert body["serving"] == "v2" and {g["name"] for g in body["candidate"]["gates"]} >= {"smoke_test"}
    assert "candidate_f1" in body["comparison_with_production"]
    assert body["last_retrain"]["successful"] is True
    assert body["last_retrain"]["status"] == "completed" and body["last_retrain"]["status_source"] == "event"
    assert body["deltas"] == {}  # the newest candidate is production


def test_reload_under_load_never_fails_a_request_and_refuses_a_corrupt_artifact(deployment):
    """No reload call: the server follows the registry. Under load, a rollback in the registry swaps the
    served version with no failed request, each answer's X-Model-Version header naming the version that
    answered; a promoted version whose artifact fails its checksum is refused while the current one serves."""
    base, store, settings, frame, _ = deployment
    auth = {"Authorization": f"Bearer {TOKEN}"}
    failures, served = [], []
    stop = threading.Event()

    def hammer():
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{base}/predict/batch", json={"model": "churn", "rows": rows(frame.head(50))})
                if r.status_code == 200:
                    served.append((r.json()["model_version"], r.headers["X-Model-Version"]))
                else:
                    failures.append(r.text)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while not served and time.monotonic() < deadline:
            time.sleep(0.05)
        store.registry.rollback("churn")  # the registry now says v1; nobody tells the server
        while time.monotonic() < deadline and (not served or served[-1][0] != "v1"):
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and {"v1", "v2"} == {version for version, _ in served}
    assert all(version == header for version, header in served)
    first_v1 = [version for version, _ in served].index("v1")
    assert all(version == "v1" for version, _ in served[first_v1 + 4:])  # 4 clients: at most 3 in flight on v2
    assert httpx.post(f"{base}/model/reload", headers=auth).json()["churn"] == {"serving": "v1", "previous": "v1"}

    v2 = store.registry.version("churn", 2)  # promote a v3 whose artifact was tampered with after training
    source = Path(settings.storage.artifact_root) / v2.artifact_key
    tampered = source.with_name("tampered-" + source.name)
    tampered.write_bytes(source.read_bytes()[:-10] + b"tampered!!")
    v3 = store.registry.register_candidate(  # its recorded checksum: that of the file before tampering
        "churn", artifact_key=str(tampered.relative_to(settings.storage.artifact_root)), artifact_sha256="e" * 64,
        size_bytes=v2.size_bytes, dataset_tag=v2.dataset_tag, dataset_hash=v2.dataset_hash, params={}, metrics=v2.metrics)
    store.registry.promote("churn", v3.version)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not httpx.get(f"{base}/readyz").json()["models"]["churn"]["problem"]:
        time.sleep(0.1)
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json()["models"]["churn"]["serving"] == "v1"
    assert "production v3 not loaded" in ready.json()["models"]["churn"]["problem"]
    assert "corrupt" in ready.json()["models"]["churn"]["problem"]
    refused = httpx.post(f"{base}/model/reload", headers=auth)
    assert refused.status_code == 409 and "still serving v1" in refused.json()["detail"]
    still = httpx.post(f"{base}/predict/batch", json={"model": "churn", "rows": rows(frame.head(3))})
    assert still.status_code == 200 and still.json()["model_version"] == "v1" and still.headers["X-Model-Version"] == "v1"


def test_trigger_queues_a_run_on_a_real_dagster_webserver(deployment):
    import dagster as dg

    base, store, _, _, (env, dagster_port) = deployment
    webserver = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(dagster_port),
         "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{dagster_port}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        response = httpx.post(f"{base}/training/trigger", headers={"Authorization": f"Bearer {TOKEN}"},
                              json={"model": "churn", "reason": "API test", "requester": "ci"}, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "SUBMITTED"
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            run = instance.get_run_by_id(body["run_id"])
        assert run is not None and run.job_name == "churn_retrain"
        assert run.tags["retrain/trigger"] == "manual" and run.tags["retrain/event_id"] == str(body["event_id"])
        assert store.events.get(body["event_id"])["trigger_reason"] == "API test"
        # The run waits in the queue (no daemon here), so the model's claim stands: a second trigger is a
        # conflict naming the way out, and "force" supersedes the claim and is recorded.
        again = httpx.post(f"{base}/training/trigger", headers={"Authorization": f"Bearer {TOKEN}"},
                           json={"model": "churn", "reason": "API test again", "requester": "ci"}, timeout=60)
        assert again.status_code == 409 and "force" in again.json()["detail"], again.text
        # The design documents' body: model_type (the only classification model here) and an exact dataset.
        dataset = store.registry.latest_dataset("churn")
        forced = httpx.post(f"{base}/training/trigger", headers={"Authorization": f"Bearer {TOKEN}"},
                            json={"model_type": "classification", "data_version": dataset.tag, "reason": "API test forced",
                                  "requester": "ci", "force": True}, timeout=60)
        assert forced.status_code == 200, forced.text
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            config = instance.get_run_by_id(forced.json()["run_id"]).run_config
        assert config["ops"]["churn__training_dataset"]["config"]["data_version"] == dataset.tag
        assert store.events.get(forced.json()["event_id"])["trigger_metrics"]["forced"] is True
        # The run waits in Dagster's queue: /training/status asks the webserver, not only the event row.
        status = httpx.get(f"{base}/training/status", params={"model": "churn"}, timeout=60).json()["last_retrain"]
        assert status["run_id"] == forced.json()["run_id"]
        assert (status["status"], status["status_source"]) == ("queued", "dagster")
        assert "forced manual trigger" in store.events.get(body["event_id"])["execution_metrics"]["error"]
    finally:
        os.killpg(webserver.pid, signal.SIGTERM)
        webserver.wait(timeout=30)


def test_a_candidate_in_shadow_scores_served_requests_off_the_request_path(deployment):
    from sqlalchemy import func, select

    from retrain_assets.store.schema import prediction_log, shadow_predictions

    base, store, _, frame, _ = deployment
    store.registry.rollback("churn")  # production v1 again (the tampered v3 is standby)
    v1 = store.registry.production("churn")
    candidate = store.registry.register_candidate(
        "churn", artifact_key=v1.artifact_key, artifact_sha256=v1.artifact_sha256, size_bytes=v1.size_bytes,
        dataset_tag=v1.dataset_tag, dataset_hash=v1.dataset_hash, params={}, metrics=v1.metrics)
    store.registry.start_shadow("churn", candidate.version)
    assert httpx.post(f"{base}/model/reload", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    status = httpx.get(f"{base}/training/status", params={"model": "churn"}).json()
    assert status["candidate"]["version"] == f"v{candidate.version}" and status["production"]["version"] == "v1"
    numeric = {k for k, v in v1.metrics.items() if isinstance(v, (int, float))}
    assert numeric and set(status["deltas"]) == numeric and all(d == 0 for d in status["deltas"].values())
    ids = [f"shadowed-{i}" for i in range(40)]
    response = httpx.post(f"{base}/predict/batch", json={"model": "churn", "rows": rows(frame.head(40)), "request_ids": ids})
    assert response.status_code == 200 and response.json()["model_version"] == "v1"  # users get production
    query = select(func.count()).where(shadow_predictions.c.model_version == candidate.version,
                                       shadow_predictions.c.request_id.in_(ids))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with store.engine.connect() as conn:
            if conn.execute(query).scalar_one() == 40:
                break
        time.sleep(0.2)
    with store.engine.connect() as conn:
        assert conn.execute(query).scalar_one() == 40
        latencies = conn.execute(select(prediction_log.c.latency_ms).where(prediction_log.c.request_id.in_(ids))).scalars().all()
    assert len(latencies) == 40 and all(value is not None and value > 0 for value in latencies)


def test_health_says_where_every_logged_row_is(deployment):
    base, *_ = deployment
    body = httpx.get(f"{base}/health").json()
    assert body["status"] == "ok" and body["serving"]["churn"] in {"v1", "v2"}
    log = body["prediction_log"]
    assert log["database"] == "reachable" and log["quarantined"] == 0 and log["spilled"] == 0
    assert {"accepted", "written", "retried", "pending", "on_disk", "spill_dir"} <= set(log)
