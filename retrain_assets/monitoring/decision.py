"""One retrain decision per model, from every signal: :func:`decide` (evidence) -> :class:`Decision`.

The monitoring run, the trigger sensor, ``retrain check`` and ``retrain replay`` build an
:class:`Evidence` from what they know and call this one pure function; only how the evidence is gathered
differs. The decision names its deciding signal (the ``trigger_type`` of the event row), a severity, an
urgency, a confidence, one plain-words reason, and every signal with its statistic and threshold.

**The evidence policy** (``decision.policy: evidence``, the default), in order:

1. **Realized performance**, whenever labels have arrived. The production model's per-row losses since its
   deployment (or since the last failed retrain: evidence already acted on does not count twice) are
   tested against the loss it showed on its own held-out rows: Page-Hinkley over all of them, and a
   one-sided test of the newest labeled batch (:mod:`~retrain_assets.monitoring.sequential`), both with the
   errors' dependence in time. Either alarm retrains now (HIGH). The design documents' thresholds (accuracy
   -10 %, F1 -0.05, MAE +20 %, RMSE +10 %, R2 -5 % against the baseline) stay as the "large drop" arm when
   the loss increase is significant too: HIGH, CRITICAL beyond ``urgent_drop`` (20 %).
2. **Concept drift** (windowed error growth) significant at ``sequential_alpha`` retrains (HIGH); at the
   documents' ``concept_p_value`` it is a warning.
3. **Drift that matters.** Each feature's PSI is weighted by its permutation importance to the model and
   compared with the larger of the threshold calibrated on the training window's own chunks and PSI's
   sampling noise at ``drift_alpha``. At ``drift_alone_multiple`` (2x) the threshold it retrains alone
   (HIGH); above 1x it is an early warning that needs confirmation: growing realized errors (a concept-drift
   warning) or the estimated accuracy from the model's confidence on the newest, unlabeled inputs (CBPE)
   (HIGH).
   Drift acts only once a retrain could learn it: the window a retrain would train on (the rows labeled
   since production's training, mixed with the rest of the window) must show the same weighted PSI above
   the same threshold; before that a candidate would learn what production already knows.
4. **Weak signals made worthwhile by labels.** A warning (drift, CBPE, concept drift) that was already
   there at the previous decision retrains once enough new labels arrived to train on something new
   (``worthwhile_labels_fraction`` of the production model's training rows): MEDIUM, in the quiet window.
   New labels alone never retrain.
5. **Age, the safety net.** A model neither promoted, challenged nor verified on a fresh labeled batch for
   ``max_model_age_days`` retrains anyway (MEDIUM).

6. **Notices** (seed 003), reported and never acting: prediction drift (the model's own output on recent
   inputs against its held-out rows) and the trend of the primary metric over the latest performance
   reports; a decline is named in the reason when the realized tests retrain
   (:mod:`~retrain_assets.monitoring.prediction_drift` says why neither acts).

Otherwise no retrain: LOW (monitor) when a warning stands, NONE when nothing does. Evidence that cannot be
gathered (too few labeled rows, no reference pack, no probabilities, a regression model for CBPE) is listed
as unavailable with the reason, and the decision rests on the rest; too little data is never drift.

**The seed policy** (``decision.policy: seed``) applies the design documents' fixed rules
(:mod:`~retrain_assets.monitoring.retrain_decision`) and takes the most severe of its three triggers.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from retrain_assets.errors import DataError
from retrain_assets.monitoring.cbpe import estimate_performance
from retrain_assets.monitoring.dataset_drift import DriftReport
from retrain_assets.monitoring.degradation import concept_drift_of_losses, per_row_losses, performance_degradation
from retrain_assets.monitoring.prediction_drift import decline_trend
from retrain_assets.monitoring.reference_pack import ReferencePack, weighted_drift
from retrain_assets.monitoring.retrain_decision import (
    SEVERITY_ORDER,
    STRENGTH_CONFIDENCE,
    concept_signal,
    drift_signal,
    performance_signal,
    severity_of,
    volume_severity,
)
from retrain_assets.monitoring.sequential import batch_test, dependence, page_hinkley

SIGNAL_KINDS = ("performance", "concept_drift", "drift", "estimated_performance", "data_volume", "model_age",
                "prediction_drift", "trend")
URGENCY = {"NONE": "none", "LOW": "monitor", "MEDIUM": "next_quiet_window", "HIGH": "now", "CRITICAL": "now"}
URGENCY_ORDER = ("none", "monitor", "next_quiet_window", "within_24h", "now")
# Deciding-signal order when several could decide: what labels show first, then what inputs show.
# The design documents' degradation thresholds that make a drop "large" (AUC is not one of them).
LARGE_DROP_METRICS = ("accuracy", "f1", "mae", "rmse", "r2")
# Appended to a drift detail while a retrain could not learn the drift yet; a confirmation by realized
# errors (whose labels carry the change) drops it from the reason.
NOT_LEARNABLE = "; not yet learnable: "


@dataclass
class Outcomes:
    """The production model's labeled predictions, oldest label first (by arrival)."""

    predictions: np.ndarray
    actuals: np.ndarray
    scores: np.ndarray | None = None  # positive-class (or per-class) probabilities, for AUC
    newest_batch: int = 0  # how many of the last rows arrived since the previous decision

    def __len__(self) -> int:
        return len(self.predictions)

    def tail(self, rows: int) -> "Outcomes":
        scores = None if self.scores is None else self.scores[-rows:]
        return Outcomes(self.predictions[-rows:], self.actuals[-rows:], scores, min(self.newest_batch, rows))


