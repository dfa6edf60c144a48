"""Serving benchmark against a real uvicorn server (`retrain serve` in its own process; the load comes from
client threads in this process):

1. No outage: 100-row batches at concurrency 8 for 30 s on the embedded SQLite store, with one
   /model/reload (to a different model version) in the middle. Targets: p99 under 1 s and zero failed
   requests. The baseline, measured in the same run, is the same 100-row prediction called in process (no
   HTTP, no logging): the ratio is what the API adds.
2. Database outage: the same load for 60 s on PostgreSQL (a database this benchmark creates and drops),
   whose database refuses connections for 10 s in the middle (``ALLOW_CONNECTIONS false`` and its backends
   terminated). Targets: zero failed requests, and once the database is back every served row in
   prediction_log (the rows served meanwhile wait in the spill folder and are replayed).

Run: ``make bench`` or ``.venv/bin/python benchmarks/serve_bench.py [--seconds 30] [--concurrency 8]
[--outage-load-seconds 60] [--outage-seconds 10] [--no-outage]`` (PostgreSQL: the
server at RETRAIN_BENCH_PG_URL, default postgresql+psycopg2://postgres@127.0.0.1:5432/postgres).
"""

import argparse
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import machine_description, update_results  # noqa: E402

PG_ADMIN_URL = os.environ.get("RETRAIN_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def prepare(root: Path, database_url: str | None = None) -> tuple[Path, object]:
    """Two promoted churn versions (v1 standby, v2 production) on ``database_url`` (default: SQLite under root)."""
    import dagster as dg

    from retrain_assets.defs.deployment.promotion import retrain_in_process
    from retrain_assets.defs.definitions import build_definitions
    from retrain_assets.settings import load_settings
    from retrain_assets.simulate import generate_traffic, model_config
    from retrain_assets.store import MonitoringStore

    loose = {"max_f1_drop": 1.0, "max_auc_drop": 1.0, "max_relative_drop": 1.0, "significance_tolerance": 1.0}
    config = root / "retrain.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"database_url": database_url or f"sqlite:///{root}/monitoring.db",
                    "artifact_root": str(root / "artifacts")},
        "models": [{**model_config(), "training": {"tuning_trials": 0}, "gates": loose}],
    }))
    settings = load_settings(str(config))
    model = settings.models[0]
    store = MonitoringStore(settings.storage.database_url)
    defs = build_definitions(settings)
    for seed in (1, 2):
        frame = generate_traffic(3000, start=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3 - seed),
                                 seed=seed, id_prefix=f"b{seed}")
        store.predictions.log_predictions(model.log_key, frame, model.feature_names)
        store.predictions.log_labels(model.log_key, frame["request_id"].tolist(), frame[model.target].tolist())
        with dg.DagsterInstance.ephemeral() as instance:
            assert retrain_in_process(defs, instance, store, model, tags={}).success
    return config, (settings, store, model)


