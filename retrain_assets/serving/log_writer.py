"""The durable prediction log: every row ``/predict/batch`` serves reaches ``prediction_log``, or a file on
local disk that says why not, whatever the monitoring database does meanwhile.

Why: monitoring and retraining learn from what was served. A row that disappears without a trace (a
database restart, one bad request id batched with innocent requests, a shutdown that gives up) biases every
later drift report and training set, and nobody can tell. So:

* The request path only hands rows over; memory is bounded (beyond ``log_queue_rows`` a request's rows
  go straight to the spill folder). One writer thread inserts what accumulated, up to ``log_batch_rows``
  rows per transaction, so requests never wait for each other's commits.
* A write that fails because the database does not answer is retried with backoff; if it still fails,
  its rows go to a spill file (JSON lines, fsync'ed, readable only by the server's user) and the writer
  probes the database with backoff. When a probe succeeds the spill files are replayed, oldest first,
  between live batches. A writer that starts replays what an earlier process left; a file another live
  process is writing or replaying is locked and skipped.
* A write the database refuses because of the rows themselves (a reused request id, a value too long) is
  split until each offending row is alone: every other row is written, each offending row is kept in a
  quarantine file with its reason. A row the log already holds with the same timestamp and model version
  (the replay of a commit whose answer was lost) counts as already logged, not as a conflict.
* Logs carry counts, reasons, request ids and paths; never feature values.
* Shutdown writes for at most ``shutdown_seconds``, then spills the rest and says how many rows went to
  which file.
"""

import datetime as dt
import fcntl
import itertools
import json
import logging
import math
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from retrain_assets.errors import StoreError
from retrain_assets.serving.predict import shadow_score
from retrain_assets.config.serving import ServingSettings
from retrain_assets.store import MonitoringStore, PredictionLog
from retrain_assets.store.database import redact
from retrain_assets.store.schema import json_text

logger = logging.getLogger("retrain_assets.serving.log")

SPILL_PREFIX = "spill-"
QUARANTINE_PREFIX = "quarantine-"
COUNTERS = ("accepted", "written", "replayed", "already_logged", "retried", "spilled", "quarantined", "refused",
            "lost", "shadow_skipped")
_OUTAGE_ERRORS = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError, ProgrammingError)


# Rows and their features ------------------------------------------------------------------------------
@dataclass
class LoggedRequest:
    """The rows one request served (made by ``store.predictions.prediction_rows``), on their way to the log;
    ``shadow`` is the candidate in shadow that scores them once they are written (memory only)."""

    model_key: str
    rows: list[dict]
    shadow: Any = None


def features_frame(model, features: list[dict]) -> pd.DataFrame:
    """The model's input frame from validated feature rows: numeric columns as float (None -> NaN),
    categorical ones as given (str or None), in object columns. Serving and shadow scoring build it the
    same way.

    Why object dtypes, for the values and for the column labels: pandas would infer its Arrow-backed string
    dtype for both. The pipeline's first categorical step converts such values straight back to Python
    strings (about an eighth of a model call on 100-500 rows), and every column selection of the pipeline's
    column transformer then goes through Arrow's ``take`` on the labels (another 5-10 %). The predictions
    are the same. Built column by column from Python lists (no per-value Python call), about a quarter
    cheaper than ``DataFrame.from_records`` and a cast."""
    numeric = set(model.numeric_features)
    columns = {}
    for name in model.feature_names:
        values = [row[name] for row in features]
        if name in numeric:
            columns[name] = np.array(values, dtype=float)  # None -> NaN
        else:
            column = np.empty(len(values), dtype=object)
            column[:] = values
            columns[name] = pd.Series(column, dtype=object, copy=False)
    frame = pd.DataFrame(columns, copy=False)
    frame.columns = pd.Index(model.feature_names, dtype=object)
    return frame


class PredictionLogFull(RuntimeError):
    """The writer can hold no more rows: the queue is full and the spill folder cannot be written."""


class DatabaseUnavailable(Exception):
    """The database did not answer; ``unsettled`` are the rows not yet written, quarantined or found logged."""

    def __init__(self, error: BaseException, unsettled: list[dict]):
        super().__init__(str(error))
        self.error, self.unsettled = error, unsettled


