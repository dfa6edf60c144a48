"""The ``retrain`` command line.

Every user-fixable problem (bad config, unreachable database, bad data) ends with one line on stderr that
says what to fix and exit code 2; tracebacks are for bugs only.
"""

import argparse
import datetime as dt
import json
import os
import re
import sys
from decimal import Decimal
from pathlib import Path

import yaml

from retrain_assets.errors import ConfigError, RetrainError
from retrain_assets.replay.command import add_replay_command
from retrain_assets.settings import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_FILE,
    RetrainSettings,
    load_settings,
    settings_from_dict,
)
from retrain_assets.text import text_table

# The configuration shipped in the package (links to the repository's retrain.yaml and dagster.yaml, whose
# content a wheel carries): what `retrain demo` and `retrain config` use where there is none, e.g. after
# `pip install retrain-assets` outside a checkout.
PACKAGED_DEFAULTS = Path(__file__).parent / "defaults"


def _settings_or_packaged(config: str | None) -> RetrainSettings:
    """--config, $RETRAIN_CONFIG or ./retrain.yaml as for every command; with none of them, the packaged demo
    configuration, its relative storage paths under the current directory (where a ./retrain.yaml puts them)."""
    if config is not None or os.environ.get(CONFIG_ENV_VAR) or Path(DEFAULT_CONFIG_FILE).is_file():
        return load_settings(config)
    packaged = PACKAGED_DEFAULTS / DEFAULT_CONFIG_FILE
    print(f"retrain: no ./{DEFAULT_CONFIG_FILE} and {CONFIG_ENV_VAR} unset: using the packaged demo configuration "
          f"{packaged} (copy it to ./{DEFAULT_CONFIG_FILE} to change it)", file=sys.stderr)
    return settings_from_dict(yaml.safe_load(packaged.read_text()), source=str(packaged), base_dir=Path.cwd())


def _dagster_yaml(path: str | None) -> Path:
    """--dagster-yaml, else ./dagster.yaml, else the packaged one."""
    if path is not None:
        return Path(path)
    local = Path("dagster.yaml")
    return local if local.is_file() else PACKAGED_DEFAULTS / "dagster.yaml"


def _cmd_demo(args: argparse.Namespace) -> int:
    from retrain_assets.demo import run_demo  # imports Dagster: only when asked for

    settings = _settings_or_packaged(args.config)
    return run_demo(settings, Path(args.home).resolve(), _dagster_yaml(args.dagster_yaml), as_json=args.json)


def _cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        from retrain_assets.config_reference import config_reference

        print(config_reference(), end="")
        return 0
    if args.schema:
        from retrain_assets.config_reference import config_schema

        print(json.dumps(config_schema(), indent=2))
        return 0
    settings = _settings_or_packaged(args.config)
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


def _cmd_trigger(args: argparse.Namespace) -> int:
    from retrain_assets.defs.launch import trigger_retrain  # imports Dagster: only when asked for

    outcome = trigger_retrain(load_settings(args.config), args.model, args.reason, args.requester, args.url, args.force,
                              data_version=args.data_version)
    if outcome.status == "SUBMITTED":
        print(f"submitted run {outcome.run_id} of {args.model}_retrain (event #{outcome.event_id})")
        return 0
    detail = f"; failed checks: {', '.join(outcome.failed_checks)}" if outcome.failed_checks else ""
    print(f"run {outcome.run_id}: {outcome.status} (event #{outcome.event_id}); production model: "
          f"{outcome.production or 'none'}{detail}")
    return 0 if outcome.status == "SUCCESS" else 1


def _cmd_rollback(args: argparse.Namespace) -> int:
    from retrain_assets.defs.launch import rollback_model  # imports Dagster: only when asked for

    restored = rollback_model(load_settings(args.config), args.model, args.reason, args.requester)
    print(f"{args.model}: production model is {restored} again (the previous one is standby)")
    return 0


