"""Evaluation gates: a worse model never passes, a good one does, and every verdict says why."""

import numpy as np
import pandas as pd
import pytest

from retrain_assets.simulate import TrafficScenario
from retrain_assets.training import GATE_NAMES, evaluate_gates, split_dataset, train_candidate
from retrain_assets.training.comparison import metric_shortfalls, paired_loss_test
from retrain_assets.training.gates import fairness_gate, group_disparity, significance_gate, size_gate
from retrain_assets.config.training import GateSettings
from tests.training.conftest import churn_model, labeled_traffic


@pytest.fixture(scope="module")
def trained():
    model = churn_model()
    split = split_dataset(labeled_traffic(4000, seed=1), model, model.dataset, seed=0)
    good = train_candidate(split, model, model.training).pipeline
    poisoned = labeled_traffic(4000, seed=2, scenario=TrafficScenario(poison_fraction=0.5))
    bad = train_candidate(split_dataset(poisoned, model, model.dataset, seed=0), model, model.training).pipeline
    return model, split, good, bad


def by_name(results):
    assert [r.name for r in results] == list(GATE_NAMES)
    return {r.name: r for r in results}


def test_first_model_is_judged_on_absolute_gates_and_smoke_only(trained):
    model, split, good, _ = trained
    results = by_name(evaluate_gates(good, None, split.test, model, model.gates, 1000, None, seed=0))
    assert all(r.passed for r in results.values()), [r.message for r in results.values() if not r.passed]
    assert not results["relative_to_production"].applicable and not results["size"].applicable
    assert results["absolute_thresholds"].applicable and results["smoke_test"].applicable


def test_a_poisoned_candidate_is_rejected_with_reasons(trained):
    model, split, good, bad = trained
    results = by_name(evaluate_gates(bad, good, split.test, model, model.gates, 1000, 1000, seed=0))
    for name in ("absolute_thresholds", "relative_to_production", "significance"):
        assert not results[name].passed, name
    assert "(needs >= 0.8" in results["absolute_thresholds"].message  # names the metric and its floor
    relative = results["relative_to_production"]
    assert relative.value["production_f1"] > relative.value["candidate_f1"]
    assert relative.value["f1_margin_upper"] < 0 and "f1_margin_upper" in relative.threshold
    assert "worse than production with confidence" in relative.message
    assert results["significance"].value["p_value"] < 0.05 and results["significance"].value["error_rate_difference"] > 0.02
    point = churn_model(gates={"comparison": "point"})
    results = by_name(evaluate_gates(bad, good, split.test, point, point.gates, 1000, 1000, seed=0))
    assert not results["relative_to_production"].passed and "f1" in results["relative_to_production"].threshold
    assert results["significance"].value["ci_high"] < 0


def test_an_equal_candidate_passes_against_production(trained):
    model, split, good, _ = trained
    for comparison in ("significance", "point"):
        settings = churn_model(gates={"comparison": comparison})
        results = by_name(evaluate_gates(good, good, split.test, settings, settings.gates, 1000, 1000, seed=0))
        assert all(r.passed for r in results.values()), [r.message for r in results.values() if not r.passed]
    assert results["significance"].value["ci_low"] == 0.0


def test_a_comparison_gate_rejects_only_what_is_worse_with_confidence():
    """Significance mode: an equal candidate on 200 rows passes (point mode asked it to prove parity and
    failed it); a clearly worse one fails on any size; a precision/recall trade-off is not 'worse'."""
    gates = GateSettings()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20_000)
    flip = lambda share: np.where(rng.random(len(y)) < share, 1 - y, y)  # noqa: E731
    production = flip(0.10)
    equal_small = flip(0.10)[:200]
    assert not paired_loss_test(y[:200], equal_small, production[:200], "classification", 0.02, 0.95).worse
    assert not any(s.failed for s in metric_shortfalls(y[:200], equal_small, production[:200], None, None,
                                                       "classification", 1, gates))
    worse = flip(0.20)
    assert paired_loss_test(y, worse, production, "classification", 0.02, 0.95).worse
    failed = {s.metric for s in metric_shortfalls(y, worse, production, None, None, "classification", 1, gates) if s.failed}
    assert {"accuracy", "f1"} <= failed
    # Trade recall for precision: every positive of production's that was wrong becomes a negative.
    traded = np.where((production == 1) & (y == 0), 0, production)
    traded = np.where((traded == 1) & (rng.random(len(y)) < 0.05), 0, traded)
    shortfalls = {s.metric: s for s in metric_shortfalls(y, traded, production, None, None, "classification", 1, gates)}
    assert "recall" not in shortfalls and not any(s.failed for s in shortfalls.values())