def is_outage(error: BaseException) -> bool:
    """True when an error says the database cannot take rows now (unreachable, restarting, locked, its
    schema not ready), as opposed to an error about the rows themselves: the first kind is retried and
    spilled, the second isolates the offending rows."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, _OUTAGE_ERRORS)


def _first_line(error: BaseException, password: str | None = None) -> str:
    """The driver's message, first line only: later lines (PostgreSQL's DETAIL/CONTEXT) and SQLAlchemy's
    text (the statement's parameters) would carry row values into logs."""
    orig = getattr(error, "orig", None) or error
    text = (str(orig).strip().splitlines() or [""])[0].strip() or type(orig).__name__
    if password:
        text = text.replace(password, "***")
    return redact(text)[:300]


def outage_reason(error: BaseException, url: URL) -> str:
    """One line naming the database (password hidden) and why it did not answer."""
    return (f"the monitoring database at {redact(url.render_as_string(hide_password=False))} does not answer "
            f"({_first_line(error, url.password)})")


def row_reason(error: BaseException) -> str:
    """Why the database refused a row, without its values."""
    orig = getattr(error, "orig", None) or error
    return f"{type(orig).__name__}: {_first_line(error)}"


def _ids(rows: list[dict], limit: int = 5) -> str:
    shown = [str(r.get("request_id"))[:64] for r in rows[:limit]]
    return ", ".join(shown) + (f" (+{len(rows) - limit} more)" if len(rows) > limit else "")


# The spill folder ---------------------------------------------------------------------------------------
def _encode(row: dict) -> bytes:
    return (json.dumps({**row, "ts": row["ts"].isoformat()}, separators=(",", ":")) + "\n").encode()


def _decode(line: bytes) -> dict:
    row = json.loads(line)
    if not isinstance(row, dict) or not {"model_name", "request_id", "ts", "features"} <= row.keys():
        raise ValueError("not a prediction_log row")
    row["ts"] = dt.datetime.fromisoformat(row["ts"])
    if row["ts"].tzinfo is None:
        raise ValueError("timestamp without time zone")
    return row


def _write_all(fd: int, data: bytes) -> None:
    """Append ``data`` whole or not at all (a failed write is cut back, so no torn line stays behind)."""
    start = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        try:
            os.ftruncate(fd, start)
        except OSError:
            pass
        raise


class SpillReader:
    """One spill file claimed for replay; the exclusive lock keeps every other process off it."""

    def __init__(self, path: Path, handle):
        self.path, self.handle, self.at_end = path, handle, False

    def read(self, max_rows: int) -> tuple[list[dict], list[tuple[str, str]]]:
        """Up to ``max_rows`` rows, and the lines that are not rows (raw text, why) to quarantine."""
        rows, bad = [], []
        while len(rows) + len(bad) < max_rows:
            line = self.handle.readline()
            if not line:
                self.at_end = True
                break
            if not line.strip():
                continue
            try:
                rows.append(_decode(line))
            except (ValueError, TypeError) as error:
                reason = "torn line (the process stopped while writing it)" if not line.endswith(b"\n") else \
                    f"unreadable line ({type(error).__name__})"
                bad.append((line.decode(errors="replace"), f"{reason} in spill file {self.path.name}"))
        return rows, bad

    def finish(self) -> None:
        """Everything in the file is settled: delete it, then let go of the lock."""
        self.path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        self.handle.close()


class SpillFolder:
    """Rows kept on local disk: ``spill-*.jsonl`` (to replay into prediction_log) and ``quarantine-*.jsonl``
    (rows the database refused, each with its reason; never replayed by itself)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._current: tuple[Path, int] | None = None  # the file this process appends to (locked)
        self._quarantine: tuple[Path, int] | None = None
        self._tag = f"{socket.gethostname()}-{os.getpid()}"
        self._sequence = itertools.count()

    def _open(self, prefix: str) -> tuple[Path, int]:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        path = self.path / f"{prefix}{stamp}-{self._tag}-{next(self._sequence)}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # rows hold feature values
        fcntl.flock(fd, fcntl.LOCK_EX)
        return path, fd

    def append(self, rows: list[dict]) -> Path:
        """Append rows to this process's current spill file and fsync; returns its path."""
        data = b"".join(_encode(row) for row in rows)
        with self._lock:
            if self._current is None:
                self._current = self._open(SPILL_PREFIX)
            path, fd = self._current
            _write_all(fd, data)
            return path

    def quarantine(self, entries: list[dict]) -> Path:
        """Keep refused rows (each ``{"reason", "row"}`` or ``{"reason", "line"}``) in the quarantine file."""
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        data = b"".join(
            (json.dumps({"quarantined_at": now, **e, **({"row": {**e["row"], "ts": e["row"]["ts"].isoformat()}}
                                                        if "row" in e else {})}, separators=(",", ":")) + "\n").encode()
            for e in entries)
        with self._lock:
            if self._quarantine is None:
                self._quarantine = self._open(QUARANTINE_PREFIX)
            path, fd = self._quarantine
            _write_all(fd, data)
            return path

    def rotate(self) -> Path | None:
        """Close the current spill file so it can be replayed; the next append starts a new one."""
        with self._lock:
            if self._current is None:
                return None
            path, fd = self._current
            os.close(fd)  # releases the lock
            self._current = None
            return path

    def files(self) -> list[Path]:
        """Spill files, oldest first (the names start with their creation time)."""
        current = self._current[0] if self._current else None
        return sorted(p for p in self.path.glob(f"{SPILL_PREFIX}*.jsonl") if p != current)

    def claim(self, path: Path) -> SpillReader | None:
        """Lock ``path`` for replay; None when another live process holds it or it is already gone."""
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        if os.fstat(handle.fileno()).st_nlink == 0:  # replayed and deleted by another process meanwhile
            handle.close()
            return None
        return SpillReader(path, handle)

    def close(self) -> None:
        with self._lock:
            for kept in (self._current, self._quarantine):
                if kept is not None:
                    os.close(kept[1])
            self._current = self._quarantine = None


def count_rows(handle) -> int:
    """Lines left in an open spill file from its current position (the position is kept)."""
    start = handle.tell()
    count, tail = 0, b""
    for block in iter(lambda: handle.read(1 << 20), b""):
        count += block.count(b"\n")
        tail = block[-1:]
    handle.seek(start)
    return count + (1 if tail not in (b"", b"\n") else 0)


def spill_folder(serving: ServingSettings, database_url: URL, artifact_root: str | None) -> Path:
    """Where rows wait on local disk: ``serving.spill_dir``, else next to the SQLite database, else next to
    a local artifact folder, else ./.retrain/prediction-spill."""
    if serving.spill_dir:
        return Path(serving.spill_dir).expanduser().resolve()
    if database_url.get_backend_name() == "sqlite" and database_url.database not in (None, "", ":memory:"):
        return Path(database_url.database).expanduser().resolve().parent / "prediction-spill"
    if artifact_root and "://" not in artifact_root:
        return Path(artifact_root).expanduser().resolve().parent / "prediction-spill"
    return Path.cwd() / ".retrain" / "prediction-spill"


def writer_engine(engine: Engine, timeout: float) -> tuple[Engine, bool]:
    """The log writer's own small connection pool, with a bounded wait for a connection (PostgreSQL) or a
    lock (SQLite), so an outage is noticed in seconds instead of a TCP timeout. Returns (engine, owned).

    No pre-ping on SQLite: a file has no server connection to go stale (its outage is a lock, which the
    insert itself meets), and each ping is one more statement, so one more time the GIL is given away and
    waited for beside a busy prediction thread (see ``_sqlite_insert_many``)."""
    url = engine.url
    if engine.dialect.name == "postgresql":
        connect = {"connect_timeout": max(1, math.ceil(timeout)), "keepalives": 1, "keepalives_idle": 10,
                   "keepalives_interval": 5, "keepalives_count": 3}
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2, pool_timeout=timeout,
                             connect_args=connect, json_serializer=json_text), True
    if engine.dialect.name == "sqlite" and url.database not in (None, "", ":memory:"):
        return create_engine(url, connect_args={"timeout": timeout}, json_serializer=json_text), True
    return engine, False


