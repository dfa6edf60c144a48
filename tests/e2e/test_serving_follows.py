"""End to end: the loop's own decisions reach a running server, with no reload call anywhere.

A real uvicorn server serves the churn model; all live traffic and its labels go through HTTP
(`/predict/batch`, `/labels`). Drifted traffic makes the monitor run and the retrain sensor start a retrain
whose promotion the server picks up by itself; then the new model misjudges a changed population, the
post-deploy watch asks for a rollback, and the rollback reaches the server too (from memory: the standby).
"""

import datetime as dt

import dagster as dg
import httpx
import pytest

from retrain_assets.defs.deployment.rollback import rollback_job_name
from retrain_assets.defs.keys import TAG_TRIGGER, monitor_job_name, retrain_job_name
from retrain_assets.serving.api import create_app
from retrain_assets.simulate import TrafficScenario, generate_traffic
from tests.conftest import make_settings
from tests.defs.conftest import Harness
from tests.faults.conftest import running, wait_until
from tests.serving.conftest import TOKEN, quick

pytestmark = pytest.mark.slow
LOOSE = {"max_f1_drop": 1.0, "max_auc_drop": 1.0, "max_relative_drop": 1.0, "significance_tolerance": 1.0}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def serve(http: httpx.Client, writer, h: Harness, rows: int, scenario=TrafficScenario(), label: bool = True) -> set[str]:
    """Send ``rows`` simulated requests through the API (and their labels, if asked); the versions that answered."""
    h.seed += 1
    frame = generate_traffic(rows, start=dt.datetime.now(dt.timezone.utc), scenario=scenario, seed=h.seed,
                             id_prefix=f"http{h.seed}-")
    features = frame[h.model.feature_names].astype(object)
    versions = set()
    for start in range(0, rows, 100):
        chunk = frame.iloc[start:start + 100]
        body = {"model": "churn", "rows": features.iloc[start:start + 100].where(chunk[h.model.feature_names].notna(), None)
                .to_dict(orient="records"), "request_ids": chunk["request_id"].tolist()}
        response = http.post("/predict/batch", json=body)
        assert response.status_code == 200, response.text
        versions.add(response.headers["X-Model-Version"])
    assert writer.flush(60)  # served rows are in prediction_log before anyone reads them
    if label:
        items = [{"request_id": r, "label": int(y)} for r, y in zip(frame["request_id"], frame[h.model.target])]
        for start in range(0, rows, 1000):
            answer = http.post("/labels", headers=AUTH, json={"model": "churn", "labels": items[start:start + 1000]})
            assert answer.status_code == 200 and answer.json()["rejected"] == 0, answer.text
    return versions


def served_version(http: httpx.Client) -> str:
    return http.get("/readyz").json()["models"]["churn"]["serving"]


def test_a_sensor_triggered_promotion_and_a_watch_rollback_reach_a_running_server(tmp_path):
    settings = make_settings(tmp_path, gates=LOOSE)
    with dg.DagsterInstance.ephemeral() as instance:
        h = Harness(settings, instance)
        h.traffic(3000)
        assert h.retrain().success and h.store.registry.production("churn").version == 1
        app = create_app(settings, token=TOKEN, serving=quick(tmp_path))
        with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
            writer = app.state.log_writer
            assert serve(http, writer, h, 2000) == {"v1"}  # v1's live record, labeled through /labels

            # Drifted traffic -> monitor run -> the retrain sensor's run request -> retrain and promotion.
            assert serve(http, writer, h, 2000, TrafficScenario(covariate_drift=1.5)) == {"v1"}  # labeled: learnable
            assert h.run(monitor_job_name("churn")).success
            tick = h.sensor_tick("churn_retrain_sensor")
            assert len(tick.run_requests) == 1, tick.skip_message
            request = tick.run_requests[0]
            assert h.run(retrain_job_name("churn"), tags=request.tags).success
            assert h.store.registry.production("churn").version == 2
            wait_until(lambda: served_version(http) == "v2", 60, "the promotion to reach the server")
            assert serve(http, writer, h, 300) == {"v2"}  # healthy at first

            # The population's behaviour changes: v2 misjudges it live; the watch rolls back.
            assert serve(http, writer, h, 600, TrafficScenario(concept_drift=True)) == {"v2"}
            watch = h.sensor_tick("churn_post_deploy_watch")
            assert len(watch.run_requests) == 1, watch.skip_message
            rollback = watch.run_requests[0]
            assert rollback.tags[TAG_TRIGGER] == "post_deploy_watch"
            assert h.run(rollback_job_name("churn"), tags=rollback.tags).success
            wait_until(lambda: served_version(http) == "v1", 60, "the rollback to reach the server")
            assert serve(http, writer, h, 100, label=False) == {"v1"}
            loads = http.get("/metrics").text
            assert 'retrain_model_loads_total{model="churn",outcome="reused",version="v1"}' in loads
