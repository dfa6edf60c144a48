"""A replay's input: one table (timestamp, features, label) cut into a first window and time-ordered batches.

Every problem a user can fix (a time column that does not parse, a label with one class, too few rows,
a feature that stops arriving) is a :class:`DataError` naming the column, the batch and the fix.
"""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from retrain_assets.errors import DataError
from retrain_assets.training.dataset import REQUEST_ID, TIMESTAMP

DEFAULT_FIRST_WINDOW_BATCHES = 4


def read_table(path: str | Path) -> pd.DataFrame:
    """A .csv, .csv.gz or .parquet file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"replay data {path} does not exist")
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return pd.read_csv(path)
    if name.endswith(".parquet"):
        try:
            return pd.read_parquet(path)
        except ImportError as error:
            raise DataError(f"reading {path} needs pyarrow: pip install pyarrow ({error})") from None
    raise DataError(f"replay data {path}: use a .csv, .csv.gz or .parquet file")


@dataclass(frozen=True)
class Batch:
    index: int
    rows: np.ndarray  # positions in ReplayTable.frame
    start: pd.Timestamp
    end: pd.Timestamp


@dataclass(frozen=True)
class ReplayTable:
    frame: pd.DataFrame  # time order; the features, the target, TIMESTAMP and REQUEST_ID
    target: str
    task: str
    numeric: list[str]
    categorical: list[str]
    first_window: np.ndarray  # positions of the rows the first model trains on
    batches: list[Batch]
    window_rows: int | None  # the sliding training window, in rows...
    window_days: float | None  # ...or in days

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def batch_rows(self) -> int:
        """Rows of a typical batch (the median): what one monitoring run sees."""
        return max(int(np.median([len(b.rows) for b in self.batches])), 1)


def _parse_duration(text: str) -> pd.Timedelta | None:
    try:
        value = pd.Timedelta(text)
    except (ValueError, TypeError):
        return None
    return value if value > pd.Timedelta(0) else None


def infer_task(target: pd.Series) -> str:
    """Classification for text, booleans and integer labels with at most 20 distinct values."""
    values = target.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "classification"
    if pd.api.types.is_integer_dtype(values) and values.nunique() <= 20:
        return "classification"
    return "regression"


def prepare_table(
    raw: pd.DataFrame,
    *,
    target: str,
    time_column: str,
    features: list[str] | None = None,
    task: str | None = None,
    batch_size: int | None = None,
    batch_freq: str | None = None,
    window: str | None = None,
) -> ReplayTable:
    """Validate ``raw`` and cut it: the first ``window`` trains the first model, then batches follow.

    ``window`` is a row count ("5000") or a duration ("28D"); it is also the sliding training window of
    every retrain. Default: four batches' worth. Batches are ``batch_size`` rows or ``batch_freq`` spans
    (default "7D").
    """
    for column, what in ((target, "--target"), (time_column, "--time-column")):
        if column not in raw.columns:
            raise DataError(f"{what} {column!r} is not a column of the data; columns: {list(raw.columns)}")
    stamps = pd.to_datetime(raw[time_column], utc=True, errors="coerce", format="mixed")
    bad = stamps.isna() & raw[time_column].notna()
    if bad.any() or stamps.isna().all():
        example = raw.loc[bad, time_column].iloc[0] if bad.any() else raw[time_column].iloc[0]
        raise DataError(f"time column {time_column!r}: {int(bad.sum()) or len(raw)} values do not parse as timestamps "
                        f"(e.g. {example!r}); pass ISO dates such as 2024-05-01 or 2024-05-01T13:30:00Z")
    if stamps.isna().any():
        raise DataError(f"time column {time_column!r}: {int(stamps.isna().sum())} rows have no timestamp; drop or fill them")
    if features:
        missing = [f for f in features if f not in raw.columns]
        if missing:
            raise DataError(f"--features {missing} are not columns of the data; columns: {list(raw.columns)}")
    else:
        features = [c for c in raw.columns if c not in (target, time_column)]
    if not features:
        raise DataError("no feature columns: pass --features or a table with columns besides the target and time")
    labels = raw[target]
    if labels.isna().any():
        raise DataError(f"target {target!r} has {int(labels.isna().sum())} empty values: a replay needs every row "
                        "labeled (drop unlabeled rows first)")
    task = task or infer_task(labels)
    if task == "classification" and labels.nunique() < 2:
        raise DataError(f"target {target!r} holds a single class ({labels.iloc[0]!r}): there is nothing to classify")
    numeric = [f for f in features if pd.api.types.is_numeric_dtype(raw[f]) and not pd.api.types.is_bool_dtype(raw[f])]
    categorical = [f for f in features if f not in numeric]
    frame = raw[features].copy()
    for column in categorical:
        frame[column] = frame[column].astype("string").astype(object).where(frame[column].notna(), None)
    frame[target] = labels.to_numpy()
    frame[TIMESTAMP] = stamps.to_numpy()
    frame = frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    frame[REQUEST_ID] = [f"r{i}" for i in range(len(frame))]

    if batch_size is not None and batch_freq is not None:
        raise DataError("pass --batch-size or --batch-freq, not both")
    freq = None
    if batch_size is None:
        freq = _parse_duration(batch_freq or "7D")
        if freq is None:
            raise DataError(f"--batch-freq {batch_freq!r} is not a duration such as 7D, 12h or 30min")
    elif batch_size < 1:
        raise DataError("--batch-size must be at least 1")
    window_rows = window_days = None
    if window is None:
        if freq is not None:
            window_days = DEFAULT_FIRST_WINDOW_BATCHES * freq / pd.Timedelta(days=1)
        else:
            window_rows = DEFAULT_FIRST_WINDOW_BATCHES * batch_size
    elif str(window).isdigit():
        window_rows = int(window)
    else:
        span = _parse_duration(window)
        if span is None:
            raise DataError(f"--window {window!r} is neither a row count (5000) nor a duration (28D)")
        window_days = span / pd.Timedelta(days=1)

    times = frame[TIMESTAMP]
    if window_rows is not None:
        first_end = min(window_rows, len(frame))
    else:
        first_end = int(times.searchsorted(times.iloc[0] + pd.Timedelta(days=window_days)))
    if first_end >= len(frame):
        raise DataError(f"the data has {len(frame)} rows, all inside the first window ({window or 'four batches'}): "
                        "use a shorter --window or more data")
    batches = _cut_batches(frame, first_end, batch_size, freq)
    _check_features_keep_arriving(frame, features, first_end, batches)
    return ReplayTable(frame, target, task, numeric, categorical, np.arange(first_end), batches, window_rows, window_days)


def _cut_batches(frame: pd.DataFrame, first_end: int, batch_size: int | None, freq: pd.Timedelta | None) -> list[Batch]:
    times = frame[TIMESTAMP]
    positions = np.arange(first_end, len(frame))
    if batch_size is not None:
        groups = [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
        edges = [(times.iloc[g[0]], times.iloc[g[-1]]) for g in groups]
    else:
        origin = times.iloc[first_end]
        slot = ((times.iloc[first_end:] - origin) // freq).to_numpy()
        cuts = np.flatnonzero(np.diff(slot)) + 1
        groups = np.split(positions, cuts)
        edges = [(origin + int(slot[g[0] - first_end]) * freq, origin + (int(slot[g[0] - first_end]) + 1) * freq)
                 for g in groups]
    return [Batch(i, rows, start, end) for i, (rows, (start, end)) in enumerate(zip(groups, edges))]


def _check_features_keep_arriving(frame: pd.DataFrame, features: list[str], first_end: int, batches: list[Batch]) -> None:
    """A feature whose values stop (the column was dropped or renamed upstream) is an error, not a silent NaN."""
    present = frame[features].notna()
    if not present.iloc[:first_end].any().all():
        empty = [f for f in features if not present[f].iloc[:first_end].any()]
        raise DataError(f"features {empty} have no values in the first window: drop them from --features")
    for batch in batches:
        gone = [f for f in features if not present[f].iloc[batch.rows].any()]
        if gone:
            raise DataError(f"features {gone} have no values from batch {batch.index} ({batch.start:%Y-%m-%d %H:%M}) on: "
                            "the column was dropped or renamed upstream; fix the data or leave the feature out")


def batch_span(table: ReplayTable) -> dt.timedelta:
    """Typical time between batch starts (for the label delay and the quiet window)."""
    if len(table.batches) < 2:
        return dt.timedelta(days=1)
    starts = pd.Series([b.start for b in table.batches])
    return starts.diff().dropna().median().to_pytimedelta()
