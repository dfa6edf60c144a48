"""Several server processes converge on the registry each on its own: a `retrain serve --workers 2` and a
second `retrain serve` (a replica) on one PostgreSQL database, real processes, real HTTP. Nothing but the
registry tells them about a promotion or a rollback."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from retrain_assets.config.serving import ServingSettings
from retrain_assets.simulate import model_config
from tests.faults.conftest import Backend, served_settings, traffic_rows, wait_until
from tests.serving.conftest import SlowToLoad, register

REPO = Path(__file__).resolve().parents[2]
# A rolling restart replaces the workers one after another, each given serving.worker_start_seconds to start:
# waiting longer than that for two workers, a slow machine is not mistaken for a restart that did not happen.
RESTART_SECONDS = 2 * ServingSettings().worker_start_seconds + 30

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(config: Path, *extra: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("retrain")), "--config", str(config), "serve", "--port", str(port), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}, **(env or {})})
    return process, f"http://127.0.0.1:{port}"


def up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def versions_by_process(base: str) -> dict[str, float]:
    """pid -> the version it serves, from /metrics (every worker's values, aggregated by the one that answers)."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {s.labels["pid"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "retrain_model_serving_version" for s in f.samples}


def cpus_of_threads(pid: int) -> set[int]:
    """Every CPU any thread of process ``pid`` may run on."""
    return {cpu for task in os.listdir(f"/proc/{pid}/task") for cpu in os.sched_getaffinity(int(task))}


def worker_pids(server_pid: int) -> list[int]:
    """The uvicorn worker processes of a `retrain serve --workers N` (multiprocessing children of it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]) if entry.name.isdigit() else 0
            if parent == server_pid and b"multiprocessing-fork" in entry.joinpath("cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # it exited meanwhile
            pass
    return pids


def pinned_apart(pids: list[int]) -> bool:
    """Every thread of each process on one CPU, a different one per process (as many as there are CPUs)."""
    try:
        pinned = [cpus_of_threads(pid) for pid in pids]
    except OSError:  # a process exited meanwhile
        return False
    usable = os.sched_getaffinity(0)
    return all(len(cpus) == 1 for cpus in pinned) and len(set().union(*pinned)) == min(len(pids), len(usable))


def answers(base: str, n: int = 12) -> set[str]:
    """The versions that answer ``n`` requests, each on a new connection (spread over the workers)."""
    found = set()
    for _ in range(n):
        with httpx.Client(timeout=30) as http:
            r = http.post(f"{base}/predict/batch", json={"model": "churn", "rows": traffic_rows(2)})
            assert r.status_code == 200, r.text
            found.add(r.headers["X-Model-Version"])
    return found


def test_workers_and_replicas_follow_a_promotion_and_a_rollback(pg_backend, tmp_path, churn_pipeline):
    settings, store = served_settings(tmp_path, pg_backend, churn_pipeline)
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"database_url": pg_backend.url, "artifact_root": settings.storage.artifact_root},
        "models": [{**model_config(), "training": {"tuning_trials": 0}}],
        "serving": {"registry_poll_seconds": 0.2, "spill_dir": str(tmp_path / "spill"), "pin_workers": "always"},
    }))
    workers, workers_url = serve(config, "--workers", "2")
    replica, replica_url = serve(config)
    try:
        wait_until(lambda: up(workers_url) and up(replica_url), 120, "both servers to be ready")
        wait_until(lambda: len(versions_by_process(workers_url)) == 2, 60, "both workers in /metrics")
        assert set(versions_by_process(workers_url).values()) == {1.0}
        # Each worker runs on a CPU of its own, every thread of it (event loop, log writer, registry follower);
        # the single-process replica is not pinned.
        assert pinned_apart(worker_pids(workers.pid))
        assert cpus_of_threads(replica.pid) == set(os.sched_getaffinity(0))
        assert answers(workers_url) == answers(replica_url) == {"v1"}

        register(settings, store, churn_pipeline, 2)  # a promotion, written to the registry only
        wait_until(lambda: set(versions_by_process(workers_url).values()) == {2.0}, 60, "both workers on v2")
        wait_until(lambda: answers(replica_url, 1) == {"v2"}, 60, "the replica on v2")
        assert answers(workers_url) == answers(replica_url) == {"v2"}

        store.registry.rollback("churn")
        wait_until(lambda: set(versions_by_process(workers_url).values()) == {1.0}, 60, "both workers back on v1")
        wait_until(lambda: answers(replica_url, 1) == {"v1"}, 60, "the replica back on v1")
        assert answers(workers_url) == {"v1"}

        # /metrics adds up what both workers served (multi-process mode): 12 x 3 batches went to this server.
        text = httpx.get(f"{workers_url}/metrics", timeout=10).text
        served = sum(s.value for f in text_string_to_metric_families(text) if f.name == "retrain_predict_requests"
                     for s in f.samples if s.name == "retrain_predict_requests_total")
        assert served == 36
        swaps = sum(s.value for f in text_string_to_metric_families(text) if f.name == "retrain_model_swaps"
                    for s in f.samples if s.name == "retrain_model_swaps_total")
        assert swaps == 4  # two swaps in each of the two workers

        # A rolling restart (SIGHUP): uvicorn starts the new workers before it stops the old ones, so they
        # find the CPUs taken at first; each then takes one the old workers freed.
        before = set(worker_pids(workers.pid))
        os.kill(workers.pid, signal.SIGHUP)
        wait_until(lambda: len(now := worker_pids(workers.pid)) == 2 and not set(now) & before and pinned_apart(now),
                   RESTART_SECONDS, "the new workers, each pinned to a CPU of its own")
        assert up(workers_url)
    finally:
        for process in (workers, replica):
            os.killpg(process.pid, signal.SIGTERM)
        for process in (workers, replica):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def test_a_rolling_restart_waits_for_workers_whose_models_load_slowly(tmp_path, churn_pipeline):
    """uvicorn gives a new worker 5 s to be ready at a rolling restart, then kills it and keeps the old one:
    on a busy machine loading the models takes longer, and the restart never happened.
    serving.worker_start_seconds (default 60) is the time a worker has."""
    backend = Backend("sqlite", f"sqlite:///{tmp_path / 'monitoring.db'}", path=tmp_path / "monitoring.db")
    settings, store = served_settings(tmp_path, backend, churn_pipeline)
    register(settings, store, SlowToLoad(churn_pipeline), 2)
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"database_url": backend.url, "artifact_root": settings.storage.artifact_root},
        "models": [{**model_config(), "training": {"tuning_trials": 0}}],
        "serving": {"spill_dir": str(tmp_path / "spill"), "pin_workers": "never"},
    }))
    slow = {"RETRAIN_TEST_LOAD_SECONDS": "8", "PYTHONPATH": str(REPO)}  # each worker takes 8 s to load v2
    workers, url = serve(config, "--workers", "2", env=slow)
    try:
        wait_until(lambda: up(url) and len(versions_by_process(url)) == 2, 120, "both workers ready")
        before = set(worker_pids(workers.pid))
        os.kill(workers.pid, signal.SIGHUP)
        wait_until(lambda: len(now := worker_pids(workers.pid)) == 2 and not set(now) & before, RESTART_SECONDS,
                   "both workers replaced by new ones")
        assert answers(url) == {"v2"}
    finally:
        os.killpg(workers.pid, signal.SIGTERM)
        workers.wait(timeout=60)
