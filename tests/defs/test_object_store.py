"""Artifacts through a configured object store: a retrain and a monitoring run that keep no local files."""

import uuid

import fsspec

from retrain_assets.defs.keys import TAG_TRIGGER, monitor_job_name, retrain_job_name
from retrain_assets.simulate import TrafficScenario
from tests.conftest import make_settings


def test_models_datasets_and_pictures_go_to_the_configured_store(tmp_path, harness_for, monkeypatch):
    root = f"memory://retrain-{uuid.uuid4().hex}"  # fsspec's in-memory filesystem: an object store in process
    monkeypatch.setenv("RETRAIN_ARTIFACT_ROOT", root)
    settings = make_settings(tmp_path)
    assert settings.storage.artifact_root == root
    h = harness_for(settings)
    h.traffic(3000)
    assert h.retrain().success
    h.traffic(1000, scenario=TrafficScenario(covariate_drift=0.6), serve=True)
    assert h.run(monitor_job_name("churn"), tags={TAG_TRIGGER: "schedule"}).success
    fs, base = fsspec.core.url_to_fs(root)
    stored = fs.find(base)
    suffixes = {path.rsplit(".", 1)[-1] for path in stored}
    assert {"joblib", "parquet", "json", "png"} <= suffixes, stored  # model, dataset, profile, drift picture
    assert not (tmp_path / "artifacts").exists()
    production = h.store.registry.production("churn")
    assert fs.exists(f"{base}/{production.artifact_key}")
    # A second retrain reads production back from the store: its gates compare against it (whatever the verdict).
    second = h.run(retrain_job_name("churn"))
    relative = next(e for e in second.get_asset_check_evaluations() if e.check_name == "relative_to_production")
    assert relative.metadata["compared_with"].value == "production v1"
