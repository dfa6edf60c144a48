"""The prediction log and the labels that arrive after it.

Serving writes one row per prediction (features as JSON, prediction, score, model version, quality flag);
labels arrive later in ``label_feedback`` and are joined by ``(model_name, request_id)``. Training reads
labeled rows; monitoring reads the most recent window; sensors only ever ask for counts.
"""

import csv
import datetime as dt
import functools
import io
import itertools
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, func, select, true, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from retrain_assets.errors import DataError
from retrain_assets.store.schema import json_text, label_feedback, prediction_log, serving_requests, shadow_predictions

TIMESTAMP = "timestamp"
REQUEST_ID = "request_id"


def _json_value(value):
    """Plain Python scalars for JSON columns (numpy scalars are not JSON-serializable)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _records(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict]:
    values = frame[list(columns)].astype(object).where(frame[list(columns)].notna(), None)
    return [{k: _json_value(v) for k, v in zip(columns, row)} for row in values.itertuples(index=False)]


def _utc(values) -> list[dt.datetime]:
    return [ts.to_pydatetime() for ts in pd.to_datetime(pd.Series(values), utc=True)]


def prediction_rows(
    model_name: str,
    request_ids: Sequence,
    features: Sequence[Mapping],
    *,
    ts: dt.datetime | Sequence[dt.datetime],
    prediction: Sequence | None = None,
    score: Sequence[float] | None = None,
    model_version: int | None = None,
    latency_ms: Sequence[float] | float | None = None,
    safe_to_send: Sequence | bool | None = True,
) -> list[dict]:
    """``prediction_log`` rows, one per served prediction, made of plain JSON values (``features``: one
    mapping per row of plain values, as the API validated and typed them; a dict is handed over, not copied).

    Why a separate step from inserting: the serving side builds the rows once, and the same rows then go
    to the database, or to a spill file on local disk while it is unreachable, and back from there.
    """
    count = len(request_ids)
    stamps = [ts] * count if isinstance(ts, dt.datetime) else list(ts)
    if safe_to_send is None or isinstance(safe_to_send, bool):  # one flag for every row (served requests)
        flags = [safe_to_send] * count
    else:
        flags = [None if flag is None or pd.isna(flag) else bool(flag) for flag in safe_to_send]
    predictions = [None] * count if prediction is None else _json_values(prediction)
    if score is not None and len(score) != count:
        raise ValueError(f"{len(score)} scores for {count} rows")
    scores = [None] * count if score is None else _json_floats(score, count)
    latencies = _json_floats(np.nan if latency_ms is None else latency_ms, count)
    return [
        {
            "model_name": model_name,
            "request_id": str(request_ids[i]),
            "ts": stamps[i],
            "features": features[i] if features[i].__class__ is dict else dict(features[i]),
            "prediction": predictions[i],
            "score": scores[i],
            "model_version": model_version,
            "safe_to_send": flags[i],
            "latency_ms": latencies[i],
        }
        for i in range(count)
    ]


_PLAIN_JSON = (int, str, bool, type(None))


def _json_values(values: Sequence) -> list:
    """``_json_value`` of each value; a column of plain ints, strings or bools (class labels, most of the
    time) is taken as it is, without a Python call per value."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":  # regression
        return _json_floats(values, len(values))
    plain = values.tolist() if isinstance(values, np.ndarray) else list(values)
    if all(value.__class__ in _PLAIN_JSON for value in plain):
        return plain
    return [_json_value(value) for value in plain]


def _json_floats(values, count: int) -> list:
    """Floats (one value or one per row) as plain Python floats, NaN as None, ``count`` of them."""
    array = np.broadcast_to(np.asarray(values, dtype=float), count)
    floats = array.tolist()
    if np.isnan(array).any():
        floats = [None if value != value else value for value in floats]
    return floats


_COPY_COLUMNS = ("model_name", "request_id", "ts", "features", "prediction", "score", "model_version",
                 "safe_to_send", "latency_ms")
_COPY_READ_MAX = 64 * 1024 * 1024
_COPY_SQL = (f"COPY prediction_log ({', '.join(_COPY_COLUMNS)}) FROM STDIN WITH (FORMAT csv, "
             "FORCE_NULL (score, model_version, safe_to_send, latency_ms))")


