"""The drift report's picture: which features it shows and that it is a real PNG of them."""

import io

import matplotlib.image
import numpy as np

from retrain_assets.monitoring import ReferenceProfile, detect_drift
from retrain_assets.monitoring.drift_plot import _reference_shares, drift_picture, features_to_show
from retrain_assets.config.monitoring import DriftSettings
from retrain_assets.simulate import TrafficScenario, generate_traffic

NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "data_usage_gb"]
CATEGORICAL = ["contract", "payment_method", "region"]


def report_of(scenario: TrafficScenario):
    reference = generate_traffic(3000, seed=1)
    current = generate_traffic(2000, seed=2, scenario=scenario)
    profile = ReferenceProfile.from_frame(reference, numeric=NUMERIC, categorical=CATEGORICAL, settings=DriftSettings())
    return profile, current, detect_drift(profile, current, numeric=NUMERIC, categorical=CATEGORICAL)


def image(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(io.BytesIO(png), format="png")


def test_a_drifted_window_shows_its_drifted_features_largest_psi_first():
    profile, current, report = report_of(TrafficScenario(covariate_drift=0.8))
    shown, title = features_to_show(report)
    assert set(shown) == set(report.drifted_features) and "payment_method" not in shown
    psis = [report.features[name].psi for name in shown]
    assert psis == sorted(psis, reverse=True)
    assert title.startswith(f"drifted features ({len(report.drifted_features)})")
    picture = image(drift_picture(profile, current, report))
    # one panel row per three features, 72 dpi: 2.9 in per row
    assert picture.shape[0] == int(2.9 * 72 * -(-len(shown) // 3))


def test_a_clean_window_still_shows_the_three_features_that_moved_most():
    profile, current, report = report_of(TrafficScenario())
    assert report.drifted_features == []
    shown, title = features_to_show(report)
    assert len(shown) == 3 and title.startswith("no feature drifted")
    assert image(drift_picture(profile, current, report)).shape[0] == int(2.9 * 72)


def test_the_reference_side_is_the_training_distribution_rebinned():
    """The reference histogram drawn from the stored profile matches one drawn from the training rows."""
    reference = generate_traffic(5000, seed=4)
    profile = ReferenceProfile.from_frame(reference, numeric=NUMERIC, categorical=[], settings=DriftSettings())
    values = reference["monthly_charges"].to_numpy()
    edges = np.linspace(values.min(), values.max(), 31)
    exact = np.histogram(values, bins=edges)[0] / len(values)
    assert np.abs(_reference_shares(profile.numeric["monthly_charges"], edges) - exact).max() < 0.01
