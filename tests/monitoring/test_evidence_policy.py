"""The evidence policy, arm by arm: Page-Hinkley and the newest-batch test against held-out losses (with
dependence), chunk-calibrated drift thresholds, importance weighting, CBPE, and how decide() fuses them,
including missing evidence."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from retrain_assets.monitoring import Evidence, ReferenceProfile, build_reference_pack, decide
from retrain_assets.monitoring.cbpe import CbpeReference, estimate_performance
from retrain_assets.monitoring.decision import SignalEvidence, assess, fuse
from retrain_assets.monitoring.evidence import gather_evidence
from retrain_assets.monitoring.feature_tests import psi
from retrain_assets.monitoring.reference_pack import calibrate_drift, weighted_drift
from retrain_assets.monitoring.sequential import LossReference, batch_test, dependence, page_hinkley
from retrain_assets.settings import ModelSettings

FEATURES = ["x0", "x1", "x2"]  # the label depends on x0 and x1; x2 is noise the model learns to ignore


def model_settings(task="classification", **decision) -> ModelSettings:
    return ModelSettings(name="m", task=task, target="y", features=[{"name": f, "type": "numeric"} for f in FEATURES],
                         decision=decision, monitoring={"window_rows": 500})


def rows(n, seed, shift=None, flip=False, task="classification"):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f: rng.normal(size=n) for f in FEATURES})
    for feature, amount in (shift or {}).items():
        frame[feature] += amount
    signal = frame["x0"] + 0.5 * frame["x1"]
    if task == "regression":
        frame["y"] = 3 * signal + rng.normal(0, 0.5, n)
    else:
        frame["y"] = ((signal + rng.normal(0, 0.5, n) > 0) != flip).astype(int)
    frame["timestamp"] = pd.date_range("2026-01-01", periods=n, freq="min", tz="UTC")
    return frame


@pytest.fixture(scope="module", params=["classification", "regression"])
def trained(request):
    task = request.param
    model = model_settings(task)
    window = rows(4000, seed=1, task=task)
    train, test = window.iloc[:3400], window.iloc[3400:]
    estimator = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    pipeline = estimator(random_state=0).fit(train[FEATURES], train["y"])
    profile = ReferenceProfile.from_frame(train[FEATURES], numeric=FEATURES, settings=model.drift)
    pack = build_reference_pack(pipeline, model, window, test, profile, model.decision, seed=0)
    return model, pipeline, profile, pack


def evidence_for(trained, recent, labeled=None, newest=0, **extra) -> Evidence:
    model, pipeline, profile, pack = trained
    return gather_evidence(model, pipeline=pipeline, profile=profile, pack=pack, recent=recent, labeled=labeled,
                           newest_batch=newest, **extra)


# Page-Hinkley and the newest batch -------------------------------------------------------------------------
def test_page_hinkley_threshold_follows_from_the_held_out_losses():
    reference = LossReference(mean=0.2, var=0.16, rows=400)
    test = page_hinkley(np.zeros(10), reference, delta=0.01, alpha=0.01)
    margin = stats.norm.isf(0.01) * np.sqrt(0.16 / 400)
    assert test.threshold == pytest.approx(0.16 * np.log(100) / (2 * (margin + 0.01)))
    assert not test.alarm and test.statistic == 0.0


def test_page_hinkley_stays_quiet_in_control_and_alarms_after_a_shift():
    reference = LossReference(mean=0.2, var=0.16, rows=400)
    rng = np.random.default_rng(0)
    quiet = [page_hinkley(rng.random(1000) < 0.2, reference, 0.01, 0.01).alarm for _ in range(200)]
    assert sum(quiet) <= 4  # at most 2 %: the alarm level is 1 % per check
    worse = np.r_[rng.random(500) < 0.2, rng.random(300) < 0.35]
    test = page_hinkley(worse, reference, 0.01, 0.01)
    assert test.alarm and test.p_value < 0.01


def test_dependent_errors_raise_the_bar_independent_ones_do_not():
    rng = np.random.default_rng(1)
    independent = (rng.random(2000) < 0.2).astype(float)
    runs = np.repeat(rng.random(100) < 0.2, 20).astype(float)  # errors in runs of 20 rows
    assert dependence(independent) < 1.5 and dependence(runs) > 5
    reference = LossReference(0.2, 0.16, 400)
    assert page_hinkley(runs, reference, 0.01, 0.01, dependence(runs)).threshold > 5 * page_hinkley(runs, reference, 0.01, 0.01).threshold


def test_newest_batch_test_is_one_sided_with_both_variances():
    reference = LossReference(mean=0.2, var=0.16, rows=400)
    rng = np.random.default_rng(2)
    assert batch_test((rng.random(400) < 0.35).astype(float), reference, 0.01, 0.01).alarm
    assert not batch_test((rng.random(400) < 0.1).astype(float), reference, 0.01, 0.01).alarm  # better is not an alarm
    batch = (rng.random(400) < 0.25).astype(float)
    z = (batch.mean() - 0.21) / np.sqrt(batch.var(ddof=1) / 400 + 0.16 / 400)
    assert batch_test(batch, reference, 0.01, 0.01).statistic == pytest.approx(z)


# Calibration and importance ----------------------------------------------------------------------------------
def test_chunk_scores_are_the_drift_reports_psi_of_each_chunk_against_the_rest():
    window = rows(2000, seed=3)
    profile = ReferenceProfile.from_frame(window[FEATURES], numeric=FEATURES)
    weights = {"x0": 1.0, "x1": 0.0, "x2": 0.0}
    calibration = calibrate_drift(profile, window, weights, chunk_rows=500)
    assert calibration.chunk_rows == 500 and len(calibration.scores) == 7  # overlapping by half
    chunk, rest = window.iloc[:500], window.iloc[500:]
    edges = profile.numeric["x0"].psi_edges
    counts = [np.bincount(np.searchsorted(edges, part["x0"], side="left"), minlength=10) for part in (rest, chunk)]
    assert calibration.scores[0] == pytest.approx(psi(*counts), abs=1e-6)
    assert calibration.threshold == pytest.approx(max(calibration.scores), abs=1e-6)


def test_a_smaller_window_gets_a_higher_threshold_never_a_lower_one(trained):
    _, _, _, pack = trained
    calibration, weights = pack.drift, pack.importances
    assert calibration.threshold_for(calibration.chunk_rows * 4, weights, 0.01) >= calibration.threshold
    assert calibration.threshold_for(calibration.chunk_rows // 4, weights, 0.01) > 2 * calibration.threshold
    assert calibration.noise_quantile(100, weights, 0.01) > calibration.noise_quantile(1000, weights, 0.01)


def test_the_retrain_window_drift_is_the_mixture_of_new_rows_and_the_training_rows():
    """PSI of the window a retrain would train on, from the profile's counts: nothing new gives 0, only
    new rows give the drift report's PSI of them, and it grows with their share."""
    from retrain_assets.monitoring import detect_drift
    from retrain_assets.monitoring.reference_pack import retrain_window_drift
    from retrain_assets.settings import ModelSettings

    window = rows(4000, seed=3)
    profile = ReferenceProfile.from_frame(window[FEATURES], numeric=FEATURES)
    weights = {"x0": 0.7, "x1": 0.3, "x2": 0.0}
    new = rows(1000, seed=4, shift={"x0": 1.5})[FEATURES]
    at = [retrain_window_drift(profile, new, share, weights) for share in (0.0, 0.1, 0.25, 0.5, 1.0)]
    assert at[0] == pytest.approx(0.0, abs=1e-12)
    assert all(a < b for a, b in zip(at, at[1:]))
    settings = ModelSettings(name="m", task="classification", target="y",
                             features=[{"name": f, "type": "numeric"} for f in FEATURES])
    report = detect_drift(profile, new, settings.drift, FEATURES, [])
    assert at[-1] == pytest.approx(weighted_drift({f: report.features[f].psi for f in FEATURES}, weights), rel=1e-9)


