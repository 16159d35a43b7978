"""Foundation: package layout and the tokenizers-shadowing guard, configs, CLI, MLflow helper."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from videopoet.config import ConfigError, RecipeRegistry, apply_overrides, config_hash, from_dict, to_dict

REPO = Path(__file__).resolve().parents[2]
VENV_SITE = str(Path(sys.prefix))


def _run(args: list[str], cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("PYTHONSAFEPATH", None)
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, env=full_env)


# --- layout: Hugging Face `tokenizers` is never shadowed by the repo's tokenizers/ folder ---------

def test_repo_tokenizers_folder_is_not_a_regular_package():
    assert (REPO / "tokenizers").is_dir()
    assert not (REPO / "tokenizers" / "__init__.py").exists(), (
        "tokenizers/__init__.py would shadow Hugging Face's tokenizers when the repo root is on sys.path"
    )


@pytest.mark.parametrize("flags", [[], ["-P"]], ids=["plain", "safe-path"])
def test_python_c_from_root_imports_hf_tokenizers_and_ours(flags):
    code = (
        "import tokenizers, transformers, videopoet.tokenizers.cli as ours;"
        "print(tokenizers.__file__); print(ours.__file__); print(transformers.PreTrainedTokenizerFast.__name__)"
    )
    result = _run([sys.executable, *flags, "-c", code])
    assert result.returncode == 0, result.stderr
    hf_file, ours_file, _ = result.stdout.strip().splitlines()
    assert "site-packages" in hf_file and hf_file.startswith(VENV_SITE)
    assert Path(ours_file) == REPO / "tokenizers" / "cli.py"


@pytest.mark.parametrize("runner", [["-m", "pytest"], ["pytest"]], ids=["python-m-pytest", "pytest"])
def test_pytest_invocations_see_hf_tokenizers(tmp_path, runner):
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import tokenizers, videopoet.tokenizers.cli\n"
        "def test_probe():\n"
        "    assert 'site-packages' in tokenizers.__file__, tokenizers.__file__\n"
    )
    cmd = [sys.executable, *runner] if runner[0] == "-m" else [str(Path(sys.executable).parent / "pytest")]
    # Run from the repo root (root on sys.path for `python -m pytest`) with our pyproject's settings.
    result = _run([*cmd, "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO), str(probe)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_this_process_sees_hf_tokenizers():
    import tokenizers

    assert "site-packages" in tokenizers.__file__


# --- configs -------------------------------------------------------------------------------

@dataclasses.dataclass
class _Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)


@dataclasses.dataclass
class _Cfg:
    name: str = "x"
    width: int = 64
    engine: Literal["beam", "ray"] = "beam"
    flags: list[str] = dataclasses.field(default_factory=list)
    checkpoint: str | None = None
    optim: _Optim = dataclasses.field(default_factory=_Optim)

    def validate(self):
        if self.width <= 0:
            raise ValueError(f"width must be positive, got {self.width}")


def test_overrides_coerce_nested_values():
    cfg = apply_overrides(_Cfg(), ["width=128", "optim.lr=3e-4", "engine=ray", "flags=[a,b]",
                                   "checkpoint=null", "optim.betas=[0.8,0.99]"])
    assert cfg.width == 128 and cfg.optim.lr == pytest.approx(3e-4) and cfg.engine == "ray"
    assert cfg.flags == ["a", "b"] and cfg.checkpoint is None and cfg.optim.betas == (0.8, 0.99)
    assert _Cfg().width == 64  # the original is untouched


@pytest.mark.parametrize(
    "override, expected",
    [
        ("width=abc", "width='abc': expected int"),
        ("engine=spark", "engine='spark': expected one of 'beam', 'ray'"),
        ("optim.lr=fast", "optim.lr='fast': expected float"),
        ("depth=3", "unknown key 'depth'"),
        ("width", "must look like key=value"),
        ("width=-1", "width must be positive"),
    ],
)
def test_bad_override_gives_one_clear_line(override, expected):
    with pytest.raises(ConfigError) as err:
        apply_overrides(_Cfg(), [override])
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_recipes_and_yaml_with_base(tmp_path):
    registry = RecipeRegistry(_Cfg)

    @registry.register
    def tiny():
        return _Cfg(name="tiny", width=8)

    assert registry.get("tiny").width == 8
    assert registry.get("tiny", ["width=16"]).width == 16
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("base: tiny\noptim:\n  lr: 0.5\n")
    cfg = registry.get(str(yaml_file))
    assert (cfg.name, cfg.width, cfg.optim.lr) == ("tiny", 8, 0.5)
    with pytest.raises(ConfigError, match="not a recipe or a YAML file; recipes: tiny"):
        registry.get("huge")
    assert from_dict(_Cfg, to_dict(cfg)) == cfg
    assert config_hash(cfg) == config_hash(from_dict(_Cfg, to_dict(cfg)))
    assert config_hash(cfg) != config_hash(registry.get("tiny"))


# --- CLI -----------------------------------------------------------------------------------

def test_cli_help_lists_commands():
    import importlib

    from videopoet.cli import COMMAND_SPECS

    result = _run([str(Path(sys.executable).parent / "videopoet"), "--help"])
    assert result.returncode == 0, result.stderr
    assert "make-samples" in result.stdout and "demo" in result.stdout
    names = {module: importlib.import_module(module).NAME for module in COMMAND_SPECS}
    assert set(names.values()) == {"make-samples", "demo", "ingest", "train-tokenizer", "tokenize", "train",
                                   "train-sr", "sample", "super-resolve", "status", "eval"}
    for module in COMMAND_SPECS:
        assert names[module] in result.stdout
    for module in COMMAND_SPECS:  # --help works on every subcommand
        sub = _run([str(Path(sys.executable).parent / "videopoet"), names[module], "--help"])
        assert sub.returncode == 0 and "usage:" in sub.stdout, sub.stderr


def test_flags_may_follow_overrides():
    import argparse

    from videopoet import commands

    spec = argparse.Namespace(NAME="job", HELP="h", DESCRIPTION="d", add_arguments=lambda p: (
        p.add_argument("--config", default="tiny"), p.add_argument("--no-progress", action="store_true"),
        p.add_argument("overrides", nargs="*", metavar="key=value")))
    parser = commands.build_parser([spec])
    args = commands.parse(parser, ["job", "--config", "tiny", "a=b", "--no-progress", "c=d"])
    assert (args.config, args.no_progress, args.overrides) == ("tiny", True, ["a=b", "c=d"])
    with pytest.raises(SystemExit):
        commands.parse(parser, ["job", "a=b", "--bogus", "c=d"])


# --- MLflow helper -------------------------------------------------------------------------

def test_tracking_run_found_on_default_uri(tmp_path, monkeypatch):
    import mlflow

    from videopoet.tracking import start_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with start_run("unit-test", _Cfg(width=7), run_name="probe") as run:
        mlflow.log_metric("loss", 1.5, step=3)
        run_id = run.info.run_id
    assert (tmp_path / "mlflow.db").is_file()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["videopoet"], output_format="list")
    assert [r.info.run_id for r in runs] == [run_id]
    found = runs[0]
    assert found.data.params["width"] == "7" and found.data.params["optim.lr"] == "0.001"
    assert found.data.tags["videopoet.job"] == "unit-test"
    assert found.data.tags["version.torch"].startswith("2.14")
    assert found.data.tags["git_commit"] != ""
    assert found.data.metrics["loss"] == 1.5
    artifacts = Path(mlflow.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tmp_path) and (artifacts / "config.yaml").is_file()


def test_tracking_uri_env_overrides_default(tmp_path, monkeypatch):
    from videopoet.tracking import tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking_uri() == "http://tracking.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