def test_regression_comparison_is_on_relative_absolute_error():
    gates = GateSettings()
    rng = np.random.default_rng(1)
    y = rng.normal(10, 3, 5000)
    production = y + rng.normal(0, 1.0, 5000)
    assert not paired_loss_test(y, y + rng.normal(0, 1.0, 5000), production, "regression", 0.02, 0.95).worse
    assert paired_loss_test(y, y + rng.normal(0, 1.3, 5000), production, "regression", 0.02, 0.95).worse
    shortfalls = {s.metric: s for s in metric_shortfalls(y, y + rng.normal(0, 1.3, 5000), production, None, None,
                                                         "regression", 1, gates)}
    assert shortfalls["mae"].failed and shortfalls["rmse"].failed


def test_point_significance_needs_the_loss_bounded_by_the_tolerance():
    model = churn_model()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20_000)
    flip = lambda share: np.where(rng.random(len(y)) < share, 1 - y, y)  # noqa: E731
    production = flip(0.10)
    assert significance_gate(y, production, production, model, model.gates, 0).passed
    assert significance_gate(y, flip(0.05), production, model, model.gates, 0).passed  # clearly better
    worse = significance_gate(y, flip(0.20), production, model, model.gates, 0)
    assert not worse.passed and worse.value["ci_high"] < -0.02
    small = significance_gate(y[:200], flip(0.10)[:200], production[:200], model, model.gates, 0)
    assert not small.passed and "cannot rule out" in small.message  # 200 rows cannot show equivalence


def test_size_gate():
    gates = churn_model().gates
    assert size_gate(1500, 1000, gates).passed
    assert not size_gate(2500, 1000, gates).passed
    assert not size_gate(2500, None, gates).applicable


def test_fairness_judges_group_recall_when_configured(trained):
    model, split, good, _ = trained
    assert not fairness_gate(split.test, good.predict(split.test[model.feature_names]), None, model, model.gates).applicable
    fair_model = churn_model(gates={"sensitive_columns": ["region"], "max_group_disparity": 0.3})
    predictions = good.predict(split.test[model.feature_names])
    assert fairness_gate(split.test, predictions, None, fair_model, fair_model.gates).passed
    biased = predictions.copy()
    biased[(split.test["region"] == "north").to_numpy()] = 0  # never flags anyone in one region
    result = fairness_gate(split.test, biased, predictions, fair_model, fair_model.gates)
    assert not result.passed and result.value["region_groups"]["north"] == 0.0
    assert result.value["region_production_disparity"] < result.value["region_disparity"]
    missing = churn_model(gates={"sensitive_columns": ["gender"]})
    assert "gender" in fairness_gate(split.test, predictions, None, missing, missing.gates).message


def test_group_disparity_for_regression_is_relative_to_overall_error():
    from tests.training.test_train import regression_frame, regression_model

    model = regression_model()
    frame = regression_frame(600)
    predictions = frame["y"].to_numpy() + np.where(frame["zone"] == "n", 2.0, 1.0)
    result = group_disparity(frame, predictions, model, "zone", "demographic_parity")  # regression: MAE whatever
    assert result.metric == "relative_mae_gap"
    assert result.groups["n"] == pytest.approx(2.0) and result.groups["s"] == pytest.approx(1.0)
    overall = np.mean(np.abs(predictions - frame["y"]))
    assert result.disparity == pytest.approx(1.0 / overall)


def groups_frame(spec):
    """Test rows and predictions from per-group counts: name -> (positives, negatives, true positives,
    false positives), so every rate below is computed by hand from these numbers."""
    groups, y, predictions = [], [], []
    for name, (pos, neg, tp, fp) in spec.items():
        groups += [name] * (pos + neg)
        y += [1] * pos + [0] * neg
        predictions += [1] * tp + [0] * (pos - tp) + [1] * fp + [0] * (neg - fp)
    return pd.DataFrame({"segment": groups, "churned": y}), np.array(predictions)


