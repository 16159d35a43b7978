"""The Ray engine: prepare tasks on CPUs, a pool of model actors that commit; imported only when engine=ray.

`ray.init(num_cpus=...)` locally or `ray.address` for a cluster. Each item of a unit is prepared in
a Ray task (`ray.decode_cpus`); the unit then goes to a `JobActor` of an ActorPool (`ray.pool_size`,
GPU actors with `ray.use_gpu`) that ran `job.setup()` once and commits it. At most
`ray.max_inflight_batches` units are in flight, which keeps memory flat. The pool never takes every
CPU: on a 2-CPU node an actor pool holding all CPUs starves the prepare tasks forever, so a pool
size that leaves less than `ray.decode_cpus` free is refused with what to change. While it waits, a
`StallWatchdog` (ray_watchdog.py) says so when the cluster, after losing a node, can no longer hold
the pool and a prepare task, and stops the job at `ray.stall_fail_s` (a rerun resumes).
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray.util import ActorPool

from videopoet.config import ConfigError
from videopoet.jobs.config import EngineConfig
from videopoet.jobs.progress import Progress
from videopoet.jobs.protocol import DataJob
from videopoet.jobs.ray_watchdog import StallWatchdog


def ray_init(cfg: EngineConfig) -> bool:
    """Start or join Ray unless it is already initialised here; True when this call started it."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, log_to_driver=False)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    return True


def ray_pool_size(cfg: EngineConfig, total_cpus: float, total_gpus: float) -> int:
    if cfg.ray.pool_size:
        size = cfg.ray.pool_size
    elif cfg.ray.use_gpu:
        size = max(1, int(total_gpus / cfg.ray.gpus_per_actor))
    else:
        size = max(1, int(total_cpus) // 4)
    if size * cfg.ray.actor_cpus + cfg.ray.decode_cpus > total_cpus:
        raise ConfigError(
            f"ray.pool_size={size}: {size} actors x {cfg.ray.actor_cpus} CPU leave no CPU for decode "
            f"tasks on a {total_cpus:g}-CPU cluster (Ray would deadlock); lower ray.pool_size or "
            "ray.actor_cpus, or start Ray with more logical CPUs (--num-cpus)"
        )
    return size


class JobActor:
    """Holds the job's worker state (models, loaded once) and commits units."""

    def __init__(self, job: DataJob):
        self.job = job
        self.state = job.setup()

    def commit(self, unit: Any, items: list, refs: list) -> Any:
        prepared = []
        for item, ref in zip(items, refs):
            # refs arrive unresolved (nested in a list) so that a prepare task that died for good
            # (e.g. its worker was OOM-killed on every retry) costs what the job says, not the run.
            try:
                prepared.append(ray.get(ref))
            except Exception as err:
                prepared.append(self.job.prepare_failed(item, err))
        return self.job.commit_unit(unit, prepared, self.state)


def _prepare(job: DataJob, item: Any) -> Any:
    return job.prepare(item)


def run_ray(job: DataJob, units: list, progress: Progress) -> list:
    cfg = job.cfg
    started = ray_init(cfg)
    try:
        res = ray.cluster_resources()
        if cfg.ray.use_gpu and res.get("GPU", 0.0) <= 0:
            raise ConfigError("ray.use_gpu=true: the Ray cluster has no GPU")
        pool_size = ray_pool_size(cfg, res.get("CPU", 1.0), res.get("GPU", 0.0))
        actor_cls = ray.remote(num_cpus=cfg.ray.actor_cpus, num_gpus=cfg.ray.gpus_per_actor if cfg.ray.use_gpu else 0,
                               max_restarts=2, max_task_retries=2)(JobActor)
        prepare = ray.remote(num_cpus=cfg.ray.decode_cpus, max_retries=2)(_prepare)
        job_ref = ray.put(job)
        pool = ActorPool([actor_cls.remote(job_ref) for _ in range(pool_size)])
        inflight_limit = cfg.ray.max_inflight_batches or 2 * pool_size + 2
        queue = list(units)
        results = []
        inflight = 0
        watchdog = StallWatchdog(cfg.ray, f"{job.name}[ray]", pool_size)

        def submit(unit: Any) -> None:
            items = job.items(unit)
            refs = [prepare.remote(job_ref, item) for item in items]
            pool.submit(lambda actor, v: actor.commit.remote(*v), (unit, items, refs))

        while queue or inflight:
            while queue and inflight < inflight_limit:
                submit(queue.pop(0))
                inflight += 1
            try:
                r = pool.get_next_unordered(timeout=watchdog.poll_s)
            except TimeoutError:
                watchdog.check(inflight)
                continue
            watchdog.progressed()
            inflight -= 1
            n, counts = job.progress_counts(r)
            progress.update(n, **counts)
            results.append(r)
        return sorted(results, key=lambda r: r.index)
    finally:
        if started:
            ray.shutdown()
