"""The prediction lane: one thread per server process that scores requests in arrival order, and scores the
requests waiting together for the same model version in one model call (adaptive batching).

Why one thread: the model is CPU-bound Python holding the GIL, so parallel prediction threads only take
turns and thrash; processes (``retrain serve --workers``) add cores. Why batching: a scikit-learn pipeline
costs about as much for 400 rows as for 100 (its column transformer, pandas indexing and the estimator's
per-call setup dominate small batches), so under load the requests queued behind a model call are scored
together in the next one. A request that arrives at an idle lane is scored at once, alone.

Why a call may wait a little (``max_wait_seconds``, the ``serving.max_batch_wait_ms`` setting): most clients
send their next request when they get their answer. A call answered k requests, and k requests are likely
to come back within a few milliseconds, while the event loop sends the answers and reads the next requests.
A call taken at once leaves them queued behind it for a whole call plus the wait for the GIL: that wait was
the API's p99 (two model calls and the event loop's work in between). So after a call that answered k
requests, the next call waits until k requests are queued, whichever version each is routed to (a canary's
share or another model's clients come back too; waiting for k of one version would make every call under a
canary wait its whole time), or until their rows fill a call, at most ``max_wait_seconds`` after the lane
became free. Bounds, whatever the traffic:

* the next call starts at most ``max_wait_seconds`` after it could have started, so no request waits longer
  than that more than it would without the wait, and none waits twice: a job already queued when the last
  call was taken (left out by its version or the row limit) has waited a whole call and is taken at once;
* a request that reaches an idle lane (nothing running, the last call's wait over) is scored at once,
  alone, and so is everything after a call of one request (a lone client);
* a client that does not come back costs one wait: the next call answered fewer requests, so expects fewer.

Dynamic batchers bound their queue delay the same way (Triton's ``max_queue_delay_microseconds``, Ray
Serve's ``batch_wait_timeout_s``, 10 ms by default).

The lane knows nothing of models: it hands ``run_batch`` a list of jobs with equal keys and gets back one
result (or exception) per job, so a batch that fails can be retried job by job by the caller and a failure
is blamed on its own request only.
"""

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """One request's work: jobs with equal ``key`` may share a model call, up to the lane's row limit."""

    key: Hashable
    rows: int
    payload: Any
    future: asyncio.Future = field(repr=False, default=None)
    number: int = 0  # its place in the lane's arrival order
    queued_at: float = 0.0  # the lane's clock when it was queued