@dataclass
class Evidence:
    """What is known about one production model at one moment; every field may be missing."""

    task: str
    drift: DriftReport | None = None  # recent inputs against the profile of its training rows
    retrain_window_drift: float | None = None  # importance-weighted PSI of the window a retrain would train on
    outcomes: Outcomes | None = None  # labeled predictions since deployment or the last failed retrain
    recent_scores: np.ndarray | None = None  # its scores on the recent (unlabeled) inputs, for CBPE
    recent_outputs: np.ndarray | None = None  # what it output on them (score, class or value), for prediction drift
    pack: ReferencePack | None = None  # computed when it was trained
    baseline: dict | None = None  # its baseline metrics (the large-drop arm; the seed's rules)
    new_labels: int | None = None  # labels that arrived after its training dataset was built
    training_rows: int | None = None  # rows of its training dataset
    model_age_days: float | None = None
    previous_warnings: tuple[str, ...] = ()  # signals that were weak or stronger at the previous decision
    days_since_verified: float | None = None  # since a decision last judged it on a fresh labeled batch
    unavailable: dict[str, str] = field(default_factory=dict)  # evidence the caller could not gather, and why


@dataclass
class SignalEvidence:
    """One signal as the decision judged it: its statistic against its threshold."""

    kind: str  # performance | drift | estimated_performance | concept_drift | data_volume | model_age | prediction_drift | trend
    status: str  # retrain (enough alone) | weak (needs support) | notice (reported, never acts) | none | unavailable
    test: str
    value: float | None
    threshold: float | None
    detail: str
    confidence: float = 0.0
    metrics: dict = field(default_factory=dict)
    severity: str = ""  # what this signal alone warrants (NONE .. CRITICAL); set from status when empty
    lasting: bool = False  # a warning also present at the previous decision

    def __post_init__(self):
        if not self.severity:
            self.severity = {"retrain": "HIGH", "weak": "LOW"}.get(self.status, "NONE")

    def to_dict(self) -> dict:
        out = asdict(self)
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


@dataclass
class Decision:
    retrain: bool
    trigger: str | None  # the deciding signal: the event row's trigger_type
    severity: str  # NONE | LOW | MEDIUM | HIGH | CRITICAL
    urgency: str  # none | monitor | next_quiet_window | within_24h | now
    confidence: float
    reason: str
    policy: str
    signals: list[SignalEvidence]
    drift: DriftReport | None = None
    insufficient_data: bool = False

    @property
    def triggered(self) -> bool:
        return self.retrain

    @property
    def verified(self) -> bool:
        """Whether the realized-performance tests judged the model on a fresh labeled batch."""
        signal = self.signal("performance")
        return bool(signal is not None and (signal.metrics or {}).get("verified"))

    @property
    def warnings(self) -> tuple[str, ...]:
        """Signals that were weak or stronger (the next decision asks which warnings lasted)."""
        return tuple(s.kind for s in self.signals if s.status in ("weak", "retrain") and s.kind != "data_volume")

    def signal(self, kind: str) -> SignalEvidence | None:
        return next((s for s in self.signals if s.kind == kind), None)

    @property
    def reasons(self) -> list[str]:
        """The deciding reason first, then every other signal's detail."""
        return [self.reason] + [s.detail for s in self.signals if s.detail and s.detail != self.reason]

    def to_dict(self) -> dict:
        return {
            "retrain": self.retrain, "trigger": self.trigger, "severity": self.severity, "urgency": self.urgency,
            "confidence": self.confidence, "reason": self.reason, "policy": self.policy,
            "insufficient_data": self.insufficient_data, "signals": [s.to_dict() for s in self.signals],
        }


