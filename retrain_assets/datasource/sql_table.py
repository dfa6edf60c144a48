"""A data source reading a table you already have: one row per prediction request, with its features,
its label once known (NULL before), a timestamp and an increasing integer id.

Any SQLAlchemy URL works (PostgreSQL, SQLite, or any dialect whose driver is installed); the table is
only read, never created or migrated. Configure it in ``retrain.yaml``::

    data_source:
      kind: sql_table
      url: postgresql+psycopg2://reader@warehouse:5432/analytics   # default: the monitoring database
      table: churn_scored            # may be schema-qualified: marts.churn_scored
      id_column: id                  # increasing integer, one per row
      timestamp_column: scored_at
      labeled_at_column: labeled_at  # when labels are filled into older rows: when each arrived

New labels are counted from a watermark. Without ``labeled_at_column`` it is the row id, which is right
when a row is written with its label (append-only); when labels are filled into rows scored earlier, a
label arriving for an old row has an id below the watermark, so name the column holding when the label
arrived: the watermark is then that time (as epoch microseconds).
"""

import datetime as dt
from functools import cached_property, lru_cache

import pandas as pd
from sqlalchemy import Engine, MetaData, Table, create_engine, func, select
from sqlalchemy.exc import NoSuchTableError, OperationalError, SQLAlchemyError

from retrain_assets.datasource.base import LABEL_ID, REQUEST_ID, TIMESTAMP, DataSource
from retrain_assets.errors import DataError, StoreError
from retrain_assets.settings import ModelSettings
from retrain_assets.store.database import normalize_url, redact, resolve_url


def _epoch_us(values: pd.Series) -> pd.Series:
    """Label arrival times as integer epoch microseconds: the watermark stored with each dataset."""
    stamps = pd.to_datetime(values, utc=True)
    return (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)


def _engine(url: str) -> Engine:
    """A plain engine (no migrations: the table belongs to its owner), one per URL and process; ``url`` may
    be an ``env:NAME`` reference."""
    return _cached_engine(normalize_url(resolve_url(url)))


@lru_cache(maxsize=16)
def _cached_engine(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True)


class SqlTableSource(DataSource):
    def __init__(self, model: ModelSettings, *, url: str, table: str, id_column: str = "id",
                 timestamp_column: str = "timestamp", labeled_at_column: str | None = None):
        super().__init__(model)
        self.url, self.table_name = url, table
        self.id_column, self.timestamp_column, self.labeled_at_column = id_column, timestamp_column, labeled_at_column

    @cached_property
    def _table(self) -> Table:
        """One reflection per source object; errors say which table and which columns are wrong."""
        schema, _, name = self.table_name.rpartition(".")
        try:
            table = Table(name, MetaData(), schema=schema or None, autoload_with=_engine(self.url))
        except NoSuchTableError:
            raise DataError(
                f"model {self.model.name}: data_source table {self.table_name!r} does not exist in "
                f"{redact(self.url)}; fix data_source.table (or .url) in retrain.yaml"
            ) from None
        except OperationalError as error:
            raise StoreError(
                f"model {self.model.name}: cannot read data_source table {self.table_name!r} at {redact(self.url)}: "
                f"{str(error.orig).strip().splitlines()[0] if error.orig else error}"
            ) from None
        needed = [*self.model.feature_names, self.model.target, self.id_column, self.timestamp_column,
                  *([self.labeled_at_column] if self.labeled_at_column else [])]
        missing = [c for c in needed if c not in table.c]
        if missing:
            raise DataError(
                f"model {self.model.name}: table {self.table_name!r} has no columns {missing} (it has "
                f"{sorted(table.c.keys())}); fix the model's features/target or data_source.id_column / "
                "timestamp_column in retrain.yaml"
            )
        return table

    def _execute(self, query) -> list:
        try:
            with _engine(self.url).connect() as conn:
                return conn.execute(query).all()
        except SQLAlchemyError as error:
            raise StoreError(f"model {self.model.name}: reading {self.table_name!r} failed: {error}") from None

    def _read(self, query, columns) -> pd.DataFrame:
        frame = pd.DataFrame(self._execute(query), columns=columns)
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        return frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)

    def _watermark(self, t: Table):
        return t.c[self.labeled_at_column] if self.labeled_at_column else t.c[self.id_column]

    def _labeled(self, label_id: int | None = None, limit: int | None = None) -> pd.DataFrame:
        t = self._table
        features = [t.c[f] for f in self.model.feature_names]
        query = select(
            *features, t.c[self.model.target], t.c[self.timestamp_column], t.c[self.id_column], self._watermark(t)
        ).where(t.c[self.model.target].is_not(None))
        if label_id is not None:
            query = query.where(self._watermark(t) > self._watermark_value(label_id))
        if limit is not None:
            query = query.order_by(self._watermark(t).desc()).limit(limit)
        frame = self._read(query, [*self.model.feature_names, self.model.target, TIMESTAMP, REQUEST_ID, LABEL_ID])
        frame[REQUEST_ID] = frame[REQUEST_ID].astype(str)
        if self.labeled_at_column:
            frame[LABEL_ID] = _epoch_us(frame[LABEL_ID])
        return frame

    def labeled_rows(self) -> pd.DataFrame:
        return self._labeled()

    def labeled_rows_after(self, label_id: int | None, limit: int) -> pd.DataFrame:
        return self._labeled(label_id, limit).sort_values(LABEL_ID, kind="stable").reset_index(drop=True)

    def _watermark_value(self, label_id: int):
        """A stored watermark as the watermark column compares it: a time for labeled_at_column, else the id."""
        if not self.labeled_at_column:
            return label_id
        moment = dt.datetime.fromtimestamp(label_id / 1e6, dt.timezone.utc)
        if not getattr(self._table.c[self.labeled_at_column].type, "timezone", False):  # a column without zone holds UTC
            moment = moment.replace(tzinfo=None)
        return moment

    def recent_inputs(self, rows: int, hours: float | None = None) -> pd.DataFrame:
        t = self._table
        query = (
            select(*(t.c[f] for f in self.model.feature_names), t.c[self.timestamp_column])
            .order_by(t.c[self.id_column].desc())
            .limit(rows)
        )
        frame = self._read(query, [*self.model.feature_names, TIMESTAMP])
        if hours is not None:
            # Filtered here, not in SQL: timestamps stored as text (SQLite) or without a time zone compare
            # wrongly with a bound timezone-aware value; read as UTC, they compare right.
            since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=hours)
            frame = frame[frame[TIMESTAMP] >= since].reset_index(drop=True)
        return frame

    def count_labels_after(self, label_id: int | None, cap: int | None = None) -> int:
        t = self._table
        ids = select(t.c[self.id_column]).where(t.c[self.model.target].is_not(None))
        if label_id is not None:
            ids = ids.where(self._watermark(t) > self._watermark_value(label_id))
        if cap is not None:
            ids = ids.limit(cap)
        return int(self._execute(select(func.count()).select_from(ids.subquery()))[0][0])

    def describe(self) -> str:
        return (
            f"SELECT {', '.join(self.model.feature_names)}, {self.model.target} FROM {self.table_name} "
            f"WHERE {self.model.target} IS NOT NULL  -- at {redact(self.url)}"
        )
