"""Serving benchmark: 100-row batches at concurrency 8 for 30 s against a real uvicorn server, with one
/model/reload (to a different model version) in the middle.

Run: ``make bench`` or ``.venv/bin/python benchmarks/serve_bench.py [--seconds 30] [--concurrency 8]``.
Targets: p99 under 1 s and zero failed requests. The baseline, measured in the same run, is the same
100-row prediction called in process (no HTTP, no logging): the ratio is what the API adds.
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
from pathlib import Path

import httpx
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import machine_description, update_results  # noqa: E402


def prepare(root: Path) -> tuple[Path, object]:
    import dagster as dg

    from retrain_assets.defs.definitions import build_definitions
    from retrain_assets.settings import load_settings
    from retrain_assets.simulate import generate_traffic, model_config
    from retrain_assets.store import MonitoringStore

    loose = {"max_f1_drop": 1.0, "max_auc_drop": 1.0, "max_relative_drop": 1.0, "significance_tolerance": 1.0}
    config = root / "retrain.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"database_url": f"sqlite:///{root}/monitoring.db", "artifact_root": str(root / "artifacts")},
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
            assert defs.resolve_job_def("churn_retrain").execute_in_process(instance=instance).success
    return config, (settings, store, model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from retrain_assets.serving.predict import load_production
    from retrain_assets.simulate import generate_traffic
    from retrain_assets.store import ArtifactStore

    root = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    config, (settings, store, model) = prepare(root)
    batch = generate_traffic(100, seed=7)[model.feature_names]
    payload = {"model": "churn", "rows": batch.to_dict(orient="records")}

    _, pipeline = load_production(store, ArtifactStore(settings.storage.artifact_root), model)
    baseline = []
    for _ in range(200):
        started = time.perf_counter()
        pipeline.predict_proba(batch)
        baseline.append(time.perf_counter() - started)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("retrain")), "--config", str(config), "serve", "--port", str(port)],
        env={**os.environ, "RETRAIN_API_TOKEN": "bench"}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/docs", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        latencies, failures, versions = [], [], set()
        lock = threading.Lock()
        stop = time.monotonic() + args.seconds

        def client():
            with httpx.Client(timeout=30) as http:
                while time.monotonic() < stop:
                    started = time.perf_counter()
                    try:
                        response = http.post(f"{base}/predict/batch", json=payload)
                        ok = response.status_code == 200
                        version = response.json().get("model_version") if ok else response.text[:100]
                    except httpx.HTTPError as error:
                        ok, version = False, str(error)
                    with lock:
                        latencies.append(time.perf_counter() - started)
                        (versions.add(version) if ok else failures.append(version))

        threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
        for thread in threads:
            thread.start()
        time.sleep(args.seconds / 2)
        store.registry.rollback("churn")  # the registry now says v1: the reload really swaps models
        reload = httpx.post(f"{base}/model/reload", headers={"Authorization": "Bearer bench"}, timeout=60)
        for thread in threads:
            thread.join()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    p50, p99 = np.percentile(latencies, [50, 99])
    base_p99 = float(np.percentile(baseline, 99))
    lines = [
        f"{len(latencies):,} requests of 100 rows, {args.concurrency} concurrent clients, {args.seconds:g} s, "
        f"one reload in the middle ({reload.status_code}: {reload.json()}); versions served: {sorted(versions)}.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| requests per second | {len(latencies) / args.seconds:.1f} |",
        f"| p50 latency | {p50 * 1000:.1f} ms |",
        f"| p99 latency | {p99 * 1000:.1f} ms |",
        f"| failed requests | {len(failures)} |",
        f"| baseline: in-process predict_proba of 100 rows, p99 | {base_p99 * 1000:.1f} ms |",
        "",
        f"Targets: p99 < 1 s -> **{'met' if p99 < 1 else 'NOT met'}**, zero failed requests -> "
        f"**{'met' if not failures else 'NOT met'}**. The API's p99 is {p99 / base_p99:.1f}x the in-process "
        f"prediction: per-row validation, JSON both ways, and the {args.concurrency} load-generating clients running "
        f"in this process on the same cores as the server.",
    ]
    text = "\n".join(lines)
    print(text)
    if failures:
        print("failures:", failures[:5])
    if not args.no_write:
        update_results("Serving", f"Command: `python benchmarks/serve_bench.py --seconds {args.seconds:g} "
                       f"--concurrency {args.concurrency}`\n\n{text}\n\nMachine: {machine_description()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
