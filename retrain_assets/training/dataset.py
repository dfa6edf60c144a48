"""Turning labeled prediction-log rows into a versioned, split training dataset.

Everything here is pure pandas/numpy so the same functions serve the Dagster asset, the replay harness and
a notebook, and give the same dataset for the same rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import datetime as dt
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from retrain_assets.errors import DataError
from retrain_assets.config.training import DatasetSettings

if TYPE_CHECKING:  # settings import this package's settings module: no import cycle at runtime
    from retrain_assets.settings import ModelSettings

TIMESTAMP = "timestamp"
REQUEST_ID = "request_id"


@dataclass(frozen=True)
class DatasetSplit:
    """Train / validation / test parts of one dataset (validation may be empty)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    @property
    def train_and_validation(self) -> pd.DataFrame:
        """Cross-validation and the final fit use both: the test part is kept for the gates only."""
        return pd.concat([self.train, self.validation], ignore_index=True)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def clean_labeled_rows(frame: pd.DataFrame, model: ModelSettings) -> pd.DataFrame:
    """Apply the quality filter: drop rows flagged ``safe_to_send = false`` and duplicate requests.

    ``safe_to_send`` unknown (null) is kept: only an explicit "do not use" removes a row. For a request
    labeled twice the newest label wins (highest ``label_id`` when present). Null labels are kept on
    purpose: the labels quality check reports them instead of them silently vanishing. The result is in
    time order.
    """
    missing = [c for c in [*model.feature_names, model.target] if c not in frame.columns]
    if missing:
        raise DataError(f"labeled rows of model {model.name} lack the columns {missing}: fix the model's features/target")
    out = frame
    if "safe_to_send" in out.columns:
        flag = out["safe_to_send"]
        out = out[~flag.eq(False).fillna(False).astype(bool)]
    if REQUEST_ID in out.columns:
        order = ["label_id"] if "label_id" in out.columns else []
        if order:
            out = out.sort_values(order, kind="stable")
        out = out.drop_duplicates(subset=[REQUEST_ID], keep="last")
    if TIMESTAMP in out.columns:
        out = out.sort_values(TIMESTAMP, kind="stable")
    return out.reset_index(drop=True)


def _recent_mask(frame: pd.DataFrame, settings: DatasetSettings, now: dt.datetime | None) -> np.ndarray:
    """Rows inside the configured recent window (last ``window_rows`` rows and/or ``window_days`` days)."""
    mask = np.ones(len(frame), dtype=bool)
    if settings.window_rows is not None and len(frame) > settings.window_rows:
        mask[: len(frame) - settings.window_rows] = False
    if settings.window_days is not None:
        if TIMESTAMP not in frame.columns:
            raise DataError("dataset.window_days needs a timestamp column in the labeled rows")
        stamps = pd.to_datetime(frame[TIMESTAMP], utc=True)
        reference = pd.Timestamp(now) if now is not None else stamps.max()
        if reference.tzinfo is None:
            reference = reference.tz_localize("UTC")
        mask &= (stamps >= reference - pd.Timedelta(days=settings.window_days)).to_numpy()
    return mask


