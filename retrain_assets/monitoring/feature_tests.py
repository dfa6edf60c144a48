"""Per-feature drift statistics: KS, PSI, KL, Jensen-Shannon, Wasserstein, z-outliers, chi-square.

Every function works on profile counts (see ``profiles``), so it is as valid for a merged window of many
chunks as for one frame. Conventions, stated once:

* **Proportions and empty bins**: ``p = count / total``, then every proportion below ``EPSILON`` (1e-4)
  is raised to it and the vector renormalized, so a bin empty on one side adds a large but finite term
  instead of infinity. PSI = sum((q - p) ln(q / p)); KL = KL(current || reference) = sum(q ln(q / p));
  JS = Jensen-Shannon divergence with base-2 logarithms (0 = same, 1 = disjoint), computed on the raw
  proportions (it needs no epsilon).
* **KS**: with raw values on both sides (the reference kept its sorted sample and the window has at most
  ``exact_ks_max_rows`` rows) the statistic and p-value are ``scipy.stats.ks_2samp(method="auto")``'s:
  exact distribution up to 10,000 rows per side, Smirnov's asymptotic one beyond. Otherwise D is read off
  the fine-binned CDFs and its p-value uses scipy's asymptotic formula
  (``kstwo.sf(D, round(n m / (n + m)))``); the binned D differs from the exact one by at most the largest
  mass either side has in one fine bin, reported as ``ks_error_bound``.
* **Wasserstein** distance between the binned distributions (the area between the CDFs, each bin's mass
  placed at the reference quantile edges), divided by the reference standard deviation, so 0.1 means
  "the distributions are a tenth of a standard deviation apart". With a constant reference the raw
  distance is used.
"""

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats
from scipy.special import rel_entr

from retrain_assets.monitoring.profiles import OTHER, NumericCounts, NumericReference

_KS_FELL_BACK = "Exact calculation unsuccessful"  # scipy.stats.ks_2samp's RuntimeWarning when it falls back

EPSILON = 1e-4


@dataclass
class FeatureDrift:
    """Everything measured about one feature, and the verdict."""

    feature: str
    kind: str  # numeric | categorical
    test: str  # ks | chi2 | skipped
    statistic: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    psi: float | None = None
    kl: float | None = None
    js: float | None = None
    wasserstein: float | None = None
    outlier_share: float | None = None
    outliers_flagged: bool = False
    effect: float | None = None  # the effect size the floor was applied to
    effect_name: str | None = None
    significant: bool = False
    drifted: bool = False
    reference_rows: int = 0
    current_rows: int = 0
    method: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        return self.test == "skipped"

    def to_dict(self) -> dict:
        out = asdict(self)
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


def proportions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.full(len(counts), 1.0 / max(len(counts), 1))


def _smoothed(p: np.ndarray) -> np.ndarray:
    p = np.maximum(p, EPSILON)
    return p / p.sum()


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    p, q = _smoothed(proportions(reference_counts)), _smoothed(proportions(current_counts))
    return float(np.sum((q - p) * np.log(q / p)))


