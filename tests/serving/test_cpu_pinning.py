"""Worker processes of `retrain serve --workers N` each take a CPU of their own (when asked): the choice rule,
the lock that hands out CPUs (and hands a dead worker's CPU to its replacement), and real processes pinned
with every thread, the ones started later included."""

import os
import subprocess
import sys
import textwrap

import pytest

from retrain_assets.serving.cpu_pinning import LOCKS_ENV, claim_cpu, pinning_wanted, usable_cpus


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
    assert usable_cpus() == sorted(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_setaffinity")  # as on macOS
    assert usable_cpus() == [] and not pinning_wanted("auto", 2, len(usable_cpus()))


def test_each_claim_takes_a_free_cpu_and_a_released_one_is_taken_again(tmp_path):
    first, second = claim_cpu(tmp_path, [3, 5]), claim_cpu(tmp_path, [3, 5])
    assert (first[0], second[0]) == (3, 5)
    assert claim_cpu(tmp_path, [3, 5]) is None  # every CPU has a worker
    first[1].close()  # the worker on CPU 3 exits: its lock goes with it
    again = claim_cpu(tmp_path, [3, 5])
    assert again[0] == 3
    for handle in (second[1], again[1]):
        handle.close()


WORKER = textwrap.dedent("""
    import os, sys, threading
    from retrain_assets.serving.cpu_pinning import pin_worker_from_environment
    running = threading.Event()  # never set: both threads live until the process exits
    threading.Thread(target=running.wait, daemon=True).start()  # running before the worker pins itself
    cpu = pin_worker_from_environment()
    threading.Thread(target=running.wait, daemon=True).start()  # started after (as the app's threads are)
    tasks = sorted(os.listdir("/proc/self/task"))
    print(cpu, *(sorted(os.sched_getaffinity(int(t))) for t in tasks), sep="|", flush=True)
    sys.stdin.read()  # holds its CPU until the test closes stdin
""")


def test_worker_processes_are_pinned_to_distinct_cpus_with_every_thread(tmp_path):
    usable = sorted(os.sched_getaffinity(0))
    env = {**os.environ, LOCKS_ENV: str(tmp_path)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True) for _ in range(2)]
    try:
        lines = [worker.stdout.readline().strip().split("|") for worker in workers]  # both hold their CPU meanwhile
    finally:
        for worker in workers:
            worker.communicate("", timeout=60)
    cpus = [None if line[0] == "None" else int(line[0]) for line in lines]
    if len(usable) >= 2:
        assert None not in cpus and len(set(cpus)) == 2 and set(cpus) <= set(usable)
    else:  # one CPU: the second worker finds it taken and stays unpinned
        assert sorted(cpus, key=str) == [usable[0], None]
    for cpu, line in zip(cpus, lines, strict=True):
        affinities = line[1:]
        assert len(affinities) >= 3  # the main thread, the one started before pinning and the one after
        expected = str([cpu]) if cpu is not None else str(usable)
        assert all(affinity == expected for affinity in affinities), line


def test_without_the_cli_asking_nothing_is_pinned(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != LOCKS_ENV}
    out = subprocess.run([sys.executable, "-c", WORKER], env=env, input="", capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip().split("|")
    assert out[0] == "None" and all(affinity == str(sorted(os.sched_getaffinity(0))) for affinity in out[1:])
