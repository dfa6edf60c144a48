"""Scoring with the active model and logging what was served: the loop that feeds monitoring.

The demo's traffic and the HTTP API both serve through here, so everything monitoring sees was produced by
the model the registry says is active, loaded only after its checksum was verified.
"""

import logging
import time

import pandas as pd

from retrain_assets.errors import RetrainError, StoreError
from retrain_assets.metrics import positive_column, predict_with_probabilities
from retrain_assets.settings import ModelSettings
from retrain_assets.store import ArtifactStore, ModelVersion, MonitoringStore

logger = logging.getLogger("retrain_assets.serving")
_loaded: dict[str, object] = {}


def load_version(artifacts: ArtifactStore, version: ModelVersion):
    """The fitted pipeline of a registry version (verified, cached by checksum)."""
    if version.artifact_sha256 not in _loaded:
        _loaded[version.artifact_sha256] = artifacts.load_model(version.artifact_key, version.artifact_sha256)
    return _loaded[version.artifact_sha256]


def load_production(store: MonitoringStore, artifacts: ArtifactStore, model: ModelSettings):
    production = store.registry.production(model.name)
    if production is None:
        raise StoreError(f"model {model.name} has no production version: run the {model.name}_retrain job first")
    return production, load_version(artifacts, production)


def predict_frame(pipeline, frame: pd.DataFrame, model: ModelSettings) -> tuple[list, list | None]:
    predictions, probabilities = predict_with_probabilities(pipeline, frame[model.feature_names], model.task)
    if probabilities is None:
        return predictions.tolist(), None
    return predictions.tolist(), positive_column(pipeline, probabilities, model.positive_label).tolist()


def timed_predict(pipeline, frame: pd.DataFrame, model: ModelSettings) -> tuple[list, list | None, float]:
    """``predict_frame`` and the milliseconds it took (logged with every row; the watch reads its p99)."""
    start = time.perf_counter()
    predictions, scores = predict_frame(pipeline, frame, model)
    return predictions, scores, (time.perf_counter() - start) * 1000


def shadow_score(store: MonitoringStore, model: ModelSettings, version: ModelVersion, pipeline, frame: pd.DataFrame) -> int:
    """Score already-served requests with the candidate in shadow and log its predictions beside them.

    Runs after production answered (off the request path in the API); a failing shadow model is logged
    and ignored: it must never cost a user a prediction.
    """
    try:
        predictions, scores = predict_frame(pipeline, frame, model)
        return store.predictions.log_shadow(model.log_key, version.version, frame["request_id"], predictions, scores)
    except Exception as error:  # noqa: BLE001 - the shadow is an experiment, production already answered
        logger.error("shadow model %s %s could not score %d rows: %s", model.name, version.label, len(frame), error)
        return 0


def serve_and_log(
    store: MonitoringStore, artifacts: ArtifactStore, model: ModelSettings, frame: pd.DataFrame
) -> tuple[ModelVersion, pd.DataFrame]:
    """Predict ``frame`` with the production model, append it to the prediction log, and let the candidate
    in shadow (if any) score the same requests."""
    production, pipeline = load_production(store, artifacts, model)
    predictions, scores, latency_ms = timed_predict(pipeline, frame, model)
    store.predictions.log_predictions(
        model.log_key, frame, model.feature_names, prediction=predictions, score=scores,
        model_version=production.version, latency_ms=latency_ms,
    )
    shadow = store.registry.with_status(model.name, "shadow")
    if shadow is not None:
        try:
            shadow_pipeline = load_version(artifacts, shadow)
        except RetrainError as error:  # a corrupt shadow artifact never stops production serving
            logger.error("shadow model %s %s not loaded: %s", model.name, shadow.label, error)
        else:
            shadow_score(store, model, shadow, shadow_pipeline, frame)
    return production, frame.assign(prediction=predictions, score=scores)
