"""One retrain decision from every signal: data drift, concept drift, performance and new labels.

Each signal has a strength (mild, strong, very strong). Severity follows from them:

* no signal -> not triggered;
* one mild signal -> LOW (monitor, no retrain);
* several mild signals, or one strong -> MEDIUM (retrain at the next quiet window);
* several strong signals -> HIGH (retrain now);
* any very strong signal -> CRITICAL (retrain now, bypasses the cooldown).

``triggered`` is True from MEDIUM up. Strengths, per the playbooks:

* data drift: features drifted but not the dataset -> mild; dataset drift, or a drifted feature with PSI
  above ``psi_feature`` (0.2) -> strong; dataset drift with
  KL > ``kl_severe`` (0.5) on a drifted feature, or half the features drifted with aggregate PSI above
  twice ``psi_aggregate`` -> very strong. KL bands are reported: < 0.1 monitor, 0.1-0.5 moderate, > 0.5 severe;
* concept drift: window error growth beyond the limit -> mild, beyond twice the limit -> strong;
* performance: a warning-level accuracy drop -> mild; a metric past its retrain threshold -> strong;
  a drop above ``urgent_drop`` (20 %) -> very strong;
* new labels: at least ``new_labels_now`` (10,000) -> strong; ``new_labels_scheduled`` (5,000) or more ->
  mild; fewer -> no signal.

Urgency: CRITICAL/HIGH "now", MEDIUM "next_quiet_window", LOW "monitor"; the performance playbook can make
it more urgent: a drop > 20 % "now", 10-20 % "within_24h", < 10 % "investigate". Fewer than
``min_samples`` recent rows is "insufficient data": never reported as drift.

Confidence combines the signals as independent pieces of evidence (mild 0.4, strong 0.7, very strong
0.9: ``1 - prod(1 - c)``), scaled down while the window holds fewer than 5 x ``min_samples`` rows.
"""

import enum
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from retrain_assets.monitoring.dataset_drift import DriftReport, detect_drift
from retrain_assets.monitoring.degradation import concept_drift, performance_degradation
from retrain_assets.monitoring.profiles import ReferenceProfile
from retrain_assets.monitoring.settings import DriftSettings, PerformanceSettings