def test_the_retrain_window_drift_of_categories_and_of_a_column_the_rows_lack():
    from retrain_assets.monitoring import detect_drift
    from retrain_assets.monitoring.reference_pack import retrain_window_drift
    from retrain_assets.settings import ModelSettings

    rng = np.random.default_rng(5)
    window = rows(3000, seed=5).assign(plan=rng.choice(["a", "b", "c"], 3000, p=[0.6, 0.3, 0.1]))
    profile = ReferenceProfile.from_frame(window[[*FEATURES, "plan"]], numeric=FEATURES, categorical=["plan"])
    new = rows(800, seed=6)[FEATURES].assign(plan=rng.choice(["c", "d"], 800))  # a level the profile never saw
    weights = {"x0": 0.25, "x1": 0.25, "x2": 0.0, "plan": 0.5}
    settings = ModelSettings(name="m", task="classification", target="y",
                             features=[*({"name": f, "type": "numeric"} for f in FEATURES),
                                       {"name": "plan", "type": "categorical"}])
    report = detect_drift(profile, new, settings.drift, FEATURES, ["plan"])
    expected = weighted_drift({f: report.features[f].psi for f in [*FEATURES, "plan"]}, weights)
    assert retrain_window_drift(profile, new, 1.0, weights) == pytest.approx(expected, rel=1e-9)
    assert 0 < retrain_window_drift(profile, new, 0.3, weights) < expected
    # A column the configuration no longer has (the profile still does) is left out, never an error.
    lacking = retrain_window_drift(profile, new.drop(columns=["x2"]), 1.0, weights)
    assert lacking == pytest.approx(expected, rel=1e-9)  # x2 weighs nothing here


