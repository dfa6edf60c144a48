"""Candidate training: a real, tuned, cross-validated pipeline for classification and regression."""

import numpy as np
import pandas as pd
import pytest

from retrain_assets.errors import ConfigError, DataError
from retrain_assets.settings import settings_from_dict
from retrain_assets.training import DatasetSplit, split_dataset, train_candidate
from retrain_assets.training.train import TrainingBudgetExceeded
from tests.training.conftest import churn_model, labeled_traffic


def regression_model(**overrides):
    return settings_from_dict({"models": [{
        "name": "load", "task": "regression", "target": "y",
        "features": [{"name": "x1", "type": "numeric"}, {"name": "x2", "type": "numeric"},
                     {"name": "zone", "type": "categorical"}],
        "training": {"tuning_trials": 0}, **overrides}]}).models[0]


def regression_frame(rows=1200, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(size=rows), "x2": rng.uniform(0, 5, rows),
                          "zone": rng.choice(["n", "s", "e"], rows)})
    frame["y"] = 3 * frame.x1 - 2 * frame.x2 + frame.zone.map({"n": 0.0, "s": 4.0, "e": -4.0}) + rng.normal(0, 0.5, rows)
    return frame


def test_classifier_learns_and_reports_cv_and_test_metrics(model):
    split = split_dataset(labeled_traffic(3000), model, model.dataset, seed=0)
    trained = train_candidate(split, model, model.training)
    assert len(trained.cv_scores) == model.training.cv_folds and trained.cv_metric == "f1"
    assert trained.metrics["accuracy"] > 0.8 and trained.metrics["auc"] > 0.85
    assert set(trained.metrics) == {"accuracy", "precision", "recall", "f1", "auc"}
    assert trained.params["early_stopping"] is True and trained.params["n_iter_no_change"] == 5
    assert trained.tuning_trials == 0


def test_tuning_runs_seeded_optuna_trials_and_is_reproducible():
    model = churn_model(training={"tuning_trials": 3, "cv_folds": 3})
    split = split_dataset(labeled_traffic(1500), model, model.dataset, seed=0)
    first = train_candidate(split, model, model.training)
    second = train_candidate(split, model, model.training)
    assert first.tuning_trials == 3 and len(first.trials) == 3
    assert first.params == second.params and first.cv_scores == second.cv_scores
    assert first.trials[0]["params"]["learning_rate"] == 0.1  # the configured parameters are tried first
    assert first.cv_mean == max(t["value"] for t in first.trials)


def test_regressor_and_other_estimators():
    for estimator in ("hist_gradient_boosting", "random_forest", "linear_regression"):
        model = regression_model(estimator={"type": estimator, "params": {"n_estimators": 30} if estimator == "random_forest" else {}})
        split = split_dataset(regression_frame(), model, model.dataset, seed=0)
        trained = train_candidate(split, model, model.training)
        assert set(trained.metrics) == {"mae", "rmse", "r2"}
        assert trained.metrics["r2"] > 0.9, (estimator, trained.metrics)


def test_logistic_regression_and_class_weights():
    model = churn_model(estimator={"type": "logistic_regression"}, training={"tuning_trials": 0, "class_weight": "balanced"})
    split = split_dataset(labeled_traffic(1500), model, model.dataset, seed=0)
    trained = train_candidate(split, model, model.training)
    assert trained.params["class_weight"] == "balanced" and trained.metrics["accuracy"] > 0.75


def test_sample_weights_change_the_fit(model):
    split = split_dataset(labeled_traffic(1500), model, model.dataset, seed=0)
    weights = np.where(np.arange(len(split.train_and_validation)) % 2 == 0, 5.0, 1.0)
    plain = train_candidate(split, model, model.training)
    weighted = train_candidate(split, model, model.training, sample_weight=weights)
    assert plain.cv_scores != weighted.cv_scores
    with pytest.raises(DataError, match="sample_weight"):
        train_candidate(split, model, model.training, sample_weight=weights[:-1])


def test_serving_survives_missing_values_and_unseen_categories(model):
    split = split_dataset(labeled_traffic(1000), model, model.dataset, seed=0)
    pipeline = train_candidate(split, model, model.training).pipeline
    odd = split.test[model.feature_names].head(3).copy()
    odd["tenure_months"] = odd["tenure_months"].astype(object)
    odd.loc[odd.index[0], "tenure_months"] = None
    odd.loc[odd.index[1], "contract"] = "lifetime"
    odd.loc[odd.index[2], "region"] = None
    assert len(pipeline.predict(odd)) == 3


