"""The HTTP API: predictions, labels, registry-following model slots, health, metrics, training
trigger and status (`retrain serve`). The endpoint reference is docs/serving.md.

* ``POST /predict/batch`` validates rows against the model's feature schema (422 naming the field: numeric
  features take JSON numbers only, finite; categorical ones strings up to ``max_category_length``),
  scores the validated, typed rows with the production model and hands exactly those rows to the durable
  prediction log (:mod:`retrain_assets.serving.log_writer`), which feeds monitoring. It keeps serving
  from the loaded model while the monitoring database is down. ``X-Model-Version`` names the version that
  answered.
* The served versions follow the registry by themselves (:mod:`retrain_assets.serving.slots`): a promotion
  or rollback reaches traffic within ``serving.registry_poll_seconds``; ``POST /model/reload`` syncs at once.
* ``POST /labels`` records true outcomes for served requests, per item (recorded, unchanged, unknown
  request, conflict, invalid).
* ``POST /training/trigger`` queues the retrain job on the running Dagster webserver (GraphQL).
* ``GET /training/status`` reports the newest retrain: its run status, candidate vs production.
* ``GET /healthz`` (process up), ``GET /readyz`` (database reachable, every model served), ``GET /health``
  (where every logged row is) and ``GET /metrics`` (Prometheus).

Endpoints that need the database answer 503 with what to fix while it is unreachable. Request bodies
above ``max_body_bytes`` are refused with 413 before they are parsed. Mutating endpoints (reload, labels,
trigger) need ``Authorization: Bearer $RETRAIN_API_TOKEN``.
"""

import datetime as dt
import functools
import hashlib
import hmac
import itertools
import logging
import math
import os
import secrets
from dataclasses import dataclass
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import httpx
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, create_model
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from retrain_assets.errors import RetrainError, RetrainInFlight, StoreError
from retrain_assets.serving.batching import BatchingLane, Job
from retrain_assets.serving.log_writer import (
    LoggedRequest,
    PredictionLogFull,
    PredictionLogWriter,
    features_frame,
    outage_reason,
)
from retrain_assets.serving.metrics import CONTENT_TYPE_LATEST, MetricsMiddleware, ServingMetrics
from retrain_assets.serving.predict import timed_predict
from retrain_assets.serving.schemas import (
    REQUEST_ID_LENGTH,
    CandidateInfo,
    ErrorResponse,
    HealthResponse,
    LabelResult,
    LabelsRequest,
    LabelsResponse,
    LastRetrain,
    LiveResponse,
    ModelReadiness,
    PredictResponse,
    ProductionInfo,
    ReadyResponse,
    ReloadOutcome,
    ReloadQuery,
    ReloadResponse,
    StatusQuery,
    StatusResponse,
    TriggerRequest,
    TriggerResponse,
    ValidationErrorResponse,
    batch_request_fields,
    row_adapter,
    typed_batch_adapter,
)
from retrain_assets.config.serving import ServingSettings
from retrain_assets.serving.slots import ModelSlots, RegistryFollower, Slot
from retrain_assets.settings import ModelSettings, RetrainSettings
from retrain_assets.store import ArtifactStore, MonitoringStore
from retrain_assets.store.predictions import prediction_rows
from retrain_assets.store.schema import prediction_log

logger = logging.getLogger("retrain_assets.serving")
TOKEN_ENV = "RETRAIN_API_TOKEN"
DAGSTER_URL_ENV = "RETRAIN_DAGSTER_URL"
VERSION_HEADER = "X-Model-Version"
EVENT_TAG = "retrain/event_id"  # retrain_assets.defs.keys.TAG_EVENT_ID (not imported: serving never loads Dagster)
MAX_ERRORS_SHOWN = 20
assert REQUEST_ID_LENGTH == prediction_log.c.request_id.type.length
__all__ = ["ModelSlots", "PredictionLogWriter", "Slot", "create_app"]

_DESCRIPTIONS = {
    400: "The body could not be read (not UTF-8 text).",
    401: "Missing or wrong bearer token.",
    403: f"The endpoint is disabled: {TOKEN_ENV} is not set on the server.",
    404: "No such model in the configuration.",
    409: "Conflict: see detail.",
    413: "Request body larger than serving.max_body_bytes (refused before parsing).",
    422: "Invalid request: each error names its field.",
    500: "The model raised on these rows (detail names the version and the error; counted for the post-deploy "
         "watch's error rate), or the server failed (detail says so).",
    502: "The Dagster webserver refused or failed the request.",
    503: "Not available now (database unreachable, no production model, prediction log full): detail says what "
         "to fix; Retry-After when waiting helps.",
}


