"""The post-deploy watch sensor: walks a promoted model through its phases and rolls it back by itself.

Phases (:func:`~retrain_assets.monitoring.watch.deployment_phase`): the watch (``watch_minutes``, the
new model against the previous one and the absolute criteria), the close watch (until
``close_watch_hours``, the absolute criteria), the validation period (until ``validation_days``), proven.
Each change of phase refreshes the model card (which states the phase) and is an event row, so the UI and
SQL both show where the model stands.
"""

import datetime as dt
import json

import dagster as dg

from retrain_assets.defs.automation import model_sensor
from retrain_assets.defs.deployment.assets import model_card_materialization
from retrain_assets.defs.deployment.rollback import rollback_job_name
from retrain_assets.defs.keys import TAG_MODEL, TAG_REASON, TAG_ROLLBACK_FROM, TAG_SEVERITY, TAG_TRIGGER, short
from retrain_assets.defs.resources import ArtifactStoreResource, MonitoringStoreResource
from retrain_assets.metrics import compute_metrics
from retrain_assets.monitoring.watch import absolute_verdict, deployment_phase, post_deploy_verdict
from retrain_assets.settings import ModelSettings

PHASE_TRIGGER = "deployment_phase"  # trigger_type of the event rows that record a change of phase


def _state(cursor: str | None) -> dict:
    try:
        state = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def restored_by_rollback(store, model: ModelSettings, production) -> str | None:
    """The rollback that made ``production`` production again, if that is how it got there. The watch never
    rolls such a model back by itself: its standby is the version just demoted (by the watch or by a
    person), and restoring it would undo that decision, or swing between two models that both fail an
    absolute criterion. A person decides (``retrain rollback``)."""
    for event in store.events.recent(model.name, limit=20):
        if (event["trigger_type"] == "rollback" and event["execution_successful"]
                and event["retraining_model_version"] == production.label
                and event["execution_completed_at"] is not None and event["execution_completed_at"] >= production.promoted_at):
            return f"rollback #{event['id']} ({event['trigger_reason']})"
    return None


def build_watch_sensor(model: ModelSettings) -> dg.SensorDefinition:
    settings = model.deployment

    @model_sensor(
        model,
        name=f"{model.name}_post_deploy_watch",
        job_name=rollback_job_name(model.name),
        description=(
            f"After a promotion of {model.name}: for {settings.watch_minutes:g} minutes compares the new model's live "
            "labeled predictions and request latency with the previous model's; until "
            f"{settings.close_watch_hours:g} hours checks the absolute criteria (accuracy floor, latency ceiling, "
            "error rate); "
            f"requests a rollback when either fails; after {settings.validation_days:g} days without rollback marks "
            "it proven. Each change of phase refreshes the model card and is an event row."
        ),
    )
    def post_deploy_watch(context: dg.SensorEvaluationContext, monitoring_store: MonitoringStoreResource,
                          artifact_store: ArtifactStoreResource):
        store = monitoring_store.get()
        production = store.registry.production(model.name)
        if production is None or production.promoted_at is None:
            return dg.SkipReason(f"{model.name} has no promoted model to watch")
        now = dt.datetime.now(dt.timezone.utc)
        phase, until = deployment_phase(production.promoted_at, production.proven_at, now, settings)
        if phase == "validation" and until is not None and now >= until:
            live = store.predictions.served_outcomes(model.log_key, production.version, last_rows=model.monitoring.window_rows)
            live = live.dropna(subset=["prediction", "label"])
            baseline = (compute_metrics(live["label"].to_numpy(), live["prediction"].to_numpy(), model.task,
                                        model.positive_label) if len(live) >= settings.watch_min_samples else production.metrics)
            archived = store.registry.mark_proven(model.name, production.version, baseline, settings.keep_versions)
            production = store.registry.production(model.name)
            phase, until = "proven", None
            note = (f"{production.label} served {settings.validation_days:g} days without rollback: proven; its live "
                    f"metrics are the new baseline{'; archived ' + ', '.join(f'v{v}' for v in archived) if archived else ''}")
        else:
            note = None
        state = _state(context.cursor)
        serving = f"{production.label}@{production.promoted_at.isoformat()}"  # a re-promotion starts afresh
        if state.get("serving") != serving:
            state = {"serving": serving}
        events = []
        if state.get("phase") != phase:
            why = f"{production.label} entered its {phase.replace('_', ' ')}" + (f" (until {until:%Y-%m-%d %H:%M} UTC)" if until else "")
            events.append(model_card_materialization(store, artifact_store.get(), model, why))
            store.events.record_trigger(model.name, trigger_type=PHASE_TRIGGER, severity="LOW", reason=why, attempted=False,
                                        metrics={"version": production.label, "phase": phase,
                                                 "until": until.isoformat() if until else None})
            state["phase"] = phase
        context.update_cursor(json.dumps(state))

        def skip(message: str) -> dg.SensorResult:
            return dg.SensorResult(skip_reason=message, asset_events=events)

        if note:
            return skip(note)
        if phase in ("validation", "proven"):
            return skip(f"{production.label} is in its {phase} phase: no automatic rollback")
        restored = restored_by_rollback(store, model, production)
        if restored:
            return skip(f"{production.label} is production again through {restored}: the watch does not roll a "
                        "restored model back by itself (retrain rollback if it misbehaves)")
        window = model.monitoring.window_rows
        # A model promoted from canary served before its promotion; it is watched on what it served after
        # (the evidence line its last canary step set), not on what its canary steps already judged.
        after = production.step_log_id
        live = store.predictions.served_outcomes(model.log_key, production.version, last_rows=window,
                                                 after_id=after).dropna(subset=["prediction", "label"])
        live_latency = store.predictions.served_latencies(model.log_key, production.version, last_rows=window,
                                                          after_id=after)
        requests = store.predictions.request_counts(model.name, production.version, production.promoted_at)
        previous = store.registry.with_status(model.name, "standby")
        if previous is None:
            return skip(f"{production.label} has no previous model to compare with or roll back to")
        if phase == "watch":
            if state.get("judged"):
                return skip(f"{production.label} already judged in its watch")
            before = store.predictions.served_outcomes(model.log_key, previous.version, last_rows=window).dropna(subset=["prediction", "label"])
            verdict = post_deploy_verdict(
                live["prediction"], live["label"], before["prediction"], before["label"], model.task, settings,
                model.positive_label, live_latency_ms=live_latency,
                before_latency_ms=store.predictions.served_latencies(model.log_key, previous.version, last_rows=window),
                requests=requests,
            )
        else:  # the close watch: the absolute criteria, every evaluation
            verdict = absolute_verdict(live["prediction"], live["label"], model.task, settings, model.positive_label,
                                       live_latency, requests)
        if not verdict.worse:
            if phase == "watch" and verdict.judged:
                state["judged"] = True
                context.update_cursor(json.dumps(state))
            return skip(f"{'watching' if phase == 'watch' else 'close watch of'} {production.label}: {verdict.message}")
        state["judged"] = True
        context.update_cursor(json.dumps(state))
        reason = f"post-deploy {phase.replace('_', ' ')}: {production.label} {verdict.message}; back to {previous.label}"
        return dg.SensorResult(
            run_requests=[dg.RunRequest(
                run_key=f"rollback-{production.label}-{production.promoted_at:%Y%m%d%H%M%S}",
                tags={TAG_MODEL: model.name, TAG_TRIGGER: "post_deploy_watch", TAG_SEVERITY: "HIGH",
                      TAG_REASON: short(reason), TAG_ROLLBACK_FROM: production.label},
            )],
            asset_events=events,
        )

    return post_deploy_watch