def start_server(config: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`retrain serve` on a free port (its stderr, with the prediction log's warnings, goes to log_path)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("retrain")), "--config", str(config), "serve", "--port", str(port)],
        env={**os.environ, "RETRAIN_API_TOKEN": "bench"}, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/docs", timeout=2).status_code == 200:
                return server, base
        except httpx.TransportError:
            time.sleep(0.3)
    os.killpg(server.pid, signal.SIGTERM)
    raise RuntimeError(f"retrain serve did not start: {log_path.read_text()[-2000:]}")


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)


@dataclass
class Load:
    """What the clients saw: latency and start time of every request, served ids, failures, versions."""

    latencies: list = field(default_factory=list)
    started: list = field(default_factory=list)
    served_rows: int = 0
    failures: list = field(default_factory=list)
    versions: set = field(default_factory=set)


def run_load(base: str, payload: dict, seconds: float, concurrency: int, during=None) -> Load:
    """``concurrency`` clients posting ``payload`` for ``seconds``; ``during()`` runs meanwhile (then joins)."""
    load, lock = Load(), threading.Lock()
    origin = time.monotonic()
    stop = origin + seconds

    def client():
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop:
                started = time.perf_counter()
                at = time.monotonic() - origin
                try:
                    response = http.post(f"{base}/predict/batch", json=payload)
                    ok = response.status_code == 200
                    outcome = response.json() if ok else response.text[:200]
                except httpx.HTTPError as error:
                    ok, outcome = False, repr(error)
                with lock:
                    load.latencies.append(time.perf_counter() - started)
                    load.started.append(at)
                    if ok:
                        load.versions.add(outcome["model_version"])
                        load.served_rows += len(outcome["request_ids"])
                    else:
                        load.failures.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    if during is not None:
        during(origin)
    for thread in threads:
        thread.join()
    return load


def no_outage_run(args, payload_rows) -> str:
    from threadpoolctl import threadpool_limits

    from retrain_assets.serving.predict import load_production
    from retrain_assets.store import ArtifactStore

    root = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    config, (settings, store, model) = prepare(root)
    batch = payload_rows(model)
    payload = {"model": "churn", "rows": batch.to_dict(orient="records")}
    _, pipeline = load_production(store, ArtifactStore(settings.storage.artifact_root), model)
    baseline = []
    with threadpool_limits(1):  # as `retrain serve` predicts: one OpenMP/BLAS thread per prediction
        for _ in range(200):
            started = time.perf_counter()
            pipeline.predict_proba(batch)
            baseline.append(time.perf_counter() - started)

    server, base = start_server(config, root / "server.log")
    reload = {}
    try:
        def reload_in_the_middle(origin):
            time.sleep(args.seconds / 2)
            store.registry.rollback("churn")  # the registry now says v1: the reload really swaps models
            reload["response"] = httpx.post(f"{base}/model/reload", headers={"Authorization": "Bearer bench"}, timeout=60)

        load = run_load(base, payload, args.seconds, args.concurrency, reload_in_the_middle)
    finally:
        stop_server(server)
    response = reload["response"]
    p50, p99 = np.percentile(load.latencies, [50, 99])
    base_p99 = float(np.percentile(baseline, 99))
    lines = [
        "### Steady load",
        "",
        f"Command: `python benchmarks/serve_bench.py --seconds {args.seconds:g} --concurrency {args.concurrency}`",
        "",
        f"{len(load.latencies):,} requests of 100 rows, {args.concurrency} concurrent clients, {args.seconds:g} s, "
        f"SQLite store, one reload in the middle ({response.status_code}: {response.json()}); versions served: "
        f"{sorted(load.versions)}.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| requests per second | {len(load.latencies) / args.seconds:.1f} |",
        f"| p50 latency | {p50 * 1000:.1f} ms |",
        f"| p99 latency | {p99 * 1000:.1f} ms |",
        f"| failed requests | {len(load.failures)} |",
        f"| baseline: in-process predict_proba of 100 rows (one thread), p99 | {base_p99 * 1000:.1f} ms |",
        "",
        f"Targets: p99 < 1 s -> **{'met' if p99 < 1 else 'NOT met'}**, zero failed requests -> "
        f"**{'met' if not load.failures else 'NOT met'}**. The API's p99 is {p99 / base_p99:.1f}x the in-process "
        f"prediction: strict per-row validation, JSON both ways, and the {args.concurrency} load-generating clients "
        "running on the same cores as the server.",
    ]
    if load.failures:
        print("failures:", load.failures[:5])
    return "\n".join(lines)


def _admin():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


def _refuse_connections(name: str, refuse: bool) -> None:
    """Our benchmark database refuses (and loses) connections, or accepts them again. Never another database."""
    with _admin().connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if refuse else "true"}')
        if refuse:
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def _health(base: str) -> dict:
    return httpx.get(f"{base}/health", timeout=10).json()["prediction_log"]


