import subprocess
import sys

from retrain_assets.cli import main


def test_config_prints_every_default(capsys):
    assert main(["--config", "retrain.yaml", "config"]) == 0
    assert '"min_precision": 0.85' in capsys.readouterr().out


def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: m\n    task: classify\n    target: y\n    features: [{name: x, type: numeric}]\n")
    assert main(["--config", str(bad), "config"]) == 2
    err = capsys.readouterr().err
    assert "models.0.task: must be one of 'classification' or 'regression'" in err
    assert "Traceback" not in err


def test_missing_config_exit_2(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "retrain_assets.cli", "--config", str(tmp_path / "x.yaml"), "config"],
                               capture_output=True, text=True)
    assert completed.returncode == 2 and "not found" in completed.stderr
