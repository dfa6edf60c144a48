"""The serving tests reuse the fault tests' real parts: a database made per test (SQLite file or a fresh
PostgreSQL database), real outages on it, a real uvicorn server in a thread, one fitted churn model."""

import copy
import os
import time

import numpy as np

import pytest

from retrain_assets.config.serving import ServingSettings
from retrain_assets.store import ArtifactStore, ModelVersion, MonitoringStore
from tests.faults.conftest import backend, churn_pipeline, logs, pg_backend

__all__ = ["ThreadCounter", "WrappedModel", "auth", "backend", "churn_pipeline", "logs", "pg_backend", "quick", "register"]  # fixtures of this folder
TOKEN = "serving-token"


def quick(tmp_path, **overrides) -> ServingSettings:
    """Serving settings that follow the registry within a fraction of a second and notice outages fast."""
    values = {"spill_dir": str(tmp_path / "spill"), "registry_poll_seconds": 0.1, "retry_attempts": 1,
              "retry_initial_seconds": 0.05, "retry_max_seconds": 0.5, "database_timeout_seconds": 1,
              "shutdown_seconds": 5}
    return ServingSettings(**(values | overrides))


def register(settings, store: MonitoringStore, pipeline, tag: int, promote: bool = True) -> ModelVersion:
    """Register a copy of ``pipeline`` made distinct by ``tag`` (so its artifact, and checksum, differ) and
    promote it unless told not to."""
    distinct = copy.deepcopy(pipeline)
    distinct.retrain_test_tag = tag
    ref = ArtifactStore(settings.storage.artifact_root).put_model(distinct)
    version = store.registry.register_candidate(
        "churn", artifact_key=ref.key, artifact_sha256=ref.sha256, size_bytes=ref.size_bytes,
        dataset_tag=f"v{tag}-serving", dataset_hash="0" * 64, params={}, metrics={"f1": 0.5 + tag / 100})
    if promote:
        store.registry.promote("churn", version.version)
    return version


@pytest.fixture
def auth():
    return {"Authorization": f"Bearer {TOKEN}"}


class WrappedModel:
    """A real fitted model whose ``predict_proba`` a test changes (records, waits, fails, distorts); ``predict``
    follows it, so a subclass overrides ``predict_proba`` only. Subclasses live at module level: the artifact
    store pickles them."""

    def __init__(self, inner):
        self.inner = inner

    @property
    def classes_(self):
        return self.inner.classes_

    def predict_proba(self, frame):
        return self.inner.predict_proba(frame)

    def predict(self, frame):
        return np.asarray(self.classes_)[np.asarray(self.predict_proba(frame)).argmax(axis=1)]


class SlowToLoad(WrappedModel):
    """Takes ``RETRAIN_TEST_LOAD_SECONDS`` (environment) to unpickle: a server process whose models take long
    to load. Without the variable (the test's own process) it loads at once."""

    def __setstate__(self, state):
        time.sleep(float(os.environ.get("RETRAIN_TEST_LOAD_SECONDS", "0")))
        self.__dict__.update(state)


class ThreadCounter(WrappedModel):
    """Records how many OpenMP threads the thread predicting with it may use."""

    seen: list = []

    def predict_proba(self, frame):
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

        ThreadCounter.seen.append(_openmp_effective_n_threads())
        return self.inner.predict_proba(frame)