class Severity(str, enum.Enum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


STRENGTH_CONFIDENCE = {"mild": 0.4, "strong": 0.7, "very_strong": 0.9}
URGENCY_ORDER = ("none", "monitor", "investigate", "next_quiet_window", "within_24h", "now")


@dataclass
class Signal:
    kind: str  # drift | concept_drift | performance | data_volume
    strength: str  # mild | strong | very_strong
    detail: str
    metrics: dict = field(default_factory=dict)


@dataclass
class RetrainDecision:
    triggered: bool
    severity: Severity
    confidence: float
    reasons: list[str]
    signals: list[Signal]
    urgency: str
    drift: DriftReport | None = None
    insufficient_data: bool = False
    performance: dict | None = None
    concept: dict | None = None

    def to_dict(self) -> dict:
        return {
            "retrain": self.triggered,
            "severity": self.severity.value,
            "confidence": self.confidence,
            "urgency": self.urgency,
            "reasons": self.reasons,
            "insufficient_data": self.insufficient_data,
            "signals": [asdict(s) for s in self.signals],
            "drift": None if self.drift is None else self.drift.to_dict(),
            "performance": self.performance,
            "concept_drift": self.concept,
        }


def kl_band(kl: float, settings: DriftSettings) -> str:
    if kl > settings.kl_severe:
        return "severe"
    return "moderate" if kl >= settings.kl_moderate else "monitor"


def _drift_signal(report: DriftReport, settings: DriftSettings) -> Signal | None:
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


def _severity(signals: list[Signal]) -> Severity | None:
    strengths = [s.strength for s in signals]
    if not strengths:
        return None
    if "very_strong" in strengths:
        return Severity.CRITICAL
    strong = strengths.count("strong")
    if strong >= 2:
        return Severity.HIGH
    if strong == 1 or len(strengths) >= 2:
        return Severity.MEDIUM
    return Severity.LOW


def _more_urgent(a: str, b: str) -> str:
    return a if URGENCY_ORDER.index(a) >= URGENCY_ORDER.index(b) else b


def should_retrain(
    reference: ReferenceProfile | pd.DataFrame | None,
    recent: pd.DataFrame | None,
    predictions=None,
    actuals=None,
    baseline: dict[str, float] | None = None,
    *,
    task: str = "classification",
    drift: DriftSettings | None = None,
    performance: PerformanceSettings | None = None,
    new_labels: int | None = None,
    new_labels_now: int = 10_000,
    new_labels_scheduled: int = 5_000,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    scores=None,
    positive_label=1,
) -> RetrainDecision:
    """Fuse every available signal into one decision (see the module docstring for the rules).

    ``reference``/``recent``: training-data profile (or rows) and recent feature rows, for data drift.
    ``predictions``/``actuals`` (time order): for concept drift and, with ``baseline`` (the production
    model's metrics), for performance degradation. ``new_labels``: labeled rows since the last training.
    """
    drift = drift or DriftSettings()
    performance = performance or PerformanceSettings()
    signals: list[Signal] = []
    reasons: list[str] = []
    urgency = "none"
    report = perf = concept = None
    rows = 0 if recent is None else len(recent)
    insufficient = recent is not None and rows < drift.min_samples
    if insufficient:
        reasons.append(f"insufficient data: {rows} recent rows < min_samples {drift.min_samples}; no drift verdict")
    elif reference is not None and recent is not None:
        report = detect_drift(reference, recent, drift, numeric, categorical)
        signal = _drift_signal(report, drift)
        if signal:
            signals.append(signal)
    if predictions is not None and actuals is not None:
        labeled = len(np.asarray(predictions))
        if labeled < drift.min_samples:
            reasons.append(f"insufficient labeled data: {labeled} predictions with labels < {drift.min_samples}")
            insufficient = insufficient or recent is None
        else:
            found = concept_drift(predictions, actuals, task, performance)
            concept = found.to_dict()
            if found.detected:
                strength = "strong" if found.increase > 2 * performance.concept_window_increase else "mild"
                signals.append(Signal("concept_drift", strength, f"concept drift: {found.message}", found.to_dict()))
            if baseline:
                measured = performance_degradation(predictions, actuals, baseline, task, performance, scores, positive_label)
                perf = measured.to_dict()
                drop = measured.worst_relative_drop
                if measured.degraded or any(c.warning for c in measured.changes):
                    worst = measured.degraded or [c for c in measured.changes if c.warning]
                    detail = "performance below baseline: " + ", ".join(
                        f"{c.metric} {c.current:.4g} vs {c.baseline:.4g}" for c in worst)
                    strength = "very_strong" if drop > performance.urgent_drop else ("strong" if measured.degraded else "mild")
                    signals.append(Signal("performance", strength, detail, measured.to_dict()))
                    urgency = _more_urgent(urgency, "now" if drop > performance.urgent_drop
                                           else "within_24h" if drop >= 0.10 else "investigate")
    if new_labels is not None:
        if new_labels >= new_labels_now:
            signals.append(Signal("data_volume", "strong", f"{new_labels:,} new labeled rows (>= {new_labels_now:,})"))
        elif new_labels >= new_labels_scheduled:
            signals.append(Signal("data_volume", "mild", f"{new_labels:,} new labeled rows (>= {new_labels_scheduled:,})"))
    severity = _severity(signals)
    triggered = severity in (Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)
    if severity is not None:
        urgency = _more_urgent(urgency, {"LOW": "monitor", "MEDIUM": "next_quiet_window"}.get(severity.value, "now"))
    reasons = [s.detail for s in signals] + reasons
    if not signals and not insufficient:
        reasons.append("no drift, concept drift, performance loss or label volume signal")
    evidence = 1.0 - float(np.prod([1.0 - STRENGTH_CONFIDENCE[s.strength] for s in signals])) if signals else 0.0
    support = min(1.0, rows / (5 * drift.min_samples)) if recent is not None else 1.0
    if insufficient:
        confidence = 0.0
    elif triggered:
        confidence = evidence * support
    else:
        confidence = (1.0 - evidence) * support
    return RetrainDecision(
        triggered=triggered,
        severity=severity or Severity.LOW,
        confidence=round(float(confidence), 4),
        reasons=reasons,
        signals=signals,
        urgency=urgency if severity is not None or urgency != "none" else "none",
        drift=report,
        insufficient_data=bool(insufficient),
        performance=perf,
        concept=concept,
    )
