"""The seed rule set (``decision.policy: seed``) reproduces the design documents' rules; concept drift and
performance degradation as the seed computes them."""

import numpy as np
import pandas as pd
import pytest

from retrain_assets.errors import DataError
from retrain_assets.monitoring import Evidence, Outcomes, concept_drift, decide, detect_drift, performance_degradation
from retrain_assets.config.monitoring import PerformanceSettings
from retrain_assets.settings import ModelSettings


def model(columns=4, policy="seed", task="classification", **blocks):
    features = [{"name": f"x{i}", "type": "numeric"} for i in range(columns)]
    return ModelSettings(name="m", task=task, target="y", features=features, decision={"policy": policy}, **blocks)


def data(n=3000, shift=0.0, columns=4, seed=0, shifted=1):
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(columns)})
    cur = pd.DataFrame({f"x{i}": rng.normal(shift if i < shifted else 0, 1, n) for i in range(columns)})
    return ref, cur


def seed_decision(ref, cur, m=None, **evidence):
    m = m or model(columns=ref.shape[1])
    return decide(Evidence(m.task, drift=detect_drift(ref, cur, m.drift), **evidence), m)


def test_no_signal_means_no_retrain_with_confidence():
    decision = seed_decision(*data())
    assert not decision.retrain and decision.urgency == "none" and decision.severity == "NONE"
    assert decision.confidence == 1.0 and "no drift" in decision.reason and decision.policy == "seed"


def test_insufficient_data_is_not_drift():
    ref, cur = data()
    decision = seed_decision(ref, cur.iloc[:40] + 5)
    assert decision.insufficient_data and not decision.retrain and decision.confidence == 0
    assert "40 recent rows < min_samples 100" in decision.reason


def test_one_mild_signal_is_low_and_monitored():
    ref, cur = data(shift=0.3, columns=5, shifted=1)  # one of five features, PSI under 0.2
    decision = seed_decision(ref, cur)
    assert decision.severity == "LOW" and not decision.retrain and decision.urgency == "monitor"
    assert decision.drift.drifted_features == ["x0"] and decision.drift.features["x0"].psi < 0.2
    major = seed_decision(*data(shift=0.8, columns=5, shifted=1))  # one feature, but PSI above 0.2
    assert major.severity == "MEDIUM" and major.retrain and major.trigger == "drift"


def test_dataset_drift_is_medium_and_label_volume_bands():
    ref, cur = data(shift=0.6, columns=4, shifted=2)
    decision = seed_decision(ref, cur)
    assert decision.severity == "MEDIUM" and decision.retrain and decision.urgency == "next_quiet_window"
    assert "data drift in 2/4 features" in decision.reason
    high = seed_decision(ref, cur, new_labels=12_000)  # the 10,000-label band is HIGH: it decides
    assert high.severity == "HIGH" and high.urgency == "now" and high.trigger == "data_volume"
    clean = data()
    assert seed_decision(*clean, new_labels=4_999).severity == "NONE"
    assert seed_decision(*clean, new_labels=6_000).trigger == "data_volume"  # alone, in the seed rule set
    assert seed_decision(*clean, new_labels=6_000).severity == "MEDIUM"


def test_very_strong_drift_is_critical():
    decision = seed_decision(*data(shift=3.0, columns=4, shifted=4))
    assert decision.severity == "CRITICAL" and decision.urgency == "now"


def test_concept_drift_compares_consecutive_windows():
    rng = np.random.default_rng(0)
    actuals = rng.normal(size=2000)
    noise = np.r_[rng.normal(0, 0.5, 1500), rng.normal(0, 0.8, 500)]
    found = concept_drift(actuals + noise, actuals, "regression", PerformanceSettings(concept_window_rows=500))
    assert found.detected and found.increase > 0.15 and len(found.window_errors) == 4
    steady = concept_drift(actuals + rng.normal(0, 0.5, 2000), actuals, "regression", PerformanceSettings(concept_window_rows=500))
    assert not steady.detected
    short = concept_drift(actuals[:700], actuals[:700], "regression", PerformanceSettings(concept_window_rows=500))
    assert not short.detected and "insufficient data" in short.message


def test_concept_drift_needs_a_significant_increase_not_just_a_relative_one():
    """37 -> 50 errors in 500 rows is +35 % but within binomial noise; 37 -> 90 is not."""
    settings = PerformanceSettings(concept_window_rows=500)
    truth = np.zeros(1000, dtype=int)

    def predictions(errors_before, errors_after):
        wrong = np.zeros(1000, dtype=int)
        wrong[:errors_before] = 1
        wrong[500:500 + errors_after] = 1
        return wrong

    noisy = concept_drift(predictions(37, 50), truth, "classification", settings)
    assert noisy.increase > 0.15 and noisy.p_value > 0.05 and not noisy.detected
    assert "p=" in noisy.message
    real = concept_drift(predictions(37, 90), truth, "classification", settings)
    assert real.detected and real.p_value < 0.001


def test_seed_performance_degradation_and_severity():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    baseline = {"accuracy": 0.90, "f1": 0.90}
    good = np.where(rng.random(2000) < 0.9, y, 1 - y)
    assert not performance_degradation(good, y, baseline, "classification").degraded
    worse = np.where(rng.random(2000) < 0.75, y, 1 - y)  # accuracy 0.75: -17 %
    report = performance_degradation(worse, y, baseline, "classification")
    assert {c.metric for c in report.degraded} == {"accuracy", "f1"}
    ref, cur = data()
    decision = seed_decision(ref, cur, outcomes=Outcomes(worse, y), baseline=baseline)
    assert decision.retrain and decision.trigger == "performance" and decision.severity == "MEDIUM"
    assert decision.urgency == "within_24h"  # the performance playbook: a 10-20 % drop
    awful = np.where(rng.random(2000) < 0.6, y, 1 - y)
    critical = seed_decision(ref, cur, outcomes=Outcomes(awful, y), baseline=baseline)
    assert critical.severity == "CRITICAL" and critical.urgency == "now"


def test_performance_degradation_regression():
    rng = np.random.default_rng(2)
    y = rng.normal(10, 3, 1000)
    predictions = y + rng.normal(0, 1.5, 1000)
    report = performance_degradation(predictions, y, {"mae": 0.8, "rmse": 1.0, "r2": 0.95}, "regression")
    assert {c.metric for c in report.degraded} == {"mae", "rmse", "r2"}
    mae = next(c for c in report.changes if c.metric == "mae")
    assert mae.drop == pytest.approx(np.mean(np.abs(predictions - y)) / 0.8 - 1)
    with pytest.raises(DataError, match="same length"):
        performance_degradation(predictions[:5], y, {"mae": 1}, "regression")


def test_seed_policy_brings_point_gates_unless_told_otherwise():
    assert model(policy="seed").gates.comparison == "point"
    assert model(policy="evidence").gates.comparison == "significance"
    assert model(policy="seed", gates={"comparison": "significance"}).gates.comparison == "significance"
