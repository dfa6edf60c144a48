import datetime as dt

import dagster as dg
import pytest

from retrain_assets.defs.definitions import build_definitions, resources_for
from retrain_assets.defs.deployment.promotion import retrain_in_process
from retrain_assets.defs.keys import TAG_EVENT_ID, TAG_MODEL, TAG_REASON, TAG_SEVERITY, TAG_TRIGGER, retrain_job_name
from retrain_assets.serving.predict import serve_and_log
from retrain_assets.simulate import TrafficScenario, generate_traffic
from retrain_assets.store import ArtifactStore, MonitoringStore


class Harness:
    """Definitions, stores and an instance for one test, with helpers to write traffic and run jobs."""

    def __init__(self, settings, instance):
        self.settings = settings
        self.model = settings.models[0]
        self.defs = build_definitions(settings)
        self.instance = instance
        self.store = MonitoringStore(settings.storage.database_url)
        self.artifacts = ArtifactStore(settings.storage.artifact_root)
        self.clock = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=12)
        self.seed = 0

    def traffic(self, rows, scenario=TrafficScenario(), serve=False, label=True):
        self.seed += 1
        frame = generate_traffic(rows, start=self.clock, interval=dt.timedelta(seconds=5), scenario=scenario,
                                 seed=self.seed, id_prefix=f"t{self.seed}")
        self.clock += dt.timedelta(seconds=5 * rows)
        if serve:
            serve_and_log(self.store, self.artifacts, self.model, frame)
        else:
            self.store.predictions.log_predictions(self.model.log_key, frame, self.model.feature_names)
        if label:
            self.store.predictions.log_labels(self.model.log_key, frame["request_id"].tolist(),
                                              frame[self.model.target].tolist())
        return frame

    def run(self, job_name, tags=None, run_config=None):
        """A job in process; the retrain job followed by its promotion run, as the promotion sensor would."""
        model = next((m for m in self.settings.models if retrain_job_name(m.name) == job_name), None)
        if model is not None:
            return retrain_in_process(self.defs, self.instance, self.store, model, tags=tags or {},
                                      run_config=run_config)
        return self.defs.resolve_job_def(job_name).execute_in_process(
            instance=self.instance, tags=tags or {}, run_config=run_config or {}, raise_on_error=False
        )

    def retrain(self, reason="test", event=False):
        tags = {TAG_MODEL: self.model.name, TAG_TRIGGER: "manual", TAG_SEVERITY: "LOW", TAG_REASON: reason}
        if event:
            tags[TAG_EVENT_ID] = str(self.store.events.record_trigger(
                self.model.name, trigger_type="manual", severity="LOW", reason=reason))
        return self.run(retrain_job_name(self.model.name), tags)

    def sensor_tick(self, name, cursor=None):
        sensor = self.defs.resolve_sensor_def(name)
        with dg.build_sensor_context(instance=self.instance, cursor=cursor, definitions=self.defs,
                                     resources=resources_for(self.settings)) as context:
            return sensor.evaluate_tick(context)


@pytest.fixture
def harness_for(tmp_path):
    instances = []

    def make(settings, instance=None):
        if instance is None:
            instance = dg.DagsterInstance.ephemeral()
            instances.append(instance)
        return Harness(settings, instance)

    yield make
    for instance in instances:
        instance.dispose()
