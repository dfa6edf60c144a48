"""Training a candidate: seeded Optuna tuning with k-fold CV on train+validation, then one final fit.

The test part of the split is never seen here: it is kept for the evaluation gates, where the candidate
and the production model are scored on the same unseen rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, make_scorer, mean_squared_error
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline

from retrain_assets.errors import ConfigError, DataError, RetrainError
from retrain_assets.training.dataset import DatasetSplit
from retrain_assets.metrics import score_model
from retrain_assets.training.pipeline import SEARCH_SPACES, SMOTE_NEIGHBOURS, build_pipeline, default_params, search_space
from retrain_assets.config.training import TrainingSettings

if TYPE_CHECKING:  # settings import this package's settings module: no import cycle at runtime
    from retrain_assets.settings import ModelSettings


class TrainingBudgetExceeded(RetrainError):
    """The whole training (tuning plus final fit) took longer than ``training.training_budget_s``.

    The message names the budget, where it ran out and what to do; ``budget_s``, ``elapsed_s``, ``stage``
    and ``trials`` say the same as numbers (the candidate step shows them as the failure's metadata).
    """

    def __init__(self, model: str, budget_s: float, elapsed_s: float, stage: str, trials: int):
        self.budget_s, self.elapsed_s, self.stage, self.trials = budget_s, elapsed_s, stage, trials
        super().__init__(
            f"model {model}: training exceeded its time budget training.training_budget_s = {budget_s:g} s "
            f"({elapsed_s:.2f} s spent, {stage}, {trials} tuning trial(s) done); run fewer trials "
            "(training.tuning_trials, training.tuning_timeout_s), train on a smaller window (dataset.strategy: "
            "sliding with dataset.window_rows / window_days), or raise training.training_budget_s"
        )


@dataclass
class TrainedCandidate:
    """A fitted pipeline with what it took to get it and how well it did."""

    pipeline: Pipeline
    params: dict[str, Any]
    cv_scores: list[float]
    cv_mean: float | None
    cv_metric: str
    metrics: dict[str, float]
    train_seconds: float
    tuning_trials: int
    trials: list[dict[str, Any]] = field(default_factory=list)


def cv_metric(model: ModelSettings) -> tuple[str, Any]:
    """The score tuning maximizes: F1 of the positive class (binary), macro F1, or negative RMSE."""
    if model.task == "regression":
        return "neg_rmse", make_scorer(lambda y, p: -float(np.sqrt(mean_squared_error(y, p))))
    return "f1", make_scorer(_f1, positive_label=model.positive_label)


def _f1(y_true, y_pred, positive_label) -> float:
    classes = set(np.unique(y_true).tolist())
    if len(classes) <= 2 and positive_label in classes | set(np.unique(y_pred).tolist()):
        return float(f1_score(y_true, y_pred, pos_label=positive_label, zero_division=0))
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def _folds(model: ModelSettings, target: pd.Series, settings: TrainingSettings):
    if model.task == "classification":
        smallest = int(target.value_counts().min())
        if smallest >= settings.cv_folds:
            return StratifiedKFold(settings.cv_folds, shuffle=True, random_state=settings.seed)
    return KFold(settings.cv_folds, shuffle=True, random_state=settings.seed)


def cross_validate_params(
    model: ModelSettings, params: dict, data: pd.DataFrame, settings: TrainingSettings, sample_weight
) -> list[float]:
    """CV scores of ``params`` on ``data`` (weights follow their rows into each fold)."""
    _, scorer = cv_metric(model)
    fit_params = {} if sample_weight is None else {"estimator__sample_weight": np.asarray(sample_weight, dtype=float)}
    result = cross_validate(
        build_pipeline(model, params, settings.seed, settings.oversampling),
        data[model.feature_names],
        data[model.target],
        cv=_folds(model, data[model.target], settings),
        scoring=scorer,
        params=fit_params,
        error_score="raise",
    )
    return [float(s) for s in result["test_score"]]


def _tune(model: ModelSettings, base: dict, data: pd.DataFrame, settings: TrainingSettings, sample_weight,
          on_trial: Callable[[dict], None] | None = None, timeout: float | None = None):
    """Optuna's study: stops starting trials after ``timeout`` seconds (what is left of the training budget,
    at most ``tuning_timeout_s``). Returns (params, cv scores, finished trials); no finished trial: no params."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)

    def objective(trial) -> float:
        scores = cross_validate_params(model, {**base, **search_space(trial, model)}, data, settings, sample_weight)
        trial.set_user_attr("cv_scores", scores)
        return float(np.mean(scores))

    def summary(trial) -> dict[str, Any]:
        seconds = trial.duration.total_seconds() if trial.duration is not None else None
        return {"number": trial.number, "value": trial.value, "params": trial.params, "seconds": seconds}

    def report(study, trial) -> None:  # called by Optuna as each trial finishes
        if on_trial is not None and trial.value is not None:
            on_trial({**summary(trial), "best_value": study.best_value, "of": settings.tuning_trials})

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed))
    study.enqueue_trial({k: v for k, v in base.items() if k in SEARCH_SPACES[model.estimator.type]})  # the configured params first
    study.optimize(objective, n_trials=settings.tuning_trials, timeout=timeout, callbacks=[report])
    trials = [summary(t) for t in study.trials if t.value is not None]
    if not trials:
        return None, [], trials
    best = study.best_trial
    return {**base, **best.params}, best.user_attrs["cv_scores"], trials


