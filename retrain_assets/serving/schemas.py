"""The HTTP API's request and response shapes: one pydantic model per body, so ``/docs`` shows every
shape and FastAPI serializes responses with pydantic (in Rust) instead of walking dicts in Python."""

import datetime as dt
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints, TypeAdapter, create_model, model_validator
from typing_extensions import TypedDict

from retrain_assets.config.serving import ServingSettings
from retrain_assets.settings import ModelSettings

REQUEST_ID_LENGTH = 64  # prediction_log.request_id is varchar(64): the API refuses what the log cannot hold
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=REQUEST_ID_LENGTH)]


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong and what to do about it, in one line.")


class ValidationErrorItem(BaseModel):
    type: str
    loc: list[str | int] = Field(description="Where: e.g. [\"body\", \"rows\", 3, \"region\"].")
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorResponse(BaseModel):
    detail: list[ValidationErrorItem] = Field(description="The first 20 errors (each naming its field), then one "
                                                          "line counting the others.")


class PredictResponse(BaseModel):
    model: str
    model_version: str = Field(description="The registry version that answered (also in the X-Model-Version header).")
    request_ids: list[str] = Field(description="One per row: the ids sent, or generated ones. Labels refer to them.")
    predictions: list[Any] = Field(description="One per row: the predicted class (classification) or value.")
    scores: list[float] | None = Field(description="Classification: the positive class's probability per row.")


class LabelItem(BaseModel):
    request_id: RequestId
    label: Any = Field(description="The true outcome: one of the model's classes (classification) or a finite "
                                   "number (regression). Checked per item.")


class LabelsRequest(BaseModel):
    model: str
    labels: list[LabelItem] = Field(min_length=1, description="One item per labeled request.")


class LabelResult(BaseModel):
    request_id: str
    status: int = Field(description="Per item: 201 recorded, 200 already recorded with the same label, 404 no "
                                    "prediction with this request id in the log, 409 already recorded with a "
                                    "different label, 422 wrong type or not one of the model's classes.")
    outcome: Literal["recorded", "unchanged", "unknown_request", "conflict", "invalid"]
    detail: str | None = None


class LabelsResponse(BaseModel):
    model: str
    recorded: int = Field(description="Items stored now.")
    unchanged: int = Field(description="Items already stored with the same label (a retry is harmless).")
    rejected: int = Field(description="Items not stored: unknown request, conflict or invalid (see results).")
    results: list[LabelResult] = Field(description="One per item, in the order sent.")


class PredictionLogStats(BaseModel):
    accepted: int
    written: int
    replayed: int
    already_logged: int
    retried: int
    spilled: int
    quarantined: int
    refused: int
    lost: int
    shadow_skipped: int
    queued: int
    in_flight: int
    pending: int
    on_disk: int
    database: str
    spill_dir: str


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    serving: dict[str, str] = Field(description="The version each model serves in this process.")
    prediction_log: PredictionLogStats


class LiveResponse(BaseModel):
    status: str = Field(description="\"ok\", or why the process can no longer predict (then 503: restart it).")


class ModelReadiness(BaseModel):
    serving: str | None = Field(description="Production version this process serves (null: none loaded).")
    standby: str | None = Field(description="The rollback target, loaded in memory.")
    shadow: str | None = Field(description="The candidate in shadow, if any.")
    canary: str | None = Field(description="The candidate in canary, if any.")
    canary_share: float | None = Field(description="The share of requests the canary answers (by request id).")
    problem: str | None = Field(description="Why this process does not serve what the registry says (retried).")


class ReadyResponse(BaseModel):
    ready: bool
    database: str = Field(description="\"reachable\", or why not.")
    reasons: list[str] = Field(description="Why not ready (empty when ready).")
    models: dict[str, ModelReadiness]


class ReloadOutcome(BaseModel):
    serving: str
    previous: str | None


class ReloadResponse(RootModel[dict[str, ReloadOutcome]]):
    pass


class TriggerRequest(BaseModel):
    """Ours (``model``, ``reason``) or the design documents' (``model_type``, ``data_version``): one of
    ``model`` and ``model_type`` names the model."""

    # Exactly one of the two, as the spec says (oneOf); each is a string when given (no null).
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["model"]}, {"required": ["model_type"]}]})

    model: str = Field(None, description="The model's name.")
    model_type: str = Field(None, description="The design documents' form: a model's task (classification, "
                                              "regression) when one declared model has it, or a model's name.")
    data_version: str = Field("latest", description="'latest' (a new dataset from the data source), or a dataset "
                                                    "version (v7, or its tag): train again on exactly those rows.")
    reason: str = Field("requested over HTTP", min_length=1)
    requester: str = ""
    force: bool = Field(False, description="Retrain even while a retrain of this model is in flight (recorded in "
                                           "the event, as `retrain trigger --force`).")

    @model_validator(mode="after")
    def _one_model(self):
        if (self.model is None) == (self.model_type is None):
            raise ValueError("name the model with exactly one of 'model' and 'model_type'")
        return self