def _unavailable(kind: str, test: str, why: str) -> SignalEvidence:
    return SignalEvidence(kind, "unavailable", test, None, None, f"{kind}: unavailable ({why})")


# The evidence policy's signals ----------------------------------------------------------------------------
def _losses(evidence: Evidence) -> np.ndarray | None:
    outcomes = evidence.outcomes
    if outcomes is None or len(outcomes) == 0:
        return None
    return per_row_losses(outcomes.predictions, outcomes.actuals, evidence.task)


def _realized(evidence: Evidence, model) -> SignalEvidence:
    settings, performance = model.decision, model.performance
    losses = _losses(evidence)
    if losses is None or len(losses) < settings.min_labeled_rows:
        count = 0 if losses is None else len(losses)
        why = evidence.unavailable.get("performance") or (
            f"{count} labeled predictions since deployment, the tests need {settings.min_labeled_rows}")
        return _unavailable("performance", "page_hinkley + newest batch", why)
    outcomes = evidence.outcomes
    reference = evidence.pack.loss if evidence.pack is not None else None
    name = "MAE" if evidence.task == "regression" else "error rate"
    metrics: dict = {"labeled_rows": int(len(losses))}
    found = []  # (severity, test, value, threshold, detail, confidence)
    significant = reference is None  # without held-out losses, a large drop is judged on its point estimate alone
    if reference is not None:
        delta = settings.tolerance * reference.mean
        factor = max(reference.dependence, dependence(losses))
        metrics["dependence"] = factor
        sequential = page_hinkley(losses, reference, delta, settings.sequential_alpha, factor)
        metrics["page_hinkley"] = sequential.to_dict()
        overall = batch_test(losses, reference, delta, settings.batch_alpha, factor, name="since_deployment")
        metrics["since_deployment"] = overall.to_dict()
        significant = overall.alarm or sequential.alarm
        if sequential.alarm:
            found.append(("HIGH", "page_hinkley", sequential.statistic, sequential.threshold,
                          f"{name} {sequential.mean_loss:.4g} over {sequential.rows} rows labeled since deployment vs "
                          f"{reference.mean:.4g} held out: Page-Hinkley {sequential.statistic:.3g} > {sequential.threshold:.3g}",
                          1 - sequential.p_value))
        newest = outcomes.newest_batch
        if newest >= settings.min_labeled_rows:
            batch = batch_test(losses[-newest:], reference, delta, settings.batch_alpha, factor)
            metrics["newest_batch"] = batch.to_dict()
            metrics["verified"] = True  # judged on a fresh labeled batch: the model's age clock restarts
            if batch.alarm:
                found.append(("HIGH", "newest_batch", batch.statistic, batch.threshold,
                              f"{name} {batch.mean_loss:.4g} in the newest {batch.rows} labeled rows vs {reference.mean:.4g} "
                              f"held out (+{settings.tolerance:.0%} tolerance): z {batch.statistic:.2f}, p {batch.p_value:.2g}",
                              1 - batch.p_value))
        else:
            metrics["newest_batch"] = f"unavailable: {newest} new labeled rows since the last decision (needs {settings.min_labeled_rows})"
    else:
        metrics["page_hinkley"] = "unavailable: no reference pack (the model was trained before held-out losses were kept)"
    if evidence.baseline:
        scores = outcomes.scores if outcomes.scores is not None and np.isfinite(np.asarray(outcomes.scores, float)).all() else None
        measured = performance_degradation(outcomes.predictions, outcomes.actuals, evidence.baseline, evidence.task,
                                           performance, scores, model.positive_label)
        metrics["metrics"], metrics["baseline"] = measured.metrics, dict(evidence.baseline)
        large = [c for c in measured.degraded if c.metric in LARGE_DROP_METRICS]
        if large and significant:
            drop = max(c.drop if c.relative else c.drop / max(abs(c.baseline), 1e-12) for c in large)
            listing = ", ".join(f"{c.metric} {c.current:.4g} vs baseline {c.baseline:.4g}" for c in large)
            found.append(("CRITICAL" if drop > performance.urgent_drop else "HIGH", "large_drop", float(drop), None,
                          f"large performance drop: {listing}", 0.99))
    if not found:
        if reference is None:
            return SignalEvidence("performance", "none", "baseline", None, None,
                                  "no large drop against the baseline (no held-out losses for the sequential tests)",
                                  0.0, metrics)
        return SignalEvidence("performance", "none", "page_hinkley", sequential.statistic, sequential.threshold,
                              f"performance holds: {name} {sequential.mean_loss:.4g} over {sequential.rows} labeled rows "
                              f"vs {reference.mean:.4g} held out (Page-Hinkley {sequential.statistic:.3g} <= "
                              f"{sequential.threshold:.3g})", 1 - sequential.p_value, metrics)
    severity, test, value, threshold, detail, confidence = max(found, key=lambda f: SEVERITY_ORDER.index(f[0]))
    return SignalEvidence("performance", "retrain", test, value, threshold, detail, float(confidence), metrics, severity)


