"""`make test` runs the suite on several pytest-xdist workers: each worker's OpenMP and BLAS pools get its share
of the CPUs (tests/conftest.py), else workers x cores spinning threads oversubscribe the machine."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import environment_without_thread_limits

REPO = Path(__file__).resolve().parents[1]


def test_xdist_workers_get_their_share_of_native_threads():
    completed = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-q",
                                "tests/xdist_probe.py"], cwd=REPO, env=environment_without_thread_limits(),
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "1 passed" in completed.stdout
