"""The LM's per-rank trainer: the model wrapped by DeepSpeed ZeRO-3 (or plain PyTorch), one step, its state.

    LMTrainer(cfg, rank, world)            videopoet.training.interface.StatefulTrainer
      AGDLoader                            (trainer.data) this rank's slice of the step's group batch
      deepspeed.initialize(LossForward(model), client AdamW, LambdaLR, infra/deepspeed/*.json)
        or the plain engine: torch AdamW + LambdaLR, gradients all-reduced by hand when world > 1
      save_payload(dir) / load_payload(dir) every rank's part of a checkpoint step directory:
        trainer_state.json (rank 0), DeepSpeed's ZeRO-3 shards or plain_state.pt, rng_rank<r>.pt
      export(dir)                          consolidated fp32 weights (videopoet-lm checkpoint)
`export_checkpoint` consolidates a training checkpoint offline (CPU, zero_to_fp32). The loop,
checkpoint directories, MLflow and launch are the shared framework's (videopoet.training), run by
videopoet.trainer.engine.
"""

from __future__ import annotations

# DeepSpeed is imported where the deepspeed engine needs it: the plain engine (--num-workers 0, the
# reference) runs without importing it.
import contextlib
import dataclasses
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from videopoet.checkpoint import save_checkpoint
from videopoet.config import config_hash, from_dict, to_dict
from videopoet.trainer.config import ScheduleConfig, TrainConfig, training_dict
from videopoet.trainer.data import AGDLoader, Batch
from videopoet.trainer.model import VideoPoetLM
from videopoet.training.zero import gathered_state_dict, load_deepspeed_config, load_engine_checkpoint

STATE_FILE = "trainer_state.json"
PLAIN_WEIGHTS = "plain_state.pt"
EXPORT_KIND = "videopoet-lm"


def lr_factor(sched: ScheduleConfig, step: int) -> float:
    """Multiplier of the peak lr at `step`: linear warm-up, then cosine/linear decay to min_lr_ratio."""
    if sched.warmup_steps and step < sched.warmup_steps:
        return (step + 1) / sched.warmup_steps
    if sched.decay == "constant":
        return 1.0
    span = max(1, sched.max_steps - sched.warmup_steps)
    progress = min(1.0, (step - sched.warmup_steps) / span)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if sched.decay == "cosine" else 1 - progress
    return sched.min_lr_ratio + (1 - sched.min_lr_ratio) * shape


