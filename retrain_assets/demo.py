"""``retrain demo``: every simulated model's lifecycle on a real, persistent Dagster instance and the
embedded stores.

The demo config declares two models of one telecom operator, a churn classifier and a data-usage
regressor, fed by the same simulated customers. For each of them: (a) initial training promotes v1;
(b) clean traffic: drift report, the sensor skips; (c) drifted traffic: the drift report says drift, the
retrain sensor is evaluated against the instance and its run request is executed, the candidate passes the
gates and v2 is promoted; (d) poisoned labels: the candidate fails the gates, the run fails, production
stays v2. Each model has its own asset group, jobs, sensors and event rows; the same runs, checks and
sensor ticks are then visible with ``make ui``.
"""

import datetime as dt
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dagster as dg

from retrain_assets.defs.definitions import build_definitions, resources_for
from retrain_assets.defs.deployment.promotion import retrain_in_process
from retrain_assets.defs.keys import (
    TAG_EVENT_ID,
    TAG_MODEL,
    TAG_REASON,
    TAG_SEVERITY,
    TAG_TRIGGER,
    monitor_job_name,
    promote_job_name,
    retrain_job_name,
)
from retrain_assets.defs.metadata import root_cause
from retrain_assets.errors import RetrainError
from retrain_assets.serving.predict import serve_and_log
from retrain_assets.settings import ModelSettings, RetrainSettings
from retrain_assets.simulate import TrafficScenario, generate_traffic
from retrain_assets.store import ArtifactStore, MonitoringStore
from retrain_assets.text import text_table

DEMO_MARKER = ".retrain-demo-home"
# The metrics the summary shows per task (the candidate's test split).
SUMMARY_METRICS = {"classification": ("accuracy", "f1", "auc"), "regression": ("mae", "rmse", "r2")}


@dataclass
class StepSummary:
    model: str
    step: str
    trigger: str
    run_status: str
    candidate: str | None = None
    candidate_metrics: dict = field(default_factory=dict)
    gates: str = "-"
    production: str | None = None
    note: str = ""


def simulated_models(settings: RetrainSettings) -> tuple[list[ModelSettings], list[str]]:
    """The declared models the simulator can feed (their target and features are columns of its traffic),
    and the names of the others, which the demo leaves alone."""
    columns = set(generate_traffic(1).columns)
    fed = [m for m in settings.models if {m.target, *m.feature_names} <= columns]
    return fed, [m.name for m in settings.models if m not in fed]


