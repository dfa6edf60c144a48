import textwrap

import pytest
import yaml

from retrain_assets.errors import ConfigError
from retrain_assets.settings import load_settings, settings_from_dict
from retrain_assets.simulate import model_config


def _write(tmp_path, text):
    path = tmp_path / "retrain.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_are_the_design_documents_numbers():
    settings = settings_from_dict({"models": [model_config()]})
    model = settings.model("churn")
    assert model.drift.ks_p_value == 0.05
    assert model.drift.psi_feature == 0.2 and model.drift.psi_aggregate == 0.3
    assert model.drift.zscore == 3.0 and model.drift.outlier_fraction == 0.05
    assert model.performance.mae_increase == 0.20
    assert model.performance.accuracy_drop == 0.10 and model.performance.f1_drop == 0.05
    assert model.triggers.new_labels_now == 10_000
    assert model.triggers.retrain_cron == "0 3 * * 0" and model.triggers.timezone == "UTC"
    assert (model.dataset.train_fraction, model.dataset.validation_fraction, model.dataset.test_fraction) == (
        0.70, 0.15, 0.15,
    )
    assert model.gates.min_precision == 0.85 and model.gates.min_recall == 0.80
    assert model.gates.max_f1_drop == 0.01 and model.gates.max_auc_drop == 0.005


def test_model_blocks_overlay_defaults_key_by_key():
    settings = settings_from_dict(
        {
            "defaults": {"gates": {"min_precision": 0.9, "min_recall": 0.7}},
            "models": [{**model_config(), "gates": {"min_recall": 0.6}}],
        }
    )
    gates = settings.model("churn").gates
    assert gates.min_precision == 0.9 and gates.min_recall == 0.6 and gates.min_accuracy == 0.75


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"task": "classify"}, "models.0.task: must be one of 'classification' or 'regression', got 'classify'"),
        ({"gates": {"min_precison": 0.9}}, "models.0.gates.min_precison: unknown key"),
        ({"features": [{"name": "a", "type": "text"}]}, "models.0.features.0.type: must be one of"),
        ({"name": "churn model"}, "models.0.name"),
        ({"dataset": {"train_fraction": 0.9}}, "must be 1.0"),
        ({"target": "tenure_months"}, "must not also be a feature"),
        ({"deployment": {"canary_steps": [0.5, 0.05, 1.0]}}, "canary_steps must rise strictly within (0, 1] and end at 1"),
        ({"deployment": {"canary_steps": [0.05, 0.5]}}, "canary_steps must rise strictly within (0, 1] and end at 1"),
        ({"deployment": {"shadow": True, "strategy": "canary"}}, "deployment.shadow: true contradicts"),
        ({"monitoring": {"window_rows": 50}}, "monitoring.window_rows (50) must be at least deployment.watch_min_samples"),
    ],
)
def test_invalid_config_names_the_key_and_allowed_values(change, expected):
    with pytest.raises(ConfigError) as error:
        settings_from_dict({"models": [{**model_config(), **change}]})
    assert expected in str(error.value)


def test_the_older_shadow_switch_reads_as_the_shadow_strategy():
    for shadow, strategy in ((True, "shadow"), (False, "direct")):
        settings = settings_from_dict({"models": [{**model_config(), "deployment": {"shadow": shadow}}]})
        assert settings.model("churn").deployment.strategy == strategy
    both = settings_from_dict({"models": [{**model_config(), "deployment": {"shadow": False, "strategy": "canary"}}]})
    assert both.model("churn").deployment.strategy == "canary"  # shadow: false says nothing against it


def test_unknown_defaults_block_is_rejected():
    with pytest.raises(ConfigError, match="defaults.gate: unknown key"):
        settings_from_dict({"defaults": {"gate": {}}, "models": [model_config()]})


def test_missing_file_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("RETRAIN_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="not found: create it .* or set RETRAIN_CONFIG"):
        load_settings(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_write(tmp_path, "models: [\n"))


def test_relative_storage_paths_are_relative_to_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("RETRAIN_DATABASE_URL", raising=False)
    monkeypatch.delenv("RETRAIN_ARTIFACT_ROOT", raising=False)
    path = _write(
        tmp_path,
        """
        storage: {database_url: "sqlite:///state/m.db", artifact_root: state/artifacts}
        models:
          - name: m
            task: regression
            target: y
            features: [{name: x, type: numeric}]
        """,
    )
    monkeypatch.chdir("/")
    settings = load_settings(path)
    assert settings.storage.database_url == f"sqlite:///{tmp_path}/state/m.db"
    assert settings.storage.artifact_root == str(tmp_path / "state" / "artifacts")


def test_environment_overrides_storage_by_reference_so_the_password_stays_there(tmp_path, monkeypatch, capsys):
    from retrain_assets.cli import main
    from retrain_assets.defs.definitions import resources_for
    from retrain_assets.store.database import resolve_url

    secret = "postgresql+psycopg2://postgres:s3cr3t-pw@127.0.0.1:5432/x"
    monkeypatch.setenv("RETRAIN_DATABASE_URL", secret)
    settings = settings_from_dict({"models": [model_config()]})
    assert settings.storage.database_url == "env:RETRAIN_DATABASE_URL" and resolve_url(settings.storage.database_url) == secret
    resources = resources_for(settings)
    assert "s3cr3t-pw" not in repr(resources)  # what Dagster snapshots and shows on its resource page
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump({"models": [model_config()]}))
    assert main(["--config", str(config), "config"]) == 0
    assert "s3cr3t-pw" not in capsys.readouterr().out


