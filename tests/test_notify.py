"""The webhook notifier against a real local HTTP server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from retrain_assets.notify import WEBHOOK_ENV, Notifier


@pytest.fixture
def receiver():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["Content-Type"], json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_webhook_receives_slack_compatible_json(receiver, monkeypatch):
    url, received = receiver
    monkeypatch.setenv(WEBHOOK_ENV, url)
    assert Notifier().notify("churn: drift trigger (HIGH) requested a retrain", model="churn", event_id=7)
    content_type, body = received[0]
    assert content_type == "application/json"
    assert body == {"text": "churn: drift trigger (HIGH) requested a retrain", "event": {"model": "churn", "event_id": 7}}


def test_an_unreachable_webhook_is_logged_not_raised(caplog, monkeypatch):
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    assert Notifier().notify("no webhook configured")  # log only
    assert not Notifier("http://127.0.0.1:9/nothing-listens", timeout_s=2).notify("lost")
    assert "could not deliver" in caplog.text


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "not a url"])
def test_a_webhook_that_is_not_http_is_refused_never_opened(url, caplog):
    with caplog.at_level("ERROR", logger="retrain_assets.notify"):
        assert Notifier(url).notify("hello", model="churn") is False
    assert "must be an http:// or https:// URL" in caplog.text
