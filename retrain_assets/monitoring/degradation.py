"""Concept drift and performance degradation: is the model getting worse at its job?

* **Concept drift** (``concept_drift``): the prediction error of consecutive windows of
  ``concept_window_rows`` rows (MAE for regression, error rate for classification); flagged when the
  newest window's error exceeds the previous window's by more than ``concept_window_increase`` (15 %)
  *and* the increase is significant at ``concept_p_value`` (0.05) in a one-sided test: a two-proportion
  z-test on the error rates, Welch's t-test on the absolute errors. Like the drift engine's effect floors,
  this keeps noise from firing: at a 7 % error rate, 37 vs 50 errors in 500 rows is +35 % but p = 0.07.
* **Degradation against the baseline** (``performance_degradation``): current metrics of the recent
  labeled predictions against the production model's baseline metrics. Classification: accuracy
  relative drop (warning at 5 %, retrain at 10 %), F1 absolute drop 0.05, AUC absolute drop 0.05 (when
  scores are given). Regression: R2 relative drop 5 %, RMSE +10 %, MAE +20 %.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from retrain_assets.config.monitoring import PerformanceSettings
from retrain_assets.errors import DataError
from retrain_assets.metrics import compute_metrics


@dataclass
class ConceptDrift:
    window_errors: list[float]
    increase: float | None  # relative increase of the newest window over the previous one
    detected: bool
    window_rows: int
    message: str
    p_value: float | None = None  # one-sided test of the increase

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MetricChange:
    metric: str
    baseline: float
    current: float
    drop: float  # how much worse, as a fraction (relative) or in metric units (absolute); > 0 = worse
    relative: bool
    threshold: float
    degraded: bool
    warning: bool = False


@dataclass
class PerformanceReport:
    metrics: dict[str, float]
    changes: list[MetricChange] = field(default_factory=list)

    @property
    def degraded(self) -> list[MetricChange]:
        return [c for c in self.changes if c.degraded]

    @property
    def worst_relative_drop(self) -> float:
        """The largest relative loss of any metric (0 when none got worse): drives urgency."""
        drops = [(c.drop if c.relative else c.drop / max(abs(c.baseline), 1e-12)) for c in self.changes]
        return max([0.0, *drops])

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "changes": [asdict(c) for c in self.changes],
                "degraded": [c.metric for c in self.degraded], "worst_relative_drop": self.worst_relative_drop}


def _aligned(predictions, actuals) -> tuple[np.ndarray, np.ndarray]:
    predictions, actuals = np.asarray(predictions), np.asarray(actuals)
    if predictions.shape != actuals.shape or predictions.ndim != 1:
        raise DataError(f"predictions ({predictions.shape}) and actuals ({actuals.shape}) must be 1-d and the same length")
    return predictions, actuals


def per_row_losses(predictions, actuals, task: str) -> np.ndarray:
    """The loss of each prediction: 1.0 wrong / 0.0 right (classification), the absolute error (regression).
    Every realized-performance test (concept drift, Page-Hinkley, the newest batch) runs on these."""
    predictions, actuals = _aligned(predictions, actuals)
    if task == "regression":
        errors = np.abs(predictions.astype(float) - actuals.astype(float))
        finite = np.isfinite(errors)
        if not finite.all():
            raise DataError(f"{int((~finite).sum())} predictions or actuals are missing or infinite: drop them first")
        return errors
    return (predictions != actuals).astype(float)


def concept_drift(predictions, actuals, task: str, settings: PerformanceSettings | None = None) -> ConceptDrift:
    """Error growth between the two newest full windows (rows in time order, oldest first)."""
    return concept_drift_of_losses(per_row_losses(predictions, actuals, task), task, settings)


def concept_drift_of_losses(errors, task: str, settings: PerformanceSettings | None = None) -> ConceptDrift:
    """:func:`concept_drift` on per-row losses (:func:`per_row_losses`), oldest first."""
    settings = settings or PerformanceSettings()
    errors = np.asarray(errors, dtype=float)
    size = settings.concept_window_rows
    windows = len(errors) // size
    if windows < 2:
        return ConceptDrift([], None, False, size,
                            f"insufficient data: {len(errors)} labeled predictions, concept drift needs 2 windows of {size}")
    usable = errors[len(errors) - windows * size:]  # the newest full windows
    window_errors = usable.reshape(windows, size).mean(axis=1)
    previous, newest = window_errors[-2], window_errors[-1]
    increase = (newest - previous) / previous if previous > 0 else (np.inf if newest > 0 else 0.0)
    p_value = _increase_p_value(usable[-2 * size:-size], usable[-size:], task)
    detected = bool(increase > settings.concept_window_increase and p_value < settings.concept_p_value)
    name = "MAE" if task == "regression" else "error rate"
    message = (f"{name} of the newest {size} rows {newest:.4g} vs {previous:.4g} before "
               f"({increase:+.1%}, p={p_value:.2g}; limit +{settings.concept_window_increase:.0%} at p < "
               f"{settings.concept_p_value:g})")
    return ConceptDrift([float(e) for e in window_errors], float(increase), detected, size, message, float(p_value))


def _increase_p_value(before: np.ndarray, after: np.ndarray, task: str) -> float:
    """One-sided p-value of "the errors of ``after`` are larger than those of ``before``"."""
    from scipy import stats

    if task == "regression":
        if np.ptp(np.concatenate([before, after])) == 0:
            return 1.0
        return float(stats.ttest_ind(after, before, equal_var=False, alternative="greater").pvalue)
    n1, n2 = len(before), len(after)
    pooled = (before.sum() + after.sum()) / (n1 + n2)
    spread = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return 1.0
    return float(stats.norm.sf((after.mean() - before.mean()) / spread))


def performance_degradation(
    predictions, actuals, baseline: dict[str, float], task: str, settings: PerformanceSettings | None = None,
    scores=None, positive_label=1,
) -> PerformanceReport:
    """Current metrics against ``baseline`` (the production model's metrics), metric by metric."""
    settings = settings or PerformanceSettings()
    predictions, actuals = _aligned(predictions, actuals)
    if len(predictions) == 0:
        raise DataError("no labeled predictions to measure performance on")
    current = compute_metrics(actuals, predictions, task, positive_label, scores)
    rules = (
        {"accuracy": (True, settings.accuracy_drop), "f1": (False, settings.f1_drop), "auc": (False, settings.auc_drop)}
        if task == "classification"
        else {"r2": (True, settings.r2_drop), "rmse": (True, settings.rmse_increase), "mae": (True, settings.mae_increase)}
    )
    report = PerformanceReport(current)
    for metric, (relative, threshold) in rules.items():
        if metric not in current or metric not in baseline or baseline[metric] is None:
            continue
        base, now = float(baseline[metric]), float(current[metric])
        worse = now - base if metric in ("rmse", "mae") else base - now
        drop = worse / abs(base) if relative and base != 0 else worse
        change = MetricChange(metric, base, now, float(drop), relative, threshold, bool(drop > threshold))
        change.warning = metric == "accuracy" and drop > settings.accuracy_drop_warn
        report.changes.append(change)
    return report
