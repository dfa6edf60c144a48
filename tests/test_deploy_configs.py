"""The example deployment configs are valid against the schemas of the Dagster packages they name."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _errors(config_type, value) -> list[str]:
    from dagster._config import process_config

    result = process_config(config_type, value)
    return [] if result.success else [error.message for error in result.errors]


def test_kubernetes_instance_config_validates(tmp_path):
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher

    text = (REPO / "deploy" / "dagster.k8s.yaml").read_text()
    (tmp_path / "dagster.yaml").write_text(text)
    instance_config, _ = dagster_instance_config(str(tmp_path))  # the whole file, as the instance reads it
    launcher = instance_config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert _errors(K8sRunLauncher.config_type(), launcher["config"]) == []
    limits = instance_config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert limits == [{"key": "retrain/concurrency", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]


def test_every_shipped_instance_config_monitors_runs_and_limits_one_retrain_per_model(tmp_path, monkeypatch):
    """A killed run worker must not wedge a model: run monitoring fails it, the failure sensor records it."""
    from dagster._core.instance.config import dagster_instance_config

    for env in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(env, "5432" if env.endswith("PORT") else "x")
    for name in ("dagster.yaml", "deploy/dagster.postgres.yaml", "deploy/dagster.k8s.yaml"):
        home = tmp_path / name.replace("/", "_")
        home.mkdir()
        (home / "dagster.yaml").write_text((REPO / name).read_text())
        config, _ = dagster_instance_config(str(home))
        monitoring = config["run_monitoring"]
        assert monitoring["enabled"] is True and monitoring["start_timeout_seconds"] > 0, name
        assert monitoring["poll_interval_seconds"] <= 60 and "max_resume_run_attempts" in monitoring, name
        assert "run_coordinator" not in config, name  # the public concurrency block, no private module path
        assert config["concurrency"]["runs"]["tag_concurrency_limits"][0]["key"] == "retrain/concurrency", name


def test_a_wrong_key_in_the_kubernetes_launcher_is_caught():
    from dagster_k8s import K8sRunLauncher

    config = yaml.safe_load((REPO / "deploy" / "dagster.k8s.yaml").read_text())["run_launcher"]["config"]
    assert _errors(K8sRunLauncher.config_type(), {**config, "job_imag": "typo"})


def test_celery_executor_run_config_validates(monkeypatch):
    from dagster_celery import celery_executor

    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest@127.0.0.1:5672//")
    monkeypatch.setenv("CELERY_BACKEND_URL", "redis://127.0.0.1:6379/0")
    config = yaml.safe_load((REPO / "deploy" / "celery_executor.yaml").read_text())["execution"]["config"]
    schema = celery_executor.config_schema.config_type
    assert _errors(schema, config) == []
    assert _errors(schema, {**config, "brokr": "amqp://x"})