def train_candidate(
    split: DatasetSplit, model: ModelSettings, settings: TrainingSettings, sample_weight=None,
    on_trial: Callable[[dict], None] | None = None,
) -> TrainedCandidate:
    """Tune (``settings.tuning_trials`` Optuna trials, seeded, time-boxed), cross-validate and fit.

    The whole of it (tuning plus final fit) must end within ``settings.training_budget_s``: Optuna stops
    starting trials when the budget is spent (its ``timeout``; a running trial is not interrupted), and the
    budget is checked before and after the final fit, raising :class:`TrainingBudgetExceeded`. A fit that
    cannot be interrupted is judged when it ends, so a model trained over budget is never returned.

    ``sample_weight`` is aligned with ``split.train_and_validation`` (train rows, then validation rows).
    With ``tuning_trials = 0`` the configured parameters are cross-validated and fitted as they are.
    ``on_trial`` hears about each finished trial (number, value, params, seconds, best value so far, of how
    many): tuning is the long part of a retrain, and a run log that shows it moving says it is alive.
    """
    data = split.train_and_validation
    if len(data) < settings.cv_folds * 2:
        raise DataError(
            f"model {model.name}: {len(data)} training rows are too few for {settings.cv_folds}-fold CV; "
            "collect more labeled rows or lower training.cv_folds"
        )
    if data[model.target].isna().any():
        raise DataError(
            f"model {model.name}: {int(data[model.target].isna().sum())} training rows have no label; "
            "fix the label feed (the labels quality check reports them)"
        )
    if model.task == "classification" and data[model.target].nunique() < 2:
        raise DataError(f"model {model.name}: the training rows hold a single class; a classifier needs two or more")
    if sample_weight is not None and len(sample_weight) != len(data):
        raise DataError(f"sample_weight has {len(sample_weight)} values for {len(data)} training rows")
    if settings.oversampling and model.task == "classification" and sample_weight is not None:
        raise ConfigError(
            f"model {model.name}: training.oversampling cannot be combined with sample weights (dataset.strategy: "
            "incremental weighs recent rows): the synthetic rows it adds have no weight; use training.class_weight: "
            "balanced with weights, or another dataset.strategy"
        )
    if settings.oversampling and model.task == "classification":
        rarest = int(data[model.target].value_counts().min())
        per_fold = rarest - -(-rarest // settings.cv_folds)  # the rarest class's rows in each CV fold's training part
        if per_fold < SMOTE_NEIGHBOURS + 1:
            raise DataError(
                f"model {model.name}: the rarest class has {rarest} training rows, about {per_fold} per CV fold: too "
                f"few for SMOTE, which interpolates between a row and its {SMOTE_NEIGHBOURS} nearest neighbours of "
                f"the same class (needs {SMOTE_NEIGHBOURS + 1}); collect more labeled rows, lower training.cv_folds, "
                "or use training.class_weight: balanced instead of training.oversampling"
            )
    started = time.perf_counter()
    budget = settings.training_budget_s

    def within_budget(stage: str, spent: bool = False) -> None:
        elapsed = time.perf_counter() - started
        if spent or elapsed > budget:
            raise TrainingBudgetExceeded(model.name, budget, elapsed, stage, len(trials))

    base = default_params(model, settings)
    trials: list[dict] = []
    if settings.tuning_trials > 0:
        timeout = max(min(settings.tuning_timeout_s, budget - (time.perf_counter() - started)), 0.0)
        params, scores, trials = _tune(model, base, data, settings, sample_weight, on_trial, timeout)
    else:
        params, scores = base, cross_validate_params(model, base, data, settings, sample_weight)
    within_budget("after tuning and cross-validation, before the final fit", spent=params is None)  # None: no trial could finish
    pipeline = build_pipeline(model, params, settings.seed, settings.oversampling)
    fit_params = {} if sample_weight is None else {"estimator__sample_weight": np.asarray(sample_weight, dtype=float)}
    pipeline.fit(data[model.feature_names], data[model.target], **fit_params)
    within_budget("after the final fit")
    seconds = time.perf_counter() - started
    metric_name, _ = cv_metric(model)
    return TrainedCandidate(
        pipeline=pipeline,
        params={k: v for k, v in params.items() if k != "categorical_features"},
        cv_scores=scores,
        cv_mean=float(np.mean(scores)) if scores else None,
        cv_metric=metric_name,
        metrics=score_model(pipeline, split.test, model) if len(split.test) else {},
        train_seconds=seconds,
        tuning_trials=len(trials),
        trials=trials,
    )
