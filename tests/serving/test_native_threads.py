"""The thread that predicts uses one OpenMP thread, without OMP_NUM_THREADS in the environment: OpenMP's
thread count is per calling thread, so a limit set in the main thread would not reach it, and every
prediction of every worker process would use every core."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import environment_without_thread_limits

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from pathlib import Path
import httpx
from retrain_assets.serving.api import create_app
from retrain_assets.simulate import generate_traffic
from retrain_assets.training.pipeline import build_pipeline, default_params
from tests.conftest import make_settings
from tests.faults.conftest import running, traffic_rows
from tests.serving.conftest import ThreadCounter, quick, register
from retrain_assets.store import MonitoringStore

root = Path(sys.argv[1])
settings = make_settings(root)
model = settings.models[0]
frame = generate_traffic(600, seed=3)
pipeline = build_pipeline(model, default_params(model, model.training), seed=0).fit(frame[model.feature_names],
                                                                                     frame[model.target])
register(settings, MonitoringStore(settings.storage.database_url), ThreadCounter(pipeline), 1)
with running(create_app(settings, serving=quick(root))) as base:
    assert httpx.post(f"{base}/predict/batch", json={"model": "churn", "rows": traffic_rows(5)}, timeout=60).status_code == 200
print("openmp threads:", ThreadCounter.seen)
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: OpenMP uses one thread whatever the limit")
def test_the_prediction_thread_uses_one_openmp_thread(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         env=environment_without_thread_limits(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "openmp threads: [1]" in out.stdout, out.stdout
