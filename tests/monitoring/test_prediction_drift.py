"""Seed 003's prediction drift and performance trend: measured, shown, named, and never acting alone."""

import numpy as np

from retrain_assets.monitoring.decision import Evidence, SignalEvidence, decide, fuse
from retrain_assets.monitoring.prediction_drift import PredictionReference, decline_trend
from retrain_assets.simulate import model_config
from retrain_assets.settings import settings_from_dict

rng = np.random.default_rng(7)
MODEL = settings_from_dict({"models": [model_config()]}).models[0]


def test_output_drift_is_judged_against_sampling_noise():
    held_out = rng.beta(2, 5, 3000)
    reference = PredictionReference.fit(held_out, "score")
    same = reference.compare(rng.beta(2, 5, 2000), alpha=0.01)
    assert same["psi"] < same["threshold"]  # another sample of the same scores is not drift
    moved = reference.compare(rng.beta(5, 2, 2000), alpha=0.01)
    assert moved["psi"] > 10 * moved["threshold"]
    few = reference.compare(rng.beta(2, 5, 30), alpha=0.01)
    assert few["threshold"] > same["threshold"]  # a small window needs a larger PSI
    classes = PredictionReference.fit(np.array(["a"] * 700 + ["b"] * 300), "class")
    assert classes.compare(np.array(["a"] * 300 + ["b"] * 700), 0.01)["psi"] > 0.5
    values = PredictionReference.fit(rng.normal(10, 2, 3000), "value")
    assert values.compare(rng.normal(10, 2, 2000), 0.01)["psi"] < values.compare(rng.normal(14, 2, 2000), 0.01)["psi"]
    assert PredictionReference(**reference.to_dict()) == reference  # stored in the reference pack as JSON


def test_a_trend_is_a_monotonic_move_the_wrong_way():
    assert decline_trend([0.91, 0.90, 0.88, 0.87, 0.85, 0.84], higher_is_better=True, alpha=0.05)["declining"]
    assert not decline_trend([0.91, 0.88, 0.90, 0.87, 0.91, 0.89], higher_is_better=True, alpha=0.05)["declining"]
    assert not decline_trend([0.84, 0.85, 0.87, 0.88, 0.90, 0.91], higher_is_better=True, alpha=0.05)["declining"]
    assert decline_trend([2.0, 2.1, 2.3, 2.4, 2.6, 2.9], higher_is_better=False, alpha=0.05)["declining"]  # MAE up
    assert decline_trend([0.9, 0.8], True, 0.05) is None
    assert not decline_trend([0.9] * 6, True, 0.05)["declining"]


def test_notices_are_shown_but_never_decide():
    decision = decide(Evidence("classification", performance_history=(0.91, 0.90, 0.88, 0.87, 0.85, 0.84)), MODEL)
    trend = decision.signal("trend")
    assert trend.status == "notice" and trend.detail.startswith("gradual decline: f1 over its last 6 reports")
    assert not decision.retrain and "trend" not in decision.warnings
    assert decision.signal("prediction_drift").status == "unavailable"  # no reference pack: said, not guessed


def test_a_retrain_on_realized_performance_names_a_gradual_decline():
    realized = SignalEvidence("performance", "retrain", "Page-Hinkley", 9.0, 6.0, "error rate 0.2 vs 0.1 held out",
                              0.99)
    trend = SignalEvidence("trend", "notice", "Kendall", -0.9, None, "gradual decline: f1 over its last 6 reports")
    decision = fuse([realized, trend], MODEL)
    assert decision.retrain and decision.trigger == "performance"
    assert decision.reason == "error rate 0.2 vs 0.1 held out; gradual decline: f1 over its last 6 reports"
    assert fuse([realized], MODEL).reason == "error rate 0.2 vs 0.1 held out"
