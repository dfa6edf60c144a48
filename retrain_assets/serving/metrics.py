"""Prometheus metrics of the HTTP API (``GET /metrics``), with the ``prometheus_client`` library.

Why: serving is judged from outside (dashboards, alerts, autoscalers) on the numbers every serving tool
exposes: traffic and rows per model version, latency, errors by status, model loads and swaps, and the
prediction log's backlog (rows served but not yet in the database).

With ``retrain serve --workers N`` each worker is its own process: the CLI then sets
``PROMETHEUS_MULTIPROC_DIR`` (a fresh folder) before the workers start, every process writes its values
there, and whichever worker answers ``/metrics`` aggregates all of them (``MultiProcessCollector``).
Gauges say how they combine: backlog rows add up across live processes, the serving version is reported
per process (``pid`` label), so a process that has not converged yet is visible.
"""

import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
__all__ = ["CONTENT_TYPE_LATEST", "ServingMetrics"]


class ServingMetrics:
    """Every metric of one app, registered in the app's own registry (several apps in one process, as in
    the tests, never collide); in multi-process mode the values also go to the shared folder."""

    def __init__(self):
        self.registry = CollectorRegistry()
        kw = {"registry": self.registry}
        self.requests = Counter("retrain_predict_requests", "Prediction requests answered, by model and version.",
                                ["model", "version"], **kw)
        self.rows = Counter("retrain_predict_rows", "Rows predicted, by model and version.", ["model", "version"], **kw)
        self.model_seconds = Histogram("retrain_predict_model_seconds", "Time in the model per prediction request.",
                                       ["model", "version"], buckets=LATENCY_BUCKETS, **kw)
        self.batch_requests = Histogram("retrain_predict_batch_requests", "Requests scored together in one model call "
                                        "(adaptive batching: the requests waiting for the same version).",
                                        ["model"], buckets=(1, 2, 4, 8, 16, 32, 64), **kw)
        self.batch_waits = Counter("retrain_predict_batch_waits", "Waits of queued requests for the clients the "
                                   "previous model call answered (serving.max_batch_wait_ms), by outcome: filled (as "
                                   "many requests came, or their rows filled a call) or timed_out "
                                   "(the wait ran out first: many mean clients that do not come back, where 0 turns "
                                   "the wait off).", ["outcome"], **kw)
        self.http_seconds = Histogram("retrain_http_request_duration_seconds", "HTTP request latency, by route "
                                      "(as declared, e.g. /predict/batch; 'unmatched' for unknown paths).",
                                      ["method", "route"], buckets=LATENCY_BUCKETS, **kw)
        self.http_errors = Counter("retrain_http_errors", "HTTP responses with a status of 400 or more, by route "
                                   "and status.", ["method", "route", "status"], **kw)
        self.model_loads = Counter("retrain_model_loads", "Model artifact loads: loaded (read and verified), "
                                   "reused (already in memory, e.g. the standby on rollback), failed.",
                                   ["model", "version", "outcome"], **kw)
        self.model_swaps = Counter("retrain_model_swaps", "Swaps of the serving model after a registry change.",
                                   ["model", "slot"], **kw)
        self.canary_failures = Counter("retrain_canary_failures", "Requests a canary failed to score (production "
                                       "answered them; the canary is rolled back).", ["model", "version"], **kw)
        self.serving_version = Gauge("retrain_model_serving_version", "Registry version each process serves.",
                                     ["model"], multiprocess_mode="liveall", **kw)
        self.labels = Counter("retrain_labels", "Labels received over /labels, by model and outcome.",
                              ["model", "outcome"], **kw)
        self.log_queue = Gauge("retrain_prediction_log_queue_rows", "Rows served and waiting in memory for the "
                               "prediction log writer (sum over processes).", multiprocess_mode="livesum", **kw)
        self.log_on_disk = Gauge("retrain_prediction_log_spilled_rows", "Rows in spill files on local disk, waiting "
                                 "to be replayed into the database.", multiprocess_mode="livemax", **kw)
        self.log_unwritten = Gauge("retrain_prediction_log_unwritten_rows", "Rows served but not yet in "
                                   "prediction_log: queued in memory plus waiting on disk.",
                                   multiprocess_mode="livesum", **kw)
        self.database_up = Gauge("retrain_database_up", "1 while the monitoring database answers the prediction "
                                 "log writer, else 0.", multiprocess_mode="livemin", **kw)

    @property
    def multiprocess(self) -> bool:
        return bool(os.environ.get(MULTIPROC_ENV))

    def update_log(self, stats: dict) -> None:
        """Refresh the prediction log's gauges from ``PredictionLogWriter.stats()``."""
        self.log_queue.set(stats["pending"])
        self.log_on_disk.set(stats["on_disk"])
        self.log_unwritten.set(stats["pending"] + stats["on_disk"])
        self.database_up.set(1 if stats["database"] == "reachable" else 0)

    def process_exited(self) -> None:
        """Multi-process mode: drop this process's live gauges (queue, serving version) from the aggregate,
        so a worker that exited (or was replaced) no longer counts."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())

    def render(self) -> bytes:
        """The text exposition: this app's registry, or every process's values in multi-process mode."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


class MetricsMiddleware:
    """Times every HTTP request and counts error statuses, labelled by the matched route's template (a
    fuzzer's random paths all count as 'unmatched', so label values stay bounded)."""

    def __init__(self, app, metrics: ServingMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.http_seconds.labels(method, path).observe(time.perf_counter() - start)
            if status >= 400:
                self.metrics.http_errors.labels(method, path, str(status)).inc()