def _cmd_canary(args: argparse.Namespace) -> int:
    from retrain_assets.defs.launch import abort_canary  # imports Dagster: only when asked for

    aborted = abort_canary(load_settings(args.config), args.model, args.reason, args.requester)
    print(f"{args.model}: canary {aborted} rolled back; production answers every request again")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    import uvicorn

    from retrain_assets.serving.cpu_pinning import PIN_ENV, pinning_wanted, usable_cpus
    from retrain_assets.serving.metrics import MULTIPROC_ENV

    settings = load_settings(args.config)  # a bad config is one line on stderr here, not a traceback in every worker
    # Every worker builds its own app from the environment (retrain_assets.serving.app).
    if args.config is not None:
        os.environ[CONFIG_ENV_VAR] = str(Path(args.config).resolve())
    if args.dagster_url:
        os.environ["RETRAIN_DAGSTER_URL"] = args.dagster_url
    metrics_dir = None
    if args.workers > 1 and not os.environ.get(MULTIPROC_ENV):  # /metrics adds up every worker's values
        metrics_dir = tempfile.mkdtemp(prefix="retrain-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    if pinning_wanted(settings.serving.pin_workers, args.workers, len(usable_cpus())):
        os.environ[PIN_ENV] = "1"  # each worker pins itself (retrain_assets/serving/cpu_pinning.py)
    else:
        os.environ.pop(PIN_ENV, None)
    try:
        uvicorn.run("retrain_assets.serving.app:create_from_environment", factory=True, host=args.host,
                    port=args.port, workers=args.workers, log_level=args.log_level,
                    timeout_worker_healthcheck=settings.serving.worker_start_seconds)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _parse_since(text: str) -> dt.datetime:
    match = re.fullmatch(r"(\d+)([hdw])", text.strip())
    if not match:
        raise ConfigError(f"--since {text!r}: write a number of hours, days or weeks, e.g. 12h, 7d, 4w")
    hours = int(match.group(1)) * {"h": 1, "d": 24, "w": 168}[match.group(2)]
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours)


def _cmd_events(args: argparse.Namespace) -> int:
    from retrain_assets.store import MonitoringStore
    from retrain_assets.store.events import audit_report

    settings = load_settings(args.config)
    report = audit_report(MonitoringStore(settings.storage.database_url).engine, _parse_since(args.since))
    if args.json:
        print(json.dumps({name: [dict(zip(cols, row)) for row in rows] for name, (cols, rows) in report.items()},
                         indent=2, default=_json_value))
        return 0
    titles = {"events": "Retraining events", "trigger_frequency": "Triggers and success rate",
              "improvement": "Improvement after retraining"}
    for name, (columns, rows) in report.items():
        print(f"{titles[name]} (since {args.since})")
        print(text_table(columns, [[_cell(v) for v in row] for row in rows]) if rows else "  none")
        print()
    return 0


def _json_value(value):
    """PostgreSQL returns NUMERIC as Decimal: numbers stay numbers; timestamps become ISO text."""
    if isinstance(value, Decimal):
        return float(value)
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)


