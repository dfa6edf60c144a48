"""The ``retrain`` command line.

Every user-fixable problem (bad config, unreachable database, bad data) ends with one line on stderr that
says what to fix and exit code 2; tracebacks are for bugs only.
"""

import argparse
import json
import sys
from pathlib import Path

from retrain_assets.errors import RetrainError
from retrain_assets.monitoring.check_command import add_check_command
from retrain_assets.settings import load_settings


def _cmd_demo(args: argparse.Namespace) -> int:
    from retrain_assets.demo import run_demo  # imports Dagster: only when asked for

    settings = load_settings(args.config)
    return run_demo(settings, Path(args.home).resolve(), Path(args.dagster_yaml), as_json=args.json)


def _cmd_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrain", description="Dagster-native automatic retraining.")
    parser.add_argument("--config", default=None, help="config file (default: $RETRAIN_CONFIG or ./retrain.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="play the full lifecycle on the embedded storage (wipes the demo state)")
    demo.add_argument("--home", default=".dagster_home", help="Dagster home the demo owns (default .dagster_home)")
    demo.add_argument("--dagster-yaml", default="dagster.yaml", help="instance config copied into the home")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    demo.set_defaults(handler=_cmd_demo)

    config = commands.add_parser("config", help="validate the config file and print it with every default")
    config.set_defaults(handler=_cmd_config)

    add_check_command(commands)
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
