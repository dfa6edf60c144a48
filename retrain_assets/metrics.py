"""Test metrics of a model: the numbers gates, baselines and the UI compare.

Classification: accuracy, precision, recall, F1 (for ``positive_label`` on binary tasks, macro-averaged
otherwise) and AUC-ROC when the model gives probabilities. Regression: MAE, RMSE, R2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn import metrics as skm

if TYPE_CHECKING:  # settings import this package's settings module: no import cycle at runtime
    from retrain_assets.settings import ModelSettings


CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "auc")
REGRESSION_METRICS = ("mae", "rmse", "r2")
HIGHER_IS_BETTER = {"accuracy": True, "precision": True, "recall": True, "f1": True, "auc": True,
                    "mae": False, "rmse": False, "r2": True}


def positive_scores(pipeline, features: pd.DataFrame, positive_label) -> np.ndarray | None:
    """Probability of the positive class (binary) or the full probability matrix (multiclass)."""
    if not hasattr(pipeline, "predict_proba"):
        return None
    probabilities = pipeline.predict_proba(features)
    classes = list(pipeline.classes_)
    if len(classes) == 2:
        column = classes.index(positive_label) if positive_label in classes else 1
        return probabilities[:, column]
    return probabilities


def predict_with_probabilities(pipeline, features: pd.DataFrame, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions and, for a classifier with probabilities, the probability matrix, in one pass through the
    model: scikit-learn classifiers predict the class of highest probability, so the labels come from the
    same probabilities instead of a second run."""
    if task == "classification" and hasattr(pipeline, "predict_proba"):
        probabilities = pipeline.predict_proba(features)
        return np.asarray(pipeline.classes_)[probabilities.argmax(axis=1)], probabilities
    return np.asarray(pipeline.predict(features)), None


def positive_column(pipeline, probabilities: np.ndarray, positive_label) -> np.ndarray:
    """The positive class's column of a probability matrix (the last class when it is not one of them)."""
    classes = list(pipeline.classes_)
    return probabilities[:, classes.index(positive_label) if positive_label in classes else len(classes) - 1]


def compute_metrics(y_true, y_pred, task: str, positive_label=1, scores=None, labels=None) -> dict[str, float]:
    """Metrics of predictions against truth; NaN-free (an undefined metric is left out, never NaN)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if task == "regression":
        y_true = y_true.astype(float)
        y_pred = y_pred.astype(float)
        out = {
            "mae": float(skm.mean_absolute_error(y_true, y_pred)),
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
        }
        if len(y_true) > 1 and np.ptp(y_true) > 0:
            out["r2"] = float(skm.r2_score(y_true, y_pred))
        return out
    classes = np.unique(np.concatenate([y_true, y_pred])) if labels is None else np.asarray(labels)
    binary = len(classes) <= 2 and positive_label in set(classes.tolist())
    average = "binary" if binary else "macro"
    kwargs = {"pos_label": positive_label} if binary else {}
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, average=average, zero_division=0, **kwargs)),
        "recall": float(skm.recall_score(y_true, y_pred, average=average, zero_division=0, **kwargs)),
        "f1": float(skm.f1_score(y_true, y_pred, average=average, zero_division=0, **kwargs)),
    }
    if scores is not None and len(np.unique(y_true)) > 1:
        scores = np.asarray(scores)
        if scores.ndim == 1:
            out["auc"] = float(skm.roc_auc_score((y_true == positive_label).astype(int), scores))
        elif labels is not None and scores.shape[1] == len(labels) and set(np.unique(y_true)) <= set(labels):
            out["auc"] = float(skm.roc_auc_score(y_true, scores, multi_class="ovr", labels=list(labels)))
    return out


def score_model(pipeline, frame: pd.DataFrame, model: ModelSettings) -> dict[str, float]:
    """Metrics of a fitted pipeline on a labeled frame (features + target)."""
    features = frame[model.feature_names]
    predictions = pipeline.predict(features)
    scores = None
    labels = None
    if model.task == "classification":
        scores = positive_scores(pipeline, features, model.positive_label)
        labels = list(getattr(pipeline, "classes_", [])) or None
    return compute_metrics(frame[model.target], predictions, model.task, model.positive_label, scores, labels)
