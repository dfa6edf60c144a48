"""Confidence-based performance estimation (CBPE): the accuracy a classifier can expect on unlabeled rows.

While labels are late, the model's own confidence tells how well it is likely doing. The confidence of a
prediction is the probability the model gives to the class it predicts. On the held-out rows of its
training dataset, where the truth is known, an isotonic regression maps confidence to the observed
probability of being right (so the estimate does not trust a model's raw probabilities, which are often
over- or under-confident). On new, unlabeled rows the expected accuracy is the mean of that map over their
confidences.

The estimate is compared with the same estimate on the held-out rows (which equals their real accuracy: an
isotonic fit preserves the mean): a significant drop beyond the decision's tolerance means the model now
sees rows it is unsure about, a symptom of drift that matters, known before the labels arrive. It needs
probabilities, so it is unavailable for regression models and classifiers without ``predict_proba``.
"""

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


def confidences(scores) -> np.ndarray:
    """The probability of the predicted class per row: ``max(p, 1 - p)`` for a binary classifier's
    positive-class probability, the row maximum for a multiclass probability matrix."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:
        return np.maximum(scores, 1.0 - scores)
    return scores.max(axis=1)


@dataclass(frozen=True)
class CbpeReference:
    """The confidence-to-accuracy map fitted on the held-out rows, and the estimate there."""

    grid: list[float]  # confidence thresholds of the isotonic fit (increasing)
    accuracy: list[float]  # expected accuracy at each threshold
    expected_accuracy: float  # on the held-out rows (= their accuracy)
    variance: float  # of the per-row expected accuracy on the held-out rows
    rows: int

    def expected(self, scores) -> np.ndarray:
        return np.interp(confidences(scores), self.grid, self.accuracy)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def fit(cls, scores, correct) -> "CbpeReference | None":
        """Fit on held-out ``scores`` and whether each prediction was right; None when there is nothing to
        learn (fewer than two rows, or a single confidence value)."""
        from sklearn.isotonic import IsotonicRegression

        conf = confidences(scores)
        correct = np.asarray(correct, dtype=float)
        if conf.size < 2 or np.ptp(conf) == 0:
            return None
        fit = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(conf, correct)
        grid, accuracy = fit.X_thresholds_, fit.y_thresholds_
        expected = np.interp(conf, grid, accuracy)
        return cls([float(x) for x in grid], [float(y) for y in accuracy], float(expected.mean()),
                   float(expected.var(ddof=1)), int(conf.size))


@dataclass(frozen=True)
class CbpeEstimate:
    expected_accuracy: float
    reference_accuracy: float
    drop: float
    delta: float
    p_value: float
    rows: int
    alarm: bool

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_performance(reference: CbpeReference, scores, delta: float, alpha: float) -> CbpeEstimate:
    """Expected accuracy on rows with ``scores`` and a one-sided test of a drop beyond ``delta``."""
    expected = reference.expected(scores)
    mean = float(expected.mean())
    spread = np.sqrt(float(expected.var(ddof=1)) / expected.size + reference.variance / reference.rows) if expected.size > 1 else np.inf
    drop = reference.expected_accuracy - mean
    z = (drop - delta) / spread if spread > 0 else (np.inf if drop > delta else 0.0)
    p_value = float(stats.norm.sf(z))
    return CbpeEstimate(mean, reference.expected_accuracy, float(drop), delta, p_value, int(expected.size), p_value < alpha)