def outage_run(args, payload_rows) -> str:
    from sqlalchemy import func, select

    from retrain_assets.store.database import open_engine
    from retrain_assets.store.schema import prediction_log

    name = f"retrain_bench_{uuid.uuid4().hex[:10]}"
    with _admin().connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    root = Path(tempfile.mkdtemp(prefix="serve-bench-outage-"))
    try:
        config, (_, store, model) = prepare(root, url)
        payload = {"model": "churn", "rows": payload_rows(model).to_dict(orient="records")}

        def logged() -> int:
            with store.engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(prediction_log)
                                    .where(prediction_log.c.model_name == "churn")).scalar_one()

        before = logged()
        server, base = start_server(config, root / "server.log")
        window = {}
        try:
            def outage(origin):
                start = (args.outage_load_seconds - args.outage_seconds) / 2
                time.sleep(max(0.0, start - (time.monotonic() - origin)))
                window["start"] = time.monotonic() - origin
                _refuse_connections(name, True)
                time.sleep(args.outage_seconds)
                _refuse_connections(name, False)
                window["end"] = time.monotonic() - origin
                window["restored"] = time.monotonic()

            load = run_load(base, payload, args.outage_load_seconds, args.concurrency, outage)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                health = _health(base)
                if health["pending"] == 0 and health["on_disk"] == 0 and health["database"] == "reachable":
                    break
                time.sleep(0.2)
            caught_up = time.monotonic() - window["restored"]
            health = _health(base)
        finally:
            stop_server(server)
        in_log = logged() - before
    finally:
        open_engine.cache_clear()
        with _admin().connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    warnings = [line for line in (root / "server.log").read_text().splitlines() if "prediction log" in line]

    latencies, started = np.asarray(load.latencies), np.asarray(load.started)
    inside = (started >= window["start"]) & (started < window["end"])
    p99_in = float(np.percentile(latencies[inside], 99)) if inside.any() else float("nan")
    p99_out = float(np.percentile(latencies[~inside], 99))
    met = not load.failures and in_log == load.served_rows
    lines = [
        "### Database outage while serving",
        "",
        f"Command: `python benchmarks/serve_bench.py --outage-load-seconds {args.outage_load_seconds:g} "
        f"--outage-seconds {args.outage_seconds:g} --concurrency {args.concurrency}`",
        "",
        f"{len(load.latencies):,} requests of 100 rows, {args.concurrency} concurrent clients, "
        f"{args.outage_load_seconds:g} s on PostgreSQL; from {window['start']:.1f} s to {window['end']:.1f} s the "
        "monitoring database refused every connection (`ALLOW_CONNECTIONS false`, its backends terminated).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| requests | {len(load.latencies):,} |",
        f"| failed requests (all should have succeeded) | {len(load.failures)} |",
        f"| served rows | {load.served_rows:,} |",
        f"| rows in prediction_log once the database is back | {in_log:,} |",
        f"| rows spilled to local disk | {health['spilled']:,} |",
        f"| rows replayed from disk | {health['replayed']:,} |",
        f"| rows found already logged on replay / quarantined | {health['already_logged']} / {health['quarantined']} |",
        f"| write retries and recovery probes | {health['retried']} |",
        f"| time from the database's return to a complete log | {caught_up:.1f} s |",
        f"| p99 latency during the outage / outside it | {p99_in * 1000:.1f} ms / {p99_out * 1000:.1f} ms |",
        "",
        f"Targets: zero failed requests and every served row in prediction_log -> **{'met' if met else 'NOT met'}**.",
        "",
        "The server said:",
        "",
        "```",
        *warnings[:6],
        "```",
    ]
    if load.failures:
        print("failures:", load.failures[:5])
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--outage-load-seconds", type=float, default=60)
    parser.add_argument("--outage-seconds", type=float, default=10)
    parser.add_argument("--no-outage", action="store_true", help="skip the database-outage run (needs PostgreSQL)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from retrain_assets.simulate import generate_traffic

    def payload_rows(model):
        return generate_traffic(100, seed=7)[model.feature_names]

    parts = [no_outage_run(args, payload_rows)]
    print(parts[-1], flush=True)
    if not args.no_outage:
        parts.append(outage_run(args, payload_rows))
        print(parts[-1], flush=True)
    if not args.no_write:
        update_results("Serving", "\n\n".join(parts) + f"\n\nMachine: {machine_description()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