def _weighted_drift(evidence: Evidence, model) -> SignalEvidence:
    report, pack = evidence.drift, evidence.pack
    if report is None:
        return _unavailable("drift", "importance-weighted PSI", evidence.unavailable.get("drift", "no recent inputs"))
    if report.insufficient_data:
        return _unavailable("drift", "importance-weighted PSI",
                            f"{report.current_rows} recent rows < min_samples {model.drift.min_samples}")
    if pack is None or pack.drift is None:
        return _unavailable("drift", "importance-weighted PSI",
                            "no calibrated threshold: the model was trained before reference packs, or its window was too short")
    psis = {name: f.psi for name, f in report.features.items() if not f.skipped}
    statistic = weighted_drift(psis, pack.importances)
    threshold = pack.drift.threshold_for(report.current_rows, pack.importances, model.decision.drift_alpha)
    ratio = statistic / threshold if threshold > 0 else (np.inf if statistic > 0 else 0.0)
    top = sorted(psis, key=lambda f: -pack.importances.get(f, 0.0) * (psis[f] or 0.0))[:3]
    listing = ", ".join(f"{f} (PSI {psis[f]:.3g}, weight {pack.importances.get(f, 0.0):.2f})" for f in top)
    metrics = {"weighted_psi": statistic, "threshold": threshold, "ratio": ratio,
               "calibrated_max": pack.drift.threshold,
               "noise_quantile": pack.drift.noise_quantile(report.current_rows, pack.importances, model.decision.drift_alpha),
               "alone_multiple": model.decision.drift_alone_multiple, "top_features": top,
               "calibration_chunks": len(pack.drift.scores), "chunk_rows": pack.drift.chunk_rows}
    text = f"importance-weighted PSI {statistic:.3g} = {ratio:.2f}x its threshold {threshold:.3g} ({listing})"
    confidence = float(max(0.0, 1.0 - 1.0 / ratio)) if ratio > 0 else 0.0
    in_window = evidence.retrain_window_drift
    metrics["retrain_window_psi"] = in_window
    metrics["learnable"] = in_window is not None and in_window > threshold
    if ratio > 1.0 and not metrics["learnable"]:
        text += (NOT_LEARNABLE + (evidence.unavailable.get("retrain_window", "no rows labeled since its training")
                                            if in_window is None else
                 f"the window a retrain would train on shows {in_window:.3g}, under the threshold")
                 + ", so a candidate would learn what production already knows")
    if ratio >= model.decision.drift_alone_multiple:
        return SignalEvidence("drift", "retrain", "weighted_psi", statistic, threshold,
                              f"large drift: {text}", confidence, metrics)
    if ratio > 1.0:
        return SignalEvidence("drift", "weak", "weighted_psi", statistic, threshold,
                              f"drift warning: {text}", confidence, metrics)
    return SignalEvidence("drift", "none", "weighted_psi", statistic, threshold, f"no drift that matters: {text}",
                          confidence, metrics)


