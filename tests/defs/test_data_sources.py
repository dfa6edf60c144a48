"""Data sources: a table of yours (SQLite and PostgreSQL), your own class, and a retrain fed by them."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine

from retrain_assets.datasource import PredictionLogSource, SqlTableSource, open_data_source
from retrain_assets.defs.keys import asset_key, monitor_job_name
from retrain_assets.errors import ConfigError, DataError
from retrain_assets.simulate import generate_traffic
from retrain_assets.store import MonitoringStore
from tests.conftest import make_settings


# A few hundred test rows: the design's precision floor (0.85) is within sampling noise of this model's.
SMALL_DATA_GATES = {"min_precision": 0.7, "min_recall": 0.7}


def scored_table(rows: int, unlabeled: int, seed: int = 0) -> pd.DataFrame:
    """A user's table: one row per scored customer, label NULL for the newest ``unlabeled`` rows."""
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=6)
    frame = generate_traffic(rows, start=start, interval=dt.timedelta(seconds=2), seed=seed)
    frame = frame.drop(columns=["request_id", "safe_to_send"]).rename(columns={"timestamp": "scored_at"})
    frame.insert(0, "id", np.arange(1, rows + 1))
    frame["churned"] = frame["churned"].astype(float)
    frame.loc[frame.index[rows - unlabeled:], "churned"] = np.nan
    return frame


def write_table(url: str, frame: pd.DataFrame, name: str = "churn_scored") -> None:
    engine = create_engine(url)
    frame.to_sql(name, engine, index=False, if_exists="replace")
    engine.dispose()


def table_model(url: str, tmp_path, triggers=None, **source):
    """Settings of the churn model reading ``churn_scored`` at ``url`` (``source``: more data_source keys)."""
    block = {"kind": "sql_table", "url": url, "table": "churn_scored", "timestamp_column": "scored_at", **source}
    overrides = {"triggers": triggers} if triggers else {}
    return make_settings(tmp_path, data_source=block, gates=SMALL_DATA_GATES, **overrides)


def check_table_source(source: SqlTableSource, frame: pd.DataFrame) -> None:
    labeled = source.labeled_rows()
    assert len(labeled) == frame["churned"].notna().sum()
    assert {"label_id", "request_id", "timestamp", "churned", *source.model.feature_names} <= set(labeled.columns)
    assert labeled["timestamp"].is_monotonic_increasing and str(labeled["timestamp"].dt.tz) == "UTC"
    recent = source.recent_inputs(rows=50)
    assert len(recent) == 50
    assert recent["timestamp"].max() == pd.Timestamp(frame["scored_at"].max()).tz_convert("UTC")
    newest_label = int(labeled["label_id"].max())
    assert source.count_labels_after(None) == len(labeled)
    assert source.count_labels_after(None, cap=10) == 10
    assert source.count_labels_after(newest_label - 5) == 5
    assert source.count_labels_after(newest_label) == 0


def test_a_table_of_yours_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/warehouse.db"
    frame = scored_table(600, unlabeled=100)
    write_table(url, frame)
    settings = table_model(url, tmp_path)
    source = open_data_source(settings.models[0], settings.storage.database_url)
    assert isinstance(source, SqlTableSource)
    check_table_source(source, frame)
    assert "churn_scored" in source.describe()


@pytest.mark.postgres
def test_a_table_of_yours_on_postgres(postgres_db, tmp_path):
    url, _ = postgres_db
    frame = scored_table(600, unlabeled=100)
    write_table(url, frame)
    settings = table_model(url, tmp_path)
    check_table_source(open_data_source(settings.models[0], settings.storage.database_url), frame)


def labels_filled_later(frame: pd.DataFrame, scored_rows: slice, start: pd.Timestamp) -> pd.DataFrame:
    """The labeling job fills the labels of rows scored earlier, and stamps when each arrived (first batch
    at ``start``, the late ones an hour later)."""
    frame = frame.copy()
    frame["labeled_at"] = pd.Series(start, index=frame.index).where(frame["churned"].notna())
    late = frame.index[scored_rows]
    frame.loc[late, "churned"] = 1.0
    frame.loc[late, "labeled_at"] = start + pd.Timedelta(hours=1)
    return frame