def _copy_csv(rows: Sequence[Mapping]) -> tuple[io.StringIO, int]:
    """The rows as CSV for COPY, and its length in characters: JSON columns as JSON text (None as JSON null,
    as the JSON type stores it), other missing values as NULL, timestamps with their offset (naive ones
    refused, as UTCDateTime does)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerows(_encoded(rows, dt.datetime.isoformat))
    size = buffer.tell()
    buffer.seek(0)
    return buffer, size


_SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's storage format of DateTime on SQLite (naive UTC, see UTCDateTime)
_SQLITE_ROW = f"({', '.join('?' * len(_COPY_COLUMNS))})"
_SQLITE_ROWS_PER_STATEMENT = 1000


@functools.lru_cache(maxsize=8)
def _sqlite_insert(rows: int) -> str:
    return f"INSERT INTO prediction_log ({', '.join(_COPY_COLUMNS)}) VALUES {', '.join([_SQLITE_ROW] * rows)}"


def _sqlite_insert_many(conn, params: list[tuple]) -> None:
    """Up to 1000 rows per INSERT statement rather than one statement per row (``executemany``), in the
    caller's transaction.

    Why: Python's sqlite3 releases the GIL around every statement step, and getting it back waits for
    whichever thread holds it to give it up (up to the 5 ms switch interval). In a serving process whose
    prediction thread keeps the GIL busy, one step per row made the log writer insert a few thousand rows
    a second (the log fell behind and spilled); a step per thousand rows takes it back to tens of thousands.
    The statements go through SQLAlchemy, so errors come out as its classes, as the log writer expects.
    """
    limit = conn.connection.dbapi_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(_COPY_COLUMNS)
    per = max(1, min(_SQLITE_ROWS_PER_STATEMENT, limit))
    for start in range(0, len(params), per):
        chunk = params[start:start + per]
        conn.exec_driver_sql(_sqlite_insert(len(chunk)), tuple(itertools.chain.from_iterable(chunk)))


def _encoded(rows: Sequence[Mapping], stamp: Callable[[dt.datetime], str],
             flags_as_int: bool = False) -> Iterator[tuple]:
    """Each row's values in ``_COPY_COLUMNS`` order with the JSON columns as text, the timestamp as
    ``stamp`` writes it (naive ones refused, as UTCDateTime does) and, with ``flags_as_int``, safe_to_send
    as 0/1 (SQLite's booleans). Both fast inserts share it. Rows of a batch share a few timestamps and
    class labels: each one's text is made once per call, labels keyed by type as well as value (1 and True
    are equal keys, not equal JSON)."""
    stamps: dict[dt.datetime, str] = {}
    predictions: dict[tuple, str] = {}
    for row in rows:
        ts = row["ts"]
        text = stamps.get(ts)
        if text is None:
            if ts.tzinfo is None:
                raise ValueError(f"naive datetime {ts!r}: pass timezone-aware UTC timestamps")
            text = stamps[ts] = stamp(ts)
        prediction = row.get("prediction")
        if prediction.__class__ in _PLAIN_JSON:  # labels; a float's text is made each time (0.0 == -0.0)
            key = (prediction.__class__, prediction)
            prediction_json = predictions.get(key) or predictions.setdefault(key, json_text(prediction))
        else:
            prediction_json = json_text(prediction)
        flag = row.get("safe_to_send")
        if flags_as_int and flag is not None:
            flag = int(bool(flag))
        yield (row["model_name"], row["request_id"], text, json_text(row["features"]), prediction_json,
               row.get("score"), row.get("model_version"), flag, row.get("latency_ms"))


def _sqlite_stamp(ts: dt.datetime) -> str:
    return ts.astimezone(dt.timezone.utc).strftime(_SQLITE_TS)


def _sqlite_params(rows: Sequence[Mapping]) -> list[tuple]:
    """The rows as the SQLite driver's parameters, stored exactly as SQLAlchemy's types store them (JSON
    text, naive-UTC timestamp text, 0/1 booleans): what the ORM-level insert spent per row in type
    processing was a third of a request's cost in the serving log writer."""
    return list(_encoded(rows, _sqlite_stamp, flags_as_int=True))


