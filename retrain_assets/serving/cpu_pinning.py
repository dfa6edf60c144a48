"""One CPU per server process when ``retrain serve --workers N`` runs one worker per CPU it may use.

Why: a worker's Python threads (event loop, prediction lane, log writer) take turns on the GIL. When every
CPU has a worker, the kernel moves threads between CPUs and preempts whichever runs, including a thread
that holds its worker's GIL: that whole worker then waits until the thread is scheduled again, while its
requests queue. Pinned, each worker's threads share one CPU and preempt only each other (which wait for
the GIL anyway). Measured with ``--workers 2`` on 2 cores, pinned against unpinned: 1.02-1.11x the
requests/s and 0.82-0.94x the p99 in six paired measurements (the serve benchmark repeats it in every
run: benchmarks/RESULTS.md, Serving). A single process is never pinned: its native work (the trees'
predictions, SQLite) runs on the other CPUs meanwhile.

``serving.pin_workers``: ``auto`` (the default) pins when the workers are as many as the CPUs the server
may run on (a VM or a container given whole cores); with more CPUs than workers there is room to move and
pinning would only bind a worker to a CPU something else may be using (e.g. a Kubernetes node without the
static CPU manager, where the process sees every CPU of the node). ``always`` pins whenever there are
several workers, ``never`` does not pin. Nothing is pinned where the platform has no CPU affinity (macOS).

How a worker finds its CPU: it binds a Unix socket named after the CPU in Linux's abstract namespace (one
name per CPU in a network namespace: a second server on the same host, or in the same container, finds the
CPUs of the first taken; containers with network namespaces of their own do not see each other's). No
file is involved: the name is released with the process however it ends, so nothing is left to clean up
and nothing can be deleted from under a running server. A worker that finds every CPU taken runs unpinned
and takes the first CPU that is freed (it looks every second): uvicorn's rolling restart (SIGHUP) starts
the new workers before it stops the old ones, and a crashed worker's replacement takes its CPU. Any error
while pinning leaves the worker running unpinned, with a warning: pinning is an optimisation, never a
reason for a worker not to serve.
"""

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence

logger = logging.getLogger("retrain_assets.serving")
PIN_ENV = "RETRAIN_SERVE_PIN_CPUS"  # set by the CLI for its workers: "1" asks each one to pin itself
LOCK_PREFIX = "retrain-serve-cpu"
RETRY_SECONDS = 1.0
_held: list[socket.socket] = []  # the lock of this process's CPU, held until the process exits


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity: a container's cpuset, a taskset), or none where the
    platform cannot pin (macOS has no CPU affinity)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []


def pinning_wanted(mode: str, workers: int, cpus: int) -> bool:
    """Whether ``workers`` server processes on ``cpus`` usable CPUs should each be pinned (module docstring)."""
    if mode == "never" or workers < 2 or cpus == 0:
        return False
    return mode == "always" or workers == cpus


def claim_cpu(cpus: Sequence[int], prefix: str = LOCK_PREFIX) -> tuple[int, socket.socket] | None:
    """The first of ``cpus`` no live process holds, and the socket that holds it; None when all are taken."""
    for cpu in cpus:
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            lock.bind(f"\0{prefix}-{cpu}")
        except OSError:  # EADDRINUSE: a live process holds this CPU
            lock.close()
            continue
        return cpu, lock
    return None


def pin_this_process(cpu: int) -> None:
    """Every thread of this process on ``cpu``, until no new thread appears (threads started later inherit
    it from their creator, a pinned thread)."""
    done: set[str] = set()
    while tasks := set(os.listdir("/proc/self/task")) - done:
        for task in tasks:
            try:
                os.sched_setaffinity(int(task), {cpu})
            except ProcessLookupError:  # a thread that ended meanwhile
                pass
        done |= tasks


def _pin(cpus: Sequence[int], prefix: str) -> int | None:
    claimed = claim_cpu(cpus, prefix)
    if claimed is None:
        return None
    cpu, lock = claimed
    try:
        pin_this_process(cpu)
    except BaseException:
        lock.close()  # not pinned: the CPU is free for another worker
        raise
    _held.append(lock)
    return cpu


def _unpinned(error: Exception) -> None:
    logger.warning("serving worker %d: cannot pin to a CPU (%s); it runs unpinned", os.getpid(), error)


def _pin_when_free(cpus: Sequence[int], prefix: str, retry_seconds: float) -> None:
    while True:
        time.sleep(retry_seconds)
        try:
            cpu = _pin(cpus, prefix)
        except Exception as error:  # noqa: BLE001 - pinning is an optimisation: the worker serves on unpinned
            _unpinned(error)
            return
        if cpu is not None:  # a warning as well, so that whoever saw "runs unpinned" sees it resolved
            logger.warning("serving worker %d: now pinned to CPU %d, freed by another worker", os.getpid(), cpu)
            return


def pin_worker_from_environment(prefix: str = LOCK_PREFIX, retry_seconds: float = RETRY_SECONDS) -> int | None:
    """In a worker started by ``retrain serve`` that asked for pinning (``RETRAIN_SERVE_PIN_CPUS``): take a
    free CPU and pin this process to it. Returns the CPU, or None (not asked, nothing to pin, an error, or
    every CPU taken: then a daemon thread takes the first CPU freed). Never raises: pinning is an
    optimisation, never a reason for a worker not to serve."""
    if os.environ.get(PIN_ENV) != "1":
        return None
    try:
        cpus = usable_cpus()
        if not cpus:  # a platform without CPU affinity
            return None
        cpu = _pin(cpus, prefix)
        if cpu is None:
            logger.warning("serving worker %d: every CPU has a worker for now; this one runs unpinned until a "
                           "CPU is freed", os.getpid())
            threading.Thread(target=_pin_when_free, args=(cpus, prefix, retry_seconds), name="cpu-pinning",
                             daemon=True).start()
        return cpu
    except Exception as error:  # noqa: BLE001 - see the docstring
        _unpinned(error)
        return None
