"""Realized performance: is production making more errors than it did on its own held-out rows?

Two tests on per-row losses (classification: 1 for a wrong prediction, 0 for a right one; regression: the
absolute error), both against the loss the model showed on the held-out rows of its training dataset:

* **Page-Hinkley** (:func:`page_hinkley`), sequential over every row labeled since deployment: the
  one-sided CUSUM ``S_t = max(0, S_{t-1} + x_t - mu_0 - delta)`` with ``mu_0`` the upper ``1 - alpha``
  confidence bound of the held-out mean loss (``mean + z_alpha se``: a held-out set that happened to be
  easy is not mistaken for decay later) and ``delta`` the smallest loss increase that matters. It
  accumulates small, lasting increases that no single batch shows. Its alarm threshold follows from the
  held-out rows alone: in control the statistic is a random walk with drift ``-(z_alpha se + delta)``
  reflected at zero, whose stationary tail is ``P(S > h) ~ exp(-2 (z_alpha se + delta) h / var)``, so
  ``h = var ln(1 / alpha) / (2 (z_alpha se + delta))`` gives a false alarm with probability ``alpha`` per
  check. The alarm is confirmed on the rows since the walk's minimum (the estimated change point): their
  mean loss must exceed the reference with the newest-batch test's confidence, which keeps a couple of
  rare errors from alarming a near-perfect model. Nothing in it is tuned to a dataset.
* **Newest batch** (:func:`batch_test`): a one-sided z-test of the newest labeled batch's mean loss against
  the held-out mean loss plus ``delta`` (two-sample variance: both sides are estimates). It catches a sudden
  large loss in one batch faster than the cumulative test.

**Errors come in runs.** Consecutive rows are rarely independent (a hard hour, a holiday, one busy
customer): the variance of a sum of losses is then larger than ``n`` times the per-row variance, and a test
that assumes independence raises false alarms on every bad day. Both tests therefore scale the per-row
variance by a dependence factor (:func:`dependence`), the long-run variance of the losses over their
per-row variance, estimated by batch means (von Neumann's successive differences, which a level shift
barely moves). Independent rows give 1; real traffic often 3 to 8. It is measured on the model's held-out
rows (in time order) and on the rows labeled since deployment, and the larger is used.
"""

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

TINY = 1e-12


MIN_BLOCKS = 8  # batch means need at least this many blocks to say anything about dependence


def dependence(losses) -> float:
    """Long-run variance of ``losses`` (in time order) over their per-row variance, at least 1.

    Blocks of ``sqrt(n)`` rows; the long-run variance is ``b * mean(diff(block means)^2) / 2``. Fewer than
    ``MIN_BLOCKS`` blocks (or constant losses): 1, independence assumed.
    """
    losses = np.asarray(losses, dtype=float)
    size = int(np.sqrt(losses.size))
    blocks = losses.size // size if size else 0
    variance = float(losses.var()) if losses.size else 0.0
    if blocks < MIN_BLOCKS or variance <= TINY:
        return 1.0
    means = losses[losses.size - blocks * size:].reshape(blocks, size).mean(axis=1)
    return max(1.0, size * float(np.mean(np.diff(means) ** 2)) / 2.0 / variance)


@dataclass(frozen=True)
class LossReference:
    """The loss a model showed on its held-out rows: the yardstick of every realized test."""

    mean: float
    var: float
    rows: int
    dependence: float = 1.0  # of the held-out losses in time order (see :func:`dependence`)
    binary: bool = False  # right/wrong losses (classification): counts are tested exactly

    def se(self, factor: float = 1.0) -> float:
        """Standard error of ``mean`` with the per-row variance scaled by ``factor`` (dependence)."""
        return float(np.sqrt(factor * self.var / max(self.rows, 1)))

    @classmethod
    def of(cls, losses) -> "LossReference":
        """From held-out ``losses`` in time order. Right/wrong losses take the variance of the error rate
        ``(k + 1) / (n + 2)`` (Laplace): a held-out set without a single error does not prove a model
        that never errs, and a zero variance would make every later error an alarm."""
        losses = np.asarray(losses, dtype=float)
        if losses.size == 0:
            raise ValueError("a loss reference needs at least one held-out row")
        binary = bool(np.isin(losses, (0.0, 1.0)).all())
        if binary:
            rate = (losses.sum() + 1) / (losses.size + 2)
            var = rate * (1 - rate)
        else:
            var = float(losses.var(ddof=1)) if losses.size > 1 else 0.0
        return cls(float(losses.mean()), var, int(losses.size), dependence(losses), binary)


