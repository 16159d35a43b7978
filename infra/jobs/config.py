"""The engine settings every data job's config inherits: engine, progress, tracking, Beam and Ray.

Key paths (overrides, YAML recipes): `engine`, `progress`, `track`, `beam.runner`, `beam.options`,
`beam.num_workers`, `beam.running_mode`, `ray.address`, `ray.num_cpus`, `ray.decode_cpus`,
`ray.pool_size`, `ray.actor_cpus`, `ray.use_gpu`, `ray.gpus_per_actor`, `ray.max_inflight_batches`,
`ray.stall_warn_s`, `ray.stall_fail_s`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class BeamConfig:
    runner: str = "FnApiRunner"  # never the bare DirectRunner: it first tries to download Prism
    options: str = ""  # extra Beam pipeline options, e.g. "--runner=DataflowRunner --project=p"
    num_workers: int = 1  # --direct_num_workers for the local runners
    running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = "in_memory"


@dataclass
class RayConfig:
    address: str | None = None  # None: start a local Ray; "auto" or host:port: join a cluster
    num_cpus: int | None = None  # logical CPUs of a local Ray (None: this machine's cores)
    decode_cpus: float = 1.0  # CPUs reserved per prepare task (ingest: decode one input; tokenize: read one shard)
    pool_size: int = 0  # model actors; 0 = auto (GPUs when --use-gpu, else CPUs // 4, >= 1)
    actor_cpus: float = 1.0
    use_gpu: bool = False
    gpus_per_actor: float = 1.0
    max_inflight_batches: int = 0  # units prepared ahead; 0 = auto (2 per actor + 2)
    # liveness (ray_watchdog.py): no unit finished for stall_warn_s while the pool + a prepare task do not fit on
    # the alive nodes: one line saying so; still so at stall_fail_s: stop (exit 2; a rerun resumes). 0 = off
    stall_warn_s: float = 300.0
    stall_fail_s: float = 900.0


@dataclass
class EngineConfig:
    """Where and how a data job runs; the job's own config dataclass inherits these fields."""

    engine: Literal["beam", "ray", "local"] = "beam"
    progress: bool = True
    track: bool = True  # log the run in MLflow
    beam: BeamConfig = field(default_factory=BeamConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def engine_cores(cfg: EngineConfig) -> int:
    """The cores the job's engine uses (for per-core rates)."""
    if cfg.engine == "ray" and cfg.ray.num_cpus:
        return cfg.ray.num_cpus
    if cfg.engine == "beam" and cfg.beam.running_mode != "in_memory":
        return max(1, cfg.beam.num_workers)
    if cfg.engine == "local" or (cfg.engine == "beam" and cfg.beam.running_mode == "in_memory"):
        return 1
    return os.cpu_count() or 1
