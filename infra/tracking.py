"""MLflow tracking for every job: one helper opens a run and records what made it.

Default tracking URI: a SQLite file `mlflow.db` in the working directory (nothing to start), with
artifacts under `./mlartifacts`. Set MLFLOW_TRACKING_URI to use a tracking server instead.
Every run gets: the resolved config (params + config.yaml artifact), the job name, package
versions, the git commit of the code, and the host.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterator

from videopoet.config import dump_yaml, flatten, to_dict

EXPERIMENT = "videopoet"
TRACKED_PACKAGES = (
    "videopoet", "torch", "torchvision", "ray", "deepspeed", "apache-beam", "pyarrow", "numpy",
    "av", "decord", "opencv-python-headless", "timm", "transformers", "webdataset", "mlflow",
    "einops", "vector-quantize-pytorch",
)
# MLflow rejects param values over 6000 characters; long lists are kept whole in config.yaml.
_MAX_PARAM_CHARS = 500


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def git_commit(path: Path | None = None) -> str:
    """The commit of the code that runs (with '+dirty' when the tree has changes), or 'unknown'."""
    where = path or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _experiment_id(mlflow: Any, name: str) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    kwargs = {}
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:"):
        # With SQLite MLflow would put artifacts in ./mlruns of whatever directory a worker runs in.
        db_path = Path(uri.split("sqlite:///", 1)[-1])
        kwargs["artifact_location"] = (db_path.parent / "mlartifacts").resolve().as_uri()
    try:
        return mlflow.create_experiment(name, **kwargs)
    except Exception:  # created concurrently by another process
        return mlflow.get_experiment_by_name(name).experiment_id


@contextlib.contextmanager
def start_run(
    job: str,
    config: Any = None,
    *,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    experiment: str | None = None,
) -> Iterator[Any]:
    """Open an MLflow run for `job` and log config, versions and commit; yields the active run.

    Use mlflow.log_metric/log_artifact inside. Only call it on rank 0 of a distributed job.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    exp_id = _experiment_id(mlflow, experiment or os.environ.get("VIDEOPOET_EXPERIMENT", EXPERIMENT))
    all_tags = {"videopoet.job": job, "git_commit": git_commit(), "host": platform.node()}
    all_tags.update(tags or {})
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name or job, tags=all_tags) as run:
        if config is not None:
            plain = to_dict(config)
            params = {
                k: (str(v) if len(str(v)) <= _MAX_PARAM_CHARS else str(v)[:_MAX_PARAM_CHARS - 3] + "...")
                for k, v in flatten(plain if isinstance(plain, dict) else {"config": plain}).items()
            }
            for start in range(0, len(params), 100):  # MLflow's batch limit
                mlflow.log_params(dict(list(params.items())[start:start + 100]))
            mlflow.log_text(dump_yaml(config), "config.yaml")
        versions = package_versions()
        mlflow.log_dict(versions, "versions.json")
        mlflow.set_tags({f"version.{k}": v for k, v in versions.items()})
        yield run
