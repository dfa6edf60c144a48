"""Gathering a decision's evidence from plain frames: what the monitoring run and the replay both do.

The caller brings what it read (recent inputs, rows labeled since the production model's dataset, counts)
and the production model with its reference profile and pack; :func:`gather_evidence` runs the model and
the drift tests on them. A piece that cannot be computed (no recent inputs, a column the model no longer
receives, a model that cannot score) becomes an ``unavailable`` entry with the reason, never an
exception: the decision says what it could not judge and rests on the rest.
"""

import numpy as np
import pandas as pd

from retrain_assets.errors import RetrainError
from retrain_assets.metrics import positive_column, predict_with_probabilities
from retrain_assets.monitoring.dataset_drift import detect_drift
from retrain_assets.monitoring.decision import Evidence, Outcomes
from retrain_assets.monitoring.profiles import ReferenceProfile
from retrain_assets.monitoring.reference_pack import ReferencePack, retrain_window_drift


def _missing(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if c not in frame.columns]


def _new_rows_share(new_rows: int, training_rows: int | None, dataset) -> float:
    """The share of a retrain's training window that the rows labeled since production's training would
    make up: a sliding window of about production's size drops as many old rows as it gains; a full
    history keeps them all; an incremental one weighs the recent rows ``recent_weight`` times."""
    if not training_rows or training_rows <= 0:
        return 1.0
    if dataset.strategy == "sliding":
        return min(1.0, new_rows / training_rows)
    weight = dataset.recent_weight if dataset.strategy == "incremental" else 1.0
    return weight * new_rows / (training_rows + weight * new_rows)


def gather_evidence(
    model,
    *,
    pipeline,
    profile: ReferenceProfile | None,
    pack: ReferencePack | None,
    recent: pd.DataFrame | None,
    labeled: pd.DataFrame | None,
    newest_batch: int = 0,
    baseline: dict | None = None,
    new_labels: int | None = None,
    training_rows: int | None = None,
    model_age_days: float | None = None,
    previous_warnings: tuple[str, ...] = (),
    days_since_verified: float | None = None,
) -> Evidence:
    """``model``: ModelSettings; ``recent``: the newest inputs (features, oldest first); ``labeled``: rows
    labeled since the production model's dataset (or since the last failed retrain), features and target,
    in the order their labels arrived; ``newest_batch``: how many of its last rows arrived since the
    previous decision."""
    features = model.feature_names
    evidence = Evidence(model.task, pack=pack, baseline=baseline, new_labels=new_labels, training_rows=training_rows,
                        model_age_days=model_age_days, previous_warnings=tuple(previous_warnings),
                        days_since_verified=days_since_verified)
    if recent is None or recent.empty:
        evidence.unavailable["drift"] = "no recent inputs in the data source"
    elif _missing(recent, features):
        evidence.unavailable["drift"] = f"the recent inputs lack the columns {_missing(recent, features)}"
    else:
        if profile is None:
            evidence.unavailable["drift"] = "no reference profile of the production model's training data"
        else:
            try:
                evidence.drift = detect_drift(profile, recent[features], model.drift, model.numeric_features,
                                              model.categorical_features)
            except RetrainError as error:
                evidence.unavailable["drift"] = str(error)
        cbpe = model.task == "classification" and pack is not None and pack.cbpe is not None
        outputs = pack.predictions if pack is not None else None
        if cbpe or outputs is not None:
            try:
                predictions, probabilities = predict_with_probabilities(pipeline, recent[features], model.task)
            except Exception as error:  # noqa: BLE001 - a model that cannot score is unavailable evidence
                why = f"the production model cannot score the recent inputs ({error})"
                evidence.unavailable.update({"estimated_performance": why, "prediction_drift": why})
            else:
                evidence.recent_scores = probabilities if cbpe else None
                if outputs is not None:
                    evidence.recent_outputs = (positive_column(pipeline, probabilities, model.positive_label)
                                               if outputs.kind == "score" and probabilities is not None else predictions)
    if labeled is None or labeled.empty:
        evidence.unavailable["performance"] = "no rows labeled since the production model's training dataset"
    elif _missing(labeled, [*features, model.target]):
        evidence.unavailable["performance"] = f"the labeled rows lack the columns {_missing(labeled, [*features, model.target])}"
    else:
        actuals = labeled[model.target].to_numpy()
        keep = pd.notna(actuals)
        if model.task == "regression":
            actuals = pd.to_numeric(pd.Series(actuals), errors="coerce").to_numpy(dtype=float)
            keep = np.isfinite(actuals)
        rows = labeled[keep]
        try:
            predictions, probabilities = predict_with_probabilities(pipeline, rows[features], model.task)
        except Exception as error:  # noqa: BLE001
            evidence.unavailable["performance"] = f"the production model cannot score the labeled rows ({error})"
        else:
            scores = None if probabilities is None else positive_column(pipeline, probabilities, model.positive_label) \
                if probabilities.shape[1] == 2 else probabilities
            if model.task == "regression":
                predictions = predictions.astype(float)
            newest = int(keep[len(keep) - newest_batch:].sum()) if newest_batch > 0 else 0
            evidence.outcomes = Outcomes(predictions, actuals[keep], scores, newest)
        if profile is not None and pack is not None:
            new_rows = rows[features]
            if model.dataset.strategy == "sliding" and training_rows and len(new_rows) > training_rows:
                new_rows = new_rows.iloc[-training_rows:]  # a sliding window keeps only the newest of them
            share = _new_rows_share(len(new_rows), training_rows, model.dataset)
            try:
                evidence.retrain_window_drift = retrain_window_drift(profile, new_rows, share, pack.importances)
            except (RetrainError, ValueError, TypeError) as error:
                evidence.unavailable["retrain_window"] = f"the window a retrain would train on: {error}"
    return evidence
