"""The post-deploy watch sensor: rolls a freshly promoted model back when it does worse live."""

import datetime as dt

import dagster as dg

from retrain_assets.defs.automation import model_sensor
from retrain_assets.defs.deployment.rollback import rollback_job_name
from retrain_assets.defs.keys import TAG_MODEL, TAG_REASON, TAG_SEVERITY, TAG_TRIGGER, short
from retrain_assets.defs.resources import MonitoringStoreResource
from retrain_assets.monitoring.watch import post_deploy_verdict
from retrain_assets.metrics import compute_metrics
from retrain_assets.settings import ModelSettings


def build_watch_sensor(model: ModelSettings) -> dg.SensorDefinition:
    settings = model.deployment

    @model_sensor(
        model,
        name=f"{model.name}_post_deploy_watch",
        job_name=rollback_job_name(model.name),
        description=(
            f"For {settings.watch_minutes:g} minutes after a promotion of {model.name}, compares the new model's live "
            "labeled predictions and request latency with the previous model's and requests a rollback when it does "
            f"worse; after {settings.validation_days:g} days without rollback marks it proven."
        ),
    )
    def post_deploy_watch(context: dg.SensorEvaluationContext, monitoring_store: MonitoringStoreResource):
        store = monitoring_store.get()
        production = store.registry.production(model.name)
        if production is None or production.promoted_at is None:
            return dg.SkipReason(f"{model.name} has no promoted model to watch")
        age = dt.datetime.now(dt.timezone.utc) - production.promoted_at
        if age > dt.timedelta(days=settings.validation_days) and production.proven_at is None:
            live = store.predictions.served_outcomes(model.log_key, production.version, last_rows=model.monitoring.window_rows)
            live = live.dropna(subset=["prediction", "label"])
            baseline = (compute_metrics(live["label"].to_numpy(), live["prediction"].to_numpy(), model.task,
                                        model.positive_label) if len(live) >= settings.watch_min_samples else production.metrics)
            archived = store.registry.mark_proven(model.name, production.version, baseline, settings.keep_versions)
            return dg.SkipReason(
                f"{production.label} served {settings.validation_days:g} days without rollback: proven; its live metrics "
                f"are the new baseline{'; archived ' + ', '.join(f'v{v}' for v in archived) if archived else ''}"
            )
        if age > dt.timedelta(minutes=settings.watch_minutes):
            return dg.SkipReason(f"{production.label} was promoted {age} ago: past its {settings.watch_minutes:g}-minute watch")
        if context.cursor == production.label:
            return dg.SkipReason(f"{production.label} already judged")
        previous = store.registry.with_status(model.name, "standby")
        if previous is None:
            return dg.SkipReason(f"{production.label} has no previous model to compare with or roll back to")
        window = model.monitoring.window_rows
        live = store.predictions.served_outcomes(model.log_key, production.version, last_rows=window).dropna(subset=["prediction", "label"])
        before = store.predictions.served_outcomes(model.log_key, previous.version, last_rows=window).dropna(subset=["prediction", "label"])
        verdict = post_deploy_verdict(
            live["prediction"], live["label"], before["prediction"], before["label"], model.task, settings,
            model.positive_label,
            live_latency_ms=store.predictions.served_latencies(model.log_key, production.version, last_rows=window),
            before_latency_ms=store.predictions.served_latencies(model.log_key, previous.version, last_rows=window),
        )
        if not verdict.judged or not verdict.worse:
            if verdict.judged:
                context.update_cursor(production.label)
            return dg.SkipReason(f"watching {production.label}: {verdict.message}")
        context.update_cursor(production.label)
        reason = f"post-deploy watch: {production.label} {verdict.message}; back to {previous.label}"
        return dg.RunRequest(
            run_key=f"rollback-{production.label}-{production.promoted_at:%Y%m%d%H%M%S}",
            tags={TAG_MODEL: model.name, TAG_TRIGGER: "post_deploy_watch", TAG_SEVERITY: "HIGH", TAG_REASON: short(reason)},
        )

    return post_deploy_watch