class Demo:
    def __init__(self, settings: RetrainSettings, instance: dg.DagsterInstance, out=sys.stdout):
        self.settings = settings
        self.models, self.skipped = simulated_models(settings)
        if not self.models:
            raise RetrainError(
                "no model in the config can be fed by the demo's simulated traffic: declare a model whose "
                "target and features are columns of retrain_assets.simulate (see the repository's retrain.yaml)"
            )
        self.instance = instance
        self.defs = build_definitions(settings)
        self.store = MonitoringStore(settings.storage.database_url)
        self.artifacts = ArtifactStore(settings.storage.artifact_root)
        self.out = out
        self.clock = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
        self.sensor_cursors: dict[str, str | None] = {}
        self.summary: list[StepSummary] = []
        self.seed = 0

    # Output ---------------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # Traffic --------------------------------------------------------------------------------------------
    def _traffic(self, rows: int, scenario: TrafficScenario, label: str, serve: bool) -> None:
        """One batch of customers, served by (or, before any model, logged for) every model, then labeled."""
        self.seed += 1
        frame = generate_traffic(
            rows, start=self.clock, interval=dt.timedelta(seconds=20), scenario=scenario, seed=self.seed,
            id_prefix=label,
        )
        self.clock += dt.timedelta(seconds=20 * rows)
        labeled_at = frame["timestamp"] + dt.timedelta(minutes=30)
        served = []
        for model in self.models:
            if serve:
                version, _ = serve_and_log(self.store, self.artifacts, model, frame)
                served.append(f"{model.name} v{version.version}")
            else:
                self.store.predictions.log_predictions(model.log_key, frame, model.feature_names)
            self.store.predictions.log_labels(model.log_key, frame["request_id"].tolist(), frame[model.target].tolist(), labeled_at)
        how = f"served by {', '.join(served)}" if serve else "historical, before any model"
        self.say(f"    wrote {rows} rows of {label} traffic ({how}) and their labels")

    # Dagster --------------------------------------------------------------------------------------------
    def _run(self, model: ModelSettings, job_name: str, tags: dict, reason: str = ""):
        # Dagster's console logger would print every step event here; the progress lines say what matters
        # and every event is still stored in the instance for the UI.
        run_config: dict = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        started = time.perf_counter()
        if job_name == retrain_job_name(model.name):  # and, when its gates pass, the promotion run
            op = f"{model.name}__training_dataset"
            run_config["ops"] = {op: {"config": {"reason": reason, "requester": "retrain demo"}}}
            result = retrain_in_process(self.defs, self.instance, self.store, model, tags=tags, run_config=run_config)
            runs = [(job_name, result.retrain)] + ([(promote_job_name(model.name), result.promotion)] if result.promotion else [])
        else:
            result = self.defs.resolve_job_def(job_name).execute_in_process(
                instance=self.instance, tags=tags, run_config=run_config, raise_on_error=False)
            runs = [(job_name, result)]
        self.say(f"    [{model.name}] " + "; ".join(f"run {r.run_id[:8]} of {name}: {'SUCCESS' if r.success else 'FAILURE'}"
                                                  for name, r in runs) + f" ({time.perf_counter() - started:.1f} s)")
        return result

    def _monitor(self, model: ModelSettings) -> dict:
        tags = {TAG_MODEL: model.name, TAG_TRIGGER: "manual", TAG_REASON: "retrain demo: new traffic to look at"}
        result = self._run(model, monitor_job_name(model.name), tags)
        if not result.success:
            raise RetrainError(f"the monitoring run of {model.name} failed: {_failure_message(result)}")
        event = self.instance.get_latest_materialization_event(dg.AssetKey([model.name, "retrain_decision"]))
        metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        verdict = f"RETRAIN ({metadata['trigger']})" if metadata["retrain_advised"] else "no retrain"
        self.say(f"    [{model.name}] decision: {verdict}, severity {metadata['severity']}, confidence "
                 f"{metadata['confidence']:.2f}: {metadata['summary']}")
        return metadata

    def _evaluate_retrain_sensor(self, model: ModelSettings):
        sensor = self.defs.resolve_sensor_def(f"{model.name}_retrain_sensor")
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.sensor_cursors.get(model.name), definitions=self.defs,
            resources=resources_for(self.settings),
        ) as context:
            data = sensor.evaluate_tick(context)
        self.sensor_cursors[model.name] = data.cursor
        return data

    def _candidate_summary(
        self, model: ModelSettings, step: str, trigger: str, result: dg.ExecuteInProcessResult, note: str
    ) -> StepSummary:
        candidate = self.store.registry.candidate_of_run(model.name, result.run_id)
        production = self.store.registry.production(model.name)
        evaluations = result.get_asset_check_evaluations()
        failed = [e.check_name for e in evaluations if not e.passed]
        gates = f"FAILED: {', '.join(failed)}" if failed else (f"passed ({len(evaluations)} checks)" if evaluations else "-")
        metrics = candidate.metrics if candidate else {}
        shown = {m: round(metrics[m], 3) for m in SUMMARY_METRICS[model.task] if isinstance(metrics.get(m), float)}
        return StepSummary(
            model=model.name,
            step=step,
            trigger=trigger,
            run_status="SUCCESS" if result.success else "FAILURE",
            candidate=candidate.label if candidate else None,
            candidate_metrics=shown,
            gates=gates,
            production=production.label if production else None,
            note=note,
        )

    # The lifecycle ----------------------------------------------------------------------------------------
    def run(self) -> list[StepSummary]:
        if self.skipped:
            self.say(f"models the simulated traffic cannot feed, left out of the demo: {', '.join(self.skipped)}")
        self.say(f"models: {', '.join(f'{m.name} ({m.task})' for m in self.models)}")

        self.say("(a) initial training: historical labeled data -> candidate v1 -> gates -> production")
        self._traffic(4000, TrafficScenario(), "historical", serve=False)
        for model in self.models:
            tags = {TAG_MODEL: model.name, TAG_TRIGGER: "manual", TAG_SEVERITY: "LOW", TAG_REASON: "initial training"}
            result = self._run(model, retrain_job_name(model.name), tags, reason="initial training")
            self.summary.append(self._candidate_summary(model, "a: initial training", "manual", result, "first production model"))
            self._require(result.success, f"the initial training run of {model.name} failed", result)
            self.say(f"    [{model.name}] production model: {self.summary[-1].production}")

        self.say("(b) clean traffic -> monitoring (drift, performance, decision) -> retrain sensor")
        self._traffic(2000, TrafficScenario(), "clean", serve=True)
        for model in self.models:
            self._monitor(model)
            tick = self._evaluate_retrain_sensor(model)
            self._require(not tick.run_requests, f"the retrain sensor asked for a retrain of {model.name} on clean traffic")
            self.say(f"    [{model.name}] retrain sensor: skipped ({tick.skip_message})")
            production = self.store.registry.production(model.name)
            self.summary.append(StepSummary(model.name, "b: clean traffic", "retrain sensor", "SKIPPED",
                                            production=production.label, note=f"no retrain: {tick.skip_message}"))

        self.say("(c) drifted traffic (the population and its behaviour change) -> monitoring -> retrain sensor")
        self._traffic(4000, TrafficScenario(covariate_drift=0.6, concept_drift=True), "drifted", serve=True)
        promoted = {}
        for model in self.models:
            self._monitor(model)
            tick = self._evaluate_retrain_sensor(model)
            self._require(len(tick.run_requests) == 1,
                          f"the retrain sensor did not request a retrain of {model.name} on drifted traffic: {tick.skip_message}")
            request = tick.run_requests[0]
            trigger = request.tags[TAG_TRIGGER]
            self.say(f"    [{model.name}] retrain sensor: run requested ({trigger}, severity {request.tags[TAG_SEVERITY]}; "
                     f"{request.tags[TAG_REASON]})")
            tags = {**request.tags, "dagster/sensor_name": f"{model.name}_retrain_sensor", "dagster/run_key": request.run_key}
            result = self._run(model, retrain_job_name(model.name), tags)
            self.summary.append(self._candidate_summary(model, "c: drifted traffic", f"{trigger} (retrain sensor)", result,
                                                        request.tags[TAG_REASON]))
            self._require(result.success, f"the drift-triggered retrain of {model.name} failed", result)
            promoted[model.name] = self.summary[-1].production
            event = self.store.events.get(int(request.tags[TAG_EVENT_ID]))
            self.say(f"    [{model.name}] production model: {promoted[model.name]}; event #{event['id']} "
                     f"successful={event['execution_successful']}")
            self.say(f"    [{model.name}] monitoring again against the new production model:")
            self._monitor(model)

        self.say("(d) poisoned labels -> manual retrain -> candidate must fail the gates")
        self._traffic(4000, TrafficScenario(covariate_drift=0.6, concept_drift=True, poison_fraction=1.0), "poisoned", serve=True)
        reason = "new labels arrived (poisoned batch)"
        for model in self.models:
            event_id = self.store.events.record_trigger(model.name, trigger_type="manual", severity="LOW", reason=reason)
            tags = {TAG_MODEL: model.name, TAG_TRIGGER: "manual", TAG_SEVERITY: "LOW", TAG_REASON: reason, TAG_EVENT_ID: str(event_id)}
            result = self._run(model, retrain_job_name(model.name), tags, reason=reason)
            summary = self._candidate_summary(model, "d: poisoned labels", "manual", result, "")
            self._require(not result.success, f"the poisoned candidate of {model.name} was not rejected")
            self._require(summary.production == promoted[model.name], f"production of {model.name} changed after a failed gate")
            failures = [e for e in result.get_asset_check_evaluations() if not e.passed]
            summary.note = "; ".join(f"{e.check_name}: {e.description}" for e in failures)[:300]
            self.summary.append(summary)
            self.say(f"    [{model.name}] run failed as it should: {summary.gates}")
            self.say(f"    [{model.name}] production model still: {summary.production}")
        return self.summary

    def _require(self, condition: bool, message: str, result: dg.ExecuteInProcessResult | None = None) -> None:
        if not condition:
            detail = f": {_failure_message(result)}" if result is not None else ""
            raise RetrainError(f"demo step failed, {message}{detail}")


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    failed = [f"{e.check_name}: {e.description}" for e in result.get_asset_check_evaluations() if not e.passed]
    if failed:
        return "failed checks: " + "; ".join(failed)
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            return root_cause(event.step_failure_data.error)
    return "see the run's logs in the UI"