# A: recall 16/20 = 0.8, FPR 4/20 = 0.2, predicted positive 20/40 = 0.5
# B: recall 10/20 = 0.5, FPR 12/20 = 0.6, predicted positive 22/40 = 0.55
# C: 10 rows, too small for anything; D: 40 rows but 3 positives: judged only for demographic parity (20/40)
HAND = {"A": (20, 20, 16, 4), "B": (20, 20, 10, 12), "C": (5, 5, 5, 0), "D": (3, 37, 3, 17)}


@pytest.mark.parametrize("metric, expected, judged", [
    ("recall_gap", 0.8 - 0.5, {"A": 0.8, "B": 0.5}),
    ("demographic_parity", 0.55 - 0.5, {"A": 0.5, "B": 0.55, "D": 0.5}),
    ("equalized_odds", 0.6 - 0.2, {"A": {"recall": 0.8, "false_positive_rate": 0.2},
                                   "B": {"recall": 0.5, "false_positive_rate": 0.6}}),
])
def test_each_fairness_metric_on_hand_counted_groups(metric, expected, judged):
    model = churn_model()
    frame, predictions = groups_frame(HAND)
    result = group_disparity(frame, predictions, model, "segment", metric)
    assert result.metric == metric and result.disparity == pytest.approx(expected)
    assert result.groups == pytest.approx(judged) if metric != "equalized_odds" else result.groups == judged
    assert result.not_judged["C"] == "10 rows < 30"
    assert ("D" in result.not_judged) == (metric != "demographic_parity")
    if metric != "demographic_parity":
        assert result.not_judged["D"] == "3 positives < 5"


def test_the_fairness_gate_needs_below_the_limit_and_not_worse_than_production():
    frame, candidate = groups_frame(HAND)
    gates = {"sensitive_columns": ["segment"], "fairness_metric": "demographic_parity"}
    model = churn_model(gates=gates)
    alone = fairness_gate(frame, candidate, None, model, model.gates)
    assert alone.passed and alone.value["segment_disparity"] == pytest.approx(0.05)  # 0.05 < 0.10
    assert alone.value["segment_not_judged"] == {"C": "10 rows < 30"} and "too small to judge (C)" in alone.message
    # Production selects 20 of B's 40 rows (B: 10 tp, 10 fp): every judged group at 0.5, a gap of 0.
    _, fairer = groups_frame({**HAND, "B": (20, 20, 10, 10)})
    worse = fairness_gate(frame, candidate, fairer, model, model.gates)
    assert not worse.passed and worse.value["segment_production_disparity"] == 0.0
    assert "worse than production's 0.000" in worse.message
    tolerant = churn_model(gates={**gates, "max_disparity_increase": 0.06})
    assert fairness_gate(frame, candidate, fairer, tolerant, tolerant.gates).passed
    # Production less fair (B selects 26 of 40: a gap of 0.15): the candidate's 0.05 is an improvement.
    _, unfair = groups_frame({**HAND, "B": (20, 20, 10, 16)})
    better = fairness_gate(frame, candidate, unfair, model, model.gates)
    assert better.passed and better.value["segment_production_disparity"] == pytest.approx(0.15)
    # Below the limit is strict, whatever production does: the recall gap of 0.3 fails, and so does 0.3
    # against a production model exactly as unfair.
    by_recall = churn_model(gates={"sensitive_columns": ["segment"]})
    result = fairness_gate(frame, candidate, candidate, by_recall, by_recall.gates)
    assert not result.passed and "segment disparity 0.300 >= 0.1" in result.message
    assert "worse than production" not in result.message and result.value["metric"] == "recall_gap"


def test_a_crashing_or_broken_candidate_fails_the_smoke_test(trained):
    model, split, good, _ = trained

    class Broken:
        classes_ = np.array([0, 1])

        def predict(self, frame):
            if len(frame) == 1:
                raise ValueError("cannot score one row")
            return np.zeros(len(frame), dtype=int)

    results = by_name(evaluate_gates(Broken(), good, split.test, model, model.gates, 10, 10, seed=0))
    assert not results["smoke_test"].passed and "one row" in results["smoke_test"].message
    assert not any(r.passed for r in results.values())


