"""The HTTP API: predictions, hot reload, training trigger and status (`retrain serve`).

* ``POST /predict/batch`` validates rows against the model's feature schema (422 naming the field: numeric
  features take JSON numbers only, finite; categorical ones strings up to ``max_category_length``),
  scores the validated, typed rows with the active model and hands exactly those rows to the durable
  prediction log (:mod:`retrain_assets.serving.log_writer`), which feeds monitoring. It keeps serving
  from the loaded model while the monitoring database is down.
* ``POST /model/reload`` loads what the registry says is active into a standby slot (checksum verified
  before unpickling) and then swaps one reference: requests in flight keep the model they started with,
  and a corrupt artifact is refused while the current model keeps serving.
* ``POST /training/trigger`` queues the retrain job on the running Dagster webserver (GraphQL).
* ``GET /training/status`` reports the newest retrain: event, candidate metrics and gates, comparison.
* ``GET /health`` says whether the monitoring database answers and where every logged row is.

Endpoints that need the database answer 503 with what to fix while it is unreachable. Request bodies
above ``max_body_bytes`` are refused with 413 before they are parsed. Mutating endpoints (reload,
trigger) need ``Authorization: Bearer $RETRAIN_API_TOKEN``.
"""

import datetime as dt
import hmac
import logging
import math
import os
import threading
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, create_model
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from typing_extensions import TypedDict

from retrain_assets.errors import RetrainError, RetrainInFlight
from retrain_assets.serving.log_writer import (
    LoggedRequest,
    PredictionLogFull,
    PredictionLogWriter,
    features_frame,
    outage_reason,
)
from retrain_assets.serving.predict import timed_predict
from retrain_assets.serving.settings import ServingSettings
from retrain_assets.settings import ModelSettings, RetrainSettings
from retrain_assets.store import ArtifactStore, ModelVersion, MonitoringStore
from retrain_assets.store.predictions import prediction_rows
from retrain_assets.store.schema import prediction_log

logger = logging.getLogger("retrain_assets.serving")
TOKEN_ENV = "RETRAIN_API_TOKEN"
DAGSTER_URL_ENV = "RETRAIN_DAGSTER_URL"
REQUEST_ID_LENGTH = prediction_log.c.request_id.type.length  # varchar(64): the API refuses what the log cannot hold
MAX_ERRORS_SHOWN = 20
__all__ = ["PredictionLogWriter", "create_app"]


class TriggerRequest(BaseModel):
    model: str
    reason: str = Field(min_length=1)
    requester: str = ""
    force: bool = Field(False, description="Retrain even while a retrain of this model is in flight (recorded in "
                                           "the event, as `retrain trigger --force`).")


def _batch_request_model(serving: ServingSettings) -> type[BaseModel]:
    """The body of /predict/batch with this server's limits (rows per request, request id length)."""
    request_id = Annotated[str, StringConstraints(min_length=1, max_length=REQUEST_ID_LENGTH)]
    return create_model(
        "BatchRequest",
        model=(str, ...),
        rows=(list[dict[str, Any]], Field(min_length=1, max_length=serving.max_rows_per_request)),
        request_ids=(list[request_id] | None, Field(None, description="One id per row, unique, 1-64 characters "
                                                                       "(default: generated)")),
    )


@dataclass(frozen=True)
class Slot:
    version: ModelVersion
    pipeline: Any


