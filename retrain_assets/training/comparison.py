"""Is the candidate worse than production, with confidence? The statistics of the comparison gates.

Candidate and production are scored on the same held-out test rows, so every comparison is paired. With
``gates.comparison: significance`` (the default) a gate rejects a candidate only when the evidence shows it
is worse than production beyond the design documents' tolerance; a candidate that merely has not *proved*
parity on a few hundred rows passes (an equal or better model is never thrown away for noise):

* ``relative_to_production`` (:func:`metric_shortfalls`): a paired bootstrap of the overall quality
  metrics of the documents' relative rules (accuracy >= production x 0.98, F1 >= production - 0.01, AUC >=
  production - 0.005; regression: MAE and RMSE <= production x 1.02, R2 >= production - 0.02). For each
  metric, the candidate's margin over its limit is resampled jointly with production's; the metric fails
  when the upper confidence bound of that margin is below zero, at ``1 - (1 - confidence) / k`` for k
  metrics (Bonferroni: the family of metrics errs at most at the configured level). Precision and recall
  are shown but not judged on their own: they trade against each other when the class balance moves, and a
  candidate that trades one for the other is not worse (F1 judges their balance; ``min_precision`` and
  ``min_recall`` are the floors for a model where one of them is a business requirement).
* ``significance`` (:func:`paired_loss_test`): McNemar's comparison of per-row errors with the tolerance as
  margin: the mean of ``loss_candidate - loss_production`` per row (classification: right/wrong, so its
  mean is the difference of error rates; regression: absolute errors relative to production's MAE) must
  not exceed ``significance_tolerance`` with confidence (one-sided z-test on the paired differences).

Resampling is done with multinomial row counts in blocks, so every metric of every resample is one matrix
product over the test rows (no Python loop over resamples).
"""

from dataclasses import dataclass

import numpy as np
from scipy import stats

from retrain_assets.metrics import HIGHER_IS_BETTER

JUDGED = ("accuracy", "f1", "auc", "mae", "rmse", "r2")  # precision and recall: reported, a trade-off
BLOCK_VALUES = 2_000_000  # resample-count matrix entries per block (bounds memory on large test sets)