def select_window(
    frame: pd.DataFrame, settings: DatasetSettings, now: dt.datetime | None = None
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The rows to train on, by strategy, plus per-row sample weights (None: all rows weigh the same).

    ``frame`` must be in time order (``clean_labeled_rows`` sorts it). ``now`` anchors ``window_days``;
    it defaults to the newest row so that replaying history gives the same window as living it.

    * ``full``: every row.
    * ``sliding``: only the recent window.
    * ``incremental``: history (capped at ``history_rows`` oldest-dropped, if set) plus the recent window,
      whose rows weigh ``recent_weight``.
    """
    if settings.strategy == "full" or frame.empty:
        return frame.reset_index(drop=True), None
    recent = _recent_mask(frame, settings, now)
    if settings.strategy == "sliding":
        return frame[recent].reset_index(drop=True), None
    keep = np.ones(len(frame), dtype=bool)
    if settings.history_rows is not None:
        history_positions = np.flatnonzero(~recent)
        keep[history_positions[: max(len(history_positions) - settings.history_rows, 0)]] = False
    weights = np.where(recent, settings.recent_weight, 1.0)[keep]
    return frame[keep].reset_index(drop=True), weights


def _can_stratify(labels: pd.Series, parts: int) -> bool:
    if labels.isna().any():
        return False
    counts = labels.value_counts()
    return len(counts) > 1 and int(counts.min()) >= max(parts, 2)


def split_dataset(frame: pd.DataFrame, model: ModelSettings, settings: DatasetSettings, seed: int) -> DatasetSplit:
    """Split into train/validation/test by the configured fractions (default 70/15/15).

    Classification splits are stratified by label when every class has enough rows; ``time_based_split``
    puts the oldest rows in train and the newest in test instead (no shuffling), which is what a model
    meets in production. Every column is kept (including weights), so callers can carry extra columns.
    """
    if len(frame) < 3:
        raise DataError(
            f"cannot split {len(frame)} labeled rows of model {model.name} into train/validation/test: "
            f"collect at least dataset.min_samples ({settings.min_samples}) labeled rows"
        )
    n = len(frame)
    n_test = max(1, int(round(n * settings.test_fraction)))
    n_validation = int(round(n * settings.validation_fraction))
    if settings.time_based_split:
        ordered = frame.sort_values(TIMESTAMP, kind="stable") if TIMESTAMP in frame.columns else frame
        ordered = ordered.reset_index(drop=True)
        n_train = n - n_test - n_validation
        return DatasetSplit(
            train=ordered.iloc[:n_train].reset_index(drop=True),
            validation=ordered.iloc[n_train : n_train + n_validation].reset_index(drop=True),
            test=ordered.iloc[n_train + n_validation :].reset_index(drop=True),
        )
    stratify = settings.stratify and model.task == "classification" and _can_stratify(frame[model.target], 3)
    rest, test = train_test_split(
        frame, test_size=n_test, random_state=seed, stratify=frame[model.target] if stratify else None
    )
    if n_validation == 0:
        validation = rest.iloc[0:0]
        train = rest
    else:
        stratify_rest = stratify and _can_stratify(rest[model.target], 2)
        train, validation = train_test_split(
            rest, test_size=n_validation, random_state=seed, stratify=rest[model.target] if stratify_rest else None
        )
    return DatasetSplit(
        train=train.reset_index(drop=True),
        validation=validation.reset_index(drop=True),
        test=test.reset_index(drop=True),
    )


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of the rows as a multiset: the same rows in any order give the same hash.

    Row hashes (pandas' stable per-row hash) are sorted before digesting, and the column names and dtypes
    are part of the digest, so a renamed or retyped column is a different dataset.
    """
    columns = sorted(frame.columns)
    rows = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy(dtype=np.uint64)
    digest = hashlib.sha256()
    digest.update("|".join(f"{c}:{frame[c].dtype}" for c in columns).encode())
    digest.update(np.sort(rows).tobytes())
    return digest.hexdigest()


def dataset_summary(frame: pd.DataFrame, model: ModelSettings) -> dict:
    """What a person checks first about a dataset: size, time range, label balance."""
    summary: dict = {"rows": int(len(frame))}
    if TIMESTAMP in frame.columns and len(frame):
        stamps = pd.to_datetime(frame[TIMESTAMP], utc=True)
        summary["time_range"] = [stamps.min().isoformat(), stamps.max().isoformat()]
    labels = frame[model.target]
    if model.task == "classification":
        counts = labels.value_counts()
        summary["label_counts"] = {str(k): int(v) for k, v in counts.items()}
        summary["label_balance"] = {str(k): round(float(v) / max(len(frame), 1), 4) for k, v in counts.items()}
    else:
        values = pd.to_numeric(labels, errors="coerce")
        summary["target"] = {
            "mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()),
        }
    return summary
