"""Mergeable distribution profiles: what drift statistics are computed from.

A **reference profile** summarizes the data a model was trained on: per numeric column, fine bins at
reference quantiles (default 2,000) and their counts, the coarser PSI bins (every ``fine_bins / psi_bins``
-th fine edge, so PSI counts are sums of fine counts), moments, min/max and, for columns of at most
``exact_sample_rows`` values, the sorted values themselves (exact KS); per categorical column, the
counts of each level. It is stored as JSON next to the dataset it describes.

A **window profile** holds the same counts for current traffic, computed against a reference's edges.
Window profiles are built chunk by chunk and merged by adding counts, so PSI, chi-square, KL and JS of
merged profiles equal the full-data values exactly, and logs larger than memory can be profiled.

Bins are half-open on the left, ``(e[i-1], e[i]]``, with the first bin ``(-inf, e[0]]`` and the last
``(e[-1], +inf)``: values outside the reference range fall into the end bins and are never dropped.
"""

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from retrain_assets.errors import DataError
from retrain_assets.monitoring.settings import DriftSettings

OTHER = "__other__"
MISSING = "__missing__"
PROFILE_FORMAT = 1


def numeric_values(series: pd.Series, column: str) -> tuple[np.ndarray, int, int]:
    """Finite float values of ``series`` plus the counts of missing and non-finite (+-inf) entries.

    Text in a numeric column is a schema problem: if most of it does not parse, the column is refused
    with its name; a few unparsable entries are counted as missing.
    """
    if isinstance(series.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(series.dtype):
        parsed = pd.to_numeric(series, errors="coerce")
        bad = int(parsed.isna().sum() - series.isna().sum())
        if len(series) and bad > 0.5 * max(int(series.notna().sum()), 1):
            raise DataError(
                f"column {column!r} should be numeric but {bad} of {len(series)} values are not numbers "
                f"(e.g. {series[parsed.isna() & series.notna()].head(3).tolist()}): fix the data or declare it categorical"
            )
        series = parsed
    values = series.to_numpy(dtype=float, na_value=np.nan)
    missing = np.isnan(values)
    infinite = np.isinf(values)
    return values[~(missing | infinite)], int(missing.sum()), int(infinite.sum())


def category_values(series: pd.Series) -> pd.Series:
    """Levels as strings, missing ones as one explicit level."""
    return series.astype(object).where(series.notna(), MISSING).astype(str)


@dataclass
class NumericCounts:
    """Counts of one numeric column in the fine bins of a reference (mergeable by addition)."""

    fine: np.ndarray
    count: int
    missing: int
    infinite: int
    total: float
    total_sq: float
    low: float
    high: float
    outliers: int
    sample: np.ndarray | None = None  # the sorted values, while small enough for exact KS

    def merge(self, other: "NumericCounts", sample_limit: int) -> "NumericCounts":
        sample = None
        if self.sample is not None and other.sample is not None and self.count + other.count <= sample_limit:
            sample = np.sort(np.concatenate([self.sample, other.sample]))
        return NumericCounts(
            fine=self.fine + other.fine,
            count=self.count + other.count,
            missing=self.missing + other.missing,
            infinite=self.infinite + other.infinite,
            total=self.total + other.total,
            total_sq=self.total_sq + other.total_sq,
            low=min(self.low, other.low),
            high=max(self.high, other.high),
            outliers=self.outliers + other.outliers,
            sample=sample,
        )

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    @property
    def std(self) -> float:
        if self.count < 2:
            return 0.0
        variance = (self.total_sq - self.total * self.total / self.count) / (self.count - 1)
        return float(np.sqrt(max(variance, 0.0)))


def count_values(
    edges: np.ndarray, values: np.ndarray, missing: int, infinite: int, sample_limit: int,
    center: float, scale: float, zscore: float,
) -> NumericCounts:
    """Counts of finite ``values`` in the bins of ``edges`` (one binary search per value), with moments
    and the number of values more than ``zscore`` scales away from ``center``."""
    index = np.searchsorted(edges, values, side="left")
    fine = np.bincount(index, minlength=len(edges) + 1).astype(np.int64)
    outliers = int(np.count_nonzero(np.abs(values - center) > zscore * scale)) if scale > 0 else 0
    return NumericCounts(
        fine=fine,
        count=int(values.size),
        missing=missing,
        infinite=infinite,
        total=float(values.sum()),
        total_sq=float(np.dot(values, values)),
        low=float(values.min()) if values.size else float("inf"),
        high=float(values.max()) if values.size else float("-inf"),
        outliers=outliers,
        sample=np.sort(values) if values.size <= sample_limit else None,
    )


@dataclass
class NumericReference:
    """Edges and counts of one numeric reference column."""

    fine_edges: np.ndarray
    psi_every: int  # PSI bin i = fine bins [i * psi_every, (i + 1) * psi_every)
    counts: NumericCounts
    zscore: float = 3.0

    @property
    def psi_edges(self) -> np.ndarray:
        return self.fine_edges[self.psi_every - 1 :: self.psi_every]

    def psi_counts(self, counts: NumericCounts) -> np.ndarray:
        """Fine-bin counts summed into the PSI bins."""
        return counts.fine.reshape(-1, self.psi_every).sum(axis=1)

    def count_window(self, values: np.ndarray, missing: int, infinite: int, sample_limit: int) -> NumericCounts:
        return count_values(self.fine_edges, values, missing, infinite, sample_limit,
                            self.counts.mean, self.counts.std, self.zscore)


@dataclass
class ReferenceProfile:
    """The reference side of every drift test, serializable to JSON and reusable across windows."""

    numeric: dict[str, NumericReference] = field(default_factory=dict)
    categorical: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: int = 0
    psi_bins: int = 10
    fine_bins: int = 2000
    exact_sample_rows: int = 50_000
    zscore: float = 3.0
    max_categories: int = 200

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        numeric: list[str] | None = None,
        categorical: list[str] | None = None,
        settings: DriftSettings | None = None,
    ) -> "ReferenceProfile":
        """Profile ``frame``; columns default to its numeric / non-numeric dtypes."""
        settings = settings or DriftSettings()
        numeric, categorical = split_columns(frame, numeric, categorical)
        if frame.empty:
            raise DataError("the reference data is empty: a drift reference needs the rows a model was trained on")
        missing = [c for c in [*numeric, *categorical] if c not in frame.columns]
        if missing:
            raise DataError(f"the reference data lacks the columns {missing}")
        fine_bins = settings.psi_bins * max(settings.fine_bins // settings.psi_bins, 1)
        profile = cls(rows=len(frame), psi_bins=settings.psi_bins, fine_bins=fine_bins,
                      exact_sample_rows=settings.exact_ks_max_rows, zscore=settings.zscore,
                      max_categories=settings.max_categories)
        levels = np.arange(1, fine_bins) / fine_bins
        for column in numeric:
            values, missing_count, infinite = numeric_values(frame[column], column)
            if values.size == 0:
                edges = np.zeros(fine_bins - 1)
            else:
                edges = np.quantile(values, levels)
            center = float(values.mean()) if values.size else 0.0
            scale = float(values.std(ddof=1)) if values.size > 1 else 0.0
            counts = count_values(edges, values, missing_count, infinite, settings.exact_ks_max_rows,
                                  center, scale, settings.zscore)
            profile.numeric[column] = NumericReference(edges, fine_bins // settings.psi_bins, counts, settings.zscore)
        for column in categorical:
            counts = category_values(frame[column]).value_counts()
            profile.categorical[column] = {str(k): int(v) for k, v in counts.items()}
        return profile

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def to_json(self) -> str:
        numeric = {}
        for name, ref in self.numeric.items():
            c = ref.counts
            numeric[name] = {
                "fine_edges": ref.fine_edges.tolist(), "psi_every": ref.psi_every, "fine": c.fine.tolist(),
                "count": c.count, "missing": c.missing, "infinite": c.infinite, "total": c.total,
                "total_sq": c.total_sq, "low": c.low, "high": c.high, "outliers": c.outliers,
                "sample": None if c.sample is None else c.sample.tolist(),
            }
        return json.dumps({
            "format": PROFILE_FORMAT, "rows": self.rows, "psi_bins": self.psi_bins, "fine_bins": self.fine_bins,
            "exact_sample_rows": self.exact_sample_rows, "zscore": self.zscore,
            "max_categories": self.max_categories, "numeric": numeric, "categorical": self.categorical,
        })

    @classmethod
    def from_json(cls, text: str) -> "ReferenceProfile":
        try:
            raw = json.loads(text)
            if raw.get("format") != PROFILE_FORMAT:
                raise DataError(f"reference profile format {raw.get('format')!r} is not {PROFILE_FORMAT}: rebuild it")
            profile = cls(rows=raw["rows"], psi_bins=raw["psi_bins"], fine_bins=raw["fine_bins"],
                          exact_sample_rows=raw["exact_sample_rows"], zscore=raw["zscore"],
                          max_categories=raw["max_categories"], categorical=raw["categorical"])
            for name, c in raw["numeric"].items():
                counts = NumericCounts(
                    fine=np.asarray(c["fine"], dtype=np.int64), count=c["count"], missing=c["missing"],
                    infinite=c["infinite"], total=c["total"], total_sq=c["total_sq"], low=c["low"],
                    high=c["high"], outliers=c["outliers"],
                    sample=None if c["sample"] is None else np.asarray(c["sample"], dtype=float),
                )
                profile.numeric[name] = NumericReference(np.asarray(c["fine_edges"], dtype=float), c["psi_every"],
                                                         counts, raw["zscore"])
            return profile
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"the stored reference profile is unreadable ({error}): rebuild the training dataset") from error


@dataclass
class WindowProfile:
    """Counts of a current window in a reference's bins; merge chunks with ``merge``/``merge_all``."""

    numeric: dict[str, NumericCounts] = field(default_factory=dict)
    categorical: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: int = 0
    sample_limit: int = 50_000

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, reference: ReferenceProfile) -> "WindowProfile":
        missing = [c for c in reference.columns if c not in frame.columns]
        if missing:
            raise DataError(
                f"the current data lacks the columns {missing} that the reference has: fix the logging or the "
                "model's feature list"
            )
        window = cls(rows=len(frame), sample_limit=reference.exact_sample_rows)
        for column, ref in reference.numeric.items():
            values, missing_count, infinite = numeric_values(frame[column], column)
            window.numeric[column] = ref.count_window(values, missing_count, infinite, reference.exact_sample_rows)
        for column in reference.categorical:
            counts = category_values(frame[column]).value_counts()
            window.categorical[column] = {str(k): int(v) for k, v in counts.items()}
        return window

    def merge(self, other: "WindowProfile") -> "WindowProfile":
        merged = WindowProfile(rows=self.rows + other.rows, sample_limit=self.sample_limit)
        for column, counts in self.numeric.items():
            merged.numeric[column] = counts.merge(other.numeric[column], self.sample_limit)
        for column, counts in self.categorical.items():
            combined = dict(counts)
            for level, n in other.categorical[column].items():
                combined[level] = combined.get(level, 0) + n
            merged.categorical[column] = combined
        return merged

    @staticmethod
    def merge_all(windows: list["WindowProfile"]) -> "WindowProfile":
        if not windows:
            raise DataError("no window profiles to merge")
        merged = windows[0]
        for window in windows[1:]:
            merged = merged.merge(window)
        return merged


def split_columns(frame: pd.DataFrame, numeric: list[str] | None, categorical: list[str] | None) -> tuple[list, list]:
    """The numeric and categorical columns to test (by dtype when not given)."""
    if numeric is None and categorical is None:
        numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c].dtype)
                   and not pd.api.types.is_bool_dtype(frame[c].dtype)]
        categorical = [c for c in frame.columns if c not in numeric]
    return list(numeric or []), list(categorical or [])
