"""The serving smoke test: sample requests through the serving path (artifact load, JSON, the request
schema, the frame a server builds) before a candidate takes traffic."""

import datetime as dt

from retrain_assets.config.serving import ServingSettings
from retrain_assets.serving.smoke import serving_smoke_test
from retrain_assets.simulate import generate_traffic
from tests.faults.conftest import Backend, served_settings
from tests.serving.conftest import WrappedModel, register


class Overconfident(WrappedModel):
    """Predicts like the real model, but its scores leave [0, 1] (a broken calibration step, say)."""

    def predict_proba(self, frame):
        return self.inner.predict_proba(frame) * 1.5


class NumbersOnly(WrappedModel):
    """Predicts on the training frame, but crashes on a categorical column holding None (as JSON null)."""

    def predict_proba(self, frame):
        if frame.isna().any().any():
            raise TypeError("'<' not supported between instances of 'NoneType' and 'str'")
        return self.inner.predict_proba(frame)


def setup(tmp_path, churn_pipeline):
    path = tmp_path / "monitoring.db"
    settings, store = served_settings(tmp_path, Backend("sqlite", f"sqlite:///{path}", path=path), churn_pipeline)
    samples = generate_traffic(100, seed=9, start=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    samples.loc[samples.index[:5], "region"] = None  # a client leaves some values out
    from retrain_assets.store import ArtifactStore

    return settings, store, ArtifactStore(settings.storage.artifact_root), samples


def test_a_sound_candidate_answers_every_request_with_valid_scores(tmp_path, churn_pipeline):
    settings, store, artifacts, samples = setup(tmp_path, churn_pipeline)
    candidate = register(settings, store, churn_pipeline, 2, promote=False)
    # A limit no busy machine reaches: this test is about answers, the p99 limit has its own (1e-9 s) below.
    result = serving_smoke_test(settings.model("churn"), ServingSettings(), artifacts, candidate, samples, 600.0)
    assert result.passed and result.value["requests"] == result.value["answered"] == 100, result.message
    assert result.value["p99_s"] > 0


def test_scores_outside_0_1_a_crash_on_a_null_and_a_corrupt_artifact_fail_it(tmp_path, churn_pipeline):
    settings, store, artifacts, samples = setup(tmp_path, churn_pipeline)
    model = settings.model("churn")
    overconfident = register(settings, store, Overconfident(churn_pipeline), 2, promote=False)
    result = serving_smoke_test(model, ServingSettings(), artifacts, overconfident, samples, 1.0)
    assert not result.passed and "outside [0, 1]" in result.message
    picky = register(settings, store, NumbersOnly(churn_pipeline), 3, promote=False)
    result = serving_smoke_test(model, ServingSettings(), artifacts, picky, samples, 1.0)
    assert not result.passed and result.value["answered"] == 95 and "TypeError" in result.message
    (tmp_path / "artifacts" / overconfident.artifact_key).write_bytes(b"not a model")
    result = serving_smoke_test(model, ServingSettings(), artifacts, overconfident, samples, 1.0)
    assert not result.passed and result.value["requests"] == 0 and "refused v2 before any request" in result.message
    sound = register(settings, store, churn_pipeline, 4, promote=False)
    slow = serving_smoke_test(model, ServingSettings(), artifacts, sound, samples, 1e-9)  # p99 judged against the limit
    assert not slow.passed and "p99 request latency" in slow.message


def test_rows_the_request_schema_refuses_are_skipped_and_the_servers_limits_apply(tmp_path, churn_pipeline):
    """A sample the server would answer with a 422 is the client's problem: skipped, not held against the
    model; the schema is the one the servers use (their max_category_length)."""
    settings, store, artifacts, samples = setup(tmp_path, churn_pipeline)
    model = settings.model("churn")
    candidate = register(settings, store, churn_pipeline, 2, promote=False)
    samples.loc[samples.index[:10], "region"] = "r" * 300  # longer than the default 256
    default = serving_smoke_test(model, ServingSettings(), artifacts, candidate, samples, 600.0)
    assert default.passed and default.value["answered"] == 90
    wide = serving_smoke_test(model, ServingSettings(max_category_length=1000), artifacts, candidate, samples, 600.0)
    assert wide.passed and wide.value["answered"] == 100
    samples["region"] = "r" * 300
    refused = serving_smoke_test(model, ServingSettings(), artifacts, candidate, samples, 1.0)
    assert not refused.passed and "refused every sample row" in refused.message