@dataclass(frozen=True)
class RealizedTest:
    """One test's outcome: its statistic against its threshold, and what it was computed on."""

    name: str
    alarm: bool
    statistic: float
    threshold: float
    p_value: float
    rows: int
    mean_loss: float
    reference_loss: float
    delta: float
    dependence: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def _exact_excess(losses: np.ndarray, reference: LossReference, delta: float, factor: float) -> float:
    """One-sided Fisher exact test of more errors in ``losses`` than in the held-out rows (whose error count
    is raised by ``delta``): exact where error counts are small, where the normal approximation is not.
    Dependence shrinks both sides to their effective sizes (the design effect)."""
    def effective(errors: float, rows: int) -> tuple[int, int]:
        size = max(int(round(rows / factor)), 1)
        return min(int(round(errors / factor)), size), size

    errors, rows = effective(float(losses.sum()), losses.size)
    held_errors, held_rows = effective((reference.mean + delta) * reference.rows, reference.rows)
    table = [[errors, rows - errors], [held_errors, held_rows - held_errors]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


def page_hinkley(losses, reference: LossReference, delta: float, alpha: float, factor: float = 1.0) -> RealizedTest:
    """The one-sided Page-Hinkley (CUSUM) statistic of ``losses`` (oldest first) at the newest row;
    ``factor``: the dependence factor scaling the per-row variance.

    ``p_value`` is the stationary tail probability of the observed statistic in control: the alarm fires
    exactly when it is below ``alpha``.
    """
    losses = np.asarray(losses, dtype=float)
    margin = float(stats.norm.isf(alpha)) * reference.se(factor)  # the reference's own uncertainty
    drift = max(margin + delta, TINY)
    var = max(factor * reference.var, TINY)
    threshold = var * np.log(1.0 / alpha) / (2.0 * drift)
    if losses.size == 0:
        return RealizedTest("page_hinkley", False, 0.0, float(threshold), 1.0, 0, float("nan"), reference.mean, delta, factor)
    walk = np.cumsum(losses - (reference.mean + margin) - delta)
    start = int(np.argmin(walk)) + 1 if walk.min() < 0 else 0  # where the excess began
    statistic = float(walk[-1] - min(0.0, float(walk.min())))
    p_value = float(np.exp(-2.0 * drift * statistic / var))
    # The alarm also needs the rows since that change point to be worse with confidence: with rare errors
    # one or two of them can push the walk over a small threshold, which the diffusion bound does not see.
    confirmed = batch_test(losses[start:], reference, delta, alpha, factor).alarm if start < losses.size else False
    return RealizedTest("page_hinkley", bool(statistic > threshold and confirmed), statistic, float(threshold), p_value,
                        int(losses.size), float(losses.mean()), reference.mean, delta, factor)


def batch_test(losses, reference: LossReference, delta: float, alpha: float, factor: float = 1.0,
               name: str = "newest_batch") -> RealizedTest:
    """Is the mean loss of ``losses`` (the newest labeled batch) above the held-out mean plus ``delta``?"""
    losses = np.asarray(losses, dtype=float)
    if losses.size == 0:
        return RealizedTest(name, False, 0.0, float(stats.norm.isf(alpha)), 1.0, 0, float("nan"),
                            reference.mean, delta, factor)
    mean = float(losses.mean())
    if reference.binary:
        p_value = _exact_excess(losses, reference, delta, factor)
        z = float(stats.norm.isf(p_value))
    else:
        var = float(losses.var(ddof=1)) if losses.size > 1 else 0.0
        spread = np.sqrt(factor * (var / losses.size + reference.var / max(reference.rows, 1)))
        excess = mean - reference.mean - delta
        if spread <= TINY:
            z = np.inf if excess > 0 else 0.0
        else:
            z = excess / spread
        p_value = float(stats.norm.sf(z))
    return RealizedTest(name, bool(p_value < alpha), float(z), float(stats.norm.isf(alpha)), p_value,
                        int(losses.size), mean, reference.mean, delta, factor)
