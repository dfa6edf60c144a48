"""Which model versions a server process holds, and how it follows the registry by itself.

Why: promotion and rollback only write the registry. A server that waits for someone to call
``/model/reload`` serves the old model forever, so the post-deploy watch judges nothing and an automatic
rollback never reaches users. Each process therefore polls the registry with one small query (the
production, standby and shadow versions of every model) every ``serving.registry_poll_seconds`` and swaps
when it changed. Several processes (``--workers N``, replicas behind a load balancer) each converge on
their own: the registry is the only coordination.

* The standby (the previous production, the rollback target) stays loaded: a rollback is a swap of two
  references, no disk read, no unpickling.
* A swap replaces one dict entry; a request reads its slot once and keeps it, so requests in flight finish
  on the model they started with.
* An artifact that is missing or fails its checksum is not served: the current model keeps serving, the
  reason is logged once and shown by ``/readyz``, and the load is retried with backoff.
* A candidate in canary answers its ``traffic_share`` of requests, chosen by a hash of the request id
  (:func:`routes_to_canary`): the same id lands on the same version in every process, so a retried request
  gets the same answer. A canary that fails to score a request is not asked again by this process:
  production answers, and the failure is reported to the registry's event log (retried until the database
  takes it), where the canary sensor finds it and rolls the canary back.
"""

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from retrain_assets.errors import RetrainError
from retrain_assets.serving.routing import record_canary_failure, routes_to_canary
from retrain_assets.settings import ModelSettings
from retrain_assets.store import ArtifactStore, ModelVersion, MonitoringStore
from retrain_assets.store.schema import model_versions

logger = logging.getLogger("retrain_assets.serving")
WATCHED = ("production", "standby", "shadow", "canary")
MAX_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class Slot:
    version: ModelVersion
    pipeline: Any


def _same(slot: Slot | None, version: ModelVersion | None) -> bool:
    return slot is not None and version is not None and slot.version.version == version.version \
        and slot.version.artifact_sha256 == version.artifact_sha256 \
        and slot.version.traffic_share == version.traffic_share


