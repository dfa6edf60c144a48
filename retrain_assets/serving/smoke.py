"""The serving smoke test: before a candidate takes traffic, sample requests go through the serving path
with the candidate in a slot (seed 004: smoke tests against the standby slot, scores in [0, 1], p99 < 1 s).

Why, beside the in-process smoke gate of the retrain run: that gate calls the pipeline on the DataFrame it
was trained with. A server sees something else: the artifact read back from the store and verified by its
checksum, a JSON body validated strictly by the request schema, a frame built column by column
(``features_frame``), one request at a time. A model can pass the first and fail the second (a dtype the
schema turns into another, a category column that arrives as None). This test takes the server's path:
the candidate is loaded into a :class:`~retrain_assets.serving.slots.Slot` as a server loads a standby,
each sample row is JSON-encoded and decoded, validated with the servers' limits (a row the schema refuses
would be a 422 for the client, so it is skipped, not held against the model), framed and predicted alone,
and the answers are judged: every request answered, scores in [0, 1] (classification) or finite predictions (regression), and
p99 request latency under ``gates.max_latency_p99_s``.
"""

import json
import time

import numpy as np
import pandas as pd
from pydantic import ValidationError

from retrain_assets.serving.log_writer import features_frame
from retrain_assets.serving.predict import predict_frame
from retrain_assets.serving.schemas import row_adapter
from retrain_assets.serving.slots import Slot
from retrain_assets.settings import ModelSettings, ServingSettings
from retrain_assets.store import ArtifactStore, ModelVersion, MonitoringStore
from retrain_assets.training.gates import GateResult

GATE = "serving_smoke_test"


def json_rows(frame: pd.DataFrame, model: ModelSettings) -> list[dict]:
    """The rows as a client sends them: JSON text (missing values as null), decoded again."""
    features = frame[model.feature_names].astype(object)
    records = features.where(features.notna(), None).to_dict(orient="records")
    return json.loads(json.dumps(records, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def smoke_samples(store: MonitoringStore, artifacts: ArtifactStore, model: ModelSettings, candidate: ModelVersion,
                  requests: int) -> pd.DataFrame:
    """What to send: the newest requests served (what clients really send), topped up with the newest rows
    of the candidate's own dataset while fewer have been served (the first model, a quiet model)."""
    recent = store.predictions.recent_window(model.log_key, model.feature_names, rows=requests)[model.feature_names]
    if len(recent) >= requests:
        return recent
    dataset = store.registry.dataset(model.name, candidate.dataset_tag)
    rows = artifacts.load_frame(dataset.artifact_key, dataset.artifact_sha256)[model.feature_names]
    return pd.concat([recent, rows.tail(requests - len(recent))], ignore_index=True)


def serving_smoke_test(model: ModelSettings, serving: ServingSettings, artifacts: ArtifactStore,
                       candidate: ModelVersion, samples: pd.DataFrame, max_p99_s: float) -> GateResult:
    """Send ``samples`` (one request per row) through the serving path to ``candidate``."""
    threshold = {"requests": len(samples), "max_p99_s": max_p99_s, "scores": "[0, 1]" if model.task == "classification"
                 else "finite"}
    try:
        slot = Slot(candidate, artifacts.load_model(candidate.artifact_key, candidate.artifact_sha256))
    except Exception as error:  # noqa: BLE001 - a load failure is exactly what this test reports
        return GateResult(GATE, False, True, {"requests": 0}, threshold,
                          f"the serving path refused {candidate.label} before any request: {type(error).__name__}: "
                          f"{str(error)[:300]}")
    adapter = row_adapter(model, serving)
    rows, latencies, problems = json_rows(samples, model), [], []
    for row in rows:
        try:
            [typed] = adapter.validate_python([row])
        except ValidationError:  # a sample the server would refuse with a 422: the client's problem, not the model's
            continue
        start = time.perf_counter()
        try:
            predictions, scores = predict_frame(slot.pipeline, features_frame(model, [typed]), model)
        except Exception as error:  # noqa: BLE001 - a request the server would answer with a 500
            problems.append(f"a request raised {type(error).__name__}: {str(error)[:200]}")
            continue
        latencies.append(time.perf_counter() - start)
        if model.task == "classification":
            if scores is not None and not all(s is not None and 0.0 <= s <= 1.0 for s in scores):
                problems.append(f"score {scores[0]} outside [0, 1]")
        elif not np.all(np.isfinite(np.asarray(predictions, dtype=float))):
            problems.append(f"non-finite prediction {predictions[0]}")
    p99 = float(np.quantile(latencies, 0.99)) if latencies else None
    if not latencies and not problems:
        return GateResult(GATE, False, True, {"requests": len(rows), "answered": 0}, threshold,
                          "serving smoke test failed: the request schema refused every sample row (see the /predict/batch "
                          "422s for these rows)")
    value = {"requests": len(rows), "answered": len(latencies), "problems": len(problems),
             "p99_s": round(p99, 6) if p99 is not None else None}
    if p99 is not None and p99 >= max_p99_s:
        problems.append(f"p99 request latency {p99:.3f} s >= {max_p99_s:g} s")
    if problems:
        shown = "; ".join(dict.fromkeys(problems))  # each kind once
        return GateResult(GATE, False, True, value, threshold, f"serving smoke test failed: {shown[:500]}")
    return GateResult(GATE, True, True, value, threshold,
                      f"{len(rows)} requests through the serving path answered with valid "
                      f"{'scores' if model.task == 'classification' else 'predictions'}, p99 {1000 * p99:.1f} ms")