def _cell(value):
    if isinstance(value, (float, Decimal)):
        return f"{float(value):.4g}"
    if isinstance(value, dt.datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    text = "" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _cmd_incident(args: argparse.Namespace) -> int:
    from retrain_assets.store import MonitoringStore

    settings = load_settings(args.config)
    events = MonitoringStore(settings.storage.database_url).events
    if args.action == "open":
        if args.model:
            settings.model(args.model)  # a clear error for an undeclared model
        incident = events.open_incident(args.title, priority=args.priority, model_name=args.model)
        print(f"opened incident #{incident} ({args.priority}); automatic retraining of "
              f"{args.model or 'every model'} is blocked while a P1 is open" if args.priority == "P1"
              else f"opened incident #{incident} ({args.priority})")
    else:
        events.resolve_incident(args.id)
        print(f"resolved incident #{args.id}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from retrain_assets.monitoring.check_command import run_check  # scipy and pandas: only when asked for

    return run_check(args)


def _add_check_command(commands) -> None:
    check = commands.add_parser(
        "check", help="one-off retrain decision: drift between two CSV/Parquet files (+ performance if given)"
    )
    check.add_argument("--reference", required=True, help="training-time data (.csv, .csv.gz or .parquet)")
    check.add_argument("--current", required=True, help="recent data with the same columns")
    check.add_argument("--features", help="comma-separated columns to test (default: all shared columns)")
    check.add_argument("--predictions", help="predictions: .npy, a table's first column, or file.csv:column")
    check.add_argument("--actuals", help="true values, same forms as --predictions")
    check.add_argument("--baseline", help="baseline metrics, e.g. accuracy=0.9,f1=0.85 or r2=0.85,rmse=0.35")
    check.add_argument("--task", choices=["classification", "regression"], default="classification")
    check.add_argument("--policy", choices=["evidence", "seed"], default="evidence",
                       help="evidence (default): calibrated, importance-free drift and tests against the baseline; "
                            "seed: the design documents' fixed rules")
    check.add_argument("--json", action="store_true", help="print the decision as JSON")
    check.set_defaults(handler=_cmd_check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrain", description="Dagster-native automatic retraining.")
    parser.add_argument("--config", default=None, help="config file (default: $RETRAIN_CONFIG or ./retrain.yaml; "
                        "demo and config fall back to the packaged demo configuration)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="play the full lifecycle on the embedded storage (wipes the demo state)")
    demo.add_argument("--home", default=".dagster_home", help="Dagster home the demo owns (default .dagster_home)")
    demo.add_argument("--dagster-yaml", default=None,
                      help="instance config copied into the home (default: ./dagster.yaml, else the packaged one)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    demo.set_defaults(handler=_cmd_demo)

    config = commands.add_parser("config", help="validate the config file and print it with every default")
    config.add_argument("--reference", action="store_true",
                        help="print the reference of every key (markdown: docs/configuration.md) instead")
    config.add_argument("--schema", action="store_true",
                        help="print the JSON Schema of retrain.yaml (retrain.schema.json) for editor validation")
    config.set_defaults(handler=_cmd_config)

    trigger = commands.add_parser("trigger", help="retrain a model now (manual trigger, recorded in the events table)")
    trigger.add_argument("--model", required=True, help="a model declared in the config")
    trigger.add_argument("--reason", required=True, help="why (stored with the event and the run)")
    trigger.add_argument("--requester", default="", help="who asks (default: $USER)")
    trigger.add_argument("--url", help="submit through a running Dagster webserver (e.g. http://127.0.0.1:3000) "
                         "instead of running in process on $DAGSTER_HOME")
    trigger.add_argument("--force", action="store_true",
                         help="retrain even while a retrain of the model is in flight (its claim is released; recorded)")
    trigger.add_argument("--data-version", default="latest",
                         help="latest (default: a new dataset from the data source), or a dataset version (v7 or its "
                              "tag v7-2026-12-01): train again on exactly those rows, hash verified")
    trigger.set_defaults(handler=_cmd_trigger)

    rollback = commands.add_parser("rollback", help="swap production and standby (instant rollback)")
    rollback.add_argument("--model", required=True)
    rollback.add_argument("--reason", default="", help="why (stored with the event)")
    rollback.add_argument("--requester", default="", help="who asks (default: $USER)")
    rollback.set_defaults(handler=_cmd_rollback)

    canary = commands.add_parser("canary", help="act on a canary deployment")
    canary_actions = canary.add_subparsers(dest="action", required=True)
    abort = canary_actions.add_parser("abort", help="roll the model's canary back now, whatever its evidence")
    abort.add_argument("--model", required=True)
    abort.add_argument("--reason", default="", help="why (stored with the event and the canary's gate)")
    abort.add_argument("--requester", default="", help="who asks (default: $USER)")
    abort.set_defaults(handler=_cmd_canary)

    serve = commands.add_parser("serve", help="the HTTP API: /predict/batch, /labels, /readyz, /metrics, /training/* (docs at /docs)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--dagster-url", default=None, help="Dagster webserver for /training/trigger "
                       "(default: $RETRAIN_DAGSTER_URL)")
    serve.add_argument("--workers", type=int, default=1, help="server processes on one port (uvicorn workers); each "
                       "loads the models and follows the registry on its own (default 1)")
    serve.add_argument("--log-level", default="warning")
    serve.set_defaults(handler=_cmd_serve)

    events = commands.add_parser("events", help="the audit queries: events, trigger frequency, improvement")
    events.add_argument("--since", default="7d", help="look back this far: 12h, 7d, 4w (default 7d)")
    events.add_argument("--json", action="store_true", help="print the rows as JSON")
    events.set_defaults(handler=_cmd_events)

    incident = commands.add_parser("incident", help="open or resolve an incident (an open P1 blocks automatic retrains)")
    actions = incident.add_subparsers(dest="action", required=True)
    opened = actions.add_parser("open", help="open an incident")
    opened.add_argument("--title", required=True)
    opened.add_argument("--priority", choices=["P1", "P2", "P3", "P4"], default="P1")
    opened.add_argument("--model", help="the model concerned (default: every model)")
    resolved = actions.add_parser("resolve", help="resolve an incident")
    resolved.add_argument("--id", type=int, required=True)
    incident.set_defaults(handler=_cmd_incident)

    _add_check_command(commands)
    add_replay_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except RetrainError as error:
        print(f"retrain: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("retrain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
