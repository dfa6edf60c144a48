"""Worker processes of `retrain serve --workers N` each take a CPU of their own (when asked): the choice rule,
the machine-wide locks that hand out CPUs (and hand a freed CPU to a worker that found none), and real
processes pinned with every thread, the ones started before and after pinning."""

import errno
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from retrain_assets.serving import cpu_pinning
from retrain_assets.serving.cpu_pinning import PIN_ENV, claim_cpu, pinning_wanted, usable_cpus

affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")


@pytest.mark.parametrize(("mode", "workers", "cpus", "expected"), [
    ("auto", 2, 2, True),     # one worker per CPU: pinned
    ("auto", 2, 8, False),    # room to move (or a node shared with others): not pinned
    ("auto", 1, 1, False),    # a single process keeps the other CPUs for its native work
    ("always", 2, 8, True),
    ("always", 1, 2, False),
    ("never", 2, 2, False),
    ("always", 2, 0, False),  # a platform without CPU affinity (macOS)
])
def test_when_workers_are_pinned(mode, workers, cpus, expected):
    assert pinning_wanted(mode, workers, cpus) is expected


def test_a_platform_without_cpu_affinity_has_nothing_to_pin(monkeypatch):
    monkeypatch.delattr(os, "sched_setaffinity", raising=False)  # as on macOS
    assert usable_cpus() == [] and not pinning_wanted("auto", 2, len(usable_cpus()))


def test_asked_to_pin_where_nothing_can_be_pinned_the_worker_just_serves(monkeypatch):
    monkeypatch.setenv(PIN_ENV, "1")
    monkeypatch.delattr(os, "sched_setaffinity", raising=False)
    assert cpu_pinning.pin_worker_from_environment(prefix=f"retrain-test-{uuid.uuid4().hex}") is None
    assert not [t for t in threading.enumerate() if t.name == "cpu-pinning"]  # no endless retries


@affinity
def test_a_failure_to_pin_leaves_the_worker_unpinned_and_the_cpu_free(monkeypatch, caplog):
    def refused(*_):
        raise OSError(errno.EINVAL, "Invalid argument")

    prefix = f"retrain-test-{uuid.uuid4().hex}"
    monkeypatch.setenv(PIN_ENV, "1")
    monkeypatch.setattr(os, "sched_setaffinity", refused)  # e.g. the container's cpuset changed
    with caplog.at_level(logging.WARNING, logger="retrain_assets.serving"):
        assert cpu_pinning.pin_worker_from_environment(prefix=prefix) is None
    assert "runs unpinned" in caplog.text
    claimed = claim_cpu(usable_cpus(), prefix)  # the CPU it could not use was given back
    assert claimed is not None and claimed[0] == usable_cpus()[0]
    claimed[1].close()


@affinity
def test_each_claim_takes_a_free_cpu_and_a_released_one_is_taken_again():
    prefix = f"retrain-test-{uuid.uuid4().hex}"  # names of its own: a server on this machine keeps its CPUs
    first, second = claim_cpu([3, 5], prefix), claim_cpu([3, 5], prefix)
    assert (first[0], second[0]) == (3, 5)
    assert claim_cpu([3, 5], prefix) is None  # every CPU has a worker
    first[1].close()  # the worker on CPU 3 exits: its lock goes with it
    again = claim_cpu([3, 5], prefix)
    assert again[0] == 3
    for lock in (second[1], again[1]):
        lock.close()


WORKER = textwrap.dedent("""
    import os, sys, threading, time
    from retrain_assets.serving.cpu_pinning import pin_worker_from_environment
    running = threading.Event()  # never set: both threads live until the process exits
    threading.Thread(target=running.wait, daemon=True).start()  # running before the worker pins itself
    cpu = pin_worker_from_environment(prefix=sys.argv[1], retry_seconds=0.05)
    threading.Thread(target=running.wait, daemon=True).start()  # started after (as the app's threads are)

    def report(cpu):
        tasks = sorted(os.listdir("/proc/self/task"))
        print(cpu, *(sorted(os.sched_getaffinity(int(t))) for t in tasks), sep="|", flush=True)

    report(cpu)
    for line in sys.stdin:  # "report": once its CPU may have been freed; end of input: the worker exits
        report(sorted(os.sched_getaffinity(0)))
""")


def start_worker(prefix: str, pin: bool = True) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != PIN_ENV} | ({PIN_ENV: "1"} if pin else {})
    return subprocess.Popen([sys.executable, "-c", WORKER, prefix], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def report(worker: subprocess.Popen, ask: bool = False) -> tuple[object, list[str]]:
    """What the worker says: its CPU (or None) and the affinity of each of its threads."""
    if ask:
        worker.stdin.write("report\n")
        worker.stdin.flush()
    line = worker.stdout.readline().strip().split("|")
    return (None if line[0] == "None" else line[0]), line[1:]


@affinity
def test_workers_take_distinct_cpus_with_every_thread_and_a_latecomer_takes_a_freed_one():
    usable, prefix = sorted(os.sched_getaffinity(0)), f"retrain-test-{uuid.uuid4().hex}"
    workers = [start_worker(prefix) for _ in usable]
    latecomer = None
    try:
        reports = [report(worker) for worker in workers]  # all alive, each holding its CPU
        assert sorted(int(cpu) for cpu, _ in reports) == usable
        for cpu, affinities in reports:
            assert len(affinities) >= 3  # the main thread, the one started before pinning and the one after
            assert all(a == str([int(cpu)]) for a in affinities)
        # Every CPU is taken (as during uvicorn's rolling restart, which starts new workers first): the
        # latecomer serves unpinned, then takes the first CPU freed, with every thread.
        latecomer = start_worker(prefix)
        cpu, affinities = report(latecomer)
        assert cpu is None and all(a == str(usable) for a in affinities)
        freed = int(reports[0][0])
        workers[0].communicate("", timeout=60)
        deadline = time.monotonic() + 30
        while (now := report(latecomer, ask=True))[0] != str([freed]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert now[0] == str([freed]) and all(a == str([freed]) for a in now[1]), now
    finally:
        for worker in [*workers, *([latecomer] if latecomer else [])]:
            if worker.poll() is None:
                worker.communicate("", timeout=60)


@affinity
def test_without_the_cli_asking_nothing_is_pinned():
    worker = start_worker(f"retrain-test-{uuid.uuid4().hex}", pin=False)
    try:
        cpu, affinities = report(worker)
    finally:
        worker.communicate("", timeout=60)
    assert cpu is None and all(a == str(sorted(os.sched_getaffinity(0))) for a in affinities)