def _estimated_performance(evidence: Evidence, model) -> SignalEvidence:
    test = "CBPE expected accuracy"
    if evidence.task != "classification":
        return _unavailable("estimated_performance", test, "regression model: no confidence to estimate from")
    if evidence.pack is None or evidence.pack.cbpe is None:
        return _unavailable("estimated_performance", test, "no CBPE reference (no probabilities, or no reference pack)")
    scores = evidence.recent_scores
    if scores is None or len(scores) < model.decision.min_labeled_rows:
        count = 0 if scores is None else len(scores)
        return _unavailable("estimated_performance", test,
                            evidence.unavailable.get("estimated_performance", f"{count} scored recent rows"))
    reference = evidence.pack.cbpe
    delta = model.decision.tolerance * (1.0 - reference.expected_accuracy)
    estimate = estimate_performance(reference, scores, delta, model.decision.cbpe_alpha)
    detail = (f"expected accuracy {estimate.expected_accuracy:.4f} on {estimate.rows} recent rows vs "
              f"{estimate.reference_accuracy:.4f} held out (drop {estimate.drop:+.4f}, p {estimate.p_value:.2g})")
    status = "weak" if estimate.alarm else "none"
    return SignalEvidence("estimated_performance", status, test, estimate.expected_accuracy,
                          estimate.reference_accuracy - delta, ("estimated accuracy drop: " if estimate.alarm else "") + detail,
                          1 - estimate.p_value, estimate.to_dict())


def _prediction_drift(evidence: Evidence, model) -> SignalEvidence:
    """The model's output on recent inputs against its held-out rows: PSI against its sampling noise at
    ``drift_alpha``. A notice: CBPE already acts on the scores (see the prediction_drift module)."""
    test = "PSI of the model's output"
    reference = evidence.pack.predictions if evidence.pack is not None else None
    if reference is None:
        return _unavailable("prediction_drift", test, "no held-out outputs in the reference pack (trained before they were kept)")
    outputs = evidence.recent_outputs
    if outputs is None or len(outputs) < model.decision.min_labeled_rows:
        count = 0 if outputs is None else len(outputs)
        return _unavailable("prediction_drift", test, evidence.unavailable.get("prediction_drift", f"{count} scored recent rows"))
    found = reference.compare(outputs, model.decision.drift_alpha)
    moved = found["psi"] > found["threshold"]
    what = {"score": "scores", "class": "predicted classes", "value": "predicted values"}[reference.kind]
    detail = (f"{'prediction drift: ' if moved else ''}PSI {found['psi']:.4g} of its {what} on {found['rows']} recent rows vs "
              f"{found['reference_rows']} held out ({'above' if moved else 'within'} sampling noise {found['threshold']:.3g})")
    return SignalEvidence("prediction_drift", "notice" if moved else "none", test, found["psi"], found["threshold"],
                          detail, 0.0, found)


TREND_MIN_WINDOW_ROWS = 30  # fewer rows per window: its mean error is noise


def _trend(evidence: Evidence, model) -> SignalEvidence:
    """A monotonic rise of the error over ``trend_windows`` consecutive windows of the labeled predictions
    since deployment (non-overlapping, unlike the reports' cumulative metrics, which form a running mean
    that drifts by itself)."""
    what = "error rate" if evidence.task == "classification" else "absolute error"
    test = f"Kendall's tau of the {what} over windows"
    losses = _losses(evidence)
    windows = model.decision.trend_windows
    if losses is None or len(losses) < windows * TREND_MIN_WINDOW_ROWS:
        count = 0 if losses is None else len(losses)
        return _unavailable("trend", test, f"{count} labeled predictions since deployment "
                                           f"({windows} windows of {TREND_MIN_WINDOW_ROWS} needed)")
    means = [float(np.mean(part)) for part in np.array_split(losses, windows)]
    found = decline_trend(means, higher_is_better=False, alpha=model.decision.trend_alpha)
    values = ", ".join(f"{v:.3g}" for v in means)
    detail = (f"{'gradual decline: ' if found['declining'] else ''}{what} over {windows} windows of its "
              f"{len(losses)} labeled predictions since deployment [{values}] (tau {found['tau']:+.2f}, "
              f"p {found['p_value']:.2g})")
    return SignalEvidence("trend", "notice" if found["declining"] else "none", test, found["tau"], None, detail, 0.0,
                          {**found, "windows": means})


