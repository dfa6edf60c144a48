import datetime as dt

import pandas as pd
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from retrain_assets.errors import DataError
from retrain_assets.training import clean_labeled_rows, content_hash, dataset_summary, select_window, split_dataset
from retrain_assets.config.training import DatasetSettings
from tests.training.conftest import NOW, labeled_traffic


def test_clean_drops_unsafe_and_duplicate_rows_keeping_the_newest_label(model):
    frame = labeled_traffic(50)
    frame.loc[3, "safe_to_send"] = False
    frame["safe_to_send"] = frame["safe_to_send"].astype(object)
    frame.loc[4, "safe_to_send"] = None  # unknown is kept: only an explicit "no" removes a row
    relabel = frame.iloc[[10]].assign(label_id=999, churned=1 - frame.loc[10, "churned"])
    cleaned = clean_labeled_rows(pd.concat([frame, relabel]).sample(frac=1, random_state=1), model)
    assert len(cleaned) == 49
    assert frame.loc[3, "request_id"] not in set(cleaned["request_id"])
    assert frame.loc[4, "request_id"] in set(cleaned["request_id"])
    assert cleaned.loc[cleaned.request_id == frame.loc[10, "request_id"], "churned"].item() == 1 - frame.loc[10, "churned"]
    assert cleaned["timestamp"].is_monotonic_increasing


def test_clean_names_missing_columns(model):
    with pytest.raises(DataError, match="churned"):
        clean_labeled_rows(labeled_traffic(5).drop(columns=["churned"]), model)


def test_window_strategies():
    frame = labeled_traffic(1000)
    full, weights = select_window(frame, DatasetSettings())
    assert len(full) == 1000 and weights is None
    sliding, weights = select_window(frame, DatasetSettings(strategy="sliding", window_rows=300))
    assert len(sliding) == 300 and weights is None
    assert sliding["request_id"].tolist() == frame["request_id"].tolist()[-300:]
    days, _ = select_window(frame, DatasetSettings(strategy="sliding", window_days=1000 * 10 / 86400 / 2))
    assert 490 <= len(days) <= 510  # the newest half of the time range
    rows, weights = select_window(frame, DatasetSettings(strategy="incremental", window_rows=200, recent_weight=3.0))
    assert len(rows) == 1000 and weights.tolist() == [1.0] * 800 + [3.0] * 200
    capped, weights = select_window(frame, DatasetSettings(strategy="incremental", window_rows=200, history_rows=100))
    assert len(capped) == 300 and capped["request_id"].iloc[0] == frame["request_id"].iloc[700]


def test_split_is_stratified_and_deterministic(model):
    frame = labeled_traffic(2000)
    split = split_dataset(frame, model, DatasetSettings(), seed=7)
    assert split.sizes() == {"train": 1400, "validation": 300, "test": 300}
    rate = frame["churned"].mean()
    for part in (split.train, split.validation, split.test):
        assert abs(part["churned"].mean() - rate) < 0.01
    again = split_dataset(frame, model, DatasetSettings(), seed=7)
    assert split.test["request_id"].tolist() == again.test["request_id"].tolist()
    ids = [set(p["request_id"]) for p in (split.train, split.validation, split.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_time_based_split_puts_newest_rows_in_test(model):
    frame = labeled_traffic(1000)
    split = split_dataset(frame, model, DatasetSettings(time_based_split=True, train_fraction=0.8,
                                                       validation_fraction=0.1, test_fraction=0.1), seed=0)
    assert split.train["timestamp"].max() < split.validation["timestamp"].min()
    assert split.validation["timestamp"].max() < split.test["timestamp"].min()
    assert len(split.test) == 100


def test_split_refuses_too_few_rows(model):
    with pytest.raises(DataError, match="min_samples"):
        split_dataset(labeled_traffic(2), model, DatasetSettings(), seed=0)


@hsettings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_content_hash_ignores_row_order_but_not_content(seed):
    frame = labeled_traffic(60, seed=seed % 7)
    shuffled = frame.sample(frac=1, random_state=seed).reset_index(drop=True)
    assert content_hash(frame) == content_hash(shuffled)
    changed = frame.copy()
    changed.loc[seed % 60, "monthly_charges"] += 0.01
    assert content_hash(changed) != content_hash(frame)
    assert content_hash(frame.rename(columns={"region": "area"})) != content_hash(frame)


def test_summary_reports_balance_and_time_range(model):
    frame = labeled_traffic(400)
    summary = dataset_summary(frame, model)
    assert summary["rows"] == 400
    assert sum(summary["label_counts"].values()) == 400
    assert summary["time_range"][1] == pd.Timestamp(frame["timestamp"].max()).isoformat()
    assert dt.datetime.fromisoformat(summary["time_range"][1]) <= NOW