def _responses(*codes: int, **overrides: str) -> dict:
    """OpenAPI entries for the error statuses an endpoint can answer (each with its body's model)."""
    return {code: {"model": ValidationErrorResponse if code == 422 else ErrorResponse,
                   "description": overrides.get(f"s{code}", _DESCRIPTIONS[code])} for code in codes}


_VERSION_HEADER_DOC = {VERSION_HEADER: {"description": "The registry version that answered (e.g. v3).",
                                        "schema": {"type": "string"}}}
_RUN_STATUS = {"QUEUED": "queued", "NOT_STARTED": "queued", "STARTING": "queued", "MANAGED": "queued",
               "STARTED": "running", "CANCELING": "running", "SUCCESS": "completed", "FAILURE": "failed",
               "CANCELED": "failed"}


def _batch_request_model(serving: ServingSettings) -> type[BaseModel]:
    """The documented body of /predict/batch with this server's limits; the rows are checked against the
    model's feature schema after it (one schema whatever the model)."""
    return create_model("BatchRequest", **batch_request_fields(serving))


@dataclass
class PredictJob:
    """A validated /predict/batch request on its way to the prediction lane: the production slot it was
    admitted under and the slot chosen to answer it (the canary for its share of request ids)."""

    model: ModelSettings
    slot: Slot
    chosen: Slot
    features: list[dict]
    ids: list[str]


def _json_media_type(content_type: str | None) -> bool:
    """Whether a request's Content-Type is ``application/json``, parameters aside (clients such as .NET's
    send ``application/json; charset=utf-8``). The exact header, the usual one, is checked first."""
    return content_type == "application/json" or (
        content_type is not None and content_type.partition(";")[0].strip().lower() == "application/json")


def _outcome(function, *args) -> Any:
    """``function(*args)``, or the exception it raised (one per request in a batch)."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - handed to the request that caused it
        return error


class ModelFailed(Exception):
    """The production model raised on a request's rows (a 500 that counts against it)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def _sendable(value: Any) -> Any:
    """Inputs echoed in error messages, made sendable: JSON has no NaN or Infinity (echoed as text), and a
    lone surrogate (a JSON "\\ud800" escape, which the schema refuses) cannot be encoded as UTF-8 (echoed as
    its escape)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _sendable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sendable(v) for v in value]
    return value


def _validation_errors(errors: list[dict]) -> list[dict]:
    """The first errors (each naming its field), then one line counting the others."""
    shown = [_sendable(jsonable_encoder(error)) for error in errors[:MAX_ERRORS_SHOWN]]
    if len(errors) > MAX_ERRORS_SHOWN:
        shown.append({"type": "too_many_errors", "loc": ["body"], "msg": f"{len(errors) - MAX_ERRORS_SHOWN} more "
                      "errors not shown: fix the ones above first"})
    return shown


def _validated_rows(adapter: TypeAdapter, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(typed rows, errors located at ["body", "rows", i, field])."""
    try:
        return adapter.validate_python(rows), []
    except ValidationError as error:
        return [], [{**e, "loc": ("body", "rows", *e["loc"])} for e in error.errors(include_url=False)]


def typed_request(adapter: TypeAdapter, body: bytes) -> BaseModel | None:
    """A /predict/batch body validated by ``adapter`` (:func:`~retrain_assets.serving.schemas.typed_batch_adapter`),
    request ids included; None for a body that only the documented path may answer."""
    try:
        request = adapter.validate_json(body)
    except ValidationError:
        return None
    if request.request_ids is not None and _request_id_errors(request.request_ids, len(request.rows)):
        return None
    return request


def _request_id_errors(request_ids: list[str] | None, rows: int) -> list[dict]:
    """One id per row, each used once in the request (the log joins labels on it)."""
    if request_ids is None:
        return []
    if len(request_ids) != rows:
        return [{"type": "value_error", "loc": ("body", "request_ids"), "input": len(request_ids),
                 "msg": f"request_ids must have one id per row: {len(request_ids)} ids for {rows} rows"}]
    first: dict[str, int] = {}
    errors = []
    for index, request_id in enumerate(request_ids):
        if request_id in first:
            errors.append({"type": "value_error", "loc": ("body", "request_ids", index), "input": request_id,
                           "msg": f"duplicate request id (also at index {first[request_id]}): each row needs its own id"})
        first.setdefault(request_id, index)
    return errors