def test_clear_errors_for_unusable_training_data(model):
    single_class = labeled_traffic(300).assign(churned=0)
    split = DatasetSplit(single_class.iloc[:200], single_class.iloc[200:250], single_class.iloc[250:])
    with pytest.raises(DataError, match="single class"):
        train_candidate(split, model, model.training)
    tiny = labeled_traffic(6)
    with pytest.raises(DataError, match="too few"):
        train_candidate(DatasetSplit(tiny, tiny.iloc[0:0], tiny), model, model.training)
    bad = churn_model(estimator={"type": "hist_gradient_boosting", "params": {"no_such_knob": 3}})
    with pytest.raises(ConfigError, match="no_such_knob"):
        train_candidate(split_dataset(labeled_traffic(300), bad, bad.dataset, seed=0), bad, bad.training)


def test_a_spent_training_budget_fails_with_a_message_that_names_it_and_the_fixes():
    """A budget of a nanosecond is spent by any work at all, so the outcome does not depend on the machine's
    speed: Optuna stops starting trials (at most the one already under way finishes, not the 4 asked for)
    and no model is fitted or returned; with fixed parameters the check before the final fit stops it."""
    model = churn_model(training={"tuning_trials": 4, "cv_folds": 3, "training_budget_s": 1e-9})
    split = split_dataset(labeled_traffic(600), model, model.dataset, seed=0)
    heard = []
    with pytest.raises(TrainingBudgetExceeded) as raised:
        train_candidate(split, model, model.training, on_trial=heard.append)
    error = raised.value
    assert error.trials == len(heard) <= 1 and error.budget_s == 1e-9 and error.elapsed_s > error.budget_s
    assert error.stage == "after tuning and cross-validation, before the final fit"
    message = str(error)
    for fragment in ("model churn", "training.training_budget_s = 1e-09 s", "fewer trials", "training.tuning_trials",
                     "smaller window", "dataset.window_rows", "raise training.training_budget_s"):
        assert fragment in message, (fragment, message)
    fixed = churn_model(training={"tuning_trials": 0, "cv_folds": 3, "training_budget_s": 1e-9})
    with pytest.raises(TrainingBudgetExceeded, match="0 tuning trial"):
        train_candidate(split, fixed, fixed.training)
    enough = churn_model(training={"tuning_trials": 2, "cv_folds": 3})
    assert enough.training.training_budget_s == 3600.0
    assert train_candidate(split, enough, enough.training).tuning_trials == 2


def imbalanced_model(estimator, class_weight, oversampling=None):
    return settings_from_dict({"models": [{
        "name": "rare", "task": "classification", "target": "y",
        "features": [{"name": "x1", "type": "numeric"}, {"name": "x2", "type": "numeric"}],
        "estimator": {"type": estimator},
        "training": {"tuning_trials": 0, "cv_folds": 3, "class_weight": class_weight,
                     "oversampling": oversampling}}]}).models[0]


def imbalanced_frame(rows=3000, seed=0):
    """5 % positives whose features overlap the negatives': an unweighted model mostly says 'negative'."""
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.05).astype(int)
    frame = pd.DataFrame({"x1": rng.normal(y * 1.5, 1.0), "x2": rng.normal(y * 1.0, 1.0), "y": y})
    return frame


@pytest.mark.parametrize("estimator", ["hist_gradient_boosting", "logistic_regression"])
def test_balanced_class_weight_raises_the_minority_recall(estimator):
    """class_weight: balanced reaches the estimator as its own parameter and moves the decision towards the
    rare class: the positives' recall on the same test rows goes up (seeded, so the same every run)."""
    frame = imbalanced_frame()
    recalls = {}
    for weight in (None, "balanced"):
        model = imbalanced_model(estimator, weight)
        split = split_dataset(frame, model, model.dataset, seed=0)
        trained = train_candidate(split, model, model.training)
        assert trained.pipeline.named_steps["estimator"].class_weight == weight
        recalls[weight] = trained.metrics["recall"]
    assert recalls["balanced"] > recalls[None] + 0.3, recalls


def test_smote_oversamples_only_the_training_rows_and_raises_the_minority_recall():
    """oversampling: smote makes the training rows of the final fit balanced (the sampler's own count of the
    rows it added), leaves predictions one per row, and finds more of the rare positives than no weighting."""
    frame = imbalanced_frame()
    plain = imbalanced_model("logistic_regression", None)
    smote = imbalanced_model("logistic_regression", None, "smote")
    split = split_dataset(frame, smote, smote.dataset, seed=0)
    trained = train_candidate(split, smote, smote.training)
    counts = split.train_and_validation["y"].value_counts()
    assert trained.pipeline.named_steps["oversample"].sampling_strategy_ == {1: int(counts[0] - counts[1])}
    assert len(trained.pipeline.predict(split.test[smote.feature_names])) == len(split.test)
    baseline = train_candidate(split, plain, plain.training)
    assert trained.metrics["recall"] > baseline.metrics["recall"] + 0.3, (trained.metrics, baseline.metrics)


