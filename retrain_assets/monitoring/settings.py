"""Thresholds for drift, concept drift and performance monitoring.

Defaults are the numbers of the design documents; every one can be overridden in ``retrain.yaml``
(globally under ``defaults:`` or per model).
"""

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