class PredictionLog:
    def __init__(self, engine: Engine):
        self.engine = engine

    # Writing -------------------------------------------------------------------------------------------
    def log_predictions(
        self,
        model_name: str,
        frame: pd.DataFrame,
        feature_names: Sequence[str],
        *,
        prediction: Sequence | None = None,
        score: Sequence[float] | None = None,
        model_version: int | None = None,
        latency_ms: Sequence[float] | float | None = None,
    ) -> int:
        """Append served predictions; ``frame`` needs request_id, timestamp, the features, safe_to_send.

        ``latency_ms``: the model time of the request each row came in (one value for all rows, or one
        per row); the post-deploy watch compares its p99 before and after a promotion.
        """
        missing = [c for c in [REQUEST_ID, TIMESTAMP, *feature_names] if c not in frame.columns]
        if missing:
            raise DataError(f"cannot log predictions for {model_name}: missing columns {missing}")
        if frame.empty:
            return 0
        safe = frame["safe_to_send"].tolist() if "safe_to_send" in frame.columns else None
        rows = prediction_rows(
            model_name, frame[REQUEST_ID].tolist(), _records(frame, feature_names), ts=_utc(frame[TIMESTAMP]),
            prediction=prediction, score=score, model_version=model_version, latency_ms=latency_ms, safe_to_send=safe,
        )
        return self.insert_rows(rows)

    def insert_rows(self, rows: Sequence[Mapping]) -> int:
        """Insert rows made by :func:`prediction_rows` in one transaction: all of them or none."""
        if not rows:
            return 0
        if self.engine.dialect.name == "postgresql" and self.engine.dialect.driver == "psycopg2":
            self._copy_rows(rows)
        elif self.engine.dialect.name == "sqlite":
            params = _sqlite_params(rows)
            with self.engine.begin() as conn:
                _sqlite_insert_many(conn, params)
        else:
            with self.engine.begin() as conn:
                conn.execute(prediction_log.insert(), list(rows))
        return len(rows)

    def _copy_rows(self, rows: Sequence[Mapping]) -> None:
        """PostgreSQL: ``COPY ... FROM STDIN``, a few times faster than a multi-row INSERT (what the serving
        log writer can catch up after an outage is bound by it). Errors come out as SQLAlchemy's, like the
        INSERT's (IntegrityError, DataError, OperationalError...), so callers classify them the same way."""
        data, size = _copy_csv(rows)
        dialect = self.engine.dialect
        with self.engine.begin() as conn:
            cursor = None
            try:
                cursor = conn.connection.cursor()
                # One read of the whole text (bounded): psycopg2 takes the GIL back for every read, 8 KB by default.
                cursor.copy_expert(_COPY_SQL, data, size=min(max(size, 8192), _COPY_READ_MAX))
            except dialect.loaded_dbapi.Error as error:
                lost = dialect.is_disconnect(error, conn.connection.dbapi_connection, cursor)
                if lost:
                    conn.invalidate()
                raise DBAPIError.instance(_COPY_SQL, None, error, dialect.loaded_dbapi.Error, dialect=dialect,
                                          connection_invalidated=lost) from None
            finally:
                if cursor is not None:
                    cursor.close()

    def logged_requests(self, model_name: str, request_ids: Sequence[str]) -> dict[str, tuple[dt.datetime, int | None]]:
        """Which of ``request_ids`` the log already holds for ``model_name``: request id -> (served at,
        model version). Tells a row written before (a replay after an unanswered commit) from a request id
        that another request reused."""
        found: dict[str, tuple[dt.datetime, int | None]] = {}
        ids = list(dict.fromkeys(str(r) for r in request_ids))
        p = prediction_log
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                query = select(p.c.request_id, p.c.ts, p.c.model_version).where(
                    p.c.model_name == model_name, p.c.request_id.in_(ids[start:start + 500]))
                found.update({row.request_id: (row.ts, row.model_version) for row in conn.execute(query)})
        return found

    def log_shadow(self, model_name: str, model_version: int, request_ids: Sequence, prediction: Sequence,
                   score: Sequence[float] | None = None) -> int:
        """What the candidate in shadow predicted for requests production served (never shown to users)."""
        now = dt.datetime.now(dt.timezone.utc)
        rows = [
            {"model_name": model_name, "model_version": model_version, "request_id": str(r), "ts": now,
             "prediction": _json_value(prediction[i]), "score": None if score is None else _json_value(float(score[i]))}
            for i, r in enumerate(request_ids)
        ]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(shadow_predictions.insert(), rows)
        return len(rows)

    def log_labels(self, model_name: str, request_ids: Sequence, labels: Sequence, labeled_at=None) -> int:
        """Record true outcomes for earlier predictions (one label per request)."""
        if len(request_ids) != len(labels):
            raise DataError("log_labels: request_ids and labels differ in length")
        if len(labels) == 0:
            return 0
        stamps = _utc(labeled_at) if labeled_at is not None else [dt.datetime.now(dt.timezone.utc)] * len(labels)
        rows = [
            {"model_name": model_name, "request_id": str(r), "label": _json_value(y), "labeled_at": t}
            for r, y, t in zip(request_ids, labels, stamps)
        ]
        with self.engine.begin() as conn:
            conn.execute(label_feedback.insert(), rows)
        return len(rows)

    def record_labels(self, model_name: str, request_ids: Sequence, labels: Sequence,
                      labeled_at: dt.datetime | None = None) -> list[tuple[str, object]]:
        """Record labels that arrive over the API, idempotently; one ``(outcome, stored label)`` per item:

        * ``recorded``: stored now;
        * ``unchanged``: the request already had this label (a client's retry costs nothing);
        * ``conflict``: the request already has a different label (returned; it is never overwritten:
          training data does not change under a dataset's recorded hash);
        * ``unknown_request``: no prediction with this request id in the log (yet: served rows reach the
          log within seconds), so nothing to join it to.

        Why not ``log_labels``: that one trusts its caller (the simulator, SQL loads); an HTTP client
        retries, sends duplicates and mistakes, and must hear back about each item. Concurrent calls
        labeling the same request are serialized by the table's unique key: the loser re-reads and reports
        ``unchanged`` or ``conflict``.
        """
        ids = [str(r) for r in request_ids]
        values = [_json_value(y) for y in labels]
        if len(ids) != len(values):
            raise DataError("record_labels: request_ids and labels differ in length")
        stamp = labeled_at or dt.datetime.now(dt.timezone.utc)
        unique = list(dict.fromkeys(ids))
        p, lab = prediction_log, label_feedback
        for attempt in range(3):
            served: set[str] = set()
            stored: dict[str, object] = {}
            with self.engine.connect() as conn:
                for start in range(0, len(unique), 500):
                    chunk = unique[start:start + 500]
                    served.update(conn.execute(select(p.c.request_id).where(
                        p.c.model_name == model_name, p.c.request_id.in_(chunk))).scalars())
                    stored.update((row.request_id, row.label) for row in conn.execute(select(
                        lab.c.request_id, lab.c.label).where(lab.c.model_name == model_name, lab.c.request_id.in_(chunk))))
            outcomes: list[tuple[str, object]] = []
            new_rows: list[dict] = []
            for request_id, value in zip(ids, values):
                if request_id in stored:
                    same = stored[request_id] == value
                    outcomes.append(("unchanged" if same else "conflict", stored[request_id]))
                elif request_id not in served:
                    outcomes.append(("unknown_request", None))
                else:
                    stored[request_id] = value  # a second item for the same id is judged against this one
                    outcomes.append(("recorded", value))
                    new_rows.append({"model_name": model_name, "request_id": request_id, "label": value,
                                     "labeled_at": stamp})
            if not new_rows:
                return outcomes
            try:
                with self.engine.begin() as conn:
                    conn.execute(label_feedback.insert(), new_rows)
                return outcomes
            except IntegrityError:  # another call labeled one of these meanwhile: judge again against it
                if attempt == 2:
                    raise
        return outcomes

    # Reading -------------------------------------------------------------------------------------------
    def _frame(self, rows, feature_names: Sequence[str], extra: Sequence[str]) -> pd.DataFrame:
        if not rows:
            return pd.DataFrame(columns=[*feature_names, *extra])
        features = pd.DataFrame.from_records([r.features for r in rows])
        missing = [f for f in feature_names if f not in features.columns]
        if missing:
            raise DataError(
                f"the prediction log has no values for features {missing}: the serving side stopped sending "
                "them or the model config names the wrong columns; fix the config's features or the logging"
            )
        frame = features[list(feature_names)].copy()
        for name in extra:
            frame[name] = [getattr(r, name) for r in rows]
        if TIMESTAMP in frame.columns:
            frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        return frame

    def labeled_rows(
        self,
        model_name: str,
        feature_names: Sequence[str],
        target: str,
        *,
        since: dt.datetime | None = None,
        last_rows: int | None = None,
        after_label_id: int | None = None,
        newest_labels: int | None = None,
    ) -> pd.DataFrame:
        """Predictions joined with their labels: features, target, timestamp, request_id, safe_to_send.

        ``after_label_id``: only labels that arrived after that watermark; ``newest_labels``: at most that
        many, the newest by arrival."""
        p, lab = prediction_log, label_feedback
        query = (
            select(
                p.c.features,
                p.c.ts.label(TIMESTAMP),
                p.c.request_id,
                p.c.safe_to_send,
                p.c.prediction,
                lab.c.label.label(target),
                lab.c.id.label("label_id"),
            )
            .join(lab, and_(lab.c.model_name == p.c.model_name, lab.c.request_id == p.c.request_id))
            .where(p.c.model_name == model_name)
        )
        if since is not None:
            query = query.where(p.c.ts >= since)
        if after_label_id is not None:
            query = query.where(lab.c.id > after_label_id)
        if newest_labels is not None:
            query = query.order_by(lab.c.id.desc()).limit(newest_labels)
        elif last_rows is not None:
            query = query.order_by(p.c.id.desc()).limit(last_rows)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        frame = self._frame(rows, feature_names, [TIMESTAMP, REQUEST_ID, "safe_to_send", "prediction", target, "label_id"])
        return frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)

    def recent_window(
        self, model_name: str, feature_names: Sequence[str], *, rows: int, hours: float | None = None
    ) -> pd.DataFrame:
        """The most recent served predictions (features, prediction, score, timestamp)."""
        p = prediction_log
        query = (
            select(p.c.features, p.c.ts.label(TIMESTAMP), p.c.request_id, p.c.prediction, p.c.score, p.c.model_version)
            .where(p.c.model_name == model_name)
            .order_by(p.c.id.desc())
            .limit(rows)
        )
        if hours is not None:
            query = query.where(p.c.ts >= dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours))
        with self.engine.connect() as conn:
            result = conn.execute(query).all()
        frame = self._frame(result, feature_names, [TIMESTAMP, REQUEST_ID, "prediction", "score", "model_version"])
        return frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)

    def served_outcomes(self, model_name: str, model_version: int, *, last_rows: int,
                        after_id: int | None = None) -> pd.DataFrame:
        """What one model version predicted and what the truth turned out to be (newest ``last_rows``
        labeled predictions, logged after row ``after_id`` if given, oldest first): timestamp, prediction,
        score, label. No features: cheap."""
        p, lab = prediction_log, label_feedback
        query = (
            select(p.c.ts.label(TIMESTAMP), p.c.prediction, p.c.score, lab.c.label)
            .join(lab, and_(lab.c.model_name == p.c.model_name, lab.c.request_id == p.c.request_id))
            .where(p.c.model_name == model_name, p.c.model_version == model_version,
                   p.c.id > after_id if after_id is not None else true())
            .order_by(p.c.id.desc())
            .limit(last_rows)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        frame = pd.DataFrame(rows, columns=[TIMESTAMP, "prediction", "score", "label"])
        if not frame.empty:
            frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        return frame.iloc[::-1].reset_index(drop=True)

    def served_latencies(self, model_name: str, model_version: int, *, last_rows: int,
                         after_id: int | None = None) -> np.ndarray:
        """Request latencies (ms) among the newest ``last_rows`` predictions one version served (logged
        after row ``after_id`` if given), labeled or not: one value per request (the rows of a request share its
        latency, and two requests timed to the same float are not a concern), so a 1,000-row batch counts
        once, not 1,000 times."""
        p = prediction_log
        newest = (
            select(p.c.latency_ms)
            .where(p.c.model_name == model_name, p.c.model_version == model_version, p.c.latency_ms.is_not(None),
                   p.c.id > after_id if after_id is not None else true())
            .order_by(p.c.id.desc())
            .limit(last_rows)
            .subquery()
        )
        with self.engine.connect() as conn:
            return np.asarray(conn.execute(select(newest.c.latency_ms).distinct()).scalars().all(), dtype=float)

    def _shadow_labeled(self, model_name: str, model_version: int):
        s, p, lab = shadow_predictions, prediction_log, label_feedback
        return (
            select(s.c.prediction.label("shadow_prediction"), p.c.prediction, lab.c.label)
            .join(p, and_(p.c.model_name == s.c.model_name, p.c.request_id == s.c.request_id))
            .join(lab, and_(lab.c.model_name == s.c.model_name, lab.c.request_id == s.c.request_id))
            .where(s.c.model_name == model_name, s.c.model_version == model_version)
        )

    def shadow_outcomes(self, model_name: str, model_version: int, *, last_rows: int) -> pd.DataFrame:
        """Requests the shadow candidate scored that have a label: its prediction, production's
        prediction for the same request, and the truth (newest ``last_rows``)."""
        query = self._shadow_labeled(model_name, model_version).order_by(shadow_predictions.c.id.desc()).limit(last_rows)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame(rows, columns=["shadow_prediction", "prediction", "label"]).iloc[::-1].reset_index(drop=True)

    def record_request_counts(self, process: str, counts: Mapping[tuple[str, int, dt.datetime], tuple[int, int]]) -> None:
        """Store one server process's cumulative (answered, failed) request counts per (model, version,
        promotion time). Totals, not increments: writing them again after a failed attempt never counts twice."""
        now = dt.datetime.now(dt.timezone.utc)
        r = serving_requests
        with self.engine.begin() as conn:
            for (model_name, version, promoted_at), (answered, failed) in counts.items():
                mine = and_(r.c.process == process, r.c.model_name == model_name, r.c.model_version == version,
                            r.c.promoted_at == promoted_at)
                if conn.execute(update(r).where(mine).values(answered=answered, failed=failed, updated_at=now)).rowcount == 0:
                    conn.execute(r.insert().values(process=process, model_name=model_name, model_version=version,
                                                   promoted_at=promoted_at, answered=answered, failed=failed,
                                                   updated_at=now))

    def request_counts(self, model_name: str, model_version: int, promoted_at: dt.datetime) -> tuple[int, int]:
        """(answered, failed) prediction requests of one version since its promotion at ``promoted_at``,
        summed over every server process."""
        r = serving_requests
        with self.engine.connect() as conn:
            row = conn.execute(select(func.coalesce(func.sum(r.c.answered), 0), func.coalesce(func.sum(r.c.failed), 0))
                               .where(r.c.model_name == model_name, r.c.model_version == model_version,
                                      r.c.promoted_at == promoted_at)).one()
        return int(row[0]), int(row[1])

    # Counts (cheap enough for sensors) -------------------------------------------------------------------
    def count_predictions(self, model_name: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(prediction_log).where(prediction_log.c.model_name == model_name)
            ).scalar_one()

    def newest_id(self, model_name: str) -> int:
        """The id of the model's newest logged prediction (0 before any): a canary step's starting line."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(prediction_log.c.id), 0))
                                .where(prediction_log.c.model_name == model_name)).scalar_one()

    def count_served_labeled(self, model_name: str, model_version: int, after_id: int, cap: int) -> int:
        """Labeled predictions one version served, logged after row ``after_id``, counted up to ``cap``
        (the canary sensor asks "enough for this step?")."""
        p, lab = prediction_log, label_feedback
        inner = (select(p.c.id).join(lab, and_(lab.c.model_name == p.c.model_name, lab.c.request_id == p.c.request_id))
                 .where(p.c.model_name == model_name, p.c.model_version == model_version, p.c.id > after_id)
                 .limit(cap).subquery())
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(inner)).scalar_one()

    def count_shadow_labeled(self, model_name: str, model_version: int, cap: int) -> int:
        """Labeled requests the shadow candidate scored, counted up to ``cap`` (a sensor asks "enough?")."""
        inner = self._shadow_labeled(model_name, model_version).limit(cap).subquery()
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(inner)).scalar_one()

    def count_labels_after(self, model_name: str, label_id: int | None, cap: int | None = None) -> int:
        """Labels received after ``label_feedback.id`` (the newest one a dataset included).

        With ``cap`` the count stops there (``min(count, cap)``): a sensor asking "at least 10,000?" reads
        at most 10,000 index entries, however many millions of labels the table holds.
        """
        rows = select(label_feedback.c.id).where(label_feedback.c.model_name == model_name)
        if label_id is not None:
            rows = rows.where(label_feedback.c.id > label_id)
        if cap is not None:
            rows = rows.limit(cap)
        query = select(func.count()).select_from(rows.subquery())
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()