class ModelSlots:
    """The serving model of each declared model (and its candidate in shadow, if any); a reload builds
    the new slot aside, then swaps."""

    def __init__(self, store: MonitoringStore, artifacts: ArtifactStore):
        self.store, self.artifacts = store, artifacts
        self.active: dict[str, Slot] = {}
        self.shadow: dict[str, Slot] = {}
        self._lock = threading.Lock()  # one reload at a time; readers never take it

    def reload(self, model: ModelSettings) -> tuple[Slot, Slot | None]:
        with self._lock:
            self._reload_shadow(model)
            production = self.store.registry.production(model.name)
            if production is None:
                raise RetrainError(f"model {model.name} has no production version in the registry: train one first")
            current = self.active.get(model.name)
            if current is not None and current.version.artifact_sha256 == production.artifact_sha256:
                return current, current
            pipeline = self.artifacts.load_model(production.artifact_key, production.artifact_sha256)  # verified
            standby = Slot(production, pipeline)
            self.active[model.name] = standby  # the swap: one reference assignment
            return standby, current

    def _reload_shadow(self, model: ModelSettings) -> None:
        shadow = self.store.registry.with_status(model.name, "shadow")
        current = self.shadow.get(model.name)
        if shadow is None:
            self.shadow.pop(model.name, None)
        elif current is None or current.version.artifact_sha256 != shadow.artifact_sha256:
            try:
                self.shadow[model.name] = Slot(shadow, self.artifacts.load_model(shadow.artifact_key, shadow.artifact_sha256))
            except RetrainError as error:  # the shadow is an experiment: never a reason to stop serving
                self.shadow.pop(model.name, None)
                logger.error("shadow model %s %s not loaded: %s", model.name, shadow.label, error)


def _row_adapter(model: ModelSettings, serving: ServingSettings) -> TypeAdapter:
    """Validates a request's rows in one pass, strictly: numeric features take JSON numbers only (a string
    such as "12.5" or a boolean is refused, so what is logged is what the model computed on) and finite
    ones (NaN/Infinity are refused); categorical features take strings up to ``max_category_length``.
    Every feature is required and may be null (missing value); unknown keys are refused."""
    number = Annotated[float, Field(strict=True, allow_inf_nan=False)] | None
    category = Annotated[str, StringConstraints(strict=True, max_length=serving.max_category_length)] | None
    fields = {name: number for name in model.numeric_features} | {name: category for name in model.categorical_features}
    row = TypedDict(f"{model.name}_row", fields)
    row.__pydantic_config__ = ConfigDict(extra="forbid")
    return TypeAdapter(list[row])


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: echo such inputs back as text in error messages."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _validation_errors(errors: list[dict]) -> list[dict]:
    """The first errors (each naming its field), then one line counting the others."""
    shown = [_finite(jsonable_encoder(error)) for error in errors[:MAX_ERRORS_SHOWN]]
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


