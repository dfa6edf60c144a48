"""Several models in one code location: each its own group, jobs, sensors and schedules, labeled for the
UI, and one model's retrain never blocks another's."""

import datetime as dt

import dagster as dg

from retrain_assets.defs.keys import TAG_CONCURRENCY, TAG_TRIGGER, monitor_job_name, retrain_job_name
from retrain_assets.settings import settings_from_dict
from retrain_assets.simulate import TrafficScenario, generate_traffic, model_config

IMMEDIATE = {"cooldown_hours": 0, "quiet_start_hour": 0, "quiet_end_hour": 24}
MODELS = ("churn", "demand")


def two_models(tmp_path, database_url=None):
    fast = {"training": {"tuning_trials": 0}, "triggers": IMMEDIATE}
    return settings_from_dict({
        "storage": {"database_url": database_url or f"sqlite:///{tmp_path}/monitoring.db",
                    "artifact_root": str(tmp_path / "artifacts")},
        "models": [
            {**model_config("churn"), **fast, "owners": ["team:retention"], "description": "who cancels"},
            {**model_config("demand", task="regression"), **fast, "owners": ["team:capacity"]},
        ],
    })


def log_traffic(h, rows, scenario=TrafficScenario(), serve=False):
    from retrain_assets.serving.predict import serve_and_log

    h.seed += 1
    frame = generate_traffic(rows, start=h.clock, interval=dt.timedelta(seconds=5), scenario=scenario, seed=h.seed,
                             id_prefix=f"t{h.seed}")
    h.clock += dt.timedelta(seconds=5 * rows)
    for model in h.settings.models:
        if serve:
            serve_and_log(h.store, h.artifacts, model, frame)
        else:
            h.store.predictions.log_predictions(model.log_key, frame, model.feature_names)
        h.store.predictions.log_labels(model.log_key, frame["request_id"].tolist(), frame[model.target].tolist())


KINDS_WITH_ICONS = {"pandas", "parquet", "greatexpectations", "scikitlearn", "optuna", "scipy", "matplotlib", "sqlite",
                    "postgres"}


def test_each_model_gets_its_own_labeled_dagster_objects(tmp_path):
    from retrain_assets.defs.definitions import build_definitions

    defs = build_definitions(two_models(tmp_path))
    specs = list(defs.resolve_all_asset_specs())
    assert {s.group_name for s in specs} == set(MODELS)
    for spec in specs:
        model = spec.key.path[0]
        assert spec.group_name == model and spec.tags["model"] == model
        assert spec.description and len(spec.description) > 40, spec.key
        assert spec.owners == (["team:retention"] if model == "churn" else ["team:capacity"])
        # Only kinds the UI draws with an icon (its list, in dagster-webserver's bundle): "sklearn" or
        # "markdown" would show as bare words.
        assert "sqlite" in spec.kinds and spec.kinds <= KINDS_WITH_ICONS, spec.kinds
    assert {s.tags["task"] for s in specs if s.key.path[0] == "demand"} == {"regression"}
    repository = defs.get_repository_def()
    for model in MODELS:
        job = defs.resolve_job_def(retrain_job_name(model))
        assert job.tags[TAG_CONCURRENCY] == model  # the queue's limit is one retrain per model, not overall
        assert {f"{model}_retrain_sensor", f"{model}_post_deploy_watch",
                f"{model}_retrain_failure_sensor"} <= {s.name for s in repository.sensor_defs}
        assert {f"{model}_scheduled_retrain", f"{model}_monitoring"} <= {s.name for s in repository.schedule_defs}
    graph = defs.resolve_asset_graph()
    checks = {key.name for key in graph.asset_check_keys if key.asset_key.path[0] == "demand"}
    assert {"absolute_thresholds", "relative_to_production", "columns_and_types"} <= checks
    gate = graph.get_check_spec(dg.AssetCheckKey(dg.AssetKey(["demand", "candidate_model"]), "absolute_thresholds"))
    assert "R2 >= 0.6" in gate.description  # the rule and this model's threshold, before any result


def test_a_retrain_in_flight_for_one_model_does_not_block_the_other(tmp_path, harness_for):
    h = harness_for(two_models(tmp_path))
    log_traffic(h, 3000)
    for model in MODELS:
        assert h.run(retrain_job_name(model), tags={TAG_TRIGGER: "manual"}).success, model
    assert {m: h.store.registry.production(m).label for m in MODELS} == {"churn": "v1", "demand": "v1"}
    log_traffic(h, 3000, scenario=TrafficScenario(covariate_drift=0.6, concept_drift=True), serve=True)
    for model in MODELS:
        assert h.run(monitor_job_name(model)).success
    # churn's triggered retrain is queued (as the daemon would submit it) and not finished.
    churn_tick = h.sensor_tick("churn_retrain_sensor")
    assert len(churn_tick.run_requests) == 1
    h.instance.create_run_for_job(h.defs.resolve_job_def(retrain_job_name("churn")), tags=churn_tick.run_requests[0].tags)
    assert "already queued or running" in h.sensor_tick("churn_retrain_sensor").skip_message
    # demand's own decision still requests its retrain, and it runs to promotion meanwhile.
    demand_tick = h.sensor_tick("demand_retrain_sensor")
    assert len(demand_tick.run_requests) == 1, demand_tick.skip_message
    assert h.run(retrain_job_name("demand"), tags=demand_tick.run_requests[0].tags).success
    assert h.store.registry.production("demand").label == "v2"
    assert h.store.registry.production("churn").label == "v1"
    events = {e["model_name"]: e for e in h.store.events.recent(None) if e["execution_attempted"] and e["trigger_type"] != "manual"}
    assert set(events) == set(MODELS)
