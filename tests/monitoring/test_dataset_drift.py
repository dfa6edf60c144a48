"""The dataset verdict, mergeable profiles and bad input."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from retrain_assets.errors import DataError
from retrain_assets.monitoring import ReferenceProfile, WindowProfile, detect_drift
from retrain_assets.config.monitoring import DriftSettings


def flat(report: dict, prefix="") -> dict:
    """Nested report dict -> {path: value}, floats rounded to 12 significant digits (summation order)."""
    out = {}
    for key, value in report.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = float(f"{value:.12g}") if isinstance(value, float) else value
    return out


def frames(n, shift, seed=0, columns=3):
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame({f"x{i}": rng.normal(0, 1, n) for i in range(columns)})
    cur = pd.DataFrame({f"x{i}": rng.normal(shift if i == 0 else 0, 1, n) for i in range(columns)})
    return ref, cur


def test_a_tiny_shift_on_200k_rows_is_significant_but_not_drift():
    ref, cur = frames(200_000, 0.02, columns=1)
    report = detect_drift(ref, cur)
    feature = report.features["x0"]
    assert feature.p_value < 1e-3 and feature.significant  # the p-value alone would cry wolf
    assert not feature.drifted and not report.dataset_drift
    assert "immaterial" in " ".join(feature.notes)


def test_half_a_sigma_on_5k_rows_is_drift():
    ref, cur = frames(5_000, 0.5, columns=1)
    report = detect_drift(ref, cur)
    assert report.drifted_features == ["x0"] and report.dataset_drift


def test_benjamini_hochberg_adjusts_across_features():
    ref, cur = frames(3_000, 0.3, columns=4)
    report = detect_drift(ref, cur)
    raw = np.array([f.p_value for f in report.features.values()])
    order = np.argsort(raw)
    ranked = raw[order] * len(raw) / (np.arange(len(raw)) + 1)
    expected = np.minimum.accumulate(ranked[::-1])[::-1]
    adjusted = np.array([f.p_adjusted for f in report.features.values()])[order]
    assert adjusted == pytest.approx(np.minimum(expected, 1))
    off = detect_drift(ref, cur, DriftSettings(bh_correction=False))
    assert [f.p_adjusted for f in off.features.values()] == [f.p_value for f in off.features.values()]


def test_aggregate_psi_and_share():
    ref, cur = frames(4_000, 1.0, columns=4)
    report = detect_drift(ref, cur)
    assert report.drift_share == 0.25 and report.drifted_features == ["x0"]
    assert report.aggregate_psi == pytest.approx(np.mean([f.psi for f in report.features.values()]))
    assert not report.dataset_drift  # one of four features, mean PSI under 0.3
    assert detect_drift(ref, cur, DriftSettings(drift_share=0.25)).dataset_drift


@pytest.mark.parametrize("chunks", [2, 5, 13])
def test_merged_window_profiles_equal_the_full_window(chunks):
    rng = np.random.default_rng(chunks)
    ref = pd.DataFrame({"x": rng.gamma(2, 2, 8000), "c": rng.choice(list("abcd"), 8000)})
    cur = pd.DataFrame({"x": rng.gamma(2.3, 2, 6000), "c": rng.choice(list("abcde"), 6000)})
    profile = ReferenceProfile.from_json(ReferenceProfile.from_frame(ref, settings=DriftSettings(exact_ks_max_rows=0)).to_json())
    parts = np.array_split(np.arange(len(cur)), chunks)
    merged = WindowProfile.merge_all([WindowProfile.from_frame(cur.iloc[p], profile) for p in parts])
    full, from_parts = detect_drift(profile, cur), detect_drift(profile, merged)
    for name in ("x", "c"):
        a, b = full.features[name], from_parts.features[name]
        assert (a.psi, a.kl, a.js, a.statistic, a.p_value) == (b.psi, b.kl, b.js, b.statistic, b.p_value)
    assert full.features["x"].outlier_share == from_parts.features["x"].outlier_share


def test_profile_json_round_trip_is_exact():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=3000), "c": rng.choice(["a", None, "b"], 3000)})
    profile = ReferenceProfile.from_frame(ref)
    again = ReferenceProfile.from_json(profile.to_json())
    assert again.to_json() == profile.to_json()
    cur = ref.sample(frac=0.5, random_state=1)
    assert detect_drift(profile, cur).to_dict() == detect_drift(again, cur).to_dict()
    with pytest.raises(DataError, match="unreadable"):
        ReferenceProfile.from_json('{"format": 1}')


@hsettings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(150, 3000))
def test_identical_frames_never_drift_and_row_order_does_not_matter(seed, n):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.standard_t(3, n), "k": rng.poisson(1, n).astype(float),
                          "c": rng.choice(["u", "v", "w"], n, p=[0.7, 0.2, 0.1])})
    same = detect_drift(frame, frame)
    assert not same.drifted_features and not same.dataset_drift
    shuffled = frame.sample(frac=1, random_state=seed % 1000)
    ref, cur = frame.iloc[: n // 2], frame.iloc[n // 2 :]
    a = detect_drift(ref, cur).to_dict()
    b = detect_drift(ref.sample(frac=1, random_state=1), cur.sample(frac=1, random_state=2)).to_dict()
    assert flat(a) == flat(b)
    assert flat(detect_drift(frame, shuffled).to_dict()) == flat(same.to_dict())


def test_bad_input_is_named_or_skipped_never_silent():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=500), "y": rng.normal(size=500), "c": rng.choice(list("ab"), 500)})
    with pytest.raises(DataError, match="empty"):
        detect_drift(ref, ref.iloc[0:0])
    with pytest.raises(DataError, match=r"\['y'\]"):
        detect_drift(ref, ref.drop(columns=["y"]))
    with pytest.raises(DataError, match="'x' should be numeric"):
        detect_drift(ref, ref.assign(x="oops"))
    all_nan = detect_drift(ref, ref.assign(y=np.nan))
    assert "y" in all_nan.skipped and "no finite values" in all_nan.skipped["y"]
    infinite = ref.copy()
    infinite.loc[:9, "x"] = np.inf
    result = detect_drift(ref, infinite).features["x"]
    assert "10 infinite" in " ".join(result.notes) and np.isfinite(result.psi)
    constant = pd.DataFrame({"x": np.ones(300)})
    moved = detect_drift(constant, pd.DataFrame({"x": np.full(300, 2.0)})).features["x"]
    assert moved.drifted and all(np.isfinite([moved.psi, moved.kl, moved.wasserstein]))
    one_row = detect_drift(ref, ref.iloc[:1])
    assert one_row.insufficient_data and not one_row.dataset_drift and not one_row.drifted_features
    assert all(f.p_value is not None for f in one_row.features.values())