def _concept(evidence: Evidence, model) -> SignalEvidence:
    """Windowed error growth: the newest window's loss against the previous one's. Significant at the
    realized tests' level (``sequential_alpha``) it retrains on its own (the model got worse than it just
    was); at the documents' ``concept_p_value`` it is a warning."""
    losses = _losses(evidence)
    if losses is None:
        return _unavailable("concept_drift", "window error growth", "no labeled predictions since deployment")
    found = concept_drift_of_losses(losses, evidence.task, model.performance)
    if found.increase is None:
        return _unavailable("concept_drift", "window error growth", found.message.removeprefix("insufficient data: "))
    strong = found.detected and found.p_value < model.decision.sequential_alpha
    status = "retrain" if strong else "weak" if found.detected else "none"
    return SignalEvidence("concept_drift", status, "window error growth", found.increase,
                          model.performance.concept_window_increase,
                          f"{'concept drift: ' if found.detected else ''}{found.message}",
                          1 - (found.p_value if found.p_value is not None else 1.0), found.to_dict())


def worthwhile_labels(training_rows: int | None, model) -> int:
    """New labels that make a retrain worthwhile: a share of the production model's training rows."""
    settings = model.decision
    return max(settings.min_labeled_rows, int(np.ceil(settings.worthwhile_labels_fraction * (training_rows or 0))))


def label_volume_signal(new_labels: int | None, training_rows: int | None, model) -> SignalEvidence:
    """New labels since the production model's dataset. Evidence policy: worthwhile at
    ``worthwhile_labels_fraction`` of its training rows (weak: never a retrain alone); seed policy: the
    documents' bands (MEDIUM at ``new_labels_scheduled``, HIGH at ``new_labels_now``). Cheap: the trigger
    sensor refreshes it between monitoring runs."""
    if new_labels is None:
        return _unavailable("data_volume", "new labels", "not counted")
    if model.decision.policy == "seed":
        severity = volume_severity(new_labels, model.triggers)
        detail = (f"{new_labels:,} new labels (MEDIUM at {model.triggers.new_labels_scheduled:,}, HIGH at "
                  f"{model.triggers.new_labels_now:,})")
        return SignalEvidence("data_volume", _seed_status(severity), "new labels", float(new_labels),
                              float(model.triggers.new_labels_scheduled), detail, 0.7 if severity != "NONE" else 0.0,
                              severity=severity)
    needed = worthwhile_labels(training_rows, model)
    worthwhile = new_labels >= needed
    detail = (f"{new_labels:,} new labels since its training dataset "
              f"({'enough' if worthwhile else 'not enough'} to make a retrain worthwhile: {needed:,})")
    return SignalEvidence("data_volume", "weak" if worthwhile else "none", "new labels", float(new_labels),
                          float(needed), detail, 1.0 if worthwhile else 0.0)


AGE_TEST = "days since promotion, challenge or verification"


def age_signal(age_days: float | None, model, unverified_days: float | None = None) -> SignalEvidence:
    """How long the model has gone unchecked: days since it was promoted, challenged (a retrain that did not
    replace it) or verified (the realized-performance tests judged it on a fresh labeled batch), whichever
    is latest. Beyond ``max_model_age_days`` it retrains anyway (MEDIUM): the safety net of a model whose
    labels stopped arriving. A model that labels keep verifying is not stale for being old. Cheap: the
    trigger sensor refreshes it."""
    limit = model.decision.max_model_age_days
    if age_days is None:
        return _unavailable("model_age", AGE_TEST, "no promotion time")
    days = age_days if unverified_days is None else min(age_days, unverified_days)
    if limit is None or model.decision.policy == "seed":
        return SignalEvidence("model_age", "none", AGE_TEST, days, None, f"{days:.1f} {AGE_TEST} (no age limit)")
    old = days > limit
    return SignalEvidence("model_age", "retrain" if old else "none", AGE_TEST, days, limit,
                          f"{days:.1f} {AGE_TEST} ({'more than' if old else 'within'} max_model_age_days {limit:g})",
                          1.0 if old else 0.0, severity="MEDIUM" if old else "NONE")


def assess(evidence: Evidence, model) -> list[SignalEvidence]:
    """Every signal of ``model``'s policy, judged on ``evidence`` (the statistics; :func:`fuse` decides)."""
    if evidence.task not in ("classification", "regression"):
        raise DataError(f"unknown task {evidence.task!r}")
    if model.decision.policy == "seed":
        return _seed_signals(evidence, model)
    realized = _realized(evidence, model)
    unverified = 0.0 if (realized.metrics or {}).get("verified") else evidence.days_since_verified
    signals = [realized, _concept(evidence, model), _weighted_drift(evidence, model),
               _estimated_performance(evidence, model), label_volume_signal(evidence.new_labels, evidence.training_rows, model),
               age_signal(evidence.model_age_days, model, unverified), _prediction_drift(evidence, model),
               _trend(evidence, model)]
    for signal in signals:
        signal.lasting = signal.status in ("weak", "retrain") and signal.kind in evidence.previous_warnings
    return signals


