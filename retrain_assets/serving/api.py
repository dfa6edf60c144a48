"""The HTTP API: predictions, hot reload, training trigger and status (`retrain serve`).

* ``POST /predict/batch`` validates rows against the model's feature schema (422 naming the field),
  scores them with the active model and logs them to the prediction log (from a background writer, in
  batches), which feeds monitoring.
* ``POST /model/reload`` loads what the registry says is active into a standby slot (checksum verified
  before unpickling) and then swaps one reference: requests in flight keep the model they started with,
  and a corrupt artifact is refused while the current model keeps serving.
* ``POST /training/trigger`` queues the retrain job on the running Dagster webserver (GraphQL).
* ``GET /training/status`` reports the newest retrain: event, candidate metrics and gates, comparison.

Mutating endpoints (reload, trigger) need ``Authorization: Bearer $RETRAIN_API_TOKEN``.
"""

import datetime as dt
import hmac
import logging
import os
import queue
import threading
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from retrain_assets.errors import RetrainError
from retrain_assets.serving.predict import shadow_score, timed_predict
from retrain_assets.settings import ModelSettings, RetrainSettings
from retrain_assets.store import ArtifactStore, ModelVersion, MonitoringStore

logger = logging.getLogger("retrain_assets.serving")
TOKEN_ENV = "RETRAIN_API_TOKEN"
DAGSTER_URL_ENV = "RETRAIN_DAGSTER_URL"


class BatchRequest(BaseModel):
    model: str
    rows: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)
    request_ids: list[str] | None = None


class TriggerRequest(BaseModel):
    model: str
    reason: str = Field(min_length=1)
    requester: str = ""


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


class PredictionLogWriter:
    """Writes served predictions to the prediction log from a background thread, in batches.

    The request path only enqueues; one writer thread drains the queue and inserts what accumulated in one
    transaction, so concurrent requests never queue up behind each other's database commits. The queue is
    flushed when the server shuts down; ``flush()`` waits until everything enqueued so far is written.
    The candidate in shadow (if any) scores the same rows here too, after they are logged: off the
    request path, so a shadow never slows or fails a user's request.
    """

    def __init__(self, store: MonitoringStore, settings: RetrainSettings):
        self.store = store
        self.models = {m.log_key: m for m in settings.models}
        self.queue: "queue.Queue[tuple | None]" = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self.thread.start()

    def put(self, model_key: str, frame: pd.DataFrame, features: list[str], predictions, scores, version: int,
            latency_ms: float, shadow: Slot | None = None) -> None:
        self.queue.put((model_key, frame, features, predictions, scores, version, latency_ms, shadow))

    def flush(self) -> None:
        self.queue.join()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            items = [self.queue.get()]
            while not self.queue.empty() and len(items) < 200:
                items.append(self.queue.get_nowait())
            stop = any(item is None for item in items)
            batches: dict[tuple, list] = {}
            for item in items:
                if item is not None:
                    batches.setdefault((item[0], item[5], tuple(item[2])), []).append(item)
            for (model_key, version, features), group in batches.items():
                frame = pd.concat([g[1] for g in group], ignore_index=True)
                predictions = [p for g in group for p in g[3]]
                scores = None if any(g[4] is None for g in group) else [x for g in group for x in g[4]]
                latency = [g[6] for g in group for _ in range(len(g[1]))]
                try:
                    self.store.predictions.log_predictions(model_key, frame, list(features), prediction=predictions,
                                                           score=scores, model_version=version, latency_ms=latency)
                except Exception as error:  # noqa: BLE001 - never kill the writer; say what was lost
                    logger.error("could not log %d predictions of %s: %s", len(frame), model_key, error)
                    continue
                shadows = {g[7].version.version: g[7] for g in group if g[7] is not None}
                for slot in shadows.values():
                    rows = pd.concat([g[1] for g in group if g[7] is slot], ignore_index=True)
                    shadow_score(self.store, self.models[model_key], slot.version, slot.pipeline, rows)
            for _ in items:
                self.queue.task_done()
            if stop:
                return


def _row_schema(model: ModelSettings) -> type[BaseModel]:
    fields = {name: (float | None, ...) for name in model.numeric_features}
    fields |= {name: (str | None, ...) for name in model.categorical_features}
    return create_model(f"{model.name}_row", __config__=ConfigDict(extra="forbid"), **fields)


def create_app(settings: RetrainSettings, token: str | None = None, dagster_url: str | None = None) -> FastAPI:
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    dagster_url = dagster_url or os.environ.get(DAGSTER_URL_ENV) or None
    store = MonitoringStore(settings.storage.database_url)
    slots = ModelSlots(store, ArtifactStore(settings.storage.artifact_root))
    schemas = {m.name: _row_schema(m) for m in settings.models}
    writer = PredictionLogWriter(store, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        writer.close()  # everything served is in the log before the process exits

    app = FastAPI(title="retrain-assets", description=__doc__.split("\n\n")[0], version="1", lifespan=lifespan)
    app.state.log_writer = writer

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
        schema = schemas[model.name]
        errors = []
        for index, row in enumerate(request.rows):
            try:
                schema.model_validate(row)
            except ValidationError as error:
                errors += [{**e, "loc": ("body", "rows", index, *e["loc"])} for e in error.errors(include_url=False)]
        if errors:
            raise RequestValidationError(errors)
        if request.request_ids is not None and len(request.request_ids) != len(request.rows):
            raise HTTPException(422, "request_ids must have one id per row")
        frame = pd.DataFrame(request.rows, columns=model.feature_names)
        predictions, scores, latency_ms = timed_predict(slot.pipeline, frame, model)
        ids = request.request_ids or [uuid.uuid4().hex for _ in request.rows]
        logged = frame.assign(request_id=ids, timestamp=dt.datetime.now(dt.timezone.utc), safe_to_send=True)
        writer.put(model.log_key, logged, model.feature_names, predictions, scores, slot.version.version, latency_ms,
                   slots.shadow.get(model.name))
        return {"model": model.name, "model_version": slot.version.label, "request_ids": ids,
                "predictions": predictions, "scores": scores}

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
            outcome = trigger_retrain(settings, model.name, request.reason, request.requester, url=dagster_url)
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
