"""deploy/serving.k8s.yaml stays true to the code: its command parses with `retrain`'s own parser, its probes
and scrape path are routes the app serves, and the config it points at is the one it mounts."""

from pathlib import Path

import yaml

from retrain_assets.cli import build_parser
from retrain_assets.serving.api import create_app
from tests.conftest import make_settings

REPO = Path(__file__).resolve().parents[2]


def test_the_kubernetes_example_matches_the_cli_and_the_routes(tmp_path):
    documents = list(yaml.safe_load_all((REPO / "deploy" / "serving.k8s.yaml").read_text()))
    kinds = {d["kind"]: d for d in documents}
    assert set(kinds) == {"Deployment", "Service", "PodDisruptionBudget"}
    pod = kinds["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    args = build_parser().parse_args(container["command"][1:])
    assert args.handler.__name__ == "_cmd_serve" and args.workers == 2 and args.host == "0.0.0.0"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(args.port)
    app = create_app(make_settings(tmp_path))
    app.state.log_writer.close()
    routes = {route.path for route in app.routes}
    probes = {container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes | {pod["metadata"]["annotations"]["prometheus.io/path"]} <= routes
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["RETRAIN_CONFIG"] in mounts and env["RETRAIN_ARTIFACT_ROOT"] in mounts
    assert kinds["Service"]["spec"]["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]


def test_serving_names_the_event_tag_as_the_dagster_definitions_do():
    """/training/status finds a queued run by its event tag without importing Dagster: the name must agree."""
    from retrain_assets.defs.keys import TAG_EVENT_ID
    from retrain_assets.serving.api import EVENT_TAG

    assert EVENT_TAG == TAG_EVENT_ID