def test_the_new_rows_share_follows_the_dataset_strategy():
    from retrain_assets.config.training import DatasetSettings
    from retrain_assets.monitoring.evidence import _new_rows_share

    assert _new_rows_share(500, 2000, DatasetSettings(strategy="sliding", window_rows=2000)) == 0.25
    assert _new_rows_share(5000, 2000, DatasetSettings(strategy="sliding", window_rows=2000)) == 1.0
    assert _new_rows_share(500, 2000, DatasetSettings(strategy="full")) == pytest.approx(500 / 2500)
    assert _new_rows_share(500, 2000, DatasetSettings(strategy="incremental", recent_weight=2.0)) == pytest.approx(1000 / 3000)
    assert _new_rows_share(500, None, DatasetSettings()) == 1.0


def test_drift_waits_until_a_retrain_could_learn_it(trained):
    """Served inputs far from the training rows retrain only once the window a retrain would train on
    holds them: before their labels arrive, a candidate would be trained on what production knows."""
    model = trained[0].model_copy(update={"dataset": trained[0].dataset.model_copy(
        update={"strategy": "sliding", "window_rows": 4000})})
    drifted = rows(500, seed=13, shift={"x1": 2.5}, task=model.task)

    def decision(labeled, newest=0):
        return decide(evidence_for(trained, drifted, labeled, newest=newest, training_rows=4000, new_labels=len(labeled)
                                   if labeled is not None else 0), model)

    unlabeled = decision(None)
    drift = unlabeled.signal("drift")
    assert drift.status == "retrain" and drift.metrics["learnable"] is False and not unlabeled.retrain
    assert "not yet learnable: no rows labeled since its training" in unlabeled.reason
    old = rows(1000, seed=14, task=model.task)  # labeled since its training, but from the old inputs
    stale = decision(old, newest=500)
    window_psi = stale.signal("drift").metrics["retrain_window_psi"]
    assert window_psi < stale.signal("drift").threshold and not stale.retrain
    assert "drift" in stale.warnings  # still a warning: it may last until its rows are labeled
    fresh = decision(pd.concat([old, rows(1500, seed=15, shift={"x1": 2.5}, task=model.task)]), newest=1500)
    assert fresh.signal("drift").metrics["learnable"] is True and fresh.retrain


