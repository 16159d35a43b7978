"""Where a training job runs: in this process (--num-workers 0) or as N Ray Train workers (N >= 1).

`--num-workers` means the same in every training job: 0 = train in the calling process (no Ray);
N >= 1 = a Ray Train TorchTrainer with N data-parallel workers (1 CPU each, +1 GPU each with GPUs;
gloo on CPU, NCCL on GPU), on a local Ray started here or the cluster at `ray_address`/RAY_ADDRESS.
Either way the job's worker function receives the same loop_config dict, finds its rank with
`worker_context()`, and polls the run's STOP file (SIGTERM/SIGINT of this process write it).
A failed worker group is restarted up to `max_failures` times; each restart resumes from the
run's latest checkpoint (the checkpoint manager's, not Ray's).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from videopoet.training.stopping import STOP_FILE, SignalStop, StopFile

NUM_WORKERS_HELP = ("0 = train in this process (no Ray); N >= 1 = N data-parallel Ray Train workers "
                    "(TorchTrainer; gloo on CPU, NCCL on GPU)")


@dataclass
class WorkerContext:
    """This process's place in the job: rank, world size and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when any rank's flag is True (a collective when distributed)."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def worker_context(use_gpu: bool = True) -> WorkerContext:
    """The current process's context: torch.distributed's rank/world when initialised, else rank 0 of 1.
    The device is the local GPU (LOCAL_RANK, set by Ray Train) when `use_gpu` and CUDA is present."""
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_gpu and torch.cuda.is_available():
        # a worker may see all of its node's GPUs or only its own
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return WorkerContext(rank, world, local_rank, device)


def stop_requested(loop_config: dict[str, Any], ctx: WorkerContext) -> Callable[[], bool]:
    """Rank 0 polls the run's STOP file; the loop's any_rank spreads the answer."""
    stop = StopFile(loop_config["stop_file"])
    return lambda: ctx.is_main and stop.requested()


def launch(
    worker: Callable[[dict[str, Any]], Any],
    loop_config: dict[str, Any],
    *,
    num_workers: int,
    run_dir: str | Path,
    use_gpu: bool = False,
    ray_address: str | None = None,
    max_failures: int = 0,
    env: dict[str, str] | None = None,
    name: str = "train",
) -> Any:
    """Run `worker(loop_config)` in-process (num_workers == 0; returns its result) or on N Ray Train
    workers (returns None: workers report through files in run_dir and MLflow)."""
    if num_workers < 0:
        raise ValueError(f"num_workers={num_workers}: 0 (in-process) or N >= 1 Ray Train workers")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stop = StopFile(run_dir / STOP_FILE)
    stop.clear()
    loop_config = {**loop_config, "stop_file": str(stop.path)}
    try:
        with SignalStop(stop):
            if num_workers == 0:
                return worker(loop_config)
            _fit_on_ray(worker, loop_config, num_workers=num_workers, run_dir=run_dir, use_gpu=use_gpu,
                        ray_address=ray_address, max_failures=max_failures, env=env or {}, name=name)
            return None
    finally:
        stop.clear()


def ray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables the workers need from the driver (tracking, DeepSpeed, experiment)."""
    from videopoet.tracking import tracking_uri

    env = {k: os.environ[k] for k in ("DS_ACCELERATOR", "RAY_AUTH_MODE", "TORCH_EXTENSIONS_DIR", "HF_HUB_OFFLINE",
                                      "VIDEOPOET_EXPERIMENT", "VIDEOPOET_LOG_LEVEL", "VIDEOPOET_LOG_FILE")
           if k in os.environ}
    env["MLFLOW_TRACKING_URI"] = tracking_uri()
    env.update(extra or {})
    return env


def _fit_on_ray(worker, loop_config, *, num_workers, run_dir, use_gpu, ray_address, max_failures, env, name) -> None:
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    env = ray_env(env)
    started = False
    if not ray.is_initialized():
        address = ray_address or os.environ.get("RAY_ADDRESS")
        # As a Ray Jobs entrypoint the job's runtime_env (working_dir, env_vars) and this driver's are
        # combined instead of refused as a conflict.
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        ray.init(address=address, num_cpus=None if (address or use_gpu) else max(num_workers, 2),
                 include_dashboard=False, configure_logging=False,
                 # every worker process routes its logging like the driver (videopoet.logs)
                 runtime_env={"env_vars": env, "worker_process_setup_hook": "videopoet.logs.setup_from_env"})
        started = True
    cpus = int(ray.cluster_resources().get("CPU", 1))
    loop_config = {**loop_config, "env": env, "threads_per_worker": max(1, cpus // num_workers)}
    trainer = TorchTrainer(
        functools.partial(_ray_worker, worker),
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if use_gpu else {})}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=str(Path(run_dir).resolve() / "ray"),
                             failure_config=FailureConfig(max_failures=max_failures),
                             worker_runtime_env={"env_vars": env}),
    )
    try:
        trainer.fit()
    finally:
        if started:
            ray.shutdown()


def _ray_worker(worker: Callable[[dict[str, Any]], Any], loop_config: dict[str, Any]) -> None:
    """The per-worker entry: set the driver's environment and thread count, then run the job's worker."""
    import ray.train

    for key, value in loop_config.get("env", {}).items():
        os.environ[key] = value
    os.environ.setdefault("LOCAL_RANK", str(ray.train.get_context().get_local_rank()))
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, int(loop_config.get("threads_per_worker", 1))))
    worker(loop_config)
