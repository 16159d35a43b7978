"""Packaging: a non-editable wheel installs and runs away from the checkout; pyproject lists every package."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_pyproject_lists_every_package_folder():
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools_cfg["packages"])
    found = set()
    for package, folder in setuptools_cfg["package-dir"].items():
        root = REPO / folder
        found.add(package)
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            if rel.parts and "__pycache__" not in rel.parts:
                found.add(".".join((package, *rel.parts)))
    assert found == listed, f"pyproject.toml [tool.setuptools] packages: missing {sorted(found - listed)}, " \
                            f"stale {sorted(listed - found)}"


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(REPO)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("videopoet-*.whl")

    # A fresh venv that sees the project's dependencies but not its editable install: a .pth line
    # adds the project venv's site-packages to sys.path without running the .pth files there.
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    site = Path(subprocess.check_output(
        [str(target / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    # pip --target does not write console scripts: the entry point is `python -m videopoet.cli`.

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    python = str(target / "bin" / "python")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)

    helped = run("-m", "videopoet.cli", "--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("ingest", "tokenize", "train-tokenizer", "train", "sample", "make-samples"):
        assert command in helped.stdout

    probe = run("-c", "\n".join([
        "import importlib, videopoet",
        "from videopoet.trainer.config import TRAIN_RECIPES",
        "from videopoet.training.zero import deepspeed_config_path",
        "print(videopoet.__file__)",
        "cfg = TRAIN_RECIPES.get('configs/train_8b_cluster.yaml')",
        "print(cfg.engine.num_workers, cfg.checkpoint.name)",
        "print(deepspeed_config_path('zero3_multinode_8b'))",
        "for name in ('videopoet.infra', 'videopoet.tests', 'videopoet.bench'):",
        "    try:",
        "        importlib.import_module(name)",
        "        print('importable', name)",
        "    except ImportError:",
        "        pass",
    ]))
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.strip().splitlines()
    assert Path(lines[0]).is_relative_to(site), f"videopoet imported from {lines[0]}, not the wheel"
    assert lines[1] == "64 videopoet-8b"
    assert Path(lines[2]).is_relative_to(site) and Path(lines[2]).is_file()
    assert not any(line.startswith("importable") for line in lines), lines