def test_a_password_in_the_file_is_refused_with_what_to_do():
    with pytest.raises(ConfigError, match=r"storage.database_url.*postgresql://u:\*\*\*@h/db holds a password.*env:NAME"):
        settings_from_dict({"storage": {"database_url": "postgresql://u:pw@h/db"}, "models": [model_config()]})
    source = {**model_config(), "data_source": {"kind": "sql_table", "table": "t", "url": "postgresql://u:pw@h/db"}}
    with pytest.raises(ConfigError, match="data_source.url.*holds a password"):
        settings_from_dict({"models": [source]})
    assert settings_from_dict({"models": [{**source, "data_source": {**source["data_source"], "url": "env:WAREHOUSE"}}]})


def test_undeclared_model_lists_the_declared_ones():
    settings = settings_from_dict({"models": [model_config()]})
    with pytest.raises(ConfigError, match=r"model 'fraud' is not declared.*\['churn'\]"):
        settings.model("fraud")


def test_repository_config_loads():
    settings = load_settings("retrain.yaml")
    assert "churn" in settings.model_names


def test_the_configuration_reference_documents_every_key_and_is_current():
    from pathlib import Path

    from retrain_assets.config_reference import config_reference, undocumented_keys

    assert undocumented_keys() == []
    document = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    assert document.read_text() == config_reference(), "regenerate: retrain config --reference > docs/configuration.md"
    assert "| `shadow_min_samples` |" in config_reference() and "## `models[].deployment`" in config_reference()


def test_a_relative_sqlite_data_source_is_relative_to_the_config_file(tmp_path, monkeypatch):
    import yaml

    from retrain_assets.settings import load_settings

    folder = tmp_path / "project"
    folder.mkdir()
    model = {**model_config(), "data_source": {"kind": "sql_table", "table": "scored", "url": "sqlite:///data/warehouse.db"}}
    (folder / "retrain.yaml").write_text(yaml.safe_dump({"models": [model]}))
    monkeypatch.chdir(tmp_path)  # started elsewhere: the path still means the file's folder
    settings = load_settings(folder / "retrain.yaml")
    assert settings.models[0].data_source.url == f"sqlite:///{(folder / 'data' / 'warehouse.db').resolve()}"


def test_the_json_schema_is_current_and_judges_as_the_loader_does(tmp_path):
    """retrain.schema.json is what `retrain config --schema` prints; the repository's retrain.yaml (which
    names it for editors) passes it, with defaults standing in for a model's blocks, and an unknown key or
    a bad value fails it as the loader fails them."""
    import json
    from pathlib import Path

    import jsonschema

    from retrain_assets.config_reference import config_schema

    root = Path(__file__).resolve().parents[1]
    schema = config_schema()
    assert json.loads((root / "retrain.schema.json").read_text()) == schema, \
        "regenerate: retrain config --schema > retrain.schema.json"
    assert (root / "retrain.yaml").read_text().startswith("# yaml-language-server: $schema=retrain.schema.json")
    validator = jsonschema.Draft202012Validator(schema)
    repository = yaml.safe_load((root / "retrain.yaml").read_text())
    assert list(validator.iter_errors(repository)) == []
    with_defaults = {"defaults": {"gates": {"min_precision": 0.5}}, "serving": {"max_rows_per_request": 100},
                     "models": [model_config()]}
    assert list(validator.iter_errors(with_defaults)) == []
    settings_from_dict(with_defaults)  # the loader agrees
    for bad in ({"models": [{**model_config(), "gates": {"min_precison": 0.5}}]},
                {"models": [{**model_config(), "task": "ranking"}]},
                {"defaults": {"gatez": {}}, "models": [model_config()]},
                {"serving": {"max_rows_per_request": 0}, "models": [model_config()]}):
        assert list(validator.iter_errors(bad)), bad
        with pytest.raises(ConfigError):
            settings_from_dict(bad)


def test_reading_the_configuration_imports_no_heavy_library():
    """Settings are a leaf: loading them, and `retrain --help`, never import scipy, scikit-learn, pandas
    or Dagster (they took seconds before every command)."""
    import subprocess
    import sys

    code = ("import sys; import retrain_assets.settings, retrain_assets.cli as cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('scipy', 'sklearn', 'pandas', 'dagster', 'great_expectations') "
            "if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr


def test_a_config_error_names_its_file(tmp_path):
    path = tmp_path / "team" / "retrain.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"models": [{**model_config(), "task": "classify"}]}))
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert str(error.value).startswith(f"invalid configuration in {path}:")
    assert "models.0.task: must be one of" in str(error.value)
