"""One decision: severity, confidence, urgency, insufficient data; concept drift and performance."""

import numpy as np
import pandas as pd
import pytest

from retrain_assets.errors import DataError
from retrain_assets.monitoring import Severity, concept_drift, performance_degradation, should_retrain
from retrain_assets.monitoring.settings import PerformanceSettings


def data(n=3000, shift=0.0, columns=4, seed=0, shifted=1):
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(columns)})
    cur = pd.DataFrame({f"x{i}": rng.normal(shift if i < shifted else 0, 1, n) for i in range(columns)})
    return ref, cur


def test_no_signal_means_no_retrain_with_confidence():
    ref, cur = data()
    decision = should_retrain(ref, cur)
    assert not decision.triggered and decision.urgency == "none" and decision.signals == []
    assert decision.confidence == 1.0 and "no drift" in decision.reasons[0]


def test_insufficient_data_is_not_drift():
    ref, cur = data()
    decision = should_retrain(ref, cur.iloc[:40] + 5)
    assert decision.insufficient_data and not decision.triggered and decision.confidence == 0
    assert "insufficient data: 40 recent rows" in decision.reasons[0]


def test_one_mild_signal_is_low_and_monitored():
    ref, cur = data(shift=0.3, columns=5, shifted=1)  # one of five features, PSI under 0.2
    decision = should_retrain(ref, cur)
    assert decision.severity is Severity.LOW and not decision.triggered and decision.urgency == "monitor"
    assert decision.drift.drifted_features == ["x0"] and decision.drift.features["x0"].psi < 0.2
    major = should_retrain(*data(shift=0.8, columns=5, shifted=1))  # one feature, but PSI above 0.2
    assert major.severity is Severity.MEDIUM and major.triggered


def test_dataset_drift_is_medium_and_several_strong_signals_high():
    ref, cur = data(shift=0.6, columns=4, shifted=2)
    decision = should_retrain(ref, cur)
    assert decision.severity is Severity.MEDIUM and decision.triggered and decision.urgency == "next_quiet_window"
    assert "data drift in 2/4 features" in decision.reasons[0]
    high = should_retrain(ref, cur, new_labels=12_000)
    assert high.severity is Severity.HIGH and high.urgency == "now"
    assert high.confidence > decision.confidence


def test_very_strong_drift_is_critical():
    ref, cur = data(shift=3.0, columns=4, shifted=4)
    decision = should_retrain(ref, cur)
    assert decision.severity is Severity.CRITICAL and decision.urgency == "now"


def test_label_volume_bands():
    ref, cur = data()
    assert should_retrain(ref, cur, new_labels=4_999).signals == []
    mild = should_retrain(ref, cur, new_labels=6_000)
    assert mild.severity is Severity.LOW and not mild.triggered
    assert should_retrain(ref, cur, new_labels=10_000).severity is Severity.MEDIUM


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


def test_performance_degradation_classification_and_urgency():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    good = np.where(rng.random(2000) < 0.9, y, 1 - y)
    baseline = {"accuracy": 0.90, "f1": 0.90}
    report = performance_degradation(good, y, baseline, "classification")
    assert not report.degraded
    worse = np.where(rng.random(2000) < 0.75, y, 1 - y)  # accuracy 0.75: -17 %
    report = performance_degradation(worse, y, baseline, "classification")
    assert {c.metric for c in report.degraded} == {"accuracy", "f1"}
    ref, cur = data()
    decision = should_retrain(ref, cur, predictions=worse, actuals=y, baseline=baseline)
    assert decision.triggered and decision.urgency == "within_24h"
    awful = np.where(rng.random(2000) < 0.6, y, 1 - y)
    critical = should_retrain(ref, cur, predictions=awful, actuals=y, baseline=baseline)
    assert critical.severity is Severity.CRITICAL and critical.urgency == "now"


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
