"""Builds the Dagster Definitions for every model declared in the configuration."""

import dagster as dg
from sqlalchemy.engine import make_url

from retrain_assets.defs.deployment.assets import build_model_card
from retrain_assets.defs.deployment.promotion import build_promotion_sensor
from retrain_assets.defs.deployment.rollback import build_rollback_job
from retrain_assets.defs.deployment.canary import build_canary_job, build_canary_sensor
from retrain_assets.defs.deployment.shadow import build_shadow_job, build_shadow_sensor
from retrain_assets.defs.deployment.watch import build_watch_sensor
from retrain_assets.defs.keys import TAG_CONCURRENCY, TAG_MODEL, asset_key, monitor_job_name, promote_job_name, retrain_job_name
from retrain_assets.defs.monitoring.assets import build_monitoring_assets
from retrain_assets.defs.resources import ArtifactStoreResource, DataSourceResource, MonitoringStoreResource
from retrain_assets.defs.schedules import build_schedules
from retrain_assets.defs.training.assets import build_training_assets
from retrain_assets.defs.triggers.sensors import build_trigger_sensors
from retrain_assets.settings import ModelSettings, RetrainSettings
from retrain_assets.store.database import ENV_PREFIX, normalize_url, resolve_url


def build_jobs(model: ModelSettings) -> list:
    model_name = model.name
    # dagster/max_runtime: run monitoring stops a run that runs away (a hung step, a lost worker).
    tags = {TAG_MODEL: model_name, TAG_CONCURRENCY: model_name,
            "dagster/max_runtime": str(int(model.triggers.run_timeout_minutes * 60))}
    retrain = dg.define_asset_job(
        retrain_job_name(model_name),
        # Building the job from the asset selection brings the blocking checks along: a failed gate fails
        # this run, and only a run that succeeded is promoted (by the promotion sensor, in a run of its own).
        selection=dg.AssetSelection.assets(*(asset_key(model_name, a) for a in ("training_dataset", "candidate_model"))),
        description=f"Build a dataset, train a candidate and gate it against production ({model_name}); "
                    f"{promote_job_name(model_name)} follows when every gate passes.",
        tags=tags,
    )
    promote = dg.define_asset_job(
        promote_job_name(model_name),
        selection=dg.AssetSelection.assets(*(asset_key(model_name, a) for a in ("production_model", "model_card"))),
        description=f"Promote the gated candidate of a successful {retrain_job_name(model_name)} run (named by its "
                    "retrain/candidate_run tag) and refresh the model card; launched by the promotion sensor.",
        tags=tags,
    )
    monitor = dg.define_asset_job(
        monitor_job_name(model_name),
        selection=dg.AssetSelection.assets(
            *(asset_key(model_name, a) for a in ("drift_report", "performance_report", "retrain_decision"))
        ),
        description=f"Drift and performance reports of {model_name}'s production model, and the retrain decision.",
        tags={TAG_MODEL: model_name},
    )
    return [retrain, promote, monitor]


def resources_for(settings: RetrainSettings) -> dict:
    return {
        "monitoring_store": MonitoringStoreResource(database_url=settings.storage.database_url),
        "artifact_store": ArtifactStoreResource(root=settings.storage.artifact_root),
        "data_source": DataSourceResource(database_url=settings.storage.database_url),
    }


def store_kind(database_url: str) -> str:
    """The Dagster kind (icon and filter in the UI) of the database the assets record into."""
    if database_url.startswith(ENV_PREFIX):  # the scheme is all we need: read it without keeping the secret
        database_url = resolve_url(database_url)
    backend = make_url(normalize_url(database_url)).get_backend_name()
    return "postgres" if backend == "postgresql" else backend


def label_model_assets(assets: list, model: ModelSettings, kind: str) -> list:
    """Every asset of a model carries the same labels, set here once: its model and task as tags (filter
    the catalog with ``model=churn``) and the monitoring database's kind."""
    return dg.map_asset_specs(
        lambda spec: spec.merge_attributes(kinds={kind}, tags={"model": model.name, "task": model.task}), assets
    )


def build_definitions(settings: RetrainSettings) -> dg.Definitions:
    assets, checks, jobs, sensors, schedules = [], [], [], [], []
    kind = store_kind(settings.storage.database_url)
    for model in settings.models:
        mine = []
        for definition in [*build_training_assets(model, settings.serving), *build_monitoring_assets(model),
                           build_model_card(model)]:
            (checks if isinstance(definition, dg.AssetChecksDefinition) else mine).append(definition)
        assets += label_model_assets(mine, model, kind)
        retrain, promote, monitor = build_jobs(model)
        model_jobs = [retrain, promote, monitor, build_rollback_job(model), build_shadow_job(model), build_canary_job(model)]
        jobs += model_jobs
        sensors += [*build_trigger_sensors(model, model_jobs), build_promotion_sensor(model, retrain, promote),
                    build_watch_sensor(model), build_shadow_sensor(model), build_canary_sensor(model)]
        schedules += build_schedules(model)
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        sensors=sensors,
        schedules=schedules,
        resources=resources_for(settings),
        # Small ML steps: starting a process per step costs more than the step (6-7 s each here).
        executor=dg.in_process_executor,
    )
