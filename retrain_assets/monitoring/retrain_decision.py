"""The design documents' retrain rules (``decision.policy: seed``), as signals with a strength.

Each signal has a strength (mild, strong, very strong); a trigger's severity follows from its signals:
one mild signal -> LOW (monitor); several mild or one strong -> MEDIUM (next quiet window); several strong
-> HIGH (now); any very strong -> CRITICAL (now, bypasses the cooldown). Strengths:

* data drift: features drifted but not the dataset -> mild; dataset drift, or a drifted feature with PSI
  above ``psi_feature`` (0.2) -> strong; dataset drift with KL > ``kl_severe`` (0.5) on a drifted
  feature, or half the features drifted with aggregate PSI above twice ``psi_aggregate`` -> very strong;
  an outlier share above ``outlier_fraction`` alone -> mild;
* concept drift: window error growth beyond the limit -> mild, beyond twice the limit -> strong;
* performance: a warning-level accuracy drop -> mild; a metric past its retrain threshold -> strong; a drop
  above ``urgent_drop`` (20 %) -> very strong;
* new labels: ``new_labels_now`` (10,000) -> HIGH, ``new_labels_scheduled`` (5,000) -> MEDIUM.

The seed had three triggers deciding independently (drift, performance, data volume);
:func:`retrain_assets.monitoring.decision.decide` fuses them by taking the most severe triggered one.
"""

import enum
from dataclasses import dataclass, field

from retrain_assets.monitoring.dataset_drift import DriftReport
from retrain_assets.monitoring.degradation import ConceptDrift, PerformanceReport
from retrain_assets.config.monitoring import DriftSettings, PerformanceSettings


class Severity(str, enum.Enum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


SEVERITY_ORDER = ("NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL")
STRENGTH_CONFIDENCE = {"mild": 0.4, "strong": 0.7, "very_strong": 0.9}


@dataclass
class Signal:
    kind: str  # drift | concept_drift | performance | data_volume
    strength: str  # mild | strong | very_strong
    detail: str
    metrics: dict = field(default_factory=dict)


def kl_band(kl: float, settings: DriftSettings) -> str:
    if kl > settings.kl_severe:
        return "severe"
    return "moderate" if kl >= settings.kl_moderate else "monitor"


def drift_signal(report: DriftReport, settings: DriftSettings) -> Signal | None:
    """The seed's data-drift signal of a drift report (None: nothing drifted)."""
    drifted = [report.features[name] for name in report.drifted_features]
    outliers = [f.feature for f in report.features.values() if f.outliers_flagged]
    if not drifted and not outliers:
        return None
    max_kl = max((f.kl or 0.0 for f in drifted), default=0.0)
    listing = ", ".join(f"{f.feature} ({f.effect_name} {f.effect:.3g})" for f in drifted[:5])
    metrics = {"drift_share": report.drift_share, "aggregate_psi": report.aggregate_psi,
               "drifted_features": report.drifted_features, "max_kl": max_kl, "outlier_features": outliers}
    if not drifted:
        return Signal("drift", "mild", f"outlier share above {settings.outlier_fraction:.0%} in {', '.join(outliers)}", metrics)
    detail = (f"data drift in {len(drifted)}/{len(report.features)} features: {listing}; "
              f"aggregate PSI {report.aggregate_psi:.3f}, KL band {kl_band(max_kl, settings)}")
    major = [f.feature for f in drifted if (f.psi or 0.0) > settings.psi_feature]
    if not report.dataset_drift and not major:
        return Signal("drift", "mild", detail, metrics)
    very = max_kl > settings.kl_severe or (report.drift_share >= 0.5 and report.aggregate_psi > 2 * settings.psi_aggregate)
    return Signal("drift", "very_strong" if very else "strong", detail, metrics)


def concept_signal(found: ConceptDrift, settings: PerformanceSettings) -> Signal | None:
    if not found.detected:
        return None
    strength = "strong" if found.increase > 2 * settings.concept_window_increase else "mild"
    return Signal("concept_drift", strength, f"concept drift: {found.message}", found.to_dict())


def performance_signal(measured: PerformanceReport, settings: PerformanceSettings) -> Signal | None:
    """The seed's degradation signal: a metric past its threshold against the baseline."""
    warned = [c for c in measured.changes if c.warning]
    if not measured.degraded and not warned:
        return None
    worst = measured.degraded or warned
    detail = "performance below baseline: " + ", ".join(f"{c.metric} {c.current:.4g} vs {c.baseline:.4g}" for c in worst)
    drop = measured.worst_relative_drop
    strength = "very_strong" if drop > settings.urgent_drop else ("strong" if measured.degraded else "mild")
    return Signal("performance", strength, detail, measured.to_dict())


def severity_of(signals: list[Signal]) -> str:
    """NONE, or the severity the seed gives a trigger with these signals."""
    strengths = [s.strength for s in signals]
    if not strengths:
        return "NONE"
    if "very_strong" in strengths:
        return Severity.CRITICAL.value
    strong = strengths.count("strong")
    if strong >= 2:
        return Severity.HIGH.value
    if strong == 1 or len(strengths) >= 2:
        return Severity.MEDIUM.value
    return Severity.LOW.value


def volume_severity(new_labels: int, triggers) -> str:
    """HIGH at ``new_labels_now`` new labels, MEDIUM at ``new_labels_scheduled``, else NONE. ``triggers``:
    TriggerSettings."""
    if new_labels >= triggers.new_labels_now:
        return Severity.HIGH.value
    return Severity.MEDIUM.value if new_labels >= triggers.new_labels_scheduled else "NONE"
