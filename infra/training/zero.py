"""DeepSpeed ZeRO pieces the training jobs' deepspeed engines share: the JSON config, partitioned weights, checkpoints.

    deepspeed_config_path(name)     infra/deepspeed/<name>.json or a path to a DeepSpeed JSON
    load_deepspeed_config(name, grad_clip=, bf16=)
                                    that JSON for one optimiser step per batch, clipping and bf16 set
    load_partitioned(model, state)  copy full weights (held by rank 0) into a model built under zero.Init
    gathered_state_dict(model)      full fp32 weights on rank 0 from the ZeRO partitions (a collective)
    load_engine_checkpoint(...)     engine.load_checkpoint with the world-size and missing-tag refusals

DeepSpeed is imported inside the functions: a job's plain/ddp path runs without importing it.
Every function that gathers is a collective: every rank calls it, in the same order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from videopoet.assets import DEEPSPEED_DIR


def deepspeed_config_path(name_or_path: str, key: str = "engine.deepspeed") -> Path:
    """A named config (infra/deepspeed/<name>.json) or a .json file; ValueError naming `key` otherwise."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return path
    candidate = DEEPSPEED_DIR / f"{name_or_path}.json"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in DEEPSPEED_DIR.glob("*.json"))
    raise ValueError(f"{key}={name_or_path!r}: no such file or named config; named configs: {known}")


def load_deepspeed_config(name_or_path: str, *, grad_clip: float, bf16: bool, key: str = "engine.deepspeed") -> dict:
    """The DeepSpeed JSON for a job that takes one optimiser step per batch it builds itself.

    No accumulation, and a per-rank batch that may vary by step: DeepSpeed uses the batch sizes only
    for its throughput counters. `grad_clip` (0: none, as DeepSpeed reads 0) and bf16 come from the job."""
    ds = json.loads(deepspeed_config_path(name_or_path, key).read_text())
    ds = {k: v for k, v in ds.items() if not k.startswith("_")}
    ds["train_micro_batch_size_per_gpu"] = 1
    ds["gradient_accumulation_steps"] = 1
    ds.pop("train_batch_size", None)
    ds["gradient_clipping"] = grad_clip
    ds.setdefault("bf16", {})["enabled"] = bf16
    ds.setdefault("zero_allow_untested_optimizer", True)
    return ds


def zero_stage(ds_config: dict) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


@torch.no_grad()
def load_partitioned(model: torch.nn.Module, state: dict[str, torch.Tensor] | None, rank: int) -> None:
    """Copy `state` (full weights on rank 0, None elsewhere) into a model built under zero.Init.

    One parameter gathered at a time (rank 0 writes, DeepSpeed scatters it back), so no rank holds a
    second full copy; the values land in the parameters' own dtype and device. A collective."""
    import deepspeed

    if model_buffers := [name for name, _ in model.named_buffers()]:
        raise ValueError(f"load_partitioned copies parameters only; the model has buffers {model_buffers[:3]}")
    for name, p in model.named_parameters():
        with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
            if rank == 0:
                p.data.copy_(state[name])


@torch.no_grad()
def gathered_state_dict(model: torch.nn.Module, rank: int, *, fp32_master: bool = False) -> dict[str, Any] | None:
    """Full weights as fp32 CPU tensors on rank 0 (None elsewhere), gathered one parameter at a time.

    fp32_master: take a parameter's fp32 master copy from the ZeRO optimizer when it has one (exact
    under bf16 training, where the module's own parameters are bf16 roundings); needs the engine's
    optimizer. Otherwise the module's parameters, cast to fp32. A collective."""
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    out: dict[str, Any] = {}
    for name, p in model.named_parameters():
        has_master = hasattr(p, "_z3_optimizer") or hasattr(p, "_hp_mapping")  # set by the engine's optimizer
        master = safe_get_full_fp32_param(p) if fp32_master and has_master and p.requires_grad else None
        if master is not None:
            if rank == 0:
                out[name] = master.detach().to("cpu", torch.float32).clone()
            continue
        with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
            if rank == 0:
                out[name] = p.detach().to("cpu", torch.float32).clone()
    if rank == 0:
        kept = model.state_dict()
        for name, b in model.named_buffers():
            if name in kept:
                out[name] = b.detach().cpu().clone()
    return out if rank == 0 else None


def load_engine_checkpoint(engine: Any, directory: str | Path, tag: str, *, saved_world: int, world: int) -> None:
    """engine.load_checkpoint of `tag` in `directory` (model, optimizer partitions, scheduler when the engine has one).

    ZeRO partitions are per rank: a checkpoint of another world size is refused (convert it with
    DeepSpeed's ds_to_universal first)."""
    if saved_world != world:
        raise ValueError(
            f"{directory}: ZeRO checkpoint of {saved_world} ranks cannot load on {world}; "
            "convert it with `python -m deepspeed.checkpoint.ds_to_universal` first (docs/formats.md)")
    path, _ = engine.load_checkpoint(str(directory), tag=tag)
    if path is None:
        raise FileNotFoundError(f"{directory}: DeepSpeed found no checkpoint with tag {tag}")