class BodySizeLimit:
    """Refuses request bodies above ``max_bytes`` with 413, before any of it is parsed: by the declared
    Content-Length at once, or while a chunked body streams in (buffered up to the limit only)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_bytes:
                return await self._refuse(scope, receive, send)
            return await self.app(scope, receive, send)
        received, size = [], 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send)
            if not message.get("more_body", False):
                break

        async def replay():
            return received.pop(0) if received else await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        detail = (f"request body larger than {self.max_bytes} bytes: send fewer rows per request "
                  "(or raise serving.max_body_bytes)")
        await JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})(scope, receive, send)


_STRICT = {"strict": True}
_LABEL_TYPES = {"regression": Annotated[float, Field(allow_inf_nan=False, **_STRICT)],
                "b": Annotated[bool, Field(**_STRICT)], "i": Annotated[int, Field(**_STRICT)],
                "u": Annotated[int, Field(**_STRICT)], "f": Annotated[float, Field(allow_inf_nan=False, **_STRICT)],
                "O": Annotated[str, Field(**_STRICT)], "U": Annotated[str, Field(**_STRICT)],
                None: Annotated[int, Field(**_STRICT)] | Annotated[str, Field(**_STRICT)] | Annotated[bool, Field(**_STRICT)]}


@functools.lru_cache(maxsize=None)
def _label_adapter(kind: str | None) -> TypeAdapter:
    return TypeAdapter(list[_LABEL_TYPES.get(kind, _LABEL_TYPES["O"])])


def _label_errors(model: ModelSettings, slot: Slot | None, labels: list) -> dict[int, str]:
    """Index -> why, for labels that do not fit the model's target: regression takes finite numbers;
    classification takes values of the type of the production model's classes, and only those classes
    (without a loaded model: integers, strings or booleans). Validated in one pass of pydantic."""
    classes = getattr(slot.pipeline, "classes_", None) if slot is not None else None
    classes = None if classes is None or model.task == "regression" else np.asarray(classes)
    kind = "regression" if model.task == "regression" else (None if classes is None else classes.dtype.kind)
    errors: dict[int, str] = {}
    try:
        _label_adapter(kind).validate_python(labels)
    except ValidationError as error:
        for e in error.errors(include_url=False):
            errors.setdefault(e["loc"][0], f"label {_sendable(e.get('input'))!r} for {model.name} ({model.task}): {e['msg']}")
    if classes is not None:
        valid = np.asarray([i for i in range(len(labels)) if i not in errors], dtype=int)
        # Compared as Python objects: a fixed-width string dtype would truncate a longer label into a class.
        known = np.isin(np.asarray([labels[i] for i in valid], dtype=object), classes.astype(object))
        for i in valid[~known]:
            errors[int(i)] = f"label {labels[i]!r} is not one of {model.name}'s classes {classes.tolist()}"
    return errors


def _dagster_run(url: str | None, run_id: str | None, event_id: int) -> tuple[str | None, str | None]:
    """(run id, queued/running/completed/failed) from the Dagster webserver: by run id, or, for a run
    submitted but not started (its event row has no run id yet), by the event's tag. (None, None) when no
    webserver is configured, it does not answer, or it does not know the run."""
    if not url:
        return None, None
    if run_id:
        query = "query($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { runId status } } }"
        variables: dict = {"runId": run_id}
    else:
        query = ("query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}, limit: 1) { __typename "
                 "... on Runs { results { runId status } } } }")
        variables = {"tags": [{"key": EVENT_TAG, "value": str(event_id)}]}
    try:
        data = httpx.post(f"{url.rstrip('/')}/graphql", json={"query": query, "variables": variables}, timeout=3).json()
        run = data["data"]["runOrError"] if run_id else (data["data"]["runsOrError"].get("results") or [None])[0]
        return (run["runId"], _RUN_STATUS.get(run["status"])) if run else (None, None)
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None, None


def _event_run_status(event: dict) -> str:
    """What the event row alone says about its run."""
    if event["execution_completed_at"] is None:
        return "running" if event["execution_attempted"] else "queued"
    return "completed" if event["execution_successful"] else "failed"


def _one_native_thread() -> None:
    """The prediction thread's native thread pools (OpenMP, BLAS) to one thread: OpenMP's thread count is
    per calling thread, so a limit set in the main thread does not reach this one, and a model predicting
    on every core from every worker process oversubscribes them."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def model_of_type(settings: RetrainSettings, model_type: str) -> ModelSettings:
    """The design documents' ``model_type``: a declared model's name, or a task that exactly one declared
    model has. A task several models share is a 422 naming the choices; a type nothing has, a 404."""
    if model_type in settings.model_names:
        return settings.model(model_type)
    matching = [m.name for m in settings.models if m.task == model_type]
    if len(matching) == 1:
        return settings.model(matching[0])
    choices = {m.name: m.task for m in settings.models}
    if matching:
        raise HTTPException(422, f"model_type {model_type!r} is ambiguous ({len(matching)} declared models are "
                                 f"{model_type!r} models: {matching}); name one with 'model'; declared: {choices}")
    raise HTTPException(404, f"no declared model is named or has the task {model_type!r}; declared models and their "
                             f"tasks: {choices}")