def prepare_home(home: Path, dagster_yaml: Path) -> None:
    """Fresh demo state in a Dagster home the demo owns (never wipes a home it did not create)."""
    if home.exists() and any(home.iterdir()) and not (home / DEMO_MARKER).exists():
        raise RetrainError(
            f"{home} is an existing Dagster home not created by the demo; choose another with --home or "
            "remove it yourself"
        )
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / DEMO_MARKER).write_text("created by `retrain demo`; wiped at every demo run\n")
    if dagster_yaml.is_file():
        shutil.copy(dagster_yaml, home / "dagster.yaml")


def reset_embedded_storage(settings: RetrainSettings) -> None:
    url = settings.storage.database_url
    if not url.startswith("sqlite:///"):  # env:RETRAIN_DATABASE_URL included: never wipe a server database
        raise RetrainError(
            "the demo runs on the embedded storage and wipes it first; unset RETRAIN_DATABASE_URL (it points "
            "to a server database the demo must not wipe)"
        )
    database = Path(url[len("sqlite:///"):])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(settings.storage.artifact_root, ignore_errors=True)


def format_table(summary: list[StepSummary]) -> str:
    headers = ["model", "step", "trigger", "run", "candidate", "candidate test metrics", "gates", "production"]
    rows = [
        [s.model, s.step, s.trigger, s.run_status, s.candidate or "-",
         ", ".join(f"{name} {value:.3f}" for name, value in s.candidate_metrics.items()) or "-",
         s.gates, s.production or "-"]
        for s in sorted(summary, key=lambda s: s.model)
    ]
    return text_table(headers, rows)


def final_production(summary: list[StepSummary]) -> dict[str, str | None]:
    """Each model's production version after its last step."""
    return {s.model: s.production for s in summary}


def run_demo(settings: RetrainSettings, home: Path, dagster_yaml: Path, as_json: bool = False) -> int:
    out = sys.stderr if as_json else sys.stdout
    started = time.perf_counter()
    prepare_home(home, dagster_yaml)
    os.environ["DAGSTER_HOME"] = str(home)
    # The progress lines already say what triggered what; keep the notifier's log lines out of them.
    logging.getLogger("retrain_assets.notify").setLevel(logging.ERROR)
    reset_embedded_storage(settings)
    with dg.DagsterInstance.get() as instance:
        demo = Demo(settings, instance, out=out)
        summary = demo.run()
    elapsed = time.perf_counter() - started
    if as_json:
        print(json.dumps({"steps": [asdict(s) for s in summary], "final_production": final_production(summary),
                          "dagster_home": str(home), "seconds": round(elapsed, 1)}, indent=2))
    else:
        print("\nSummary\n" + format_table(summary), file=out)
        print(f"\nDone in {elapsed:.0f} s. See it in the Dagster UI: make ui  (DAGSTER_HOME={home})", file=out)
    return 0
