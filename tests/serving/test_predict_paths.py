"""The two ways into /predict/batch: a body sent as ``application/json`` takes the typed path (validated from
its bytes in one pass); anything else, and whatever that path refuses, goes through FastAPI's handler.
Here: which path a request takes, a client that goes away mid-body, and the ids the server generates."""

import asyncio
import os

import httpx
import pytest

import retrain_assets.serving.api as api
from retrain_assets.serving.api import create_app
from tests.faults.conftest import Backend, running, served_settings, traffic_rows, wait_until
from tests.serving.conftest import TOKEN, quick


@pytest.fixture
def served(tmp_path, churn_pipeline, monkeypatch):
    """A real server over the churn model; yields (app, client, typed) where ``typed`` lists what the typed
    path returned for each body it was given (None: handed to FastAPI's handler)."""
    typed, original = [], api.typed_request
    monkeypatch.setattr(api, "typed_request", lambda adapter, body: typed.append(original(adapter, body)) or typed[-1])
    path = tmp_path / "monitoring.db"
    settings, _ = served_settings(tmp_path, Backend("sqlite", f"sqlite:///{path}", path=path), churn_pipeline)
    app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 30, "the model to be served")
        yield app, client, typed


def test_only_an_application_json_body_takes_the_typed_path(served):
    """``application/json`` with or without parameters (.NET's clients send ``; charset=utf-8``) takes the
    typed path; other JSON types go through FastAPI's handler, and so does a body the typed path cannot read
    (UTF-16, which FastAPI's parser detects by itself)."""
    _, client, typed = served
    body = {"model": "churn", "rows": traffic_rows(3)}
    content = httpx.Request("POST", "/", json=body).content
    assert client.post("/predict/batch", json=body).status_code == 200  # httpx sends application/json
    for content_type in ["application/json; charset=utf-8", "Application/JSON ; charset=UTF-8"]:
        response = client.post("/predict/batch", content=content, headers={"content-type": content_type})
        assert response.status_code == 200, response.text
    assert len(typed) == 3 and all(body is not None and body.model == "churn" for body in typed)
    response = client.post("/predict/batch", content=content, headers={"content-type": "application/vnd.api+json"})
    assert response.status_code == 200, response.text
    assert len(typed) == 3  # FastAPI's handler answered it
    utf16 = client.post("/predict/batch", content=content.decode().encode("utf-16"),
                        headers={"content-type": "application/json; charset=utf-16"})
    assert utf16.status_code == 200, utf16.text
    assert len(typed) == 4 and typed[3] is None  # tried, then handed over
    refused = client.post("/predict/batch", json={"model": "fraud", "rows": traffic_rows(1)})
    assert refused.status_code == 404 and len(typed) == 5 and typed[4] is None


@pytest.mark.parametrize("content_type", ["application/json", "application/vnd.api+json"])
def test_a_client_gone_before_its_body_arrived_is_a_400_on_either_path_not_a_server_error(served, content_type):
    app, client, _ = served
    sent: list[dict] = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict/batch", "raw_path": b"/predict/batch", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", content_type.encode()), (b"host", b"test")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [400]
    metrics = client.get("/metrics").text
    assert 'status="500"' not in metrics


def test_generated_request_ids_are_unique_and_cannot_be_guessed_from_earlier_ones(served):
    """Callers may send their own ids, and the first to log an id owns it: a caller who saw generated ids must
    not be able to claim the next request's."""
    _, client, _ = served
    answers = [client.post("/predict/batch", json={"model": "churn", "rows": traffic_rows(2)}).json()
               for _ in range(20)]
    ids = [request_id for answer in answers for request_id in answer["request_ids"]]
    assert len(set(ids)) == len(ids) == 40 and all(len(request_id) <= 64 for request_id in ids)
    requests = [answer["request_ids"][0].rsplit("-", 1)[0] for answer in answers]
    assert len(requests[0]) >= 20  # 80 bits per request
    assert all(len(os.path.commonprefix([a, b])) < 8 for a, b in zip(requests, requests[1:]))  # no shared stem