def fuse(signals: list[SignalEvidence], model) -> Decision:
    """The decision from judged signals: the module docstring's rules, for ``model.decision.policy``."""
    if model.decision.policy == "seed":
        return _seed_fusion(signals)
    by = {kind: _unavailable(kind, "-", "not assessed") for kind in SIGNAL_KINDS} | {s.kind: s for s in signals}
    realized, concept, drift, labels = by["performance"], by["concept_drift"], by["drift"], by["data_volume"]
    estimated, age = by["estimated_performance"], by["model_age"]
    if realized.status == "retrain":
        trend = by["trend"]
        named = f"{realized.detail}; {trend.detail}" if trend.status == "notice" else realized.detail
        return _verdict(signals, realized, realized.severity, named)
    if concept.status == "retrain":
        return _verdict(signals, concept, "HIGH", concept.detail)
    # Drift acts only once a retrain could learn it (its training window shows it too); until then it is a
    # warning that waits for labeled rows of the new inputs.
    learnable = drift.metrics.get("learnable", True)
    if drift.status == "retrain" and learnable:
        return _verdict(signals, drift, "HIGH", f"{drift.detail} (at least {model.decision.drift_alone_multiple:g}x its "
                                                "threshold: retrains without confirmation)")
    if drift.status == "weak" and learnable and estimated.status == "weak":
        return _verdict(signals, drift, "HIGH", f"{drift.detail}, confirmed by {estimated.detail}")
    if drift.status in ("weak", "retrain") and concept.status == "weak":
        # Confirmed by realized errors: the labeled rows a retrain trains on carry the change in their labels.
        detail = drift.detail.split(NOT_LEARNABLE)[0]  # the labels carry it: learnability does not matter
        return _verdict(signals, drift, "HIGH", f"{detail}, confirmed by realized errors: {concept.detail}")
    warnings = [s for s in (drift, estimated, concept) if s.status in ("weak", "retrain")]
    lasting = [s for s in warnings if s.lasting and (s is not drift or learnable)]
    if lasting and labels.status == "weak":
        return _verdict(signals, lasting[0], "MEDIUM", f"{lasting[0].detail} (also at the previous decision); {labels.detail}")
    if age.status == "retrain":
        return _verdict(signals, age, "MEDIUM", age.detail)
    if warnings:
        return _verdict(signals, None, "LOW", "monitoring, no retrain yet: " + "; ".join(s.detail for s in warnings)
                        + (f"; {labels.detail}" if labels.status != "unavailable" else ""))
    judged = [s.detail for s in (realized, drift) if s.status != "unavailable"]
    return _verdict(signals, None, "NONE", "no retrain needed: " + "; ".join(judged) if judged else "no evidence to judge")


def _verdict(signals: list[SignalEvidence], decider: SignalEvidence | None, severity: str, reason: str,
             policy: str = "evidence") -> Decision:
    retrain = severity in ("MEDIUM", "HIGH", "CRITICAL")
    judged = [s for s in signals if s.status != "unavailable"]
    insufficient = not judged or all(s.kind in ("data_volume", "model_age", "prediction_drift", "trend") for s in judged)
    if retrain:
        support = [s.confidence for s in signals if s.status in ("retrain", "weak") and s.kind != "data_volume"]
        confidence = 1.0 - float(np.prod([1.0 - min(max(c, 0.0), 1.0) for c in support])) if support else 1.0
    elif insufficient:
        confidence = 0.0
    else:
        confidence = 1.0 - max([s.confidence for s in signals if s.status in ("weak", "retrain") and s.kind != "data_volume"],
                               default=0.0)
    if insufficient and not retrain:
        unavailable = [s.detail for s in signals if s.status == "unavailable"]
        reason = "insufficient data: " + "; ".join(unavailable) if unavailable else reason
    return Decision(retrain, decider.kind if decider and retrain else None, severity, URGENCY[severity],
                    round(float(confidence), 4), reason, policy, signals, None, bool(insufficient and not retrain))


