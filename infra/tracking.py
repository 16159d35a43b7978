"""MLflow tracking for every job: open a run that records what made it, and log to it.

Default tracking URI: a SQLite file `mlflow.db` in the working directory (nothing to start), with
artifacts under `./mlartifacts`. Set MLFLOW_TRACKING_URI to use a tracking server instead.
Every run gets: the resolved config (params + config.yaml artifact), the job name, package
versions, the git commit of the code, and the host. `start_run` is the context manager the data
jobs use; `Tracker` is the one logging API of the three training jobs (start, params, metrics,
artifacts, tags, end), also usable from a Ray Train worker attached to the driver's run.
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


class Tracker:
    """The one MLflow API of the training jobs: start a run, log params, metrics, artifacts, tags, end.

    `Tracker.start(job, config)` opens a run here (rank 0 or the driver); `Tracker.attach(run_id)`
    continues a run another process opened (a Ray Train worker of the driver's run);
    `Tracker.disabled()` is a no-op tracker (ranks > 0). Metrics are buffered and written with
    MlflowClient.log_batch on `flush()` (and at `end()`), so a per-step log costs no round trip;
    everything goes through the client with an explicit run id (no fluent active-run state), so the
    same object works in a driver, a worker or a thread.
    """

    def __init__(self, run_id: str | None, *, uri: str | None = None, context: Any = None):
        self.run_id = run_id
        self.uri = uri or tracking_uri()
        self._context = context  # the start_run context manager this tracker owns, if any
        self._buffer: list[tuple[str, float, int]] = []
        self._client = None

    # -- opening and closing ------------------------------------------------------------------
    @classmethod
    def start(cls, job: str, config: Any = None, *, run_name: str | None = None,
              tags: dict[str, str] | None = None) -> "Tracker":
        context = start_run(job, config, run_name=run_name, tags=tags)
        run = context.__enter__()
        return cls(run.info.run_id, context=context)

    @classmethod
    def attach(cls, run_id: str | None, uri: str | None = None) -> "Tracker":
        return cls(run_id, uri=uri) if run_id else cls.disabled()

    @classmethod
    def disabled(cls) -> "Tracker":
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def end(self, failed: bool = False) -> None:
        self.flush()
        if self._context is not None:
            context, self._context = self._context, None
            if failed:
                context.__exit__(RuntimeError, RuntimeError("training failed"), None)
            else:
                context.__exit__(None, None, None)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(failed=exc_type is not None)

    # -- logging ----------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.uri)
        return self._client

    def log_params(self, params: dict[str, Any]) -> None:
        if self.enabled and params:
            from mlflow.entities import Param

            items = [Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow's batch limit
                self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, Any], step: int, *, flush: bool = True) -> None:
        """Buffer the finite numeric entries of `metrics` at `step`; write them now unless flush=False."""
        if not self.enabled:
            return
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                continue
            self._buffer.append((key, float(value), int(step)))
        if flush:
            self.flush()

    def flush(self) -> None:
        if not self.enabled or not self._buffer:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, s) for k, v, s in self._buffer]
        for i in range(0, len(items), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])
        self._buffer.clear()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled:
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, str(value))