def create_app(settings: RetrainSettings, token: str | None = None, dagster_url: str | None = None,
               serving: ServingSettings | None = None) -> FastAPI:
    """The API over ``settings``; ``serving`` (default: the config's ``serving`` block) sets the request
    limits, the registry poll and the prediction log's spill folder, retries and shutdown."""
    serving = serving or settings.serving
    token = (token if token is not None else os.environ.get(TOKEN_ENV)) or None  # empty: disabled, never "no secret"
    dagster_url = dagster_url or os.environ.get(DAGSTER_URL_ENV) or None
    store = MonitoringStore(settings.storage.database_url)
    metrics = ServingMetrics()
    slots = ModelSlots(store, ArtifactStore(settings.storage.artifact_root), metrics)
    adapters = {m.name: row_adapter(m, serving) for m in settings.models}
    BatchRequest = _batch_request_model(serving)
    typed_batches = typed_batch_adapter(list(settings.models), serving)
    id_key, request_numbers = secrets.token_bytes(16), itertools.count()  # generated request ids
    writer = PredictionLogWriter(store, settings, serving)
    follower = RegistryFollower(slots, list(settings.models), serving.registry_poll_seconds,
                                on_tick=lambda: metrics.update_log(writer.stats()))

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        follower.start()
        yield
        follower.stop()
        lane.shutdown()  # what is queued is scored and handed to the log writer before it closes
        try:  # the last counts and canary failures since the last poll
            await anyio.to_thread.run_sync(slots.report)
        except Exception as error:  # noqa: BLE001 - the database is away at shutdown: said, nothing else to do
            logger.error("at shutdown: request counts not recorded (%s)", str(error).splitlines()[0][:300])
        await anyio.to_thread.run_sync(writer.close)  # written, or kept on disk and reported, before exit
        metrics.process_exited()  # its gauges leave the multi-process aggregate

    app = FastAPI(title="retrain-assets", description=__doc__.split("\n\n")[0], version="1", lifespan=lifespan)
    app.state.log_writer = writer
    app.state.serving = serving
    app.state.slots = slots
    app.state.follower = follower
    app.state.metrics = metrics
    app.add_middleware(BodySizeLimit, max_bytes=serving.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: 413s are timed and counted too

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_errors(list(error.errors()))}, status_code=422)

    async def database_down(_: Request, error: Exception) -> JSONResponse:
        detail = (f"{outage_reason(error, store.engine.url)}: start the database server or point RETRAIN_DATABASE_URL "
                  "(or storage.database_url) at a reachable one; /predict/batch keeps serving and keeps its rows on "
                  "disk until the database is back")
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "10"})

    for unreachable in (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError):
        app.add_exception_handler(unreachable, database_down)

    for model in settings.models:  # serve what is production at start; the follower retries what fails
        try:
            slots.sync(model)
        except Exception as error:  # noqa: BLE001 - database away at start: serve nothing yet, follow later
            slots.problems[model.name] = f"registry not read: {str(error).splitlines()[0][:300]}"
            logger.error("model %s: %s (retrying)", model.name, slots.problems[model.name])

    def model_of(name: str) -> ModelSettings:
        try:
            return settings.model(name)
        except RetrainError as error:
            raise HTTPException(404, str(error)) from None

    bearer = HTTPBearer(auto_error=False, description=f"The server's {TOKEN_ENV}.")

    def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if token is None:
            raise HTTPException(403, f"this endpoint is disabled: set {TOKEN_ENV} on the server to enable it")
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def finish(job: PredictJob, answering: Slot, predictions: list, scores: list | None, latency_ms: float) -> tuple:
        """Count the answered request and hand its rows to the prediction log (per request: a full log
        refuses this request only)."""
        model = job.model
        slots.count_request(model.name, answering)
        rows = prediction_rows(model.log_key, job.ids, job.features, ts=dt.datetime.now(dt.timezone.utc),
                               prediction=predictions, score=scores, model_version=answering.version.version,
                               latency_ms=latency_ms)
        writer.put(LoggedRequest(model.log_key, rows, slots.shadow.get(model.name)))
        return answering, predictions, scores, latency_ms

    def score_alone(job: PredictJob) -> tuple:
        """One request in its own model call: a canary that raises leaves it to production; production
        raising is the request's ModelFailed (a 500 counted against the version)."""
        model, frame = job.model, features_frame(job.model, job.features)

        def answer(answering: Slot) -> tuple:
            try:
                return timed_predict(answering.pipeline, frame, model)
            except Exception as error:
                if answering is not job.slot:
                    raise
                slots.count_request(model.name, job.slot, failed=True)  # counted for the watch's error rate
                raise ModelFailed(error) from error

        chosen = job.chosen
        try:
            predictions, scores, latency_ms = answer(chosen)
        except ModelFailed:
            raise
        except Exception as error:  # the canary raised: production answers instead
            slots.canary_failed(model.name, chosen, error, len(job.features))
            chosen = job.slot
            predictions, scores, latency_ms = answer(chosen)
        return finish(job, chosen, predictions, scores, latency_ms)

    def score_batch(jobs: list[Job]) -> list:
        """Requests for the same model version, waiting together, in one model call. If that call raises,
        each request is scored alone, so a failure (and a 500) belongs to the request that caused it."""
        batch = [job.payload for job in jobs]
        metrics.batch_requests.labels(batch[0].model.name).observe(len(batch))
        if len(batch) > 1:
            first = batch[0]
            try:
                combined = features_frame(first.model, [row for job in batch for row in job.features])
                predictions, scores, latency_ms = timed_predict(first.chosen.pipeline, combined, first.model)
            except Exception:  # noqa: BLE001 - found out request by request below
                pass
            else:
                results, start = [], 0
                for job in batch:
                    end = start + len(job.features)
                    results.append(_outcome(finish, job, job.chosen, predictions[start:end],
                                            None if scores is None else scores[start:end], latency_ms))
                    start = end
                return results
        return [_outcome(score_alone, job) for job in batch]

    lane = BatchingLane(score_batch, serving.max_batch_rows, serving.max_batch_wait_ms / 1000,
                        on_wait=lambda filled: metrics.batch_waits.labels("filled" if filled else "timed_out").inc(),
                        initializer=_one_native_thread)
    app.state.lane = lane

    def production_slot(model: ModelSettings) -> Slot:
        slot = slots.active.get(model.name)
        if slot is None:
            raise HTTPException(503, f"model {model.name} has no production version loaded: "
                                f"{slots.problems.get(model.name, 'train and promote one first')}",
                                headers={"Retry-After": "10"})
        return slot

    async def serve_rows(model: ModelSettings, slot: Slot, features: list[dict], request_ids: list[str] | None) -> dict:
        """Score validated rows in the prediction lane, where their log rows are made and handed to the log
        writer. ``slot``: the production slot the request was admitted under (it keeps it, whatever a swap
        does meanwhile)."""
        if request_ids:
            ids = request_ids
        else:  # the request's number hashed with this process's secret key (80 bits), then the row's index.
            # Unguessable: callers choose ids too and the first to log one owns it, so a caller who saw one
            # generated id must not be able to claim the next. No system call here: os.urandom per request gave
            # the GIL away, and the event loop then waited for the prediction thread to give it back.
            prefix = hashlib.blake2b(next(request_numbers).to_bytes(8, "little"), key=id_key, digest_size=10).hexdigest()
            ids = [f"{prefix}-{index:x}" for index in range(len(features))]
        # The canary (if any) answers its share of requests, keyed by the first request id: a retried request
        # lands on the same version. A canary that raises is never a failed request: production answers.
        chosen = slots.route(model.name, ids[0]) or slot
        job = PredictJob(model, slot, chosen, features, ids)
        try:
            chosen, predictions, scores, latency_ms = await lane.submit((model.name, id(slot), id(chosen)),
                                                                        len(features), job)
        except PredictionLogFull as error:  # nothing is served that cannot be kept
            raise HTTPException(503, str(error), headers={"Retry-After": "10"}) from None
        except ModelFailed as failure:  # the model raised on these rows: say so, it is counted, serving goes on
            error = failure.error
            logger.error("model %s %s failed on a request of %d rows: %s: %s", model.name, slot.version.label,
                         len(features), type(error).__name__, error)
            raise HTTPException(500, f"model {model.name} {slot.version.label} failed on this request "
                                     f"({type(error).__name__}: {str(error)[:300]}); it is counted, and the post-deploy "
                                     "watch rolls back a version whose share of failed requests passes "
                                     "rollback_max_error_rate", headers={VERSION_HEADER: slot.version.label}) from None
        except Exception as error:  # noqa: BLE001 - a fault of the server, not of the model: not counted against it
            logger.exception("serving a request of model %s failed", model.name)
            raise HTTPException(500, f"the server failed on this request ({type(error).__name__}: {str(error)[:300]}); "
                                     "nothing was logged for it") from None
        label = chosen.version.label
        metrics.requests.labels(model.name, label).inc()
        metrics.rows.labels(model.name, label).inc(len(ids))
        metrics.model_seconds.labels(model.name, label).observe(latency_ms / 1000)
        return {"model": model.name, "model_version": label, "request_ids": ids,
                "predictions": predictions, "scores": scores}

    async def predict_batch(request: BatchRequest, response: Response):
        """Validation runs on the event loop (microseconds); the model, the log rows and the hand-over to
        the log writer run in the process's prediction lane (:mod:`retrain_assets.serving.batching`): one
        thread, requests in arrival order, and the requests waiting together for the same version scored
        in one model call."""
        model = model_of(request.model)
        slot = production_slot(model)
        features, errors = _validated_rows(adapters[model.name], request.rows)
        errors += _request_id_errors(request.request_ids, len(request.rows))
        if errors:
            raise RequestValidationError(errors)
        answer = await serve_rows(model, slot, features, request.request_ids)
        response.headers[VERSION_HEADER] = answer["model_version"]
        return answer

    class PredictRoute(APIRoute):
        """/predict/batch, with a typed path in front of FastAPI's: a body sent as ``application/json`` (with or
        without parameters such as ``charset=utf-8``, which FastAPI's parser ignores too) is validated straight
        from its bytes, rows typed for its model (:func:`~retrain_assets.serving.schemas.typed_batch_adapter`), in one
        pass in pydantic-core, instead of Python's JSON parser, then the documented body, then its rows (under
        load, about half of the event loop's time with the GIL, which the prediction thread waits for). Every body
        it does not accept (and every request that would not be served: no production model, repeated
        request ids) goes through FastAPI's handler, which answers as it always did, so every error response
        comes from one place; the answer of an accepted body is serialized by this route's response field, as
        FastAPI does."""

        def get_route_handler(self):
            if self.dependant.dependencies:  # the typed path does not solve them: it would skip them silently
                raise TypeError("/predict/batch takes no dependencies (its typed path would not run them): "
                                f"{[d.call for d in self.dependant.dependencies]}")
            documented = super().get_route_handler()
            response_field = self.response_field

            async def handler(request: Request) -> Response:
                if _json_media_type(request.headers.get("content-type")):
                    try:
                        raw = await request.body()
                    except Exception:  # noqa: BLE001 - e.g. the client went away mid-body: FastAPI answers (400)
                        return await documented(request)
                    body = typed_request(typed_batches, raw)
                    if body is not None and (slot := slots.active.get(body.model)) is not None:
                        answer = await serve_rows(settings.model(body.model), slot, body.rows, body.request_ids)
                        value, errors = response_field.validate(answer, {}, loc=("response",))
                        if errors:  # as FastAPI does: a server fault, never a malformed answer
                            raise ResponseValidationError(errors, body=answer)
                        return Response(response_field.serialize_json(value), media_type="application/json",
                                        headers={VERSION_HEADER: answer["model_version"]})
                return await documented(request)

            return handler

    app.router.add_api_route("/predict/batch", predict_batch, methods=["POST"], response_model=PredictResponse,
                             responses={200: {"headers": _VERSION_HEADER_DOC}, **_responses(400, 404, 413, 422, 500, 503)},
                             route_class_override=PredictRoute)

    @app.post("/labels", dependencies=[Depends(authorized)], response_model=LabelsResponse,
              responses=_responses(400, 401, 403, 404, 413, 422, 503))
    def post_labels(request: LabelsRequest) -> LabelsResponse:
        """Record true outcomes of served requests. Each item is answered on its own (``results``, in the
        order sent): 201 recorded, 200 the same label was already recorded (retries are harmless), 404 no
        prediction with that request id in the log (yet: served rows reach it within seconds), 409 a
        different label was already recorded (kept; never overwritten), 422 wrong type or not one of the
        model's classes. The call answers 200 when the batch itself is well formed."""
        model = model_of(request.model)
        if len(request.labels) > serving.max_rows_per_request:
            raise RequestValidationError([{"type": "too_long", "loc": ("body", "labels"), "input": len(request.labels),
                                           "msg": f"at most {serving.max_rows_per_request} labels per request "
                                                  "(serving.max_rows_per_request)"}])
        ids = [item.request_id for item in request.labels]
        values = [item.label for item in request.labels]
        invalid = _label_errors(model, slots.active.get(model.name), values)
        keep = [i for i in range(len(ids)) if i not in invalid]
        outcomes = dict(zip(keep, store.predictions.record_labels(model.log_key, [ids[i] for i in keep],
                                                                  [values[i] for i in keep]))) if keep else {}
        results = []
        for i, request_id in enumerate(ids):
            if i in invalid:
                results.append(LabelResult(request_id=request_id, status=422, outcome="invalid", detail=invalid[i]))
                continue
            outcome, stored = outcomes[i]
            status, detail = {
                "recorded": (201, None),
                "unchanged": (200, "already recorded with this label"),
                "unknown_request": (404, f"no prediction of {model.name} with this request id in the log (served "
                                         "rows reach it within seconds: retry later if it was just served)"),
                "conflict": (409, f"already recorded with a different label ({stored!r}); labels are never "
                                  "overwritten"),
            }[outcome]
            results.append(LabelResult(request_id=request_id, status=status, outcome=outcome, detail=detail))
        counts = {outcome: sum(r.outcome == outcome for r in results) for outcome in ("recorded", "unchanged")}
        for outcome in ("recorded", "unchanged", "unknown_request", "conflict", "invalid"):
            n = sum(r.outcome == outcome for r in results)
            if n:
                metrics.labels.labels(model.name, outcome).inc(n)
        return LabelsResponse(model=model.name, recorded=counts["recorded"], unchanged=counts["unchanged"],
                              rejected=len(results) - counts["recorded"] - counts["unchanged"], results=results)

    @app.get("/healthz", response_model=LiveResponse,
             responses={503: {"model": LiveResponse, "description": "The process can no longer predict (its "
                              "prediction lane stopped on an error of its own; the log has it): restart it."}})
    def healthz():
        """Liveness: the process answers HTTP and can still predict (restart it if this fails)."""
        failure = lane.failure
        if failure is not None:
            return JSONResponse(LiveResponse(status=failure).model_dump(mode="json"), status_code=503)
        return LiveResponse(status="ok")

    def database_state() -> str:
        try:
            with writer.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as error:  # noqa: BLE001 - any failure to answer is "not reachable", said in one line
            return f"unreachable: {outage_reason(error, store.engine.url)}"
        return "reachable"

    @app.get("/readyz", response_model=ReadyResponse,
             responses={503: {"model": ReadyResponse, "description": "Not ready: `reasons` says why."}})
    def readyz():
        """Readiness: the monitoring database answers and every declared model has a production version
        loaded in this process. 503 otherwise, with the reasons. A registry pointing at an artifact that
        cannot be loaded is reported under ``problem`` while the current version keeps serving (still ready)."""
        database = database_state()
        reasons = [] if database == "reachable" else [f"monitoring database {database}"]
        if (failure := lane.failure) is not None:
            reasons.append(failure)
        models = {}
        for model in settings.models:
            active, standby, shadow, canary = (s.get(model.name) for s in (slots.active, slots.standby, slots.shadow,
                                                                           slots.canary))
            problem = slots.problems.get(model.name)
            if active is None:
                reasons.append(f"model {model.name}: no production version loaded ({problem or 'none in the registry'})")
            models[model.name] = ModelReadiness(
                serving=active.version.label if active else None, standby=standby.version.label if standby else None,
                shadow=shadow.version.label if shadow else None, canary=canary.version.label if canary else None,
                canary_share=canary.version.traffic_share if canary else None, problem=problem)
        body = ReadyResponse(ready=not reasons, database=database, reasons=reasons, models=models)
        return JSONResponse(body.model_dump(mode="json"), status_code=503 if reasons else 200)

    @app.get("/health", response_model=HealthResponse)
    def health() -> dict:
        """Always 200 while the process serves: "degraded" when the monitoring database does not answer
        (predictions still work; their rows wait on disk). ``prediction_log``: the writer's counters."""
        log = writer.stats()
        return {"status": "ok" if log["database"] == "reachable" else "degraded",
                "serving": {name: slot.version.label for name, slot in slots.active.items()},
                "prediction_log": log}

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format (see docs/serving.md for the names)."}})
    def prometheus_metrics() -> Response:
        metrics.update_log(writer.stats())
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/model/reload", dependencies=[Depends(authorized)], response_model=ReloadResponse,
              responses=_responses(401, 403, 404, 409, 422, 503, s409="The registry's production version cannot be "
                                   "loaded (missing or corrupt artifact, or none): the current one keeps serving."))
    def reload(query: Annotated[ReloadQuery, Query()]) -> dict:
        """Sync with the registry now, instead of at the next poll (``serving.registry_poll_seconds``)."""
        out = {}
        for each in [model_of(query.model)] if query.model else settings.models:
            new, old = slots.sync(each)
            problem = slots.production_problems.get(each.name)
            if new is None or problem:
                raise HTTPException(409, problem or f"model {each.name}: nothing to serve")
            out[each.name] = ReloadOutcome(serving=new.version.label, previous=old.version.label if old else None)
        return out

    @app.post("/training/trigger", dependencies=[Depends(authorized)], response_model=TriggerResponse,
              responses=_responses(400, 401, 403, 404, 409, 413, 422, 502, 503, s409="A retrain of this model is in "
                                   "flight: send \"force\": true to supersede it."))
    def trigger(request: TriggerRequest) -> dict:
        model = model_of(request.model) if request.model is not None else model_of_type(settings, request.model_type)
        if request.data_version != "latest":
            try:
                store.registry.find_dataset(model.name, request.data_version)
            except StoreError as error:
                raise HTTPException(404, str(error)) from None
        if not dagster_url:
            raise HTTPException(503, f"no Dagster webserver configured: set {DAGSTER_URL_ENV} (e.g. http://127.0.0.1:3000)")
        from retrain_assets.defs.launch import trigger_retrain  # Dagster only when asked for

        try:
            outcome = trigger_retrain(settings, model.name, request.reason, request.requester, url=dagster_url,
                                      force=request.force, data_version=request.data_version)
        except RetrainInFlight as error:  # the model's one claim is held: a conflict, not a failure
            raise HTTPException(409, f"{error} (\"force\": true in the body)") from None
        except RetrainError as error:
            raise HTTPException(502, str(error)) from None
        return {"model": model.name, "run_id": outcome.run_id, "event_id": outcome.event_id, "status": outcome.status}

    @app.get("/training/status", response_model=StatusResponse,
             responses={200: {"headers": _VERSION_HEADER_DOC}, **_responses(404, 422, 503)})
    def status(response: Response, query: Annotated[StatusQuery, Query()]) -> StatusResponse:
        """The newest retrain of ``model`` (its run's status from Dagster when the webserver knows it), the
        newest candidate against production (metric deltas), and what this process serves."""
        declared = model_of(query.model)
        events = [e for e in store.events.recent(declared.name, limit=20) if e["trigger_type"] != "rollback"]
        versions = store.registry.versions(declared.name)
        candidate = max(versions, key=lambda v: v.version) if versions else None
        production = store.registry.production(declared.name)
        relative = next((g for g in (candidate.gate_results or []) if g["name"] == "relative_to_production"), None) \
            if candidate else None
        last = events[0] if events else None
        run_id, run_status = _dagster_run(dagster_url, last["run_id"], last["id"]) if last else (None, None)
        deltas = {}
        if candidate is not None and production is not None and candidate.version != production.version:
            deltas = {k: float(candidate.metrics[k]) - float(production.metrics[k])
                      for k in sorted(set(candidate.metrics) & set(production.metrics))
                      if isinstance(candidate.metrics[k], (int, float)) and isinstance(production.metrics[k], (int, float))}
        active, standby = slots.active.get(declared.name), slots.standby.get(declared.name)
        if active is not None:
            response.headers[VERSION_HEADER] = active.version.label
        return StatusResponse(
            model=declared.name,
            last_retrain=None if last is None else LastRetrain(
                event_id=last["id"], trigger=last["trigger_type"], reason=last["trigger_reason"],
                run_id=last["run_id"] or run_id,
                status=run_status or _event_run_status(last), status_source="dagster" if run_status else "event",
                attempted=last["execution_attempted"], successful=last["execution_successful"],
                triggered_at=last["triggered_at"], completed_at=last["execution_completed_at"]),
            candidate=None if candidate is None else CandidateInfo(
                version=candidate.label, status=candidate.status, metrics=candidate.metrics,
                gates=candidate.gate_results, dataset=candidate.dataset_tag),
            production=None if production is None else ProductionInfo(version=production.label,
                                                                        metrics=production.metrics),
            serving=active.version.label if active else None,
            standby=standby.version.label if standby else None,
            deltas=deltas,
            comparison_with_production=None if relative is None else relative["value"],
        )

    return app