class TriggerResponse(BaseModel):
    model: str
    run_id: str | None
    event_id: int
    status: str


class LastRetrain(BaseModel):
    event_id: int
    trigger: str | None
    reason: str | None
    run_id: str | None
    status: Literal["queued", "running", "completed", "failed", "unknown"] = Field(
        description="From Dagster when the run is known there (RETRAIN_DAGSTER_URL), else from the event row.")
    status_source: Literal["dagster", "event"]
    attempted: bool | None
    successful: bool | None
    triggered_at: dt.datetime | None
    completed_at: dt.datetime | None


class CandidateInfo(BaseModel):
    version: str
    status: str
    metrics: dict[str, Any]
    gates: list[dict[str, Any]] | None
    dataset: str


class ProductionInfo(BaseModel):
    version: str
    metrics: dict[str, Any]


class StatusResponse(BaseModel):
    model: str
    last_retrain: LastRetrain | None
    candidate: CandidateInfo | None = Field(description="The newest version in the registry.")
    production: ProductionInfo | None
    serving: str | None = Field(description="The version this process serves (also in X-Model-Version).")
    standby: str | None = Field(description="The rollback target this process holds in memory.")
    deltas: dict[str, float] = Field(description="Candidate metric minus production metric, for every metric "
                                                 "both have (empty when the candidate is production).")
    comparison_with_production: dict[str, Any] | None = Field(
        description="The relative_to_production gate's values, as the candidate's evaluation recorded them.")


class ReloadQuery(BaseModel):
    """Query of POST /model/reload; unknown parameters are refused (422), not silently ignored."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="Only this model (default: every declared model).")


class StatusQuery(BaseModel):
    """Query of GET /training/status; unknown parameters are refused (422)."""

    model_config = ConfigDict(extra="forbid")
    model: str


def row_type(model: ModelSettings, serving: ServingSettings) -> type:
    """One request row, validated strictly: numeric features take JSON numbers only (a string such as "12.5"
    or a boolean is refused, so what is logged is what the model computed on) and finite ones (NaN/Infinity
    are refused); categorical features take strings up to ``max_category_length``. Every feature is required
    and may be null (missing value); unknown keys are refused."""
    number = Annotated[float, Field(strict=True, allow_inf_nan=False)] | None
    category = Annotated[str, StringConstraints(strict=True, max_length=serving.max_category_length)] | None
    fields = {name: number for name in model.numeric_features} | {name: category for name in model.categorical_features}
    row = TypedDict(f"{model.name}_row", fields)
    row.__pydantic_config__ = ConfigDict(extra="forbid")
    return row


def row_adapter(model: ModelSettings, serving: ServingSettings) -> TypeAdapter:
    """Validates a request's rows (a list of ``row_type``) in one pass."""
    return TypeAdapter(list[row_type(model, serving)])


def batch_request_fields(serving: ServingSettings, rows: Any = list[dict[str, Any]], model: Any = str) -> dict:
    """The fields of a /predict/batch body with this server's limits (rows per request, request id length)."""
    return {
        "model": (model, ...),
        "rows": (rows, Field(min_length=1, max_length=serving.max_rows_per_request)),
        "request_ids": (list[RequestId] | None, Field(None, description="One id per row, unique, 1-64 characters "
                                                                         "(default: generated)")),
    }


def typed_batch_adapter(models: list[ModelSettings], serving: ServingSettings) -> TypeAdapter:
    """A whole /predict/batch body, rows typed for its model, validated straight from the JSON bytes: the body
    of each declared model (``model`` its name), one of them chosen by ``model``. What it accepts, the
    documented body and then its rows accept too, with the same values; it refuses more (an unknown model, a
    lone surrogate escape, a byte-order mark), and the API then answers through the documented path."""
    bodies = [create_model(f"{model.name}_batch", **batch_request_fields(
        serving, rows=list[row_type(model, serving)], model=Literal[model.name])) for model in models]
    if len(bodies) == 1:
        return TypeAdapter(bodies[0])
    return TypeAdapter(Annotated[Union[tuple(bodies)], Field(discriminator="model")])  # noqa: UP007 - a runtime tuple
