"""A picture of a drift report: reference vs current distribution of the features that moved.

Why a picture: a table of p-values and PSIs says *that* a feature moved; a person deciding whether to
trust the retrain wants to see *how* (a shift, a new mode, a category that took over). The reference side
is the stored profile (fine quantile bins and category counts of the training data), so no training rows
are reloaded; the current side is the monitoring window itself.
"""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from retrain_assets.monitoring.dataset_drift import DriftReport
from retrain_assets.monitoring.profiles import NumericReference, ReferenceProfile, category_counts
from retrain_assets.plotting import drawing, plt, png_of

PLOT_BINS = 30
MAX_CATEGORIES = 10
REFERENCE_COLOR, CURRENT_COLOR = "#4C78A8", "#E45756"


def features_to_show(report: DriftReport, limit: int = 6) -> tuple[list[str], str]:
    """The drifted features (largest PSI first), or, when none drifted, the three that moved most."""
    def psi(name: str) -> float:
        value = report.features[name].psi
        return value if value is not None and np.isfinite(value) else 0.0

    drifted = sorted(report.drifted_features, key=psi, reverse=True)
    if drifted:
        return drifted[:limit], f"drifted features ({len(drifted)}), reference vs current"
    ranked = sorted(report.features, key=psi, reverse=True)
    return ranked[:3], "no feature drifted; the three with the largest PSI, reference vs current"


def _reference_shares(reference: NumericReference, edges: np.ndarray) -> np.ndarray:
    """The reference's fine-bin counts re-binned into ``edges``.

    Fine bins are right-closed quantile bins, (edge[k-1], edge[k]], so each is placed at its upper edge
    (the last at the reference maximum): exact for discrete values, within 1/2000 of the range otherwise.
    """
    counts = reference.counts
    upper = np.append(reference.fine_edges, counts.high)
    histogram, _ = np.histogram(np.clip(upper, edges[0], edges[-1]), bins=edges, weights=counts.fine)
    return histogram / max(histogram.sum(), 1)


def _plot_edges(reference: NumericReference, values: np.ndarray, low: float, high: float) -> np.ndarray:
    """One bar per value for small integer features (support calls), else equal-width bins."""
    integers = np.all(np.mod(reference.fine_edges, 1) == 0) and np.all(np.mod(values, 1) == 0)
    if integers and high - low <= 40:
        return np.arange(low - 0.5, high + 1.5)
    return np.linspace(low, high, PLOT_BINS + 1)


def _numeric_panel(ax, name: str, reference: NumericReference, values: np.ndarray) -> None:
    low = min(reference.counts.low, float(values.min()) if values.size else np.inf)
    high = max(reference.counts.high, float(values.max()) if values.size else -np.inf)
    if not np.isfinite([low, high]).all() or high <= low:
        ax.text(0.5, 0.5, "no spread to plot", ha="center", va="center", transform=ax.transAxes)
        return
    edges = _plot_edges(reference, values, low, high)
    current, _ = np.histogram(values, bins=edges)
    ax.stairs(_reference_shares(reference, edges), edges, fill=True, alpha=0.45, color=REFERENCE_COLOR, label="reference")
    ax.stairs(current / max(current.sum(), 1), edges, color=CURRENT_COLOR, linewidth=1.8, label="current")
    ax.set_ylabel("share of rows")


def _categorical_panel(ax, reference: dict[str, int], values: pd.Series) -> None:
    current = category_counts(values)
    ref_total, cur_total = max(sum(reference.values()), 1), max(sum(current.values()), 1)
    shares = {k: (reference.get(k, 0) / ref_total, current.get(k, 0) / cur_total) for k in {*reference, *current}}
    shown = sorted(shares, key=lambda k: -max(shares[k]))[:MAX_CATEGORIES]
    x = np.arange(len(shown))
    ax.bar(x - 0.2, [shares[k][0] for k in shown], 0.4, color=REFERENCE_COLOR, alpha=0.7, label="reference")
    ax.bar(x + 0.2, [shares[k][1] for k in shown], 0.4, color=CURRENT_COLOR, alpha=0.9, label="current")
    ax.set_xticks(x, [str(k)[:14] for k in shown], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("share of rows")


def drift_picture(profile: ReferenceProfile, current: pd.DataFrame, report: DriftReport,
                  features: Sequence[str] | None = None) -> bytes:
    """A PNG with one panel per feature: reference (filled) vs current (line or bars)."""
    names, title = (list(features), "reference vs current") if features is not None else features_to_show(report)
    names = [n for n in names if n in profile.numeric or n in profile.categorical]
    columns = min(3, max(len(names), 1))
    rows = max(math.ceil(len(names) / columns), 1)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.9 * rows), squeeze=False)
    with drawing(figure):
        for ax in axes.flat[len(names):]:
            ax.axis("off")
        for ax, name in zip(axes.flat, names):
            result = report.features.get(name)
            if name in profile.numeric:
                values = pd.to_numeric(current[name], errors="coerce").to_numpy(dtype=float)
                _numeric_panel(ax, name, profile.numeric[name], values[np.isfinite(values)])
            else:
                _categorical_panel(ax, profile.categorical[name], current[name])
            detail = ""
            if result is not None and result.psi is not None and np.isfinite(result.psi):
                detail = f"  (PSI {result.psi:.2f}{', drifted' if result.drifted else ''})"
            ax.set_title(f"{name}{detail}", fontsize=10)
            ax.tick_params(labelsize=8)
        if names:
            axes.flat[0].legend(fontsize=8, loc="upper right")
        figure.suptitle(title, fontsize=11)
    return png_of(figure)