def _resample_blocks(rows: int, samples: int, seed: int):
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_VALUES // max(rows, 1))
    for start in range(0, samples, block):
        yield rng.multinomial(rows, np.full(rows, 1.0 / rows), size=min(block, samples - start)).astype(float)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _weighted_auc(weights: np.ndarray, positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC of each resample (row of ``weights``): the weighted share of positive-negative pairs ranked
    right, ties counting half."""
    order = np.argsort(scores, kind="stable")
    ordered, pos = scores[order], positive[order]
    w = weights[:, order]
    negatives = w * ~pos
    cumulative = np.cumsum(negatives, axis=1)
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    ends = np.r_[starts[1:], len(ordered)]
    group = np.repeat(np.arange(len(starts)), ends - starts)
    first, last = starts[group], ends[group] - 1
    below = np.where(first > 0, cumulative[:, np.maximum(first - 1, 0)], 0.0)
    tied = cumulative[:, last] - below
    positives = w * pos
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    return _ratio((positives * (below + 0.5 * tied)).sum(axis=1), pairs)


def resampled_metrics(weights: np.ndarray, y, predictions, scores, task: str, positive_label, classes) -> dict[str, np.ndarray]:
    """Every gate metric for each resample; ``weights`` (resamples x rows) counts each row's draws."""
    rows = weights.shape[1]
    if task == "regression":
        y, predictions = np.asarray(y, float), np.asarray(predictions, float)
        error = y - predictions
        squared = weights @ (error ** 2)
        total = weights @ (y ** 2) - (weights @ y) ** 2 / rows
        return {"mae": weights @ np.abs(error) / rows, "rmse": np.sqrt(squared / rows),
                "r2": 1.0 - _ratio(squared, total)}
    y, predictions = np.asarray(y), np.asarray(predictions)
    out = {"accuracy": weights @ (predictions == y) / rows}
    binary = len(classes) <= 2 and positive_label in classes
    per_class = [positive_label] if binary else list(classes)
    parts = {"precision": [], "recall": [], "f1": []}
    for label in per_class:
        truth, guess = y == label, predictions == label
        tp, fp, fn = weights @ (truth & guess), weights @ (~truth & guess), weights @ (truth & ~guess)
        parts["precision"].append(_ratio(tp, tp + fp))
        parts["recall"].append(_ratio(tp, tp + fn))
        parts["f1"].append(_ratio(2 * tp, 2 * tp + fp + fn))
    out.update({k: np.mean(v, axis=0) for k, v in parts.items()})
    if scores is not None and binary and np.ndim(scores) == 1 and len(np.unique(y)) > 1:
        out["auc"] = _weighted_auc(weights, y == positive_label, np.asarray(scores, float))
    return out


def metric_limits(production: dict[str, np.ndarray], gates) -> dict[str, np.ndarray]:
    """The worst value of each metric the candidate may have, given production's (the documents' rules)."""
    limits = {}
    for name, value in production.items():
        if name in ("accuracy", "precision", "recall"):
            limits[name] = value * (1 - gates.max_relative_drop)
        elif name == "f1":
            limits[name] = value - gates.max_f1_drop
        elif name == "auc":
            limits[name] = value - gates.max_auc_drop
        elif name in ("mae", "rmse"):
            limits[name] = value * gates.max_error_ratio
        elif name == "r2":
            limits[name] = value - gates.max_r2_drop
    return limits


@dataclass(frozen=True)
class Shortfall:
    metric: str
    candidate: float
    production: float
    limit: float
    margin_upper: float  # upper confidence bound of (candidate - limit), higher-is-better oriented
    failed: bool


def metric_shortfalls(y, candidate_pred, production_pred, candidate_scores, production_scores, task: str,
                      positive_label, gates, seed: int = 0) -> list[Shortfall]:
    """Per metric: is the candidate below its limit (relative to production) with confidence?"""
    y = np.asarray(y)
    classes = sorted(set(np.unique(y).tolist()) | set(np.unique(candidate_pred).tolist())
                     | set(np.unique(production_pred).tolist()), key=str) if task == "classification" else []
    full = np.ones((1, len(y)))
    point_c = resampled_metrics(full, y, candidate_pred, candidate_scores, task, positive_label, classes)
    point_p = resampled_metrics(full, y, production_pred, production_scores, task, positive_label, classes)
    names = [m for m in point_p if m in point_c and m in JUDGED]
    margins: dict[str, list] = {m: [] for m in names}
    for weights in _resample_blocks(len(y), gates.bootstrap_samples, seed):
        cand = resampled_metrics(weights, y, candidate_pred, candidate_scores, task, positive_label, classes)
        prod = resampled_metrics(weights, y, production_pred, production_scores, task, positive_label, classes)
        limits = metric_limits({m: prod[m] for m in names}, gates)
        for m in names:
            margins[m].append(cand[m] - limits[m] if HIGHER_IS_BETTER[m] else limits[m] - cand[m])
    level = 1 - (1 - gates.bootstrap_confidence) / max(len(names), 1)
    out = []
    for m in names:
        upper = float(np.quantile(np.concatenate(margins[m]), level))
        limit = float(metric_limits({m: point_p[m]}, gates)[m][0])
        out.append(Shortfall(m, float(point_c[m][0]), float(point_p[m][0]), limit, upper, upper < 0))
    return out


@dataclass(frozen=True)
class PairedLossTest:
    mean_difference: float  # mean of candidate loss - production loss per row (> 0: candidate worse)
    tolerance: float
    z: float
    p_value: float
    rows: int
    worse: bool


def paired_loss_test(y, candidate_pred, production_pred, task: str, tolerance: float, confidence: float) -> PairedLossTest:
    """One-sided test of "the candidate's per-row loss exceeds production's by more than ``tolerance``"."""
    y = np.asarray(y)
    if task == "regression":
        y = y.astype(float)
        production_loss = np.abs(y - np.asarray(production_pred, float))
        scale = max(float(production_loss.mean()), 1e-12)
        difference = (np.abs(y - np.asarray(candidate_pred, float)) - production_loss) / scale
    else:
        difference = (np.asarray(candidate_pred) != y).astype(float) - (np.asarray(production_pred) != y).astype(float)
    mean = float(difference.mean())
    spread = float(difference.std(ddof=1)) / np.sqrt(len(difference)) if len(difference) > 1 else 0.0
    excess = mean - tolerance
    z = excess / spread if spread > 0 else (np.inf if excess > 0 else -np.inf)
    p_value = float(stats.norm.sf(z))
    return PairedLossTest(mean, tolerance, float(z), p_value, len(difference), p_value < 1 - confidence)