def create_app(settings: RetrainSettings, token: str | None = None, dagster_url: str | None = None,
               serving: ServingSettings | None = None) -> FastAPI:
    """The API over ``settings``; ``serving`` (default: the config's ``serving`` block) sets the request limits and the prediction log's spill folder, retries and shutdown."""
    serving = serving or settings.serving
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    dagster_url = dagster_url or os.environ.get(DAGSTER_URL_ENV) or None
    store = MonitoringStore(settings.storage.database_url)
    slots = ModelSlots(store, ArtifactStore(settings.storage.artifact_root))
    adapters = {m.name: _row_adapter(m, serving) for m in settings.models}
    BatchRequest = _batch_request_model(serving)
    writer = PredictionLogWriter(store, settings, serving)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await anyio.to_thread.run_sync(writer.close)  # written, or kept on disk and reported, before exit

    app = FastAPI(title="retrain-assets", description=__doc__.split("\n\n")[0], version="1", lifespan=lifespan)
    app.state.log_writer = writer
    app.state.serving = serving
    app.add_middleware(BodySizeLimit, max_bytes=serving.max_body_bytes)

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

    for model in settings.models:  # serve what is active at start; a model without one answers 503
        try:
            slots.reload(model)
        except RetrainError:
            pass

    def model_of(name: str) -> ModelSettings:
        try:
            return settings.model(name)
        except RetrainError as error:
            raise HTTPException(404, str(error)) from None

    def authorized(authorization: str | None = Header(default=None)) -> None:
        if token is None:
            raise HTTPException(403, f"this endpoint is disabled: set {TOKEN_ENV} on the server to enable it")
        expected = f"Bearer {token}"
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.post("/predict/batch")
    def predict_batch(request: BatchRequest) -> dict:
        model = model_of(request.model)
        slot = slots.active.get(model.name)  # this request keeps this slot, whatever a reload does meanwhile
        if slot is None:
            raise HTTPException(503, f"model {model.name} has no production version yet")
        features, errors = _validated_rows(adapters[model.name], request.rows)
        errors += _request_id_errors(request.request_ids, len(request.rows))
        if errors:
            raise RequestValidationError(errors)
        predictions, scores, latency_ms = timed_predict(slot.pipeline, features_frame(model, features), model)
        ids = request.request_ids or [uuid.uuid4().hex for _ in features]
        rows = prediction_rows(model.log_key, ids, features, ts=dt.datetime.now(dt.timezone.utc), prediction=predictions,
                               score=scores, model_version=slot.version.version, latency_ms=latency_ms)
        try:
            writer.put(LoggedRequest(model.log_key, rows, slots.shadow.get(model.name)))
        except PredictionLogFull as error:  # nothing is served that cannot be kept
            raise HTTPException(503, str(error), headers={"Retry-After": "10"}) from None
        return {"model": model.name, "model_version": slot.version.label, "request_ids": ids,
                "predictions": predictions, "scores": scores}

    @app.get("/health")
    def health() -> dict:
        """Always 200 while the process serves: "degraded" when the monitoring database does not answer
        (predictions still work; their rows wait on disk). ``prediction_log``: the writer's counters."""
        log = writer.stats()
        return {"status": "ok" if log["database"] == "reachable" else "degraded",
                "serving": {name: slot.version.label for name, slot in slots.active.items()},
                "prediction_log": log}

    @app.post("/model/reload", dependencies=[Depends(authorized)])
    def reload(model: str | None = Query(default=None)) -> dict:
        out = {}
        for each in [model_of(model)] if model else settings.models:
            try:
                new, old = slots.reload(each)
            except RetrainError as error:  # corrupt artifact, no production: keep serving what we have
                current = slots.active.get(each.name)
                raise HTTPException(409, f"{error}; still serving {current.version.label if current else 'nothing'}") from None
            out[each.name] = {"serving": new.version.label, "previous": old.version.label if old else None}
        return out

    @app.post("/training/trigger", dependencies=[Depends(authorized)])
    def trigger(request: TriggerRequest) -> dict:
        model = model_of(request.model)
        if not dagster_url:
            raise HTTPException(503, f"no Dagster webserver configured: set {DAGSTER_URL_ENV} (e.g. http://127.0.0.1:3000)")
        from retrain_assets.defs.launch import trigger_retrain  # Dagster only when asked for

        try:
            outcome = trigger_retrain(settings, model.name, request.reason, request.requester, url=dagster_url,
                                      force=request.force)
        except RetrainInFlight as error:  # the model's one claim is held: a conflict, not a failure
            raise HTTPException(409, f"{error} (\"force\": true in the body)") from None
        except RetrainError as error:
            raise HTTPException(502, str(error)) from None
        return {"model": model.name, "run_id": outcome.run_id, "event_id": outcome.event_id, "status": outcome.status}

    @app.get("/training/status")
    def status(model: str = Query(...)) -> dict:
        declared = model_of(model)
        events = [e for e in store.events.recent(declared.name, limit=20) if e["trigger_type"] != "rollback"]
        versions = store.registry.versions(declared.name)
        candidate = max(versions, key=lambda v: v.version) if versions else None
        production = store.registry.production(declared.name)
        relative = next((g for g in (candidate.gate_results or []) if g["name"] == "relative_to_production"), None) \
            if candidate else None
        last = events[0] if events else None
        return {
            "model": declared.name,
            "last_retrain": None if last is None else {
                "event_id": last["id"], "trigger": last["trigger_type"], "reason": last["trigger_reason"],
                "run_id": last["run_id"], "attempted": last["execution_attempted"],
                "successful": last["execution_successful"], "triggered_at": last["triggered_at"],
                "completed_at": last["execution_completed_at"],
            },
            "candidate": None if candidate is None else {
                "version": candidate.label, "status": candidate.status, "metrics": candidate.metrics,
                "gates": candidate.gate_results, "dataset": candidate.dataset_tag,
            },
            "production": None if production is None else {"version": production.label, "metrics": production.metrics},
            "serving": slots.active[declared.name].version.label if declared.name in slots.active else None,
            "comparison_with_production": None if relative is None else relative["value"],
        }

    return app