def kl_divergence(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    p, q = _smoothed(proportions(reference_counts)), _smoothed(proportions(current_counts))
    return float(np.sum(rel_entr(q, p)))


def js_divergence(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    p, q = proportions(reference_counts), proportions(current_counts)
    m = 0.5 * (p + q)
    return float(0.5 * np.sum(rel_entr(p, m)) + 0.5 * np.sum(rel_entr(q, m))) / np.log(2)


KSTWO_MAX_N = 100_000


def ks_asymptotic_pvalue(statistic: float, n: int, m: int) -> float:
    """Two-sided p-value of D for samples of n and m rows, by scipy.stats.ks_2samp's asymptotic formula
    ``kstwo.sf(D, round(n m / (n + m)))``, identical to scipy up to an effective size of KSTWO_MAX_N.

    Beyond that, kstwo's series costs ~20 ms per call, so its limit, the Kolmogorov distribution
    ``kstwobign.sf(D sqrt(en))``, is used: at these sizes the two differ by less than 1e-3 (tested).
    """
    big, small = sorted([float(n), float(m)], reverse=True)
    en = np.round(big * small / (big + small))
    if en <= KSTWO_MAX_N:
        return float(np.clip(stats.kstwo.sf(statistic, en), 0.0, 1.0))
    return float(np.clip(stats.kstwobign.sf(statistic * np.sqrt(en)), 0.0, 1.0))


def binned_ks(reference: NumericCounts, current: NumericCounts) -> tuple[float, float]:
    """D between the binned CDFs, and the bound on its distance to the exact D."""
    p, q = reference.fine / reference.count, current.fine / current.count
    statistic = float(np.max(np.abs(np.cumsum(p) - np.cumsum(q))))
    return statistic, float(max(p.max(), q.max()))


def binned_wasserstein(ref: NumericReference, current: NumericCounts) -> float:
    """Area between the binned CDFs, with the open end bins closed at the observed min/max."""
    low = min(ref.counts.low, current.low)
    high = max(ref.counts.high, current.high)
    points = np.concatenate([[low], ref.fine_edges, [high]])
    widths = np.diff(points)
    gap = np.abs(np.cumsum(ref.counts.fine / ref.counts.count) - np.cumsum(current.fine / current.count))
    return float(np.sum(gap * widths))


def numeric_drift(name: str, ref: NumericReference, current: NumericCounts, zscore_fraction: float) -> FeatureDrift:
    """Every numeric statistic for one column (the verdict is set later, after BH correction)."""
    result = FeatureDrift(name, "numeric", "ks", reference_rows=ref.counts.count, current_rows=current.count)
    if current.missing or current.infinite:
        result.notes.append(f"{current.missing} missing and {current.infinite} infinite current values ignored")
    if ref.counts.count == 0:
        result.test = "skipped"
        result.notes.append("the reference has no finite values")
        return result
    if current.count == 0:
        result.test = "skipped"
        result.notes.append("the current window has no finite values (all missing or infinite)")
        return result
    if ref.counts.sample is not None and current.sample is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            exact = stats.ks_2samp(ref.counts.sample, current.sample, method="auto")
        result.statistic, result.p_value = float(exact.statistic), float(exact.pvalue)
        result.method = "exact" if max(ref.counts.count, current.count) <= 10_000 else "asymp"
        for warning in caught:
            if _KS_FELL_BACK in str(warning.message):
                # Heavy ties and a tiny D can defeat scipy's exact computation; it then uses the asymptotic
                # formula and warns. Said where the number is, not in the run's warnings.
                result.method = "asymp"
                result.notes.append("exact KS p-value did not converge (many tied values): asymptotic p-value used")
            else:  # anything else scipy said is passed on, not swallowed
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno,
                                       source=warning.source)
    else:
        statistic, bound = binned_ks(ref.counts, current)
        result.statistic = statistic
        result.p_value = ks_asymptotic_pvalue(statistic, ref.counts.count, current.count)
        result.method = f"binned (|D - exact D| <= {bound:.2g})"
    result.psi = psi(ref.psi_counts(ref.counts), ref.psi_counts(current))
    result.kl = kl_divergence(ref.psi_counts(ref.counts), ref.psi_counts(current))
    result.js = js_divergence(ref.psi_counts(ref.counts), ref.psi_counts(current))
    scale = ref.counts.std
    distance = binned_wasserstein(ref, current)
    result.wasserstein = distance / scale if scale > 0 else distance
    if scale == 0:
        result.notes.append("constant reference: Wasserstein distance not normalized")
    result.outlier_share = current.outliers / current.count
    reference_share = ref.counts.outliers / max(ref.counts.count, 1)
    result.outliers_flagged = bool(result.outlier_share > zscore_fraction and result.outlier_share > 2 * reference_share)
    if result.outliers_flagged:
        result.notes.append(f"{result.outlier_share:.1%} of values beyond {ref.zscore:g} reference std "
                            f"(reference: {reference_share:.1%})")
    return result


def pooled_levels(reference: dict[str, int], current: dict[str, int], limit: int) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Aligned count vectors over the union of levels (beyond ``limit`` levels, rarer ones pooled into
    ``__other__``), plus the levels unseen in the reference and those that vanished from the window."""
    unseen = sorted(set(current) - set(reference))
    vanished = sorted(set(reference) - set(current))
    levels = sorted(set(reference) | set(current), key=lambda k: -(reference.get(k, 0) + current.get(k, 0)))
    kept, pooled = levels[: limit - 1] if len(levels) > limit else levels, levels[limit - 1 :] if len(levels) > limit else []
    ref = np.array([reference.get(k, 0) for k in kept] + ([sum(reference.get(k, 0) for k in pooled)] if pooled else []), float)
    cur = np.array([current.get(k, 0) for k in kept] + ([sum(current.get(k, 0) for k in pooled)] if pooled else []), float)
    return ref, cur, unseen, vanished


def categorical_drift(name: str, reference: dict[str, int], current: dict[str, int], limit: int) -> FeatureDrift:
    ref, cur, unseen, vanished = pooled_levels(reference, current, limit)
    result = FeatureDrift(name, "categorical", "chi2", reference_rows=int(ref.sum()), current_rows=int(cur.sum()))
    if unseen:
        result.notes.append(f"levels not in the reference: {unseen[:5]}{' ...' if len(unseen) > 5 else ''}")
    if vanished:
        result.notes.append(f"levels absent from the window: {vanished[:5]}{' ...' if len(vanished) > 5 else ''}")
    if len(ref) > limit - 1 and ref.size and len(set(reference) | set(current)) > limit:
        result.notes.append(f"{len(set(reference) | set(current)) - limit + 1} rare levels pooled as {OTHER}")
    if ref.sum() == 0 or cur.sum() == 0:
        result.test = "skipped"
        result.notes.append("no values on one side")
        return result
    table = np.vstack([ref, cur])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        result.statistic, result.p_value, result.method = 0.0, 1.0, "one level on both sides"
    else:
        chi2 = stats.chi2_contingency(table, correction=False)
        result.statistic, result.p_value, result.method = float(chi2.statistic), float(chi2.pvalue), "chi2 homogeneity"
    result.psi = psi(ref, cur)
    result.kl = kl_divergence(ref, cur)
    result.js = js_divergence(ref, cur)
    return result