def test_a_production_model_that_cannot_score_fails_the_comparison_not_the_run(trained):
    model, split, good, _ = trained

    class Stale:
        def predict(self, frame):
            raise KeyError("column 'old_feature' missing")

    results = by_name(evaluate_gates(good, Stale(), split.test, model, model.gates, 10, 10, seed=0))
    assert not results["relative_to_production"].passed
    assert "cannot score" in results["relative_to_production"].message


def test_no_test_rows_fails_every_gate(trained):
    model, split, good, _ = trained
    results = evaluate_gates(good, None, split.test.iloc[0:0], model, model.gates, 10, None, seed=0)
    assert not any(r.passed for r in results)


def test_only_enabled_gates_are_evaluated(trained):
    model, split, good, bad = trained
    profile = model.gates.model_copy(update={"enabled": ("relative_to_production", "significance", "smoke_test")})
    results = evaluate_gates(bad, good, split.test, model, profile, 1000, 1000, seed=0)
    assert [r.name for r in results] == ["relative_to_production", "significance", "smoke_test"]
    assert not results[0].passed and results[2].passed


def test_every_gate_and_quality_check_states_its_rule_with_the_models_thresholds():
    from retrain_assets.settings import settings_from_dict
    from retrain_assets.simulate import model_config
    from retrain_assets.training import GATE_NAMES, QUALITY_CHECKS, gate_requirements, quality_requirements

    classifier = settings_from_dict({"models": [{**model_config(), "gates": {"min_precision": 0.9}}]}).models[0]
    regressor = settings_from_dict({"models": [model_config("demand", task="regression")]}).models[0]
    assert tuple(gate_requirements(classifier)) == GATE_NAMES == tuple(gate_requirements(regressor))
    assert "precision >= 0.9" in gate_requirements(classifier)["absolute_thresholds"]
    assert "R2 >= 0.6" in gate_requirements(regressor)["absolute_thresholds"]
    assert "MAE and RMSE <= production x 1.02" in gate_requirements(regressor)["relative_to_production"]
    assert tuple(quality_requirements(classifier, generic=True)) == QUALITY_CHECKS
    assert "once a model is in production" in quality_requirements(classifier, generic=True)["value_ranges"]
    assert quality_requirements(classifier, None)["value_ranges"] == "every numeric value finite (no production reference yet)"
    assert "at least two classes, among [0, 1]" in quality_requirements(classifier, {"classes": [0, 1]})["labels"]
    assert quality_requirements(regressor, None)["labels"].endswith("never null, numeric")


def test_the_stated_rules_follow_every_configured_threshold():
    """Odd values in the config must each show up in the rule of the gate that applies them."""
    from retrain_assets.settings import settings_from_dict
    from retrain_assets.simulate import model_config
    from retrain_assets.training import gate_requirements

    odd = {"min_precision": 0.91, "min_recall": 0.77, "max_f1_drop": 0.013, "max_auc_drop": 0.0041,
           "bootstrap_samples": 777, "bootstrap_confidence": 0.9, "significance_tolerance": 0.033,
           "sensitive_columns": ["region"], "max_group_disparity": 0.07, "max_disparity_increase": 0.015,
           "fairness_metric": "equalized_odds", "max_latency_p99_s": 0.7,
           "max_latency_ratio": 3.5, "max_size_ratio": 2.5, "smoke_rows": 55}
    rules = gate_requirements(settings_from_dict({"models": [{**model_config(), "gates": odd}]}).models[0])
    expected = {
        "absolute_thresholds": ["precision >= 0.91", "recall >= 0.77"],
        "relative_to_production": ["production - 0.013", "production - 0.0041", "777 resamples", "90%"],
        "significance": ["more than 0.033", "90% confidence"],
        "fairness": ["region", "< 0.07", "production's gap on the same test rows + 0.015", "equalized odds",
                     "under 30 test rows", "reported, not judged"],
        "latency": ["<= 0.7 s", "3.5x", "single-row"],
        "size": ["2.5x"],
        "smoke_test": ["55 test rows"],
    }
    for gate, fragments in expected.items():
        for fragment in fragments:
            assert fragment in rules[gate], (gate, fragment, rules[gate])
    point = gate_requirements(settings_from_dict({"models": [{**model_config(), "gates": {**odd, "comparison": "point"}}]}).models[0])
    assert "777 resamples" in point["significance"] and ">= -0.033" in point["significance"]
    assert "point estimates" in point["relative_to_production"]