def test_importances_weigh_the_features_the_model_uses(trained):
    model, _, _, pack = trained
    assert pack.importances["x0"] > pack.importances["x1"] > pack.importances["x2"]
    assert sum(pack.importances.values()) == pytest.approx(1.0)
    unused = decide(evidence_for(trained, rows(500, seed=4, shift={"x2": 1.5})), model)
    used = decide(evidence_for(trained, rows(500, seed=4, shift={"x0": 1.5})), model)
    assert unused.drift.features["x2"].drifted  # the seed's per-feature test sees it ...
    assert unused.signal("drift").status in ("none", "weak") and not unused.retrain  # ... it hardly matters here
    assert used.signal("drift").status == "retrain"  # alone enough to retrain, once it is learnable (below)
    assert weighted_drift({"x0": 0.4, "x1": 0.0}, {"x0": 0.5, "x1": 0.5}) == pytest.approx(0.2)


# CBPE ---------------------------------------------------------------------------------------------------------
def test_cbpe_reference_equals_held_out_accuracy_and_sees_uncertain_rows():
    rng = np.random.default_rng(5)
    scores = rng.random(2000)
    correct = rng.random(2000) < np.maximum(scores, 1 - scores)  # calibrated scores
    reference = CbpeReference.fit(scores, correct)
    assert reference.expected_accuracy == pytest.approx(correct.mean())
    confident = estimate_performance(reference, np.r_[rng.random(500) * 0.1, 0.9 + rng.random(500) * 0.1], 0.01, 0.01)
    unsure = estimate_performance(reference, 0.4 + rng.random(1000) * 0.2, 0.01, 0.01)
    assert not confident.alarm and unsure.alarm and unsure.expected_accuracy < 0.65


# The fused decision -------------------------------------------------------------------------------------------
def test_realized_degradation_decides_first(trained):
    model = trained[0]
    labeled = rows(1500, seed=6, flip=model.task == "classification", task=model.task)
    if model.task == "regression":
        labeled["y"] = labeled["y"] * -1
    decision = decide(evidence_for(trained, rows(500, seed=7, task=model.task), labeled, newest=500), model)
    assert decision.retrain and decision.trigger == "performance" and decision.severity in ("HIGH", "CRITICAL")
    tests = decision.signal("performance").metrics
    assert tests["page_hinkley"]["alarm"] and tests["newest_batch"]["alarm"]
    quiet = decide(evidence_for(trained, rows(500, seed=7, task=model.task), rows(1500, seed=8, task=model.task),
                                newest=500), model)
    assert not quiet.retrain and quiet.signal("performance").status == "none"
    assert "performance holds" in quiet.signal("performance").detail


def test_a_drift_warning_needs_confirmation_and_lasting_warnings_need_labels():
    model = model_settings()
    base = [SignalEvidence("performance", "none", "page_hinkley", 1.0, 10.0, "holds"),
            SignalEvidence("concept_drift", "none", "window error growth", 0.0, 0.15, "-"),
            SignalEvidence("drift", "weak", "weighted_psi", 0.03, 0.02, "drift warning"),
            SignalEvidence("estimated_performance", "none", "CBPE", 0.8, 0.79, "-"),
            SignalEvidence("data_volume", "none", "new labels", 10.0, 500.0, "few"),
            SignalEvidence("model_age", "none", "days", 1.0, 30.0, "young")]

    def with_(**changes):
        signals = [SignalEvidence(**{**s.to_dict(), **changes.get(s.kind, {})}) for s in base]
        return fuse(signals, model)

    warning = with_()
    assert not warning.retrain and warning.severity == "LOW" and "drift warning" in warning.reason
    confirmed = with_(estimated_performance={"status": "weak", "detail": "estimated accuracy drop"})
    assert confirmed.retrain and confirmed.trigger == "drift" and confirmed.severity == "HIGH"
    realized = with_(concept_drift={"status": "weak", "detail": "error growth"})
    assert realized.retrain and realized.trigger == "drift" and "confirmed by realized errors" in realized.reason
    unlearnable = {"status": "weak", "metrics": {"learnable": False}, "lasting": True}
    assert not with_(drift=unlearnable, estimated_performance={"status": "weak"}, data_volume={"status": "weak"}).retrain
    assert with_(drift=unlearnable, concept_drift={"status": "weak"}).retrain  # the labels carry the change
    waiting = with_(drift={"status": "retrain", "metrics": {"learnable": False}, "confidence": 0.9,
                           "detail": "large drift: x; not yet learnable: y"})
    assert not waiting.retrain and waiting.severity == "LOW" and waiting.confidence == pytest.approx(0.1)
    confirmed_large = with_(drift={"status": "retrain", "metrics": {"learnable": False},
                                   "detail": "large drift: x; not yet learnable: y"}, concept_drift={"status": "weak"})
    assert confirmed_large.retrain and "not yet learnable" not in confirmed_large.reason
    assert not with_(data_volume={"status": "weak"}).retrain  # labels and a first warning: not yet
    lasting = with_(data_volume={"status": "weak"}, drift={"lasting": True})
    assert lasting.retrain and lasting.severity == "MEDIUM" and lasting.trigger == "drift"
    alone = with_(data_volume={"status": "weak"}, drift={"status": "none"})
    assert not alone.retrain  # new labels alone never retrain under the evidence policy
    old = with_(drift={"status": "none"}, model_age={"status": "retrain", "severity": "MEDIUM", "detail": "old"})
    assert old.retrain and old.trigger == "model_age" and old.severity == "MEDIUM"


