"""Drift of the model's own output, and the trend of its realized performance over recent reports.

Prediction drift (seed 003) compares the distribution of what the production model outputs on recent
inputs with what it output on its own held-out rows: the positive-class score of a binary classifier,
the predicted class shares of a multiclass one, the predicted value of a regressor. It is measured with
PSI over the held-out outputs' deciles (or classes) and judged against PSI's sampling noise, as the
feature drift is (``chi2(bins - 1) / n_eff``, the recent rows discounted by their dependence in time), so a
small or autocorrelated window is never drift by chance.

Why it never retrains on its own nor confirms feature drift: confidence-based performance estimation
already turns the score distribution into an expected accuracy, which is the confirmation that matters;
counting the score distribution a second time would count the same evidence twice. It is reported (the
drift report, the decision's signals) so a person sees the model's output move.

The trend test (seed 003: "gradual decline") asks whether the error of the labeled predictions since
deployment rises monotonically across ``trend_windows`` consecutive windows: Kendall's tau against time,
one sided. Windows, not the reports' metrics: those are cumulative, a running mean whose successive values
overlap and so look like a trend by chance. A decline names itself in the decision's reason when the realized tests retrain; alone it is a
warning a person reads, never a retrain: the sequential test already acts on the errors themselves.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from retrain_assets.monitoring.sequential import dependence

EPSILON = 1e-4  # share given to an empty bin, so PSI stays finite
OUTPUT_BINS = 10


@dataclass(frozen=True)
class PredictionReference:
    """What the model output on its held-out rows: bin edges and shares (numeric) or class shares."""

    kind: str  # "score" | "value" (numeric outputs, binned by held-out deciles) | "class" (predicted classes)
    rows: int
    edges: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, outputs, kind: str) -> "PredictionReference":
        outputs = np.asarray(outputs)
        if kind == "class":
            classes, counts = np.unique(outputs.astype(str), return_counts=True)
            return cls(kind, len(outputs), classes=classes.tolist(), shares=(counts / counts.sum()).tolist())
        values = outputs.astype(float)
        values = values[np.isfinite(values)]
        edges = np.unique(np.quantile(values, np.linspace(0, 1, OUTPUT_BINS + 1)[1:-1])) if len(values) else np.array([])
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        return cls(kind, len(values), edges=edges.tolist(), shares=(counts / max(counts.sum(), 1)).tolist())

    def current_shares(self, outputs) -> tuple[np.ndarray, np.ndarray, int, float]:
        """(reference shares, current shares, current rows, dependence of the current rows in time). A class
        the held-out rows never showed goes to one extra "other" bin, so the shares still sum to one."""
        outputs = np.asarray(outputs)
        if self.kind == "class":
            labels = outputs.astype(str)
            known = np.array([(labels == c).sum() for c in self.classes], dtype=float)
            counts = np.append(known, len(labels) - known.sum())
            reference = np.append(np.asarray(self.shares, dtype=float), 0.0)
            series = (labels == self.classes[int(np.argmax(self.shares))]).astype(float) if self.classes else labels
        else:
            values = outputs.astype(float)
            values = values[np.isfinite(values)]
            counts = np.bincount(np.searchsorted(self.edges, values, side="right"), minlength=len(self.edges) + 1)
            reference, series = np.asarray(self.shares, dtype=float), values
        rows = int(counts.sum())
        return reference, counts / max(rows, 1), rows, dependence(series) if rows else 1.0

    def compare(self, outputs, alpha: float) -> dict:
        """PSI of ``outputs`` (in time order) against the held-out outputs, and the ``1 - alpha`` quantile of
        PSI's sampling noise for these two samples (the threshold): ``chi2(bins - 1) / n_eff``, the recent
        rows counted for what they are worth when neighbours resemble each other (their dependence in time,
        as the realized tests count them)."""
        from scipy import stats

        reference, current, rows, depends = self.current_shares(outputs)
        ref, cur = np.clip(reference, EPSILON, None), np.clip(current, EPSILON, None)
        psi = float(np.sum((cur - ref) * np.log(cur / ref)))
        degrees = max(len(reference) - 1, 1)
        worth = rows / depends
        n_eff = worth * self.rows / (worth + self.rows) if rows and self.rows else 0
        threshold = float(stats.chi2.isf(alpha, degrees) / n_eff) if n_eff else float("inf")
        return {"psi": psi, "threshold": threshold, "rows": rows, "reference_rows": self.rows, "kind": self.kind,
                "dependence": round(depends, 3)}

    def to_dict(self) -> dict:
        return asdict(self)


def decline_trend(values, higher_is_better: bool, alpha: float) -> dict | None:
    """Kendall's tau of ``values`` (oldest first) against time, tested one-sided for a move the wrong way;
    None with fewer than three values."""
    from scipy import stats

    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(values) < 3:
        return None
    if np.ptp(values) == 0:
        return {"tau": 0.0, "p_value": 1.0, "declining": False, "reports": len(values)}
    result = stats.kendalltau(np.arange(len(values)), values, alternative="less" if higher_is_better else "greater")
    tau, p = float(result.statistic), float(result.pvalue)
    return {"tau": tau, "p_value": p, "declining": p < alpha, "reports": len(values)}
