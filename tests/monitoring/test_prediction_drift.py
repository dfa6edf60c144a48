"""Seed 003's prediction drift and performance trend: measured, shown, named, and never acting alone."""

import numpy as np

from retrain_assets.monitoring.decision import Evidence, Outcomes, SignalEvidence, decide, fuse
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
    unseen = classes.compare(np.array(["a"] * 500 + ["c"] * 500), 0.01)  # a class the held-out rows never showed
    assert unseen["psi"] > classes.compare(np.array(["a"] * 500 + ["b"] * 500), 0.01)["psi"]


def test_neighbouring_rows_that_resemble_each_other_count_for_less():
    """Recent traffic is in time order: outputs that come in runs (a slowly moving score) carry less
    information than independent ones, and the noise threshold widens with their dependence."""
    reference = PredictionReference.fit(rng.beta(2, 5, 3000), "score")
    independent = rng.beta(2, 5, 2000)
    runs = np.repeat(rng.beta(2, 5, 100), 20)  # the same distribution, in runs of 20 rows
    loose, strict = reference.compare(runs, 0.01), reference.compare(independent, 0.01)
    assert loose["dependence"] > 5 and strict["dependence"] < 2
    assert loose["threshold"] > 3 * strict["threshold"]
    assert loose["psi"] < loose["threshold"]  # runs of a stable distribution are not drift


def test_a_trend_is_a_monotonic_move_the_wrong_way():
    assert decline_trend([0.91, 0.90, 0.88, 0.87, 0.85, 0.84], higher_is_better=True, alpha=0.05)["declining"]
    assert not decline_trend([0.91, 0.88, 0.90, 0.87, 0.91, 0.89], higher_is_better=True, alpha=0.05)["declining"]
    assert not decline_trend([0.84, 0.85, 0.87, 0.88, 0.90, 0.91], higher_is_better=True, alpha=0.05)["declining"]
    assert decline_trend([2.0, 2.1, 2.3, 2.4, 2.6, 2.9], higher_is_better=False, alpha=0.05)["declining"]  # MAE up
    assert decline_trend([0.9, 0.8], True, 0.05) is None
    assert not decline_trend([0.9] * 6, True, 0.05)["declining"]


def rising_errors(rows=1200, start=0.05, end=0.25):
    """Right/wrong predictions whose error rate rises steadily, oldest label first."""
    actuals = np.ones(rows, dtype=int)
    wrong = rng.random(rows) < np.linspace(start, end, rows)
    return Outcomes(np.where(wrong, 0, 1), actuals)


def test_notices_are_shown_but_never_decide():
    decision = decide(Evidence("classification", outcomes=rising_errors()), MODEL)
    trend = decision.signal("trend")
    assert trend.status == "notice", trend.detail
    assert trend.detail.startswith("gradual decline: error rate over 6 windows of its 1200 labeled predictions")
    assert "trend" not in decision.warnings and decision.trigger != "trend"
    flat = decide(Evidence("classification", outcomes=rising_errors(start=0.1, end=0.1)), MODEL)
    assert flat.signal("trend").status == "none"
    few = decide(Evidence("classification", outcomes=rising_errors(rows=100)), MODEL)
    assert few.signal("trend").status == "unavailable" and "6 windows of 30 needed" in few.signal("trend").detail
    assert decision.signal("prediction_drift").status == "unavailable"  # no reference pack: said, not guessed


def test_a_retrain_on_realized_performance_names_a_gradual_decline():
    realized = SignalEvidence("performance", "retrain", "Page-Hinkley", 9.0, 6.0, "error rate 0.2 vs 0.1 held out",
                              0.99)
    trend = SignalEvidence("trend", "notice", "Kendall", -0.9, None, "gradual decline: f1 over its last 6 reports")
    decision = fuse([realized, trend], MODEL)
    assert decision.retrain and decision.trigger == "performance"
    assert decision.reason == "error rate 0.2 vs 0.1 held out; gradual decline: f1 over its last 6 reports"
    assert fuse([realized], MODEL).reason == "error rate 0.2 vs 0.1 held out"
