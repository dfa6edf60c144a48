"""Starting a retrain by hand: `retrain trigger`, in process on the instance or through a running webserver.

Both paths record a ``manual`` event first, so the run carries its event id and the audit table shows who
asked and why. Manual retrains bypass the automatic triggers' guards (a person decided), but never a retrain
of the model already in flight: the event is the model's one claim, and only ``--force`` (recorded in the
event) takes it over. Every event gets an outcome: a run that fails in process completes it with the cause,
a submission the webserver refused marks it failed.
"""

import os
from dataclasses import dataclass
from urllib.parse import urlparse

import dagster as dg

from retrain_assets.defs.definitions import build_definitions
from retrain_assets.defs.deployment.promotion import retrain_in_process
from retrain_assets.defs.metadata import root_cause
from retrain_assets.defs.keys import TAG_EVENT_ID, TAG_MODEL, TAG_REASON, TAG_SEVERITY, TAG_TRIGGER, retrain_job_name, short
from retrain_assets.defs.triggers.requests import fail_retrain
from retrain_assets.errors import ConfigError, RetrainError, RetrainInFlight
from retrain_assets.settings import RetrainSettings
from retrain_assets.store import MonitoringStore


@dataclass
class TriggerOutcome:
    run_id: str
    event_id: int
    status: str  # SUCCESS | FAILURE | SUBMITTED
    production: str | None = None
    failed_checks: tuple[str, ...] = ()


def manual_run_config(model_name: str, reason: str, requester: str, data_version: str = "latest") -> dict:
    return {"ops": {f"{model_name}__training_dataset": {"config": {
        "reason": reason, "requester": requester, "data_version": data_version}}}}


def trigger_retrain(settings: RetrainSettings, model_name: str, reason: str, requester: str = "",
                    url: str | None = None, force: bool = False, data_version: str = "latest") -> TriggerOutcome:
    model = settings.model(model_name)
    if not reason.strip():
        raise ConfigError("--reason is required: say why this model should be retrained")
    store = MonitoringStore(settings.storage.database_url)
    requester = requester or os.environ.get("USER", "")
    metrics = {"requester": requester, **({"forced": True} if force else {})}
    forced_by = (requester or "someone") if force else None
    tags_for = lambda event_id: {TAG_MODEL: model.name, TAG_TRIGGER: "manual", TAG_SEVERITY: "MEDIUM",  # noqa: E731
                                 TAG_REASON: short(reason), TAG_EVENT_ID: str(event_id)}
    if data_version != "latest":  # a clear error now, before anything is claimed or queued
        store.registry.find_dataset(model.name, data_version)
    run_config = manual_run_config(model.name, reason, requester, data_version)
    if url:
        event_id = _claim(None, store, model, reason, metrics, forced_by)
        return _submit(store, url, model.name, run_config, tags_for(event_id), event_id)
    instance_home()
    with dg.DagsterInstance.get() as instance:
        event_id = _claim(instance, store, model, reason, metrics, forced_by)
        # Dagster's console logger would print each failed step's traceback; the outcome is one line here and
        # every event stays in the instance for the UI.
        run_config = {**run_config, "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        result = retrain_in_process(build_definitions(settings), instance, store, model, tags=tags_for(event_id),
                                    run_config=run_config)
    production = store.registry.production(model.name)
    failed = tuple(e.check_name for e in result.get_asset_check_evaluations() if not e.passed)
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        cause = root_cause(failure.step_failure_data.error) if failure else "the run failed"
        # In process there is no daemon to run the failure sensor: the event gets its outcome here.
        fail_retrain(store, model, event_id, execution_metrics={"run_id": result.run_id, "error": cause})
        if not failed:
            raise RetrainError(f"retrain run {result.run_id[:8]} of {model.name} failed: {cause} (event #{event_id})")
    return TriggerOutcome(result.run_id, event_id, "SUCCESS" if result.success else "FAILURE",
                          production.label if production else None, failed)


def _claim(instance, store: MonitoringStore, model, reason: str, metrics: dict, forced_by: str | None) -> int:
    from retrain_assets.defs.triggers.requests import claim_retrain
    from retrain_assets.store.events import ClaimTaken

    try:
        return claim_retrain(instance, store, model, forced_by=forced_by, trigger_type="manual", severity="MEDIUM",
                             reason=reason, metrics=metrics)
    except ClaimTaken as taken:
        raise RetrainInFlight(f"{taken}: wait for it, or retrain anyway with --force (recorded in the event)") from None


def _submit(store: MonitoringStore, url: str, model_name: str, run_config: dict, tags: dict, event_id: int) -> TriggerOutcome:
    """Queue the run through the webserver's GraphQL API; the daemon launches it. A refused submission
    marks the event failed: no trigger is left without an outcome."""
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    parsed = urlparse(url if "://" in url else f"http://{url}")
    client = DagsterGraphQLClient(parsed.hostname or "127.0.0.1", port_number=parsed.port or 3000,
                                  use_https=parsed.scheme == "https")
    try:
        run_id = client.submit_job_execution(retrain_job_name(model_name), run_config=run_config, tags=tags)
    except (DagsterGraphQLClientError, OSError) as error:
        message = f"could not submit the retrain to the Dagster webserver at {url}: {error}"
        store.events.complete(event_id, successful=False, execution_metrics={"error": message})
        raise RetrainError(message) from error
    return TriggerOutcome(run_id, event_id, "SUBMITTED")


def rollback_model(settings: RetrainSettings, model_name: str, reason: str, requester: str = "") -> str:
    """Run the rollback job in process on $DAGSTER_HOME; returns the restored version's label."""
    from retrain_assets.defs.deployment.rollback import rollback_job_name

    model = settings.model(model_name)
    instance_home()
    with dg.DagsterInstance.get() as instance:
        job = build_definitions(settings).resolve_job_def(rollback_job_name(model.name))
        result = job.execute_in_process(
            instance=instance, raise_on_error=False,
            run_config={"ops": {f"{model.name}_swap_production_and_standby": {
                "config": {"reason": reason or "rolled back by hand", "requester": requester or os.environ.get("USER", "")}}}},
        )
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        raise RetrainError(root_cause(failure.step_failure_data.error) if failure else "the rollback run failed")
    return MonitoringStore(settings.storage.database_url).registry.production(model.name).label


def abort_canary(settings: RetrainSettings, model_name: str, reason: str, requester: str = "") -> str:
    """Roll the model's canary back now (its step job in process on $DAGSTER_HOME, with the abort set);
    returns the rolled-back version's label."""
    from retrain_assets.defs.deployment.canary import canary_job_name

    model = settings.model(model_name)
    store = MonitoringStore(settings.storage.database_url)
    canary = store.registry.with_status(model.name, "canary")
    if canary is None:
        raise RetrainError(f"model {model.name} has no candidate in canary: nothing to abort")
    instance_home()
    with dg.DagsterInstance.get() as instance:
        job = build_definitions(settings).resolve_job_def(canary_job_name(model.name))
        result = job.execute_in_process(
            instance=instance, raise_on_error=False,
            run_config={"ops": {f"{model.name}_judge_canary_step": {"config": {
                "abort_reason": reason or "aborted by hand", "requester": requester or os.environ.get("USER", "")}}}},
        )
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        raise RetrainError(root_cause(failure.step_failure_data.error) if failure else "the canary step run failed")
    return canary.label


def instance_home() -> str:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise ConfigError("DAGSTER_HOME is not set: point it at the instance to run on (make ui uses .dagster_home), "
                          "or pass --url of a running Dagster webserver")
    return home
