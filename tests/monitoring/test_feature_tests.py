"""Per-feature statistics: equal to scipy where we claim it, hand-checked where we define it."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from retrain_assets.monitoring import ReferenceProfile, detect_drift
from retrain_assets.monitoring.feature_tests import (
    EPSILON,
    js_divergence,
    kl_divergence,
    ks_asymptotic_pvalue,
    psi,
)
from retrain_assets.config.monitoring import DriftSettings


@pytest.mark.parametrize("seed", range(12))
def test_ks_equals_scipy_for_raw_windows(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(20, 12_000, size=2)
    ref = pd.DataFrame({"x": rng.normal(0, 1, n)})
    cur = pd.DataFrame({"x": rng.normal(rng.uniform(-0.3, 0.3), rng.uniform(0.8, 1.2), m)})
    result = detect_drift(ref, cur).features["x"]
    expected = stats.ks_2samp(ref["x"], cur["x"], method="auto")
    assert result.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert result.method == ("exact" if max(n, m) <= 10_000 else "asymp")


def test_ks_with_ties_equals_scipy():
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"x": rng.poisson(2.0, 900).astype(float)})
    cur = pd.DataFrame({"x": rng.poisson(2.4, 700).astype(float)})
    expected = stats.ks_2samp(ref["x"], cur["x"])
    result = detect_drift(ref, cur).features["x"]
    assert (result.statistic, result.p_value) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-12)


def test_ks_says_asymptotic_when_scipys_exact_calculation_gives_up(recwarn):
    """Many ties and a tiny D (a Poisson(1) column split in halves) defeat scipy's exact KS; scipy warns and
    uses the asymptotic p-value. The report says which method gave the number, and the run's log gets no
    warning for it."""
    rng = np.random.default_rng(10476)
    rng.standard_t(3, 1500)  # the draw before it in the hypothesis example that found this case
    values = rng.poisson(1, 1500).astype(float)
    ref, cur = pd.DataFrame({"k": values[:750]}), pd.DataFrame({"k": values[750:]})
    result = detect_drift(ref, cur).features["k"]
    assert result.method == "asymp" and "did not converge" in " ".join(result.notes)
    assert result.p_value == pytest.approx(stats.ks_2samp(values[:750], values[750:], method="asymp").pvalue)
    assert not [w for w in recwarn if "Exact calculation unsuccessful" in str(w.message)]


@pytest.mark.parametrize("seed", range(5))
def test_binned_ks_stays_within_its_bound_and_uses_scipys_asymptotic_pvalue(seed):
    rng = np.random.default_rng(seed)
    settings = DriftSettings(exact_ks_max_rows=0)  # force the profile path
    ref = pd.DataFrame({"x": rng.lognormal(0, 1, 60_000)})
    cur = pd.DataFrame({"x": rng.lognormal(0.05 * seed, 1, 40_000)})
    result = detect_drift(ref, cur, settings).features["x"]
    exact = stats.ks_2samp(ref["x"], cur["x"], method="asymp")
    bound = float(result.method.split("<= ")[1].rstrip(")"))
    assert abs(result.statistic - exact.statistic) <= bound + 1e-12
    assert result.p_value == pytest.approx(ks_asymptotic_pvalue(result.statistic, 60_000, 40_000))
    assert ks_asymptotic_pvalue(exact.statistic, 60_000, 40_000) == pytest.approx(exact.pvalue, rel=1e-12)


def test_psi_kl_js_by_hand():
    ref, cur = np.array([50, 30, 20]), np.array([30, 30, 40])
    p, q = ref / 100, cur / 100
    assert psi(ref, cur) == pytest.approx(np.sum((q - p) * np.log(q / p)))
    assert psi(ref, cur) == pytest.approx(0.2 * np.log(0.6) * -1 + 0 + 0.2 * np.log(2))
    assert kl_divergence(ref, cur) == pytest.approx(0.3 * np.log(0.6) + 0.3 * np.log(1) + 0.4 * np.log(2))
    m = (p + q) / 2
    js = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    assert js_divergence(ref, cur) == pytest.approx(js)
    assert js_divergence(ref, ref) == 0.0 and psi(ref, ref) == 0.0


def test_empty_bins_use_the_documented_epsilon():
    ref, cur = np.array([100, 0]), np.array([50, 50])
    p = np.array([1.0, EPSILON]) / (1 + EPSILON)
    q = np.array([0.5, 0.5])
    assert psi(ref, cur) == pytest.approx(np.sum((q - p) * np.log(q / p)))
    assert np.isfinite(psi(ref, cur)) and js_divergence(ref, np.array([0, 10])) == pytest.approx(1.0)


def test_psi_bins_are_reference_deciles_with_open_ends():
    ref = pd.DataFrame({"x": np.arange(1000, dtype=float)})
    profile = ReferenceProfile.from_frame(ref)
    counts = profile.numeric["x"]
    assert len(counts.psi_edges) == 9
    assert counts.psi_counts(counts.counts).tolist() == [100] * 10
    far = pd.DataFrame({"x": [-1e9, 1e9, 500.0]})  # out of range: the end bins, never dropped
    from retrain_assets.monitoring import WindowProfile

    window = WindowProfile.from_frame(far, profile)
    assert counts.psi_counts(window.numeric["x"]).tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]


def test_categorical_chi2_with_unseen_and_vanished_levels():
    ref = pd.DataFrame({"c": ["a"] * 500 + ["b"] * 300 + ["gone"] * 200})
    cur = pd.DataFrame({"c": ["a"] * 400 + ["b"] * 300 + ["new"] * 300})
    result = detect_drift(ref, cur).features["c"]
    table = np.array([[500, 300, 200, 0], [400, 300, 0, 300]])
    expected = stats.chi2_contingency(table, correction=False)
    assert result.statistic == pytest.approx(expected.statistic) and result.p_value == pytest.approx(expected.pvalue)
    assert any("new" in n for n in result.notes) and any("gone" in n for n in result.notes)
    assert result.drifted


def test_thousands_of_levels_are_pooled_not_a_crash():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"id": rng.integers(0, 5000, 20_000).astype(str)})
    cur = pd.DataFrame({"id": rng.integers(0, 5000, 20_000).astype(str)})
    result = detect_drift(ref, cur).features["id"]
    assert any("pooled" in n for n in result.notes)
    assert not result.drifted


def test_wasserstein_is_in_reference_standard_deviations():
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"x": rng.normal(10, 4, 50_000)})
    cur = pd.DataFrame({"x": rng.normal(12, 4, 50_000)})  # half a standard deviation
    result = detect_drift(ref, cur).features["x"]
    assert result.wasserstein == pytest.approx(0.5, abs=0.03)
    exact = stats.wasserstein_distance(ref["x"], cur["x"]) / ref["x"].std()
    assert result.wasserstein == pytest.approx(exact, abs=0.01)


def test_outliers_are_flagged_against_the_reference_share():
    rng = np.random.default_rng(2)
    ref = pd.DataFrame({"x": rng.normal(0, 1, 5000)})
    cur = pd.DataFrame({"x": np.r_[rng.normal(0, 1, 4500), rng.normal(0, 1, 500) + 8]})
    result = detect_drift(ref, cur).features["x"]
    assert result.outliers_flagged and result.outlier_share == pytest.approx(0.1, abs=0.01)
    assert not detect_drift(ref, ref).features["x"].outliers_flagged


@pytest.mark.parametrize("kind", ["normal", "lognormal", "poisson", "spike", "constant_tail"])
def test_fast_binner_counts_equal_searchsorted(kind):
    from retrain_assets.monitoring.profiles import FastBinner, quantile_edges

    rng = np.random.default_rng(7)
    data = {
        "normal": rng.normal(size=50_000),
        "lognormal": rng.lognormal(0, 2, 50_000),
        "poisson": rng.poisson(2, 50_000).astype(float),
        "spike": np.r_[rng.normal(size=25_000), np.full(25_000, 1.5)],
        "constant_tail": np.r_[np.zeros(40_000), rng.uniform(0, 1, 10_000)],
    }[kind]
    edges = quantile_edges(data, np.arange(1, 2000) / 2000)
    probe = np.r_[data + rng.normal(0, 0.3, data.size), edges, np.nextafter(edges, np.inf),
                  np.nextafter(edges, -np.inf), [-1e300, 1e300]]
    expected = np.bincount(np.searchsorted(edges, probe, side="left"), minlength=len(edges) + 1)
    assert np.array_equal(FastBinner(edges).counts(probe), expected)


def test_large_sample_pvalue_uses_the_kolmogorov_limit_within_1e3():
    from retrain_assets.monitoring.feature_tests import KSTWO_MAX_N

    n = m = 2 * KSTWO_MAX_N + 2  # effective size just past the switch
    for d in (0.001, 0.002, 0.004, 0.006):
        exact = stats.kstwo.sf(d, np.round(n * m / (n + m)))
        assert abs(ks_asymptotic_pvalue(d, n, m) - exact) < 1e-3
