"""The scikit-learn Pipeline a model is trained as: preprocessing for its columns + the estimator.

The fitted Pipeline is the artifact that is versioned and served, so preprocessing (imputation,
encoding, scaling) travels with the model and serving needs nothing but the raw feature columns.
"""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from retrain_assets.errors import ConfigError
from retrain_assets.config.training import TrainingSettings

if TYPE_CHECKING:  # settings import this package's settings module: no import cycle at runtime
    from retrain_assets.settings import ModelSettings

MISSING_CATEGORY = "__missing__"
SMOTE_NEIGHBOURS = 5  # SMOTE's k_neighbors (its default): a class needs one row more than this to be oversampled


def as_categories(values):
    """Categories as plain strings, missing ones (None, NaN, pd.NA) as one explicit category.

    One representation whatever the log returned (object, pandas ``str``, numbers), so an unseen or
    missing category at serving time is handled by the encoder instead of crashing it. Column by column,
    ``str`` per value: the same strings as ``DataFrame.astype(object).where(...).astype(str)`` at a quarter
    of its cost on a 100-row request (pandas' frame-wide casts dominated it) and less on large frames.
    """
    frame = pd.DataFrame(values)
    categories = np.empty(frame.shape, dtype=object)
    for index in range(frame.shape[1]):
        column = frame.iloc[:, index].to_numpy(dtype=object)
        missing = pd.isna(column)
        categories[:, index] = [MISSING_CATEGORY if absent else str(value) for value, absent in zip(column, missing)]
    return categories


def _categorical_steps(encoder) -> Pipeline:
    return Pipeline(
        [("text", FunctionTransformer(as_categories, feature_names_out="one-to-one")), ("encode", encoder)]
    )


def _preprocessor(model: ModelSettings, tree_based: bool) -> ColumnTransformer:
    numeric = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
    if not tree_based:
        numeric.append(("scale", StandardScaler()))
    if tree_based:
        # HistGradientBoosting takes at most 255 categories: rarer ones are grouped; unknown ones map to -1,
        # which it treats as missing.
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1, max_categories=250
        )
    else:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    transformers = []
    if model.numeric_features:
        transformers.append(("numeric", Pipeline(numeric), model.numeric_features))
    if model.categorical_features:
        transformers.append(("categorical", _categorical_steps(encoder), model.categorical_features))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)


def default_params(model: ModelSettings, training: TrainingSettings) -> dict[str, Any]:
    """Estimator parameters before tuning: configured ``estimator.params`` over sensible defaults."""
    kind = model.estimator.type
    params: dict[str, Any] = {}
    if kind == "hist_gradient_boosting":
        params = {
            "max_iter": 200, "learning_rate": 0.1, "early_stopping": True,
            "n_iter_no_change": training.early_stopping_patience, "validation_fraction": 0.1,
        }
    elif kind == "random_forest":
        params = {"n_estimators": 200, "min_samples_leaf": 2, "n_jobs": 1}
    elif kind == "logistic_regression":
        params = {"C": 1.0, "max_iter": 1000}
    elif kind == "linear_regression":
        params = {"alpha": 1.0}
    if model.task == "classification" and training.class_weight and kind != "linear_regression":
        params["class_weight"] = training.class_weight
    params.update(model.estimator.params)
    return params


# Tuned knobs per estimator: name -> (kind, low, high, log scale). Everything else stays as configured.
SEARCH_SPACES: dict[str, dict[str, tuple[str, float, float, bool]]] = {
    "hist_gradient_boosting": {
        "learning_rate": ("float", 0.02, 0.3, True),
        "max_leaf_nodes": ("int", 8, 64, True),
        "min_samples_leaf": ("int", 5, 80, True),
        "l2_regularization": ("float", 1e-6, 1.0, True),
    },
    "random_forest": {
        "max_depth": ("int", 4, 24, False),
        "min_samples_leaf": ("int", 1, 20, True),
        "max_features": ("float", 0.3, 1.0, False),
    },
    "logistic_regression": {"C": ("float", 1e-3, 100.0, True)},
    "linear_regression": {"alpha": ("float", 1e-4, 100.0, True)},
}


def search_space(trial, model: ModelSettings) -> dict[str, Any]:
    """Optuna's suggestions for the estimator's tuned knobs."""
    suggested = {}
    for name, (kind, low, high, log) in SEARCH_SPACES[model.estimator.type].items():
        suggest = trial.suggest_int if kind == "int" else trial.suggest_float
        suggested[name] = suggest(name, low, high, log=log)
    return suggested


def build_pipeline(model: ModelSettings, params: dict[str, Any], seed: int, oversampling: str | None = None) -> Pipeline:
    """An unfitted Pipeline for ``model`` with estimator ``params``.

    ``oversampling: smote`` (classification) puts imbalanced-learn's SMOTE between the preprocessing and the
    estimator in its Pipeline (a subclass of scikit-learn's): samplers act only while fitting, so each CV
    fold oversamples its own training rows and the validation rows, the test rows and serving never see a
    synthetic row.
    """
    kind = model.estimator.type
    classification = model.task == "classification"
    tree_based = kind in ("hist_gradient_boosting", "random_forest")
    params = dict(params)
    try:
        estimator = _estimator(model, kind, classification, params, seed)
    except TypeError as error:  # unknown estimator parameter from the config
        raise ConfigError(f"model {model.name}: invalid estimator.params for {kind}: {error}") from error
    preprocess = _preprocessor(model, tree_based)
    if oversampling and classification:
        from imblearn.pipeline import Pipeline as SamplingPipeline  # only models that oversample need it

        return SamplingPipeline([("preprocess", preprocess), ("oversample", _sampler(model, tree_based, seed)),
                                 ("estimator", estimator)])
    return Pipeline([("preprocess", preprocess), ("estimator", estimator)])


def _sampler(model: ModelSettings, tree_based: bool, seed: int):
    """SMOTE on the preprocessed columns: numeric ones interpolated between a minority row and one of its
    nearest minority neighbours. Tree models' categories are ordinal codes (the last columns), which
    SMOTE-NC draws from the neighbours instead of interpolating; linear models' one-hot columns are
    interpolated (a mix of two neighbours' categories, within [0, 1])."""
    from imblearn.over_sampling import SMOTE, SMOTENC

    n_numeric, n_categorical = len(model.numeric_features), len(model.categorical_features)
    if tree_based and n_categorical and n_numeric:
        return SMOTENC(categorical_features=list(range(n_numeric, n_numeric + n_categorical)),
                       k_neighbors=SMOTE_NEIGHBOURS, random_state=seed)
    return SMOTE(k_neighbors=SMOTE_NEIGHBOURS, random_state=seed)


def _estimator(model: ModelSettings, kind: str, classification: bool, params: dict[str, Any], seed: int):
    if kind == "hist_gradient_boosting":
        n_numeric = len(model.numeric_features)
        mask = [False] * n_numeric + [True] * len(model.categorical_features)
        params.setdefault("categorical_features", mask if any(mask) else None)
        cls = HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
        return cls(random_state=seed, **params)
    if kind == "random_forest":
        cls = RandomForestClassifier if classification else RandomForestRegressor
        return cls(random_state=seed, **params)
    if kind == "logistic_regression":
        if not classification:
            raise ConfigError(f"model {model.name}: logistic_regression is a classifier; use linear_regression for regression")
        return LogisticRegression(random_state=seed, **params)
    if classification:
        raise ConfigError(f"model {model.name}: linear_regression is a regressor; use logistic_regression for classification")
    return Ridge(**params)  # "linear_regression": L2-regularized, so tuning has a knob and collinearity is harmless