# The writer ---------------------------------------------------------------------------------------------
class PredictionLogWriter:
    """Writes served rows to ``prediction_log`` from one background thread; see the module docstring.

    ``stats()`` tells where every row is: ``accepted`` (handed over by requests) = ``written`` (inserted by
    this writer, ``replayed`` of them from spill files) + ``already_logged`` + ``quarantined`` + ``pending``
    (in memory) + rows still in spill files, counting from zero at start; ``on_disk`` is the rows in spill
    files waiting for replay (including what earlier processes left), ``spilled`` the rows this writer
    put there, ``retried`` the write attempts repeated after the database did not answer, ``refused`` the
    rows of requests answered 503 because nothing could keep them, ``lost`` rows that could be kept neither
    in the database nor on disk at shutdown (logged with their count).
    """

    def __init__(self, store: MonitoringStore, settings, serving: ServingSettings | None = None,
                 spill_dir: str | os.PathLike | None = None):
        self.store = store
        self.serving = serving or settings.serving
        self.models = {m.log_key: m for m in settings.models}
        self.url = store.engine.url
        self.engine, self._own_engine = writer_engine(store.engine, self.serving.database_timeout_seconds)
        self.log = PredictionLog(self.engine)
        folder = Path(spill_dir) if spill_dir else spill_folder(self.serving, self.url, settings.storage.artifact_root)
        try:
            self.spill = SpillFolder(folder)
        except OSError as error:
            raise StoreError(f"cannot create the prediction log's spill folder {folder} ({error.strerror or error}): "
                             "set serving.spill_dir to a writable folder on local disk") from None
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._queue: deque[LoggedRequest] = deque()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._queued = self._in_flight = self._on_disk = 0
        self._file_rows: dict[Path, int] = {}  # rows waiting in each spill file
        self._down: str | None = None
        self._down_since = 0.0
        self._probe_delay = self.serving.retry_initial_seconds
        self._next_probe = self._next_scan = 0.0
        self._reader: SpillReader | None = None
        self._carry: list[dict] = []  # rows of the claimed file read but not settled when the database left
        self._handover = threading.Lock()
        self._inflight_rows: list[dict] | None = None
        self._stopping = self._abandoned = self._closed = False
        self._deadline = math.inf
        self._warned: dict[str, float] = {}
        self.thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self.thread.start()

    # The request side ----------------------------------------------------------------------------------
    def put(self, request: LoggedRequest) -> None:
        """Hand a request's rows over; never waits for the database. Raises PredictionLogFull when the
        rows can be kept neither in memory nor on disk (the API then answers 503: nothing is served that
        is not kept)."""
        n = len(request.rows)
        if n == 0:
            return
        with self._cond:
            self._counts["accepted"] += n
            if not self._stopping and self._queued + self._in_flight + n <= self.serving.log_queue_rows:
                self._queue.append(request)
                self._queued += n
                self._cond.notify()
                return
        try:
            path = self.spill.append(request.rows)
        except OSError as error:
            with self._cond:
                self._counts["accepted"] -= n
                self._counts["refused"] += n
            raise PredictionLogFull(
                f"the prediction log holds {self.serving.log_queue_rows} rows in memory and cannot write its spill "
                f"folder {self.spill.path} ({error.strerror or error}): free disk space there or fix its permissions"
            ) from None
        with self._cond:
            self._spilled(path, n)
            if request.shadow is not None:
                self._counts["shadow_skipped"] += n
        self._warn_every("overflow", 60, "prediction log: %d rows waiting in memory (log_queue_rows); further rows go "
                         "to %s and are replayed when the writer catches up", self.serving.log_queue_rows, path)

    def stats(self) -> dict:
        """Counters (rows, see the class docstring), the database state and the spill folder."""
        with self._cond:
            return {**self._counts, "queued": self._queued, "in_flight": self._in_flight,
                    "pending": self._queued + self._in_flight, "on_disk": self._on_disk,
                    "database": "reachable" if self._down is None else f"unreachable: {self._down}",
                    "spill_dir": str(self.spill.path)}

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending in memory (written, quarantined or spilled); False on timeout."""
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queued + self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self) -> dict:
        """Write what is queued for at most ``shutdown_seconds``, keep the rest in the spill folder, and
        log how many rows went where. Idempotent; returns the final ``stats()``."""
        with self._cond:
            if self._closed:
                return self.stats()
            self._stopping = True
            self._deadline = time.monotonic() + self.serving.shutdown_seconds
            self._cond.notify_all()
        self._wake.set()
        self.thread.join(self.serving.shutdown_seconds + 1)
        if self.thread.is_alive():  # stuck in a database call: keep its rows and the queue on disk ourselves
            with self._handover:
                self._abandoned = True
                stuck, self._inflight_rows = self._inflight_rows or [], None
            with self._cond:
                left = [row for request in self._queue for row in request.rows]
                self._queue.clear()
                self._queued = self._in_flight = 0
            self._keep(stuck + left, at_shutdown=True)
        if self._reader is not None and not self.thread.is_alive():
            self._reader.release()
            self._reader = None
        with self._cond:
            self._closed = True
        self.spill.close()
        if self._own_engine:
            self.engine.dispose()
        final = self.stats()
        self._report(final)
        return final

    # The writer thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._rescan()
        except Exception as error:  # noqa: BLE001 - counting leftovers must not stop the writer
            logger.error("prediction log: cannot read the spill folder %s (%s at %s)", self.spill.path,
                         type(error).__name__, _where(error))
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                self._deliver(batch)
            if not self._stopping:
                try:
                    self._recover_or_replay()
                except Exception as error:  # noqa: BLE001 - the writer must outlive any surprise
                    logger.error("prediction log: replay step failed (%s at %s); retrying in 30 s",
                                 type(error).__name__, _where(error))
                    self._give_up_file()
                    self._next_scan = time.monotonic() + 30

    def _take(self) -> list[LoggedRequest] | None:
        """The next batch (up to log_batch_rows rows); [] after an idle wait; None once stopping and empty."""
        with self._cond:
            if not self._queue and not self._stopping:
                self._cond.wait(self._idle_wait())
            if not self._queue:
                return None if self._stopping else []
            batch, rows = [], 0
            while self._queue and (not batch or rows + len(self._queue[0].rows) <= self.serving.log_batch_rows):
                request = self._queue.popleft()
                batch.append(request)
                rows += len(request.rows)
            self._queued -= rows
            self._in_flight += rows
            return batch

    def _idle_wait(self) -> float:
        """How long the writer may sleep with nothing queued: until the next probe while the database is
        down, not at all while spilled rows wait for replay, else until the next look at the spill folder."""
        now = time.monotonic()
        if self._down is not None:
            return min(1.0, max(0.01, self._next_probe - now))
        if self._carry or self._reader is not None or now >= self._next_scan:
            return 0.0
        return min(1.0, self._next_scan - now)

    def _deliver(self, batch: list[LoggedRequest]) -> None:
        """Write a batch (retrying while the database does not answer) or keep it on disk."""
        rows = [row for request in batch for row in request.rows]
        with self._handover:
            if self._abandoned:
                return
            self._inflight_rows = rows
        unsettled = rows
        try:
            if self._down is None and time.monotonic() < self._deadline:
                unsettled = self._write_live(rows)
        except Exception as error:  # noqa: BLE001 - a surprise must not cost rows: keep them on disk
            logger.error("prediction log: writing %d rows failed unexpectedly (%s at %s); keeping them in %s",
                         len(rows), type(error).__name__, _where(error), self.spill.path)
        with self._handover:
            if self._abandoned:
                return
            self._inflight_rows = None
            if unsettled:
                self._keep(unsettled)
            with self._cond:
                self._in_flight -= len(rows)
                self._cond.notify_all()
        if unsettled:
            with self._cond:
                self._counts["shadow_skipped"] += sum(len(r.rows) for r in batch if r.shadow is not None)
            return
        try:
            self._score_shadows(batch)
        except Exception as error:  # noqa: BLE001 - the shadow is an experiment: never a reason to stop logging
            logger.error("prediction log: shadow scoring failed (%s at %s)", type(error).__name__, _where(error))

    def _write_live(self, rows: list[dict]) -> list[dict]:
        """Settle ``rows``; returns those the database could not take after the retries (it is down)."""
        delay = self.serving.retry_initial_seconds
        for attempt in range(self.serving.retry_attempts + 1):
            try:
                self._settle(rows, replay=False)
                return []
            except DatabaseUnavailable as outage:
                rows, error = outage.unsettled, outage.error
            if attempt == self.serving.retry_attempts or self._stopping:
                break
            with self._cond:
                self._counts["retried"] += 1
            self._wake.wait(delay)
            delay = min(delay * 2, self.serving.retry_max_seconds)
        self._went_down(error)
        return rows

    def _settle(self, rows: list[dict], replay: bool) -> None:
        """Insert ``rows`` in one transaction; when the database refuses some of them, isolate those (first
        rows whose request id is already logged, then halves until each refused row is alone) and write the
        rest. Raises DatabaseUnavailable with the rows not yet settled when the database stops answering."""
        stack = [rows]
        checked = False  # looked up which rows are already logged (a replay may repeat a lost commit's rows)

        def unsettled(chunk):
            return chunk + [row for part in reversed(stack) for row in part]

        while stack:
            chunk = stack.pop()
            if not chunk:
                continue
            try:
                self.log.insert_rows(chunk)
            except Exception as error:  # noqa: BLE001 - classified below; nothing is dropped
                if is_outage(error):
                    raise DatabaseUnavailable(error, unsettled(chunk)) from None
                if not checked:
                    checked = True
                    rest = self._drop_logged(chunk, replay, unsettled)
                    if len(rest) < len(chunk):
                        stack.append(rest)
                        continue
                if len(chunk) == 1:
                    rest = self._drop_logged(chunk, replay, unsettled) if isinstance(error, IntegrityError) else chunk
                    if rest:
                        self._quarantine(rest, row_reason(error), replay)
                    continue
                middle = len(chunk) // 2
                stack += [chunk[middle:], chunk[:middle]]
            else:
                self._settled("written", chunk, replay)

    def _drop_logged(self, rows: list[dict], replay: bool, unsettled) -> list[dict]:
        """Rows whose request id the log does not hold yet. Of the others, a row identical in time and model
        version is already logged (a replay); a different one reused another request's id: quarantined."""
        by_model: dict[str, list[dict]] = {}
        for row in rows:
            by_model.setdefault(row["model_name"], []).append(row)
        fresh, same, reused = [], [], []
        try:
            for model_name, group in by_model.items():
                logged = self.log.logged_requests(model_name, [r["request_id"] for r in group])
                for row in group:
                    found = logged.get(str(row["request_id"]))
                    if found is None:
                        fresh.append(row)
                    elif found == (row["ts"], row["model_version"]):
                        same.append(row)
                    else:
                        reused.append(row)
        except Exception as error:  # noqa: BLE001
            if is_outage(error):
                raise DatabaseUnavailable(error, unsettled(rows)) from None
            return rows
        if same:
            self._settled("already_logged", same, replay)
        if reused:
            self._quarantine(reused, "request_id already in prediction_log for this model, logged by another request: "
                                     "request ids must be unique per model", replay)
        order = {id(row): i for i, row in enumerate(rows)}
        return sorted(fresh, key=lambda row: order[id(row)])

    def _settled(self, outcome: str, rows: list[dict], replay: bool) -> None:
        with self._cond:
            self._counts[outcome] += len(rows)
            if replay:
                self._counts["replayed"] += len(rows) if outcome == "written" else 0
                self._unspill(len(rows))

    def _quarantine(self, rows: list[dict], reason: str, replay: bool) -> None:
        path = self.spill.quarantine([{"reason": reason, "row": row} for row in rows])
        self._settled("quarantined", rows, replay)
        logger.error("prediction log: %d row(s) refused by the database and quarantined (%s); request ids: %s. They "
                     "are kept with their reason in %s: correct them and insert them by hand; the rest of their "
                     "batch was written", len(rows), reason, _ids(rows), path)

    def _keep(self, rows: list[dict], at_shutdown: bool = False) -> None:
        """Rows the database cannot take now go to the spill file; if even that fails they wait in memory
        (at shutdown there is no later: they are counted as lost and logged)."""
        try:
            path = self.spill.append(rows)
        except OSError as error:
            if at_shutdown:
                with self._cond:
                    self._counts["lost"] += len(rows)
                logger.critical("prediction log: %d rows LOST at shutdown: the database does not answer and the "
                                "spill folder %s cannot be written (%s)", len(rows), self.spill.path, error)
                return
            with self._cond:
                self._queue.appendleft(LoggedRequest("", rows))
                self._queued += len(rows)
            self._warn_every("spill", 60, "prediction log: cannot write the spill folder %s (%s): %d rows held in "
                             "memory; free disk space there or fix its permissions", self.spill.path, error, len(rows))
            self._wake.wait(1.0)
            return
        with self._cond:
            self._spilled(path, len(rows))

    def _spilled(self, path: Path, n: int) -> None:
        """Count rows that went to ``path`` (under the lock) and have the writer look for them soon."""
        self._next_scan = 0.0
        self._counts["spilled"] += n
        self._on_disk += n
        self._file_rows[path] = self._file_rows.get(path, 0) + n

    def _unspill(self, n: int) -> None:
        self._on_disk -= n
        if self._reader is not None:
            self._file_rows[self._reader.path] = self._file_rows.get(self._reader.path, 0) - n

    def _score_shadows(self, batch: list[LoggedRequest]) -> None:
        """The candidate in shadow scores what production served, once it is logged (off the request path)."""
        groups: dict[int, list[LoggedRequest]] = {}
        for request in batch:
            if request.shadow is not None and request.model_key in self.models:
                groups.setdefault(id(request.shadow), []).append(request)
        for requests in groups.values():
            model, slot = self.models[requests[0].model_key], requests[0].shadow
            rows = [row for request in requests for row in request.rows]
            frame = features_frame(model, [row["features"] for row in rows]).assign(
                request_id=[row["request_id"] for row in rows])
            shadow_score(self.store, model, slot.version, slot.pipeline, frame)

    # Outage, recovery and replay ---------------------------------------------------------------------------
    def _went_down(self, error: BaseException) -> None:
        reason = outage_reason(error, self.url)
        now = time.monotonic()
        if self._down is None:
            self._down_since = now
            self._probe_delay = self.serving.retry_initial_seconds
            logger.warning("prediction log: %s; serving continues and its rows go to %s until the database is back "
                           "(probing at most every %g s)", reason, self.spill.path, self.serving.retry_max_seconds)
        else:
            self._probe_delay = min(self._probe_delay * 2, self.serving.retry_max_seconds)
        with self._cond:
            self._down = reason
        self._next_probe = now + self._probe_delay

    def _came_back(self) -> None:
        with self._cond:
            self._down = None
            waiting = self._on_disk
        self._next_scan = 0.0
        logger.warning("prediction log: the monitoring database answers again after %.0f s; replaying %d spilled rows "
                       "from %s", time.monotonic() - self._down_since, waiting, self.spill.path)

    def _recover_or_replay(self) -> None:
        """While the database is down, probe it with backoff (replaying one spilled chunk is the probe);
        while it is up, replay one chunk of spilled rows between live batches."""
        now = time.monotonic()
        if self._down is not None:
            if now < self._next_probe:
                return
            if self._replay_step(probe=True):
                self._came_back()
            else:
                with self._cond:
                    self._counts["retried"] += 1
            return
        if self._carry or self._reader is not None or now >= self._next_scan:
            self._replay_step(probe=False)

    def _replay_step(self, probe: bool) -> bool:
        """Settle one chunk of spilled rows; False when the database did not answer."""
        rows = self._carry or self._next_chunk()
        if not rows:
            return self._ping() if probe else True
        try:
            self._settle(rows, replay=True)
        except DatabaseUnavailable as outage:
            self._carry = outage.unsettled
            self._went_down(outage.error)
            return False
        self._carry = []
        if self._reader is not None and self._reader.at_end:
            self._finish_file()
        return True

    def _next_chunk(self) -> list[dict]:
        """Up to log_batch_rows rows from the oldest claimable spill file (unreadable lines quarantined)."""
        while True:
            if self._reader is None:
                self._reader = self._claim_next()
                if self._reader is None:
                    return []
            rows, bad = self._reader.read(self.serving.log_batch_rows)
            if bad:
                path = self.spill.quarantine([{"reason": reason, "line": line} for line, reason in bad])
                with self._cond:
                    self._counts["quarantined"] += len(bad)
                    self._unspill(len(bad))
                logger.error("prediction log: %d unreadable line(s) in spill file %s moved to %s", len(bad),
                             self._reader.path, path)
            if rows:
                return rows
            if self._reader.at_end:
                self._finish_file()

    def _finish_file(self) -> None:
        reader, self._reader = self._reader, None
        reader.finish()
        with self._cond:
            left = self._file_rows.pop(reader.path, 0)
            if left:  # the file held other rows than counted (blank lines)
                self._on_disk -= left
        self._next_scan = 0.0  # on to the next file
        logger.info("prediction log: spill file %s replayed and removed", reader.path)

    def _give_up_file(self) -> None:
        """Let go of the claimed file after a surprise; it stays on disk whole and is counted afresh (and
        its rows written meanwhile found already logged) when it is claimed again."""
        reader, self._reader, self._carry = self._reader, None, []
        if reader is not None:
            reader.release()
            with self._cond:
                self._on_disk -= self._file_rows.pop(reader.path, 0)

    def _claim_next(self) -> SpillReader | None:
        """Claim the oldest spill file nobody else holds (our own current file is closed first)."""
        self.spill.rotate()
        for path in self.spill.files():
            reader = self.spill.claim(path)
            if reader is None:
                continue
            if path not in self._file_rows:  # left by an earlier process: count its rows now
                n = count_rows(reader.handle)
                with self._cond:
                    self._file_rows[path] = n
                    self._on_disk += n
            return reader
        self._next_scan = time.monotonic() + 30
        return None

    def _rescan(self) -> None:
        """At start: count the rows earlier processes left on disk (replayed once the database answers)."""
        for path in self.spill.files():
            reader = self.spill.claim(path)
            if reader is None:
                continue
            n = count_rows(reader.handle)
            reader.release()
            with self._cond:
                self._file_rows[path] = n
                self._on_disk += n
        if self._on_disk:
            logger.warning("prediction log: %d rows left in %s by an earlier run; replaying them", self._on_disk,
                           self.spill.path)

    def _ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception as error:  # noqa: BLE001
            if not is_outage(error):
                raise
            self._went_down(error)
            return False

    # Reporting ---------------------------------------------------------------------------------------------
    def _warn_every(self, key: str, seconds: float, message: str, *args) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -math.inf) >= seconds:
            self._warned[key] = now
            logger.warning(message, *args)

    def _report(self, final: dict) -> None:
        """The shutdown line: what was written, and how many rows went to which file."""
        files = ", ".join(f"{n} rows in {path}" for path, n in sorted(self._file_rows.items()) if n > 0)
        text = (f"prediction log closed: {final['written']} rows written this run ({final['replayed']} replayed from "
                f"disk), {final['spilled']} spilled, {final['quarantined']} quarantined")
        if final["on_disk"]:
            text += (f"; {final['on_disk']} rows kept on disk for replay when the server starts again with the database "
                     f"reachable: {files or self.spill.path}")
        if final["quarantined"]:
            text += f"; quarantined rows and their reasons: {self.spill.path}/{QUARANTINE_PREFIX}*.jsonl"
        if final["lost"]:
            text += f"; {final['lost']} rows LOST (neither the database nor {self.spill.path} could take them)"
        (logger.warning if final["on_disk"] or final["quarantined"] or final["lost"] else logger.info)(text)


def _where(error: BaseException) -> str:
    """file:line of the innermost frame: locates a surprise without printing its message (which may hold values)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb else "?"
