"""Scoring with the active model and logging what was served: the loop that feeds monitoring.

The demo's traffic and the HTTP API both serve through here, so everything monitoring sees was produced by
the model the registry says is active, loaded only after its checksum was verified.
"""

import logging
import time

import numpy as np
import pandas as pd

from retrain_assets.errors import RetrainError, StoreError
from retrain_assets.metrics import positive_column, predict_with_probabilities
from retrain_assets.serving.routing import record_canary_failure, routes_to_canary
from retrain_assets.settings import ModelSettings
from retrain_assets.store import ArtifactStore, ModelVersion, MonitoringStore

logger = logging.getLogger("retrain_assets.serving")
_loaded: dict[str, object] = {}
_failed_canaries: set[str] = set()  # artifact checksums of canaries that failed here: never asked again


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
    """Predictions and positive-class scores of ``frame``'s feature columns (a served frame holds only
    those, in order: taken as it is, without a copy)."""
    features = frame if frame.columns.tolist() == model.feature_names else frame[model.feature_names]
    predictions, probabilities = predict_with_probabilities(pipeline, features, model.task)
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


def _answer(store: MonitoringStore, artifacts: ArtifactStore, model: ModelSettings, production: ModelVersion,
            pipeline, frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Predict every row with production, or with the candidate in canary for the rows whose request id
    routes to it; a canary that cannot load or score leaves its rows to production and is reported."""
    canary = store.registry.with_status(model.name, "canary")
    to_canary = np.zeros(len(frame), dtype=bool)
    if canary is not None and canary.traffic_share and canary.artifact_sha256 not in _failed_canaries:
        to_canary = np.fromiter((routes_to_canary(str(i), canary.traffic_share) for i in frame["request_id"]),
                                dtype=bool, count=len(frame))
    predictions = pd.Series(None, index=frame.index, dtype=object)
    scores = pd.Series(None, index=frame.index, dtype=object)
    parts = [(production, pipeline, ~to_canary)]
    if to_canary.any():
        try:
            parts.append((canary, load_version(artifacts, canary), to_canary))
        except RetrainError as error:
            _failed_canaries.add(canary.artifact_sha256)
            record_canary_failure(store, model.name, canary, f"not loaded: {error}"[:500], int(to_canary.sum()))
            parts = [(production, pipeline, np.ones(len(frame), dtype=bool))]
    for version, answering, rows in parts:
        if not rows.any():
            continue
        part = frame if rows.all() else frame[rows]
        try:
            predicted, scored, latency_ms = timed_predict(answering, part, model)
        except Exception as error:
            if version is production:
                raise
            _failed_canaries.add(version.artifact_sha256)  # reported once; this process asks it no more
            record_canary_failure(store, model.name, version, f"{type(error).__name__}: {error}"[:500], len(part))
            version = production
            predicted, scored, latency_ms = timed_predict(pipeline, part, model)
        store.predictions.log_predictions(model.log_key, part, model.feature_names, prediction=predicted, score=scored,
                                          model_version=version.version, latency_ms=latency_ms)
        predictions[rows], scores[rows] = predicted, scored if scored is not None else None
    return predictions, scores


def serve_and_log(
    store: MonitoringStore, artifacts: ArtifactStore, model: ModelSettings, frame: pd.DataFrame
) -> tuple[ModelVersion, pd.DataFrame]:
    """Predict ``frame`` (each row a request) with the production model, or the canary for its share of
    request ids, append it to the prediction log, and let the candidate in shadow (if any) score the same
    requests."""
    production, pipeline = load_production(store, artifacts, model)
    predictions, scores = _answer(store, artifacts, model, production, pipeline, frame)
    shadow = store.registry.with_status(model.name, "shadow")
    if shadow is not None:
        try:
            shadow_pipeline = load_version(artifacts, shadow)
        except RetrainError as error:  # a corrupt shadow artifact never stops production serving
            logger.error("shadow model %s %s not loaded: %s", model.name, shadow.label, error)
        else:
            shadow_score(store, model, shadow, shadow_pipeline, frame)
    return production, frame.assign(prediction=predictions.tolist(), score=scores.tolist())
