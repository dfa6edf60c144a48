"""`retrain check` end to end: files in, a decision out, exit 0 either way, 2 with a message on bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from retrain_assets.cli import main


def write(tmp_path, shift=0.0, n=2000, suffix=".csv"):
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=n), "plan": rng.choice(["a", "b"], n)})
    cur = pd.DataFrame({"x": rng.normal(shift, 1, n), "plan": rng.choice(["a", "b"], n)})
    paths = tmp_path / f"ref{suffix}", tmp_path / f"cur{suffix}"
    for frame, path in zip((ref, cur), paths):
        frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    return map(str, paths)


def test_json_decision_on_drifted_files(tmp_path, capsys):
    ref, cur = write(tmp_path, shift=1.0, suffix=".parquet")
    assert main(["check", "--reference", ref, "--current", cur, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["retrain"] is True and out["severity"] == "HIGH" and out["trigger"] == "drift"
    drift = next(s for s in out["signals"] if s["kind"] == "drift")  # calibrated on chunks of the reference
    assert drift["status"] == "retrain" and drift["value"] > 2 * drift["threshold"] and out["policy"] == "evidence"
    assert out["drifted_features"] == ["x"] and out["features"]["x"]["drifted"] is True
    assert {"test", "statistic", "p_value", "effect", "drifted"} <= set(out["features"]["plan"])


def test_human_output_with_performance(tmp_path, capsys):
    ref, cur = write(tmp_path, shift=0.0, suffix=".csv.gz")
    rng = np.random.default_rng(1)
    y = rng.normal(size=1000)
    np.save(tmp_path / "pred.npy", y + rng.normal(0, 1, 1000))
    pd.DataFrame({"y": y}).to_csv(tmp_path / "actual.csv", index=False)
    code = main(["check", "--reference", ref, "--current", cur, "--task", "regression",
                 "--predictions", str(tmp_path / "pred.npy"), "--actuals", f"{tmp_path / 'actual.csv'}:y",
                 "--baseline", "r2=0.95,rmse=0.3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "RETRAINING DECISION: YES" in out and "large performance drop: " in out and "trigger: performance" in out
    assert "| x | numeric | ks |" in out
    seed = main(["check", "--reference", ref, "--current", cur, "--task", "regression", "--policy", "seed",
                 "--predictions", str(tmp_path / "pred.npy"), "--actuals", f"{tmp_path / 'actual.csv'}:y",
                 "--baseline", "r2=0.95,rmse=0.3"])
    out = capsys.readouterr().out
    assert seed == 0 and "performance below baseline" in out and "policy: seed" in out


def test_bad_input_exits_2_with_the_reason(tmp_path, capsys):
    ref, _ = write(tmp_path)
    assert main(["check", "--reference", ref, "--current", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err
    assert main(["check", "--reference", ref, "--current", ref, "--baseline", "r2"]) == 2
    assert "metric=value" in capsys.readouterr().err


def test_installed_command(tmp_path):
    ref, cur = write(tmp_path)
    retrain = Path(sys.executable).with_name("retrain")
    done = subprocess.run([str(retrain), "check", "--reference", ref, "--current", cur, "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["retrain"] is False
