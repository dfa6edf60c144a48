"""One CPU per server process when ``retrain serve --workers N`` runs one worker per CPU it may use.

Why: a worker's Python threads (event loop, prediction lane, log writer) take turns on the GIL. When every
CPU has a worker, the kernel moves threads between CPUs and preempts whichever runs, including a thread
that holds its worker's GIL: that whole worker then waits until the thread is scheduled again, while its
requests queue. Pinned, each worker's threads share one CPU and preempt only each other (which wait for
the GIL anyway). Measured with ``--workers 2`` on 2 cores, pinned against unpinned in five paired runs:
2-11 % more requests/s and a p99 6-18 % lower (the serve benchmark measures it in every run:
benchmarks/RESULTS.md, Serving). A single process is never pinned: its native work (the trees'
predictions, SQLite) runs on the other CPUs meanwhile.

``serving.pin_workers``: ``auto`` (the default) pins when the workers are as many as the CPUs the server
may run on (a VM or a container given whole cores); with more CPUs than workers there is room to move and
pinning would only bind a worker to a CPU something else may be using (e.g. a Kubernetes node without the
static CPU manager, where the process sees every CPU of the node). ``always`` pins whenever there are
several workers, ``never`` does not pin. Nothing is pinned where the platform has no CPU affinity (macOS).

How a worker finds its CPU: each one takes an exclusive lock on one file per CPU in a folder the CLI
makes for the server (``flock``, held for the worker's life); the first free CPU is its own. A worker that
dies releases its lock with its process, so the one uvicorn starts in its place takes the same CPU.
"""

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

logger = logging.getLogger("retrain_assets.serving")
LOCKS_ENV = "RETRAIN_SERVE_CPU_LOCKS"
_held: list[IO] = []  # the lock of this process's CPU, held until the process exits


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity: a container's cpuset, a taskset), or none where the
    platform cannot pin (macOS has no CPU affinity)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []


def pinning_wanted(mode: str, workers: int, cpus: int) -> bool:
    """Whether ``workers`` server processes on ``cpus`` usable CPUs should each be pinned (module docstring)."""
    if mode == "never" or workers < 2 or cpus == 0:
        return False
    return mode == "always" or workers == cpus


def claim_cpu(lock_dir: Path, cpus: Sequence[int]) -> tuple[int, IO] | None:
    """The first of ``cpus`` no other live process holds, and its held lock file; None when all are taken."""
    import fcntl  # POSIX only; called only where CPUs can be pinned

    for cpu in cpus:
        handle = open(lock_dir / f"cpu-{cpu}.lock", "w")  # noqa: SIM115 - held open: the lock lives with it
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return cpu, handle
    return None


def pin_this_process(cpu: int) -> None:
    """Every thread of this process on ``cpu`` (threads started later inherit it from their creator)."""
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), {cpu})
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def pin_worker_from_environment() -> int | None:
    """In a worker started by ``retrain serve``: take a free CPU and pin this process to it, if the CLI asked
    for pinning (``RETRAIN_SERVE_CPU_LOCKS``). Returns the CPU, or None (not asked, or every CPU taken)."""
    lock_dir = os.environ.get(LOCKS_ENV)
    if not lock_dir:
        return None
    claimed = claim_cpu(Path(lock_dir), usable_cpus())
    if claimed is None:
        logger.warning("serving worker %d: every CPU already has a worker; this one is not pinned", os.getpid())
        return None
    cpu, handle = claimed
    _held.append(handle)
    pin_this_process(cpu)
    return cpu