def check_labels_filled_later(url: str, tmp_path) -> None:
    # Rows 301-400 are scored but unlabeled while rows up to 600 are labeled: their labels arrive last.
    frame = scored_table(600, unlabeled=0)
    frame.loc[300:399, "churned"] = np.nan
    start = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=3)
    write_table(url, labels_filled_later(frame, slice(0, 0), start))
    by_id = open_data_source(table_model(url, tmp_path).models[0], "sqlite://")
    by_arrival = open_data_source(table_model(url, tmp_path, labeled_at_column="labeled_at").models[0], "sqlite://")
    id_mark, arrival_mark = int(by_id.labeled_rows()["label_id"].max()), int(by_arrival.labeled_rows()["label_id"].max())
    assert by_id.count_labels_after(id_mark) == 0 == by_arrival.count_labels_after(arrival_mark)
    write_table(url, labels_filled_later(frame, slice(300, 400), start))
    # By id, labels filled into old rows are invisible; by arrival time, all 100 are new.
    assert by_id.count_labels_after(id_mark) == 0
    assert by_arrival.count_labels_after(arrival_mark) == 100
    assert by_arrival.count_labels_after(arrival_mark, cap=40) == 40
    assert by_arrival.labeled_rows()["label_id"].max() > arrival_mark


def test_labels_filled_into_earlier_rows_count_by_their_arrival_time(tmp_path):
    check_labels_filled_later(f"sqlite:///{tmp_path}/warehouse.db", tmp_path)


@pytest.mark.postgres
def test_labels_filled_into_earlier_rows_count_by_their_arrival_time_on_postgres(postgres_db, tmp_path):
    check_labels_filled_later(postgres_db[0], tmp_path)


