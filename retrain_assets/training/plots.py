"""Pictures of a candidate: how its tuning went, and how it does on its held-out test rows.

The numbers (CV scores, test metrics) say how good the candidate is; the pictures say how to read them:
whether tuning still improved at its last trials (more trials might help) or flattened early, and where
the model errs (a ROC curve and a confusion matrix for a classifier, residuals against predictions for a
regressor). scikit-learn's own displays draw them, so they read as users know them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import ConfusionMatrixDisplay, PredictionErrorDisplay, RocCurveDisplay

from retrain_assets.plotting import drawing, plt, png_of
from retrain_assets.metrics import positive_scores

if TYPE_CHECKING:
    from retrain_assets.settings import ModelSettings


def tuning_picture(trials: list[dict], metric: str) -> bytes | None:
    """Each trial's CV score by trial number and the best so far; None without tuning."""
    scored = [t for t in trials if t.get("value") is not None]
    if not scored:
        return None
    numbers = np.array([t["number"] for t in scored])
    values = np.array([t["value"] for t in scored], dtype=float)
    figure, ax = plt.subplots(figsize=(6, 3.2))
    with drawing(figure):
        ax.scatter(numbers, values, s=18, color="#4C78A8", label="trial")
        ax.step(numbers, np.maximum.accumulate(values), where="post", color="#E45756", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"CV {metric}")
        ax.set_title(f"tuning history ({len(scored)} trials)", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    return png_of(figure)


def evaluation_picture(pipeline, test: pd.DataFrame, model: ModelSettings) -> bytes | None:
    """ROC curve and confusion matrix (classification) or residuals and predicted vs actual (regression)
    on the test rows; None without test rows."""
    if test.empty:
        return None
    features, actual = test[model.feature_names], test[model.target]
    predicted = pipeline.predict(features)
    if model.task == "regression":
        figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
        with drawing(figure):
            PredictionErrorDisplay.from_predictions(actual, predicted, kind="residual_vs_predicted", ax=left,
                                                    random_state=0)
            PredictionErrorDisplay.from_predictions(actual, predicted, kind="actual_vs_predicted", ax=right,
                                                    random_state=0)
            left.set_title("residuals vs predicted", fontsize=10)
            right.set_title("actual vs predicted", fontsize=10)
        return png_of(figure)
    scores = positive_scores(pipeline, features, model.positive_label)
    binary = scores is not None and np.ndim(scores) == 1 and actual.nunique() == 2
    figure, axes = plt.subplots(1, 2 if binary else 1, figsize=(9 if binary else 4.8, 3.8), squeeze=False)
    with drawing(figure):
        matrix_ax = axes[0, -1]
        if binary:
            RocCurveDisplay.from_predictions(actual, scores, pos_label=model.positive_label, ax=axes[0, 0],
                                             name=model.name, plot_chance_level=True)
            axes[0, 0].set_title("ROC curve (test rows)", fontsize=10)
        ConfusionMatrixDisplay.from_predictions(actual, predicted, ax=matrix_ax, colorbar=False)
        matrix_ax.set_title("confusion matrix (test rows)", fontsize=10)
    return png_of(figure)
