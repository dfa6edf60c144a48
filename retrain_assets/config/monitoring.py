"""Thresholds for drift, concept drift and performance monitoring.

Defaults are the numbers of the design documents; every one can be overridden in ``retrain.yaml``
(globally under ``defaults:`` or per model).
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriftSettings(_Strict):
    """Data-drift tests and the dataset verdict."""

    ks_p_value: float = Field(0.05, gt=0, lt=1, description="KS significance level (after BH correction).")
    chi2_p_value: float = Field(0.05, gt=0, lt=1, description="Chi-square significance level (after BH).")
    psi_feature: float = Field(0.2, gt=0, description="PSI above which one feature has drifted.")
    psi_aggregate: float = Field(0.3, gt=0, description="Mean PSI over features above which the dataset drifted.")
    psi_bins: int = Field(10, ge=2, le=1000, description="Reference-quantile bins for PSI/KL/JS.")
    kl_moderate: float = Field(0.1, gt=0, description="KL divergence band start: moderate drift.")
    kl_severe: float = Field(0.5, gt=0, description="KL divergence band start: severe drift.")
    zscore: float = Field(3.0, gt=0, description="|z| above which a value is an outlier.")
    outlier_fraction: float = Field(0.05, gt=0, lt=1, description="Share of outlier rows that flags a feature.")
    min_psi_effect: float = Field(0.1, ge=0, description="Effect floor: PSI a significant feature must reach.")
    min_ks_effect: float = Field(0.1, ge=0, description="Effect floor: KS D a significant feature must reach.")
    min_wasserstein_effect: float = Field(
        0.1, ge=0, description="Effect floor: normalized Wasserstein distance a significant feature must reach."
    )
    drift_share: float = Field(
        0.3, gt=0, le=1, description="Share of drifted features at which the dataset counts as drifted."
    )
    fine_bins: int = Field(
        2000, ge=10, le=100_000,
        description="Reference-quantile bins of profiles (binned KS and Wasserstein; a multiple of psi_bins).",
    )
    exact_ks_max_rows: int = Field(
        50_000, ge=0, description="Windows and references up to this many rows get scipy's exact KS."
    )
    max_categories: int = Field(
        200, ge=2, description="Categorical levels tested individually; rarer ones are pooled as __other__."
    )
    bh_correction: bool = Field(True, description="Benjamini-Hochberg correction across features.")
    min_samples: int = Field(100, ge=1, description="Fewer current rows than this: 'insufficient data'.")


class PerformanceSettings(_Strict):
    """Degradation against the production baseline, and windowed concept drift."""

    accuracy_drop_warn: float = Field(0.05, gt=0, lt=1, description="Relative accuracy drop: warning.")
    accuracy_drop: float = Field(0.10, gt=0, lt=1, description="Relative accuracy drop: retrain.")
    f1_drop: float = Field(0.05, gt=0, lt=1, description="Absolute F1 drop: retrain.")
    auc_drop: float = Field(0.05, gt=0, lt=1, description="Absolute AUC drop: retrain.")
    r2_drop: float = Field(0.05, gt=0, lt=1, description="Relative R2 drop: retrain.")
    rmse_increase: float = Field(0.10, gt=0, description="Relative RMSE increase: retrain.")
    mae_increase: float = Field(0.20, gt=0, description="Relative MAE increase: retrain.")
    concept_window_increase: float = Field(
        0.15, gt=0, description="Relative error increase between consecutive windows: concept drift."
    )
    concept_window_rows: int = Field(500, ge=10, description="Rows per window for concept drift.")
    concept_p_value: float = Field(
        0.05, gt=0, lt=1,
        description="Concept drift also needs the error increase to be significant (one-sided test) at this level.",
    )
    urgent_drop: float = Field(0.20, gt=0, description="Performance drop above which retraining is urgent.")


class MonitoringSettings(_Strict):
    """How much recent traffic the monitoring assets look at."""

    window_rows: int = Field(2000, ge=1, description="Most recent prediction-log rows in the current window.")
    window_hours: float | None = Field(
        None, gt=0, description="If set, only rows of the last N hours (in addition to window_rows)."
    )


class DecisionSettings(_Strict):
    """The retrain decision: which policy fuses the signals, and the evidence policy's statistics.

    ``evidence`` (default) retrains when the model's own evidence says it matters: realized performance
    first (a sequential test since deployment and a test of the newest labeled batch, against the error the
    model showed on its held-out rows), importance-weighted drift calibrated on the training window's own
    chunk-to-chunk variability, confirmed by labels or by confidence-based performance estimation.
    ``seed`` applies the design documents' fixed rules (PSI > 0.2, KS p < 0.05, 10,000/5,000 new labels,
    point gates). See docs/drift.md, "The retrain decision".
    """

    policy: Literal["evidence", "seed"] = Field(
        "evidence",
        description="evidence: retrain when the model's own evidence says it matters (the default); seed: the "
                    "design documents' fixed rules (PSI > 0.2, KS p < 0.05, 10k/5k new labels, point gates).",
    )
    tolerance: float = Field(
        0.05, ge=0, lt=1,
        description="Smallest loss of performance that matters, relative to the held-out error (0.05: 5 % more "
                    "errors, or 5 % more MAE, than the model showed on its held-out rows).",
    )
    sequential_alpha: float = Field(
        0.01, gt=0, lt=0.5,
        description="Page-Hinkley test on the per-row errors since deployment: false-alarm probability per check "
                    "(sets its alarm threshold from the held-out error's variance).",
    )
    batch_alpha: float = Field(
        0.01, gt=0, lt=0.5,
        description="One-sided test of the newest labeled batch's error against the held-out error: significance level.",
    )
    min_labeled_rows: int = Field(
        100, ge=10, description="Fewer labeled rows than this since deployment (or in the newest batch): no realized test."
    )
    max_labeled_rows: int = Field(
        100_000, ge=100, description="Newest labeled rows since deployment the realized tests read (bounds the cost)."
    )
    drift_alone_multiple: float = Field(
        2.0, gt=1,
        description="Importance-weighted drift alone triggers a retrain at this multiple of its calibrated threshold; "
                    "between 1x and this, drift is an early warning that needs confirmation.",
    )
    drift_alpha: float = Field(
        0.01, gt=0, lt=0.5,
        description="Drift must also exceed PSI's sampling noise at this level (a small window is never drift by chance).",
    )
    calibration_chunks: int = Field(
        4, ge=2, description="The drift threshold is calibrated on at least this many chunks of the training window."
    )
    cbpe_alpha: float = Field(
        0.01, gt=0, lt=0.5,
        description="Confidence-based performance estimation: significance of the estimated accuracy drop that "
                    "confirms drift while labels are late.",
    )
    worthwhile_labels_fraction: float = Field(
        0.25, gt=0,
        description="New labels make a retrain worthwhile at this share of the production model's training rows "
                    "(at least min_labeled_rows); with a warning signal they trigger one.",
    )
    trend_windows: int = Field(
        6, ge=4,
        description="The trend test splits the production model's labeled predictions since deployment into this many "
                    "consecutive windows (the performance reports' rows without their overlap: a report's metrics are "
                    "cumulative) and names a significant monotonic rise of the error across them (Kendall's tau, "
                    "one-sided) a gradual decline. At least 4 windows, so that a decline can be significant.",
    )
    trend_alpha: float = Field(0.05, gt=0, lt=0.5, description="Significance of the trend test's decline.")
    max_model_age_days: float | None = Field(
        30.0, gt=0,
        description="A production model neither promoted, challenged by a candidate nor verified by the realized "
                    "tests on a fresh labeled batch for this many days is retrained anyway (null: never).",
    )