def test_the_recent_window_keeps_only_the_last_hours(tmp_path):
    """Timestamps stored as text (SQLite) still compare as times."""
    url = f"sqlite:///{tmp_path}/warehouse.db"
    frame = scored_table(600, unlabeled=0)  # scored every 2 s from 6 h ago: the last 20 min are 600 rows
    frame["scored_at"] = pd.Timestamp.now(tz="UTC") - pd.to_timedelta(np.arange(600)[::-1] * 60, unit="s")
    frame["scored_at"] = frame["scored_at"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")  # ISO text
    write_table(url, frame)
    source = open_data_source(table_model(url, tmp_path).models[0], "sqlite://")
    assert len(source.recent_inputs(rows=1000)) == 600
    assert len(source.recent_inputs(rows=1000, hours=1)) in (60, 61)  # one row a minute


def test_a_wrong_table_or_column_says_what_to_fix(tmp_path):
    url = f"sqlite:///{tmp_path}/warehouse.db"
    write_table(url, scored_table(50, unlabeled=5).drop(columns=["region"]))
    model = table_model(url, tmp_path).models[0]
    with pytest.raises(DataError, match=r"no columns \['region'\].*fix the model's features"):
        open_data_source(model, "sqlite://").labeled_rows()
    missing = table_model(url, tmp_path, table="no_such_table").models[0]
    with pytest.raises(DataError, match="'no_such_table' does not exist"):
        open_data_source(missing, "sqlite://").count_labels_after(None)


def test_the_config_names_what_each_kind_needs(tmp_path):
    with pytest.raises(ConfigError, match="sql_table needs `table`"):
        make_settings(tmp_path, data_source={"kind": "sql_table"})
    with pytest.raises(ConfigError, match="class_path: package.module:ClassName"):
        make_settings(tmp_path, data_source={"kind": "python"})
    bad = make_settings(tmp_path, data_source={"kind": "python", "class_path": "tests.defs.csv_source:Nope"})
    with pytest.raises(ConfigError, match="cannot be imported"):
        open_data_source(bad.models[0], "sqlite://")
    not_a_source = make_settings(tmp_path, data_source={"kind": "python", "class_path": "pandas:DataFrame"})
    with pytest.raises(ConfigError, match="not a subclass of retrain_assets.datasource.DataSource"):
        open_data_source(not_a_source.models[0], "sqlite://")
    default = make_settings(tmp_path)
    assert isinstance(open_data_source(default.models[0], default.storage.database_url), PredictionLogSource)


def test_a_retrain_and_the_monitoring_read_a_table_of_yours(tmp_path, harness_for):
    """Nothing in the prediction log: the dataset, the drift report, the realized performance (rows labeled
    since the dataset, scored by the production model itself) and the label count use the table."""
    url = f"sqlite:///{tmp_path}/warehouse.db"
    frame = scored_table(1500, unlabeled=300)
    write_table(url, frame)
    volume = {"new_labels_scheduled": 200, "new_labels_now": 250, "cooldown_hours": 0,
              "quiet_start_hour": 0, "quiet_end_hour": 24}
    harness = harness_for(table_model(url, tmp_path, triggers=volume))
    name = harness.model.name
    result = harness.retrain()
    assert result.success, [e.description for e in result.get_asset_check_evaluations() if not e.passed]
    dataset = harness.store.registry.latest_dataset(name)
    assert dataset.rows == 1200 and dataset.max_label_id == 1200
    assert "churn_scored" in dataset.source_query
    assert harness.store.predictions.count_predictions(name) == 0
    assert harness.run(monitor_job_name(name)).success
    drift = harness.instance.get_latest_materialization_event(asset_key(name, "drift_report"))
    assert drift.asset_materialization.metadata["dagster/row_count"].value == 1500
    # Labels arrive for the 300 scored rows, all wrong for this model: realized performance reads them
    # from the table, the production model scores them, and the decision retrains on it.
    frame["churned"] = frame["churned"].fillna(1.0)
    write_table(url, frame)
    assert harness.run(monitor_job_name(name)).success
    performance = harness.instance.get_latest_materialization_event(asset_key(name, "performance_report"))
    assert performance.asset_materialization.metadata["labeled_since_deployment"].value == 300
    tick = harness.sensor_tick(f"{name}_retrain_sensor")
    assert len(tick.run_requests) == 1, tick.skip_message
    assert tick.run_requests[0].tags["retrain/trigger"] == "performance"


def test_your_own_class(tmp_path, harness_for):
    path = tmp_path / "history.csv"
    frame = scored_table(1200, unlabeled=0).rename(columns={"id": "row_number"})
    frame.to_csv(path, index=False)
    settings = make_settings(
        tmp_path, data_source={"kind": "python", "class_path": "tests.defs.csv_source:CsvSource",
                               "params": {"path": str(path)}},
        gates=SMALL_DATA_GATES,
    )
    harness = harness_for(settings)
    result = harness.retrain()
    assert result.success
    assert harness.store.registry.latest_dataset("churn").source_query.startswith(f"CSV file {path}")
    wrong = make_settings(tmp_path, data_source={"kind": "python", "class_path": "tests.defs.csv_source:CsvSource",
                                                 "params": {"file": "x"}})
    with pytest.raises(ConfigError, match="data_source.params do not fit CsvSource"):
        open_data_source(wrong.models[0], "sqlite://")


def test_one_store_serves_the_default_source(tmp_path):
    settings = make_settings(tmp_path)
    store = MonitoringStore(settings.storage.database_url)
    frame = generate_traffic(120, seed=3)
    model = settings.models[0]
    store.predictions.log_predictions(model.log_key, frame, model.feature_names)
    store.predictions.log_labels(model.log_key, frame["request_id"].tolist(), frame["churned"].tolist())
    source = open_data_source(model, settings.storage.database_url)
    assert len(source.labeled_rows()) == 120 and len(source.recent_inputs(rows=30)) == 30
    assert source.count_labels_after(None, cap=100) == 100


def test_a_sensor_evaluation_counts_the_same_labels_once():
    """The sensor's label signal and the guards ask for labels after the same id: the second question,
    with a smaller cap, is answered from the first count; a larger cap or another id counts again."""
    from retrain_assets.datasource import DataSource
    from retrain_assets.simulate import model_config
    from retrain_assets.settings import settings_from_dict

    class Counting(DataSource):
        calls: list = []

        def labeled_rows(self):
            raise NotImplementedError

        def recent_inputs(self, rows, hours=None):
            raise NotImplementedError

        def count_labels_after(self, label_id, cap=None):
            self.calls.append((label_id, cap))
            return min(500, cap) if cap is not None else 500

        def describe(self):
            return "counting"

    source = Counting(settings_from_dict({"models": [model_config()]}).models[0])
    assert source.counted_labels_after(10, cap=10_000) == 500
    assert source.counted_labels_after(10, cap=300) == 300  # min(min(500, 10000), 300)
    assert source.counted_labels_after(10, cap=20_000) == 500  # a larger cap: counted again
    assert source.counted_labels_after(11, cap=300) == 300  # another label id: counted again
    assert Counting.calls == [(10, 10_000), (10, 20_000), (11, 300)]