class BatchingLane:
    """Runs ``run_batch(jobs) -> [result or exception, ...]`` on one thread; see the module docstring.

    ``max_batch_rows`` bounds the rows of one combined call (a job larger than it runs alone); 1 turns
    batching off. ``max_wait_seconds`` bounds how long after a call the next one waits for the requests the
    call answered to come back (module docstring; 0: never waits); ``on_wait(filled)`` is told, after each
    wait a queued request waited through, whether enough jobs came before it ran out. ``initializer`` runs
    once on the lane's thread (e.g. native thread-pool limits). ``clock`` (seconds, monotonic) times the
    wait; tests pass one they move by hand, so that no outcome depends on how busy the machine is.
    """

    def __init__(self, run_batch: Callable[[list[Job]], list[Any]], max_batch_rows: int,
                 max_wait_seconds: float = 0.0, on_wait: Callable[[bool], None] | None = None,
                 initializer: Callable[[], None] | None = None, name: str = "predict",
                 clock: Callable[[], float] = time.monotonic):
        self._run_batch, self.max_batch_rows, self._initializer = run_batch, max_batch_rows, initializer
        self._clock = clock
        self.max_wait_seconds, self._on_wait = max_wait_seconds, on_wait
        self._waited: bool | None = None  # the last wait's outcome, reported outside the lock
        self._queue: deque[Job] = deque()
        self._queued_rows = 0
        self._submitted = 0  # jobs ever queued; each job's number is its place in that count
        self._cond = threading.Condition()
        # Jobs the lane waits for: 1 while idle, else as many as its last call answered. A submit wakes the
        # lane only once that many are queued (or their rows fill a call): each wake-up is a GIL hand-over.
        self._expected = 1
        self._last_call_jobs = 1
        self._last_call_taken = 0  # the number of the last job queued when the last call was taken
        self._last_call_ended = 0.0
        self._stopping = False
        self._stopped_by: BaseException | None = None  # the lane's own error, if it ever stopped on one
        self._in_flight: list[Job] = []  # the batch being scored (answered by _fail_all if the lane dies)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)  # started by the first job

    async def submit(self, key: Hashable, rows: int, payload: Any) -> Any:
        """Queue a job and wait for its result (its exception is raised here)."""
        job = Job(key, rows, payload, asyncio.get_running_loop().create_future())
        with self._cond:
            if self._stopping:
                raise RuntimeError(self.failure or "the prediction lane is shut down")
            self._submitted += 1
            job.number, job.queued_at = self._submitted, self._clock()
            self._queue.append(job)
            self._queued_rows += rows
            if self._thread.ident is None:
                self._thread.start()
            if len(self._queue) >= self._expected or self._queued_rows >= self.max_batch_rows:
                self._cond.notify()
        return await job.future

    @property
    def waiting(self) -> int:
        """Jobs queued and not yet taken into a model call."""
        with self._cond:
            return len(self._queue)

    @property
    def expecting(self) -> int:
        """Jobs the lane waits for before its next call: 1 when idle, more while it waits for the clients its
        last call answered."""
        with self._cond:
            return self._expected

    @property
    def stopped_by(self) -> BaseException | None:
        """The error the lane's thread stopped on, if it ever did."""
        return self._stopped_by

    @property
    def failure(self) -> str | None:
        """Why the lane's thread stopped, if it ever stopped on an error of its own (the process can no longer
        predict): what every request answered since says, and /healthz."""
        error = self._stopped_by
        return None if error is None else f"the prediction lane stopped ({type(error).__name__}: {error})"

    def shutdown(self) -> None:
        """Score what is queued, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.ident is not None:
            self._thread.join()

    def _can_go(self, expected: int, by: float = math.inf) -> bool:
        """Whether the next call needs to wait no longer (under the lock): ``expected`` jobs (queued by time
        ``by``) are queued, or their rows fill a call (the condition on which ``submit`` wakes the lane), or the
        oldest was already queued when the last call was taken (it has waited a whole call)."""
        if not self._queue:
            return False
        if self._queue[0].number <= self._last_call_taken:
            return True
        came = [job.rows for job in self._queue if job.queued_at <= by]
        return len(came) >= expected or sum(came) >= self.max_batch_rows

    def _next_batch(self) -> list[Job] | None:
        """The oldest waiting job and every later waiting job with its key, within the row limit, once as
        many jobs are queued as the last call answered (or the wait's bounds, module docstring, end)."""
        with self._cond:
            expected = self._last_call_jobs
            if expected > 1 and self.max_wait_seconds > 0:
                self._expected = expected
                deadline = self._last_call_ended + self.max_wait_seconds
                waited = False
                while not self._stopping and not self._can_go(expected):
                    left = deadline - self._clock()
                    if left <= 0:
                        break
                    waited = True
                    self._cond.wait(left)
                self._expected = 1  # from here on a request finds an idle lane
                # reported when a queued request sat through the wait (not one that came after its deadline,
                # when the thread woke late)
                if waited and self._queue and not self._stopping and self._queue[0].queued_at < deadline:
                    self._waited = self._can_go(expected, by=deadline)  # filled in time, not late
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return None
            first = self._queue.popleft()
            batch, rows, kept = [first], first.rows, deque()
            while self._queue:
                job = self._queue.popleft()
                if job.key == first.key and rows + job.rows <= self.max_batch_rows:
                    batch.append(job)
                    rows += job.rows
                else:
                    kept.append(job)
            self._queue = kept
            self._queued_rows -= rows
            self._last_call_jobs, self._last_call_taken = len(batch), self._submitted
            return batch

    def _run(self) -> None:
        """The lane's thread. Should it ever stop on an error of its own (not a model's: those are answers),
        every waiting request and every later one is answered with that error instead of waiting forever."""
        try:
            self._serve()
        except BaseException as error:
            logger.exception("the prediction lane stopped; every waiting and later request fails until restart")
            self._fail_all(error)

    def _fail_all(self, error: BaseException) -> None:
        with self._cond:
            self._stopping, self._stopped_by = True, error
            jobs = [*self._in_flight, *self._queue]
            self._queue.clear()
            self._queued_rows = 0
        _answer(jobs, [RuntimeError(self.failure)] * len(jobs))

    def _serve(self) -> None:
        if self._initializer is not None:
            try:
                self._initializer()
            except Exception:  # noqa: BLE001 - a tuning step: serving without it beats not serving
                logger.warning("the prediction lane's initializer failed; serving without it", exc_info=True)
        while (batch := self._next_batch()) is not None:
            self._in_flight = batch
            if self._waited is not None and self._on_wait is not None:
                filled, self._waited = self._waited, None
                try:
                    self._on_wait(filled)
                except Exception:  # noqa: BLE001 - a metric must never cost a batch its answers
                    pass
            try:
                results = self._run_batch(batch)
            except BaseException as error:  # noqa: BLE001 - every waiting request gets an answer
                results = [error] * len(batch)
            if len(results) != len(batch):  # a bug of run_batch: no job can be matched to its answer
                results = [RuntimeError(f"the batch's scorer answered {len(results)} results for {len(batch)} "
                                        "requests")] * len(batch)
            _answer(batch, results)
            self._in_flight = []
            # Offer the GIL once before taking the next batch (sleep(0) releases it; a waiting thread gets
            # it): the event loop sends these answers and hands over the requests that arrived during the
            # call, so they join the next call instead of waiting behind a call taken without them (the loop
            # would otherwise get the GIL only at the next 5 ms switch). Measured when added: about 5 instead of
            # 4 requests per call at concurrency 8, and 20-25 % more requests/s. Waiting instead until the loop
            # has sent the answers (a handshake) measured no better.
            time.sleep(0)
            # The lane is free again: without a wait the next call would start now, so the wait counts from here
            # (counted before the GIL came back, the event loop's turn ate into it: fewer requests per call).
            self._last_call_ended = self._clock()


def _answer(jobs: list[Job], results: list[Any]) -> None:
    """Hand each job its result on its event loop: one wake-up of each loop per batch, not per request (each
    call_soon_threadsafe writes to the loop's wake-up pipe, a system call that gives the GIL away and then
    waits to get it back)."""
    answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
    for job, result in zip(jobs, results, strict=True):
        answers.setdefault(job.future.get_loop(), []).append((job.future, result))
    for loop, settled in answers.items():
        try:
            loop.call_soon_threadsafe(_settle_all, settled)
        except RuntimeError:  # its event loop is closed: nobody waits for these answers any more
            pass


def _settle_all(settled: list[tuple[asyncio.Future, Any]]) -> None:
    for future, result in settled:
        if future.done():  # the client went away and its request was cancelled
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