class LossForward(torch.nn.Module):
    """The module DeepSpeed wraps: forward = the model's output-only next-token loss.

    DeepSpeed's engine only intercepts `forward`; training needs the model's `loss` method, so this
    thin wrapper makes it the forward. Its state-dict keys are the model's, prefixed with "model.".
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens, prefix_len: int, text_emb=None, text_mask=None, text_start=None):
        loss, _ = self.model.loss(tokens, prefix_len, text_emb=text_emb, text_mask=text_mask, text_start=text_start)
        return loss


@torch.no_grad()
def seeded_reset(model: VideoPoetLM, seed: int) -> None:
    """Initial weights as a function of (seed, `VideoPoetLM.reset_parameters`) alone, drawn in fp32 on the CPU.

    Every build path gets the same numbers: the plain build (fp32), the ZeRO-3 build without
    zero_init, and the zero.Init build, whose parameters are bf16 (the 8B JSON), possibly on a GPU,
    and whose constructor drew a different amount of randomness (its submodules' default inits ran
    in bf16 before partitioning): there the weights are the plain build's rounded to bf16. Costs one
    transient fp32 host copy of the model (at 8B ~35 GB, on rank 0 only under zero_init).
    """
    params = list(model.parameters())
    held = [p.data for p in params]
    for p in params:
        p.data = torch.empty(p.data.shape, dtype=torch.float32, device="cpu")
    try:
        torch.manual_seed(seed)
        model.reset_parameters()
        for p, h in zip(params, held):
            h.copy_(p.data)
    finally:
        for p, h in zip(params, held):
            p.data = h


class FlopCounter:
    """Training FLOPs per token of the model at a sequence length, from a meta-device copy.

    Under ZeRO-3 the live model's parameters are partitioned (numel 0 on each rank), so the count
    comes from a copy with no storage.
    """

    def __init__(self, model_cfg):
        with torch.device("meta"):
            self.model = VideoPoetLM(model_cfg)
        self._cache: dict[int, float] = {}

    def __call__(self, seq_len: int) -> float:
        if seq_len not in self._cache:
            self._cache[seq_len] = float(self.model.flops_per_token(seq_len))
        return self._cache[seq_len]

    @property
    def num_params(self) -> int:
        return self.model.num_params()


class LMTrainer:
    """One rank's LM training state and step (videopoet.training.interface.StatefulTrainer)."""

    def __init__(self, cfg: TrainConfig, *, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 engine: str | None = None, loader: AGDLoader | None = None):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.kind = engine or cfg.engine.kind
        use_gpu = cfg.engine.use_gpu and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{local_rank}" if use_gpu else "cpu")
        if use_gpu:
            torch.cuda.set_device(self.device)
        self.bf16 = cfg.engine.precision == "bf16" or (cfg.engine.precision == "auto" and use_gpu)
        self.loader = loader or AGDLoader(cfg.data, cfg.schedule.max_steps)
        dims = self.loader.text_dims() - {0}
        if dims and dims != {cfg.model.text_dim}:
            raise ValueError(f"token shards have text_dim {sorted(dims)} but model.text_dim={cfg.model.text_dim}; "
                             f"set model.text_dim={min(dims)} (or re-tokenize with the model's text encoder)")
        self.flops = FlopCounter(cfg.model)
        self.step = 0
        self.group_steps: Counter[str] = Counter()

        model_cfg = cfg.model
        ds_config = None
        if self.kind == "deepspeed":
            ds_config = load_deepspeed_config(cfg.engine.deepspeed, grad_clip=cfg.optim.grad_clip, bf16=self.bf16)
            if "activation_checkpointing" in ds_config and not model_cfg.grad_checkpoint:
                model_cfg = dataclasses.replace(model_cfg, grad_checkpoint=True)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank and in the reference
        if self.kind == "deepspeed" and cfg.engine.zero_init:
            import deepspeed

            with deepspeed.zero.Init(config_dict_or_path=ds_config):
                model = VideoPoetLM(model_cfg)
            # Under zero.Init the model's own reset_parameters ran on already-partitioned (empty)
            # tensors: gather everything once, re-initialise on rank 0, and let DeepSpeed scatter it.
            with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=0):
                if rank == 0:
                    seeded_reset(model, cfg.seed)
        else:
            model = VideoPoetLM(model_cfg)
            seeded_reset(model, cfg.seed)
        self.module = LossForward(model)
        params = [p for p in self.module.parameters() if p.requires_grad]
        # Weight decay on matrices only; under zero.Init a parameter is an empty 1-D tensor and its
        # real shape is ds_shape.
        def ndim(p) -> int:
            return len(getattr(p, "ds_shape", p.shape))

        groups = [{"params": [p for p in params if ndim(p) >= 2], "weight_decay": cfg.optim.weight_decay},
                  {"params": [p for p in params if ndim(p) < 2], "weight_decay": 0.0}]
        optim = torch.optim.AdamW(
            [g for g in groups if g["params"]],
            lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(cfg.schedule, s))
        if self.kind == "deepspeed":
            import deepspeed

            if ds_config["zero_optimization"].get("stage") == 3:
                # Parameters the model reads outside a submodule's forward (the null-text embedding)
                # must be gathered whenever the wrapper runs.
                for p in model.parameters(recurse=False):
                    deepspeed.zero.register_external_parameter(self.module, p)
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=self.module, optimizer=optim, lr_scheduler=sched, config=ds_config,
                dist_init_required=world_size > 1 or None,
            )
        else:
            self.module.to(self.device)
            self.engine, self.optimizer, self.scheduler = self.module, optim, sched
        self.params = params

    # -- one step ----------------------------------------------------------------------------
    def _inputs(self, batch: Batch):
        dtype = torch.bfloat16 if (self.bf16 and self.kind == "deepspeed") else torch.float32
        tokens = batch.tokens.to(self.device, non_blocking=True)
        emb = batch.text_emb.to(self.device, dtype=dtype) if batch.text_emb is not None else None
        mask = batch.text_mask.to(self.device) if batch.text_mask is not None else None
        return tokens, emb, mask

    def _all_reduce_mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def train_step(self) -> dict[str, Any]:
        """Run one optimiser step on this rank's slice of the next AGD group batch; returns metrics."""
        t0 = time.perf_counter()
        batch = self.loader.next_batch(self.rank, self.world_size)
        tokens, emb, mask = self._inputs(batch)
        lr = self.optimizer.param_groups[0]["lr"]
        args = (tokens, batch.prefix_len, emb, mask, batch.text_start)
        if self.kind == "deepspeed":
            loss = self.engine(*args)
            self.engine.backward(loss)
            self.engine.step()
            grad_norm = self.engine.get_global_grad_norm()
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        else:
            autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                        if self.bf16 and self.device.type == "cuda" else contextlib.nullcontext())
            with autocast:
                loss = self.module(*args)
            loss.backward()
            if self.world_size > 1:
                for p in self.params:  # DDP by hand: average gradients (the reference engine)
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad.div_(self.world_size)
            clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        loss_value = self._all_reduce_mean(float(loss.detach().float().item()))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        L = batch.tokens.shape[1]
        global_tokens = batch.global_batch * L
        flops = self.flops(L) * global_tokens / dt
        self.group_steps[batch.group] += 1
        metrics = {
            "step": self.step, "task": batch.task, "group": batch.group, "loss": loss_value, "lr": lr,
            "grad_norm": grad_norm, "seq_len": L, "global_batch": batch.global_batch, "tokens": global_tokens,
            "step_time_s": dt, "tokens_per_s": global_tokens / dt, "flops_per_s": flops,
            "flops_per_s_per_device": flops / self.world_size, "padding_ratio": batch.padding_ratio,
            "text_dropped": batch.dropped_text,
        }
        if self.device.type == "cuda":
            metrics["mfu"] = flops / self.world_size / self.cfg.engine.peak_flops
        self.step += 1
        return metrics

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything besides model/optimiser/scheduler tensors: JSON-serialisable."""
        return {"step": self.step, "data": self.loader.state_dict(), "group_steps": dict(self.group_steps),
                "world_size": self.world_size, "engine": self.kind, "config": to_dict(self.cfg),
                "config_hash": config_hash(training_dict(self.cfg))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.loader.load_state_dict(state["data"])
        self.group_steps = Counter(state.get("group_steps", {}))
        if self.loader.step != self.step:
            raise ValueError(f"checkpoint step {self.step} and data position step {self.loader.step} disagree")

    def save_payload(self, directory: str | Path) -> Path:
        """Write this rank's part of a checkpoint into `directory` (every rank calls it)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tag = f"step_{self.step:08d}"
        if self.kind == "deepspeed":
            self.engine.save_checkpoint(str(directory), tag=tag)
        elif self.rank == 0:
            torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict()}, directory / PLAIN_WEIGHTS)
        torch.save({"cpu": torch.get_rng_state(),
                    **({"cuda": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {})},
                   directory / f"rng_rank{self.rank}.pt")
        if self.rank == 0:
            (directory / STATE_FILE).write_text(json.dumps({**self.state_dict(), "tag": tag}, indent=1))
        return directory

    def load_payload(self, directory: str | Path) -> None:
        """Restore model, optimiser, LR schedule, data position and RNG from a checkpoint directory."""
        directory = Path(directory)
        state_path = directory / STATE_FILE
        if not state_path.is_file():
            raise FileNotFoundError(f"{directory}: not a videopoet training checkpoint (no {STATE_FILE})")
        state = json.loads(state_path.read_text())
        saved = from_dict(TrainConfig, state["config"])
        if to_dict(saved.model) != to_dict(self.cfg.model):  # checkpoint.resume_from of another run
            raise ValueError(f"{directory}: saved with another model config; resume with the same model settings")
        if state["engine"] != self.kind:
            raise ValueError(f"{directory}: a {state['engine']} checkpoint cannot resume a {self.kind} run")
        if self.kind == "deepspeed":
            load_engine_checkpoint(self.engine, directory, state["tag"], saved_world=state["world_size"],
                                   world=self.world_size)
        else:
            blob = torch.load(directory / PLAIN_WEIGHTS, map_location=self.device, weights_only=True)
            self.module.load_state_dict(blob["model"])
            self.optimizer.load_state_dict(blob["optimizer"])
            self.scheduler.load_state_dict(blob["scheduler"])
        rng_path = directory / f"rng_rank{self.rank}.pt"
        if rng_path.is_file():
            rng = torch.load(rng_path, weights_only=True)
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.load_state_dict(state)

    def consolidated_state_dict(self) -> dict[str, Any] | None:
        """Full fp32 model weights on rank 0 (None elsewhere); a collective under ZeRO-3."""
        model = self.module.model
        out: dict[str, Any] = {}
        if self.kind == "deepspeed":
            return gathered_state_dict(model, self.rank)
        if self.rank == 0:
            out = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
                   for k, v in model.state_dict().items()}
        return out if self.rank == 0 else None

    def evaluate(self) -> dict[str, float]:
        """The LM job has no held-out evaluation during training (sampling is its own job)."""
        return {}

    def export(self, directory: str | Path) -> str | None:
        """Consolidated weights as a videopoet-lm checkpoint for sampling; returns the content hash on rank 0."""
        state = self.consolidated_state_dict()
        if state is None:
            return None
        return save_checkpoint(directory, state, kind=EXPORT_KIND, config={"model": to_dict(self.cfg.model)},
                               extra={"step": self.step, "train_config": to_dict(self.cfg)})


def export_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path) -> str:
    """Consolidate a training checkpoint (plain or ZeRO-3) into a videopoet-lm checkpoint, offline, on CPU."""
    checkpoint_dir = Path(checkpoint_dir)
    state = json.loads((checkpoint_dir / STATE_FILE).read_text())
    cfg = from_dict(TrainConfig, state["config"])
    if state["engine"] == "plain":
        weights = torch.load(checkpoint_dir / PLAIN_WEIGHTS, map_location="cpu", weights_only=True)["model"]
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        weights = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=state["tag"])
    model_weights = {k.removeprefix("model."): v.float() if v.is_floating_point() else v for k, v in weights.items()}
    return save_checkpoint(out_dir, model_weights, kind=EXPORT_KIND, config={"model": to_dict(cfg.model)},
                           extra={"step": state["step"], "train_config": state["config"]})