def test_missing_evidence_is_named_and_the_rest_decides(trained):
    model, pipeline, profile, pack = trained
    no_pack = gather_evidence(model, pipeline=pipeline, profile=profile, pack=None, recent=rows(500, seed=9), labeled=None)
    decision = decide(no_pack, model)
    by = {s.kind: s for s in decision.signals}
    assert by["drift"].status == "unavailable" and "reference packs" in by["drift"].detail
    assert by["performance"].status == "unavailable" and not decision.retrain
    few = decide(evidence_for(trained, rows(40, seed=9), rows(30, seed=10), newest=30), model)
    assert few.signal("performance").status == "unavailable" and "30 labeled predictions" in few.signal("performance").detail
    assert few.signal("drift").status == "unavailable" and not few.retrain  # 40 rows are never drift
    nothing = decide(Evidence(model.task), model)
    assert nothing.insufficient_data and not nothing.retrain and nothing.confidence == 0.0
    if model.task == "regression":
        assert "regression model" in decide(evidence_for(trained, rows(500, seed=9)), model).signal(
            "estimated_performance").detail
    broken = evidence_for(trained, rows(500, seed=9).drop(columns=["x1"]), rows(300, seed=10).drop(columns=["y"]))
    assert "lack the columns ['x1']" in broken.unavailable["drift"]
    assert "lack the columns ['y']" in broken.unavailable["performance"]


def test_assess_then_fuse_is_decide(trained):
    model = trained[0]
    evidence = evidence_for(trained, rows(500, seed=11, shift={"x0": 0.4}), rows(800, seed=12), newest=400,
                            new_labels=900, training_rows=4000, model_age_days=3.0)
    assert fuse(assess(evidence, model), model).to_dict() == decide(evidence, model).to_dict()


def test_the_age_limit_is_a_safety_net_for_models_no_label_verifies(trained):
    model = model_settings(max_model_age_days=30)
    args = dict(recent=rows(500, seed=13, task=trained[0].task))
    unlabeled = evidence_for(trained, model_age_days=45.0, **args)  # 45 days, nothing verified it
    old = decide(unlabeled, trained[0].model_copy(update={"decision": model.decision}))
    assert old.retrain and old.trigger == "model_age" and old.severity == "MEDIUM"
    verified = evidence_for(trained, labeled=rows(400, seed=14, task=trained[0].task), newest=400, model_age_days=45.0,
                            **args)  # a fresh labeled batch judged it now
    assert not decide(verified, trained[0].model_copy(update={"decision": model.decision})).signal("model_age").status == "retrain"
    recently = evidence_for(trained, model_age_days=45.0, days_since_verified=3.0, **args)
    assert decide(recently, trained[0].model_copy(update={"decision": model.decision})).signal("model_age").value == 3.0