def test_smote_with_categories_serves_odd_rows_and_refuses_sample_weights():
    """Tree models' ordinal-coded categories are drawn by SMOTE-NC (never interpolated into codes that mean
    nothing); the fitted pipeline still scores missing values and unseen categories; recency weights and
    synthetic rows do not mix, which is said before any training."""
    model = churn_model(training={"tuning_trials": 0, "cv_folds": 3, "oversampling": "smote"})
    split = split_dataset(labeled_traffic(1500), model, model.dataset, seed=0)
    pipeline = train_candidate(split, model, model.training).pipeline
    assert type(pipeline.named_steps["oversample"]).__name__ == "SMOTENC"
    odd = split.test[model.feature_names].head(2).copy()
    odd.loc[odd.index[0], "contract"] = "lifetime"
    odd.loc[odd.index[1], "region"] = None
    assert len(pipeline.predict(odd)) == 2
    with pytest.raises(ConfigError, match="oversampling cannot be combined with sample weights"):
        train_candidate(split, model, model.training, sample_weight=np.ones(len(split.train_and_validation)))


def test_smote_says_when_the_rare_class_is_too_small_for_its_neighbours():
    """9 positives in 3 folds leave 6 per fold's training part: just enough for 5 neighbours; 8 leave 5."""
    model = imbalanced_model("logistic_regression", None, "smote")
    frame = imbalanced_frame(400)
    positives, negatives = frame[frame.y == 1], frame[frame.y == 0].head(150)
    enough = pd.concat([negatives, positives.head(9)])
    train_candidate(DatasetSplit(enough, enough.iloc[0:0], enough), model, model.training)
    few = pd.concat([negatives, positives.head(8)])
    with pytest.raises(DataError, match="rarest class has 8 training rows, about 5 per CV fold"):
        train_candidate(DatasetSplit(few, few.iloc[0:0], few), model, model.training)


def test_categories_are_the_same_strings_whatever_the_column_types():
    """as_categories (column by column, for speed on the request path) gives exactly what the frame-wide
    pandas cast gives: the fitted encoders of models already in production see the same strings."""
    import numpy as np
    import pandas as pd

    from retrain_assets.training.pipeline import MISSING_CATEGORY, as_categories

    frame = pd.DataFrame({
        "object": ["x", None, "y", np.nan], "text": pd.Series(["p", None, "q", "p"], dtype="str"),
        "float": [1.5, 2.0, np.nan, 3.0], "int": pd.array([1, None, 2, 3], dtype="Int64"),
        "category": pd.Categorical(["m", None, "n", "m"]), "bool": [True, False, True, False],
    })
    expected = frame.astype(object).where(frame.notna(), MISSING_CATEGORY).astype(str).to_numpy()
    result = as_categories(frame)
    assert result.dtype == object and (result == expected).all()
    assert all(type(value) is str for value in result.ravel())
    assert result[1].tolist() == [MISSING_CATEGORY, MISSING_CATEGORY, "2.0", MISSING_CATEGORY, MISSING_CATEGORY, "False"]


@pytest.mark.parametrize("estimator", ["hist_gradient_boosting", "logistic_regression"])
def test_the_served_frame_predicts_exactly_what_the_training_frame_does(estimator):
    """Serving builds its frame from validated JSON rows with object category columns and column labels (not
    pandas' inferred string dtype: a round trip the pipeline's first step would undo, and a slower column
    selection); every prediction must be the same as
    on the frame the model was trained on, missing and unseen values included."""
    from retrain_assets.serving.log_writer import features_frame

    model = churn_model(estimator={"type": estimator})
    data = labeled_traffic(1500)
    trained = train_candidate(split_dataset(data, model, model.dataset, seed=0), model, model.training)
    frame = data[model.feature_names].head(300).copy()
    frame.loc[frame.index[:20], "region"] = None
    frame.loc[frame.index[20:40], "contract"] = "never-seen"
    frame.loc[frame.index[40:60], "tenure_months"] = np.nan
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    served = features_frame(model, rows)
    assert [str(served[name].dtype) for name in model.categorical_features] == ["object"] * len(model.categorical_features)
    assert served.columns.dtype == object  # labels too: Arrow-backed ones cost every column selection a take
    assert np.array_equal(trained.pipeline.predict_proba(served), trained.pipeline.predict_proba(frame))
