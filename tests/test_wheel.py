"""The wheel alone carries the package and the configuration it needs: built from the sources a clean clone has,
installed into a fresh venv, `retrain --help` and `retrain config` run outside the checkout.

The fresh venv gets the wheel only (``--no-deps``); its dependencies are the test environment's installed ones,
reached through a .pth file (a path entry: the editable install's import hook there is never run), so the test
needs no network beyond the build backend and proves that retrain_assets, and its default configuration, come
from the wheel.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGED = {  # file in the wheel -> its one source in the repository
    "retrain_assets/defaults/retrain.yaml": "retrain.yaml",
    "retrain_assets/defaults/dagster.yaml": "dagster.yaml",
}

pytestmark = pytest.mark.slow


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    completed = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs)
    assert completed.returncode == 0, f"{command} exited {completed.returncode}:\n{completed.stdout}{completed.stderr}"
    return completed


def _clean_sources(target: Path) -> Path:
    """The files of a clean clone plus the work in progress (tracked and untracked, not ignored), symlinks kept:
    a build in the checkout itself would reuse a stale build/ folder and could hide missing files."""
    listed = _run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not source.is_symlink() and not source.exists():  # deleted in the work tree
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target / name)
        else:
            shutil.copy2(source, target / name)
    return target


def _build_wheel(tmp_path: Path) -> Path:
    sources = _clean_sources(tmp_path / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp_path / "dist", sources],
         cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("retrain_assets-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel])
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "zz_test_dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    return venv


def test_wheel_runs_retrain_config_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "retrain_assets/py.typed" in names
        for packaged, source in PACKAGED.items():
            assert packaged in names, f"{packaged} is missing from the wheel"
            assert archive.read(packaged) == (REPO / source).read_bytes(), f"{packaged} differs from {source}"

    venv = _fresh_venv(tmp_path, wheel)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in {"PYTHONPATH", "VIRTUAL_ENV", "DAGSTER_HOME", "RETRAIN_CONFIG", "RETRAIN_DATABASE_URL",
                          "RETRAIN_ARTIFACT_ROOT"}}

    # The package and its default configuration come from the fresh venv, not from the checkout.
    probe = _run([venv / "bin" / "python", "-c",
                  "import json, retrain_assets.cli as cli; print(json.dumps([cli.__file__, "
                  "sorted(p.name for p in cli.PACKAGED_DEFAULTS.iterdir() if p.is_file() and not p.is_symlink())]))"],
                 cwd=outside, env=env)
    module, defaults = json.loads(probe.stdout)
    assert Path(module).is_relative_to(venv) and not Path(module).is_relative_to(REPO)
    assert defaults == ["dagster.yaml", "retrain.yaml"]

    helped = _run([venv / "bin" / "retrain", "--help"], cwd=outside, env=env)
    assert "demo" in helped.stdout and "config" in helped.stdout

    # No ./retrain.yaml and no RETRAIN_CONFIG: the packaged demo configuration, storage under the current folder.
    shown = _run([venv / "bin" / "retrain", "config"], cwd=outside, env=env)
    config = json.loads(shown.stdout)
    assert [model["name"] for model in config["models"]] == ["churn", "demand"]
    assert config["storage"]["database_url"] == f"sqlite:///{outside.resolve()}/.retrain/monitoring.db"
    assert "packaged demo configuration" in shown.stderr and str(venv) in shown.stderr