# The seed policy --------------------------------------------------------------------------------------------
def _seed_signals(evidence: Evidence, model) -> list[SignalEvidence]:
    signals: list[SignalEvidence] = []
    report = evidence.drift
    if report is None or report.insufficient_data:
        why = (evidence.unavailable.get("drift", "no recent inputs") if report is None
               else f"{report.current_rows} recent rows < min_samples {model.drift.min_samples}")
        signals.append(_unavailable("drift", "fixed thresholds", why))
    else:
        found = drift_signal(report, model.drift)
        severity = severity_of([found] if found else [])
        signals.append(SignalEvidence("drift", _seed_status(severity), "fixed thresholds", report.aggregate_psi,
                                      model.drift.psi_feature, found.detail if found else "no drift (fixed thresholds)",
                                      STRENGTH_CONFIDENCE[found.strength] if found else 0.0, found.metrics if found else {},
                                      severity=severity))
    outcomes = evidence.outcomes
    labeled = 0 if outcomes is None else len(outcomes)
    if labeled < model.drift.min_samples:
        signals.append(_unavailable("performance", "fixed thresholds", f"{labeled} labeled predictions < {model.drift.min_samples}"))
    else:
        recent = outcomes.tail(model.monitoring.window_rows)
        found = [concept_signal(concept_drift_of_losses(per_row_losses(recent.predictions, recent.actuals, evidence.task),
                                                        evidence.task, model.performance), model.performance)]
        if evidence.baseline:
            scores = recent.scores if recent.scores is not None and np.isfinite(np.asarray(recent.scores, float)).all() else None
            found.append(performance_signal(performance_degradation(recent.predictions, recent.actuals, evidence.baseline,
                                                                    evidence.task, model.performance, scores,
                                                                    model.positive_label), model.performance))
        found = [s for s in found if s is not None]
        severity = severity_of(found)
        measured = next((s.metrics for s in found if s.kind == "performance"), {})
        signals.append(SignalEvidence("performance", _seed_status(severity), "fixed thresholds", None, None,
                                      "; ".join(s.detail for s in found) or "no degradation (fixed thresholds)",
                                      max((STRENGTH_CONFIDENCE[s.strength] for s in found), default=0.0),
                                      {"worst_relative_drop": measured.get("worst_relative_drop")} if measured else {},
                                      severity=severity))
    signals.append(label_volume_signal(evidence.new_labels, evidence.training_rows, model))
    return signals


def _seed_fusion(signals: list[SignalEvidence]) -> Decision:
    """The seed's three triggers, fused: the most severe one that retrains (drift first on ties)."""
    fired = [s for s in signals if SEVERITY_ORDER.index(s.severity) >= SEVERITY_ORDER.index("MEDIUM")]
    if fired:
        decider = max(fired, key=lambda s: SEVERITY_ORDER.index(s.severity))
        decision = _verdict(signals, decider, decider.severity, decider.detail, "seed")
        drop = (decider.metrics or {}).get("worst_relative_drop") if decider.kind == "performance" else None
        if drop is not None:  # the performance playbook: > 20 % now, 10-20 % within 24 h
            playbook = "now" if drop > 0.20 else "within_24h" if drop >= 0.10 else decision.urgency
            decision.urgency = max(decision.urgency, playbook, key=URGENCY_ORDER.index)
        return decision
    low = [s for s in signals if s.status == "weak"]
    judged = "; ".join(s.detail for s in signals if s.status != "unavailable")
    reason = ("monitoring, no retrain yet: " + "; ".join(s.detail for s in low)) if low else \
        f"no drift, concept drift, performance loss or label volume signal ({judged})"
    return _verdict(signals, None, "LOW" if low else "NONE", reason, "seed")


def _seed_status(severity: str) -> str:
    return {"NONE": "none", "LOW": "weak"}.get(severity, "retrain")


def decide(evidence: Evidence, model) -> Decision:
    """The retrain decision for ``model`` (a ModelSettings: its ``decision``, ``drift``, ``performance``,
    ``monitoring`` and ``triggers`` blocks) from ``evidence``: :func:`fuse` of :func:`assess`. Never raises
    on missing evidence: what is missing is an unavailable signal with its reason."""
    decision = fuse(assess(evidence, model), model)
    decision.drift = evidence.drift
    return decision