class ModelSlots:
    """The production model of each declared model, its standby and its candidate in shadow or canary (if any).

    ``sync`` builds new slots aside and then swaps references; readers never take the lock. ``problems``
    says, per model, why what the registry wants is not what this process serves (empty when converged).
    """

    def __init__(self, store: MonitoringStore, artifacts: ArtifactStore, metrics=None):
        self.store, self.artifacts, self.metrics = store, artifacts, metrics
        self.active: dict[str, Slot] = {}
        self.standby: dict[str, Slot] = {}
        self.shadow: dict[str, Slot] = {}
        self.canary: dict[str, Slot] = {}
        self.failed_canaries: set[str] = set()  # artifact checksums of canaries that failed a request here
        self._unreported: list[tuple[str, ModelVersion, str, int]] = []  # canary failures not yet in the event log
        # (answered, failed) requests per (model, version, promotion) this process answered as production,
        # written to serving_requests at each poll when they changed (the watch's error rate since the
        # promotion). Only the predicting lane thread writes it.
        self.request_counts: dict[tuple[str, int, Any], tuple[int, int]] = {}
        self._counts_written: dict[tuple[str, int, Any], tuple[int, int]] = {}
        self.process = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"
        self.problems: dict[str, str] = {}
        self.production_problems: dict[str, str] = {}  # the part of problems that concerns production
        self._lock = threading.Lock()  # one sync at a time; readers never take it

    def registry_state(self) -> dict[str, tuple]:
        """The cheap poll: (status, version, checksum) of every watched version, per model."""
        mv = model_versions
        query = select(mv.c.model_name, mv.c.status, mv.c.version, mv.c.artifact_sha256, mv.c.traffic_share).where(
            mv.c.status.in_(WATCHED))
        state: dict[str, list] = {}
        with self.store.engine.connect() as conn:
            for row in conn.execute(query):
                state.setdefault(row.model_name, []).append(
                    (row.status, row.version, row.artifact_sha256, row.traffic_share or 0.0))
        return {name: tuple(sorted(rows)) for name, rows in state.items()}

    def sync(self, model: ModelSettings) -> tuple[Slot | None, Slot | None]:
        """Serve what the registry says for ``model``; returns (serving now, serving before).

        A pipeline this process already holds (the standby after a rollback, the shadow after its
        promotion) is reused without reading the artifact store. Raises the database's errors as they are
        (the caller decides: 503 or retry at the next poll)."""
        name = model.name
        with self._lock:
            registry = self.store.registry
            wanted = {status: registry.with_status(name, status) for status in WATCHED}
            held = {s.version.artifact_sha256: s.pipeline
                    for s in (self.active.get(name), self.standby.get(name), self.shadow.get(name),
                              self.canary.get(name)) if s is not None}
            before = self.active.get(name)
            problems = []
            production = wanted["production"]
            if production is None:
                problems.append("no production version in the registry: train and promote one first")
            elif not _same(before, production):
                slot, error = self._slot(name, production, held)
                if slot is None:
                    problems.append(f"production {production.label} not loaded ({error}); still serving "
                                    f"{before.version.label if before else 'nothing'}")
                else:
                    self.active[name] = slot  # the swap: one reference assignment
                    self._swapped(name, "production", before, slot)
            if problems:
                self.production_problems[name] = problems[0]
            else:
                self.production_problems.pop(name, None)
            for status, slots in (("standby", self.standby), ("shadow", self.shadow), ("canary", self.canary)):
                version = wanted[status]
                if version is None:
                    slots.pop(name, None)
                elif not _same(slots.get(name), version):
                    slot, error = self._slot(name, version, held)
                    if slot is None:  # not a reason to stop serving: said, and retried
                        slots.pop(name, None)
                        problems.append(f"{status} {version.label} not loaded ({error})")
                        if status == "canary" and version.artifact_sha256 not in self.failed_canaries:
                            # a canary servers cannot load gets no traffic and never its evidence: roll it back
                            self.failed_canaries.add(version.artifact_sha256)
                            self._unreported.append((name, version, f"not loaded: {error}"[:500], 0))
                    else:
                        slots[name] = slot
            problem = "; ".join(problems)
            if problem and problem != self.problems.get(name):
                logger.error("model %s: %s (retrying)", name, problem)
            elif not problem and name in self.problems:
                logger.warning("model %s: serving what the registry says again (%s)", name,
                               self.active[name].version.label)
            if problem:
                self.problems[name] = problem
            else:
                self.problems.pop(name, None)
            return self.active.get(name), before

    def route(self, name: str, request_id: str) -> Slot | None:
        """The slot that answers this request: the canary for its share of request ids (unless it failed
        here before), else production. Read once per request, like the active slot."""
        canary = self.canary.get(name)
        if (canary is not None and canary.version.artifact_sha256 not in self.failed_canaries
                and routes_to_canary(request_id, canary.version.traffic_share or 0.0)):
            return canary
        return self.active.get(name)

    def canary_failed(self, name: str, canary: Slot, error: BaseException, rows: int) -> None:
        """A canary raised on a request (production answered it instead): stop routing to it in this
        process, count it, and queue the report for the event log (written by :meth:`report_failures`)."""
        first = canary.version.artifact_sha256 not in self.failed_canaries
        self.failed_canaries.add(canary.version.artifact_sha256)
        if self.metrics is not None:
            self.metrics.canary_failures.labels(name, canary.version.label).inc()
        if first:
            logger.error("model %s: canary %s failed on a request of %d rows (%s); production answered, and this "
                         "process sends it no more requests", name, canary.version.label, rows, error)
            self._unreported.append((name, canary.version, f"{type(error).__name__}: {error}"[:500], rows))

    def count_request(self, name: str, slot: Slot, failed: bool = False) -> None:
        """One prediction request answered (or failed: the version raised) by ``slot``'s version, counted
        under its promotion when it answered as production (a canary's failures have their own report)."""
        if slot.version.status != "production" or slot.version.promoted_at is None:
            return
        key = (name, slot.version.version, slot.version.promoted_at)
        answered, failures = self.request_counts.get(key, (0, 0))
        self.request_counts[key] = (answered + (not failed), failures + failed)

    def report(self) -> None:
        """Write what the database has not seen yet: the queued canary failures as event rows (the canary
        sensor rolls the canary back on one) and the request counts that changed. Whatever the database
        does not take stays queued for the next poll."""
        while self._unreported:
            record_canary_failure(self.store, *self._unreported[0])
            self._unreported.pop(0)
        counts = dict(self.request_counts)
        changed = {key: value for key, value in counts.items() if self._counts_written.get(key) != value}
        if changed:
            self.store.predictions.record_request_counts(self.process, changed)
            self._counts_written.update(changed)

    def _slot(self, name: str, version: ModelVersion, held: dict) -> tuple[Slot | None, str | None]:
        if version.artifact_sha256 in held:
            self._count_load(name, version, "reused")
            return Slot(version, held[version.artifact_sha256]), None
        try:
            pipeline = self.artifacts.load_model(version.artifact_key, version.artifact_sha256)  # verified first
        except (RetrainError, OSError) as error:
            self._count_load(name, version, "failed")
            return None, str(error)
        self._count_load(name, version, "loaded")
        return Slot(version, pipeline), None

    def _count_load(self, name: str, version: ModelVersion, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.model_loads.labels(name, version.label, outcome).inc()

    def _swapped(self, name: str, status: str, before: Slot | None, after: Slot) -> None:
        if before is not None:
            logger.warning("model %s: now serving %s (was %s)", name, after.version.label, before.version.label)
        if self.metrics is not None:
            if before is not None:
                self.metrics.model_swaps.labels(name, status).inc()
            self.metrics.serving_version.labels(name).set(after.version.version)


class RegistryFollower:
    """A daemon thread that polls the registry and syncs the models whose versions changed (and retries,
    with backoff, the ones whose last sync left a problem). ``on_tick`` runs after every poll (the metrics'
    gauges are refreshed there, so every process's values stay fresh whichever one is scraped)."""

    def __init__(self, slots: ModelSlots, models: list[ModelSettings], poll_seconds: float,
                 on_tick: Callable[[], None] | None = None):
        self.slots, self.models, self.poll = slots, models, poll_seconds
        self.on_tick = on_tick
        self.database_error: str | None = None
        self._seen: dict[str, tuple] = {}
        self._retry_at: dict[str, float] = {}
        self._retry_delay: dict[str, float] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="registry-follower", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a bug here must not end the thread: serving goes on, we retry
                logger.exception("registry follower: poll failed")

    def tick(self) -> None:
        """One poll: read the registry's state, sync what changed or is due for a retry."""
        try:
            state = self.slots.registry_state()
        except Exception as error:  # noqa: BLE001 - the database is away: keep serving, try at the next poll
            if self.database_error is None:
                logger.error("registry follower: the registry does not answer (%s); serving what is loaded",
                             str(error).splitlines()[0][:300])
            self.database_error = str(error).splitlines()[0][:300]
        else:
            self.database_error = None
            try:
                self.slots.report()
            except Exception as error:  # noqa: BLE001 - kept queued: the next poll writes it
                logger.error("registry follower: canary failures or request counts could not be recorded yet (%s)",
                             str(error).splitlines()[0][:300])
            now = time.monotonic()
            for model in self.models:
                current = state.get(model.name, ())
                changed = current != self._seen.get(model.name)
                due = model.name in self.slots.problems and now >= self._retry_at.get(model.name, 0.0)
                if not (changed or due):
                    continue
                try:
                    self.slots.sync(model)
                except Exception as error:  # noqa: BLE001 - database gone mid-sync: the next poll retries
                    self.database_error = str(error).splitlines()[0][:300]
                    return
                self._seen[model.name] = current
                if model.name in self.slots.problems:
                    delay = min(self._retry_delay.get(model.name, self.poll / 2) * 2, MAX_RETRY_SECONDS)
                    self._retry_delay[model.name] = delay
                    self._retry_at[model.name] = now + delay
                else:
                    self._retry_delay.pop(model.name, None)
        if self.on_tick is not None:
            self.on_tick()
