"""`videopoet train-sr`: train the SR transformer (trainer/sr/model.py) on SR token shards.

    videopoet train-sr --stage 1|2 --data SR_SHARDS [--config tiny|stage1|stage2|FILE.yaml] [--out DIR]
                       [--num-workers N] [--stop-after STEP] [--video-tokenizer DIR] [key=value ...]
    videopoet train-sr ... --num-workers N engine=deepspeed [deepspeed=zero3_gpu]     # ZeRO-3 over N workers

A job on the shared training framework (videopoet.training): `SRTrainer` is a StatefulTrainer; the
loop, the checkpoint manager (kind "sr-train": ddp writes one state.pt per step from rank 0; deepspeed
writes engine_state.json from rank 0, DeepSpeed's ZeRO shards and rng_rank<r>.pt from every rank),
stop requests and `--num-workers` are the framework's. A second run with the same --out resumes exactly
(model, AdamW, the step that sets the LR schedule, the data position, RNG); a different config is
refused naming the differing keys.

Objective: trainer/sr/objective.py (MAGVIT masking, LR noise, condition drops) with the random draws
made PER EXAMPLE from a generator seeded by (data.seed, step, index of the example in the global
batch), in the order `training_loss` draws them: a step's numbers do not depend on how the global
batch is split over workers. The loss is the sum of CE_512(lo) + CE_512(hi) over the masked positions
of the global batch divided by their global count.

Data parallel: `--num-workers N` runs N Ray Train workers; each reads the whole global batch
(`data.batch_size` examples) from the same deterministic stream and trains on examples rank::N. The
`engine` key says how the workers share the model:
  ddp (default)  every worker holds the full model and AdamW state; the gradients are summed by one
                 all-reduce of a flat buffer (DDP by hand). Runs in this process too (--num-workers 0).
                 The CPU/tiny path and the reference; at stage1 (1B parameters) 16 GB of fp32 weights +
                 AdamW per worker.
  deepspeed      DeepSpeed ZeRO with the `deepspeed` JSON (infra/deepspeed/, the LM's: zero3_cpu, or
                 zero3_gpu on GPUs; videopoet.training.zero): under ZeRO-3 weights, gradients and AdamW
                 state are sharded over the workers and the model is built inside deepspeed.zero.Init
                 (rank 0's seeded fp32 build copied in one parameter at a time: the ddp path's initial
                 weights). Each rank's loss is world * (its masked CE sum) / (global masked count), so
                 DeepSpeed's gradient AVERAGE is the global normalisation below. Clipping by the JSON's
                 gradient_clipping (set from optim.grad_clip), the LR set per step as ddp does; bf16
                 weights with fp32 masters on a GPU when optim.bf16. Needs --num-workers N >= 1.
With the per-example draws and the global normalisation an N-worker step of either engine equals the
1-process step up to float summation order.

Data order: per epoch a permutation of the shards seeded by (seed, epoch) and within each shard a
permutation of its rows seeded by (seed, epoch, shard); one shard is held in memory at a time.

Metrics (MLflow, and losses.jsonl one line per step): loss, acc/lo and acc/hi (masked-token accuracy of
each 512-way factor group), acc/token (both right), lr, grad_norm, tokens_per_s (HR tokens of the
global batch per second). Evaluation (rank 0; under deepspeed every rank runs the forward passes, a
collective) on the first `data.eval_examples` rows of the first shard with fixed draws: eval/loss,
eval/acc_*; with --video-tokenizer also an LR | SR | HR .mp4 (the SR sampled by MaskGIT with the stage's
guidance, decoded by that tokenizer) under eval_videos/, logged as an artifact. Outputs under --out:
checkpoints/, model/ (the SR weights, kind "sr-transformer"; under deepspeed gathered from the ZeRO
partitions as fp32 masters, the same files: trainer/sr/cascade.py and `videopoet sample --super-resolve`
load either), losses.jsonl, eval_videos/, last_summary.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from videopoet.checkpoint import save_checkpoint
from videopoet.config import ConfigError, from_dict
from videopoet.paths import output_dir
from videopoet.pipeline.sr_shards import list_sr_shards, read_sr_shard, sr_shard_info
from videopoet.tokenizers.lfq import split_tokens
from videopoet.tracking import Tracker
from videopoet.trainer.sr.config import RECIPES_TRAIN as RECIPES
from videopoet.trainer.sr.config import TRAIN_STATE_KIND, SRTrainConfig
from videopoet.trainer.sr.model import MASK_ID, SRTransformer
from videopoet.trainer.sr.objective import draw_mask, factorized_loss, prepare_conditions
from videopoet.training.checkpoints import CheckpointManager, load_state_file, save_state_file
from videopoet.training.driver import run_training, write_summary
from videopoet.training.launch import WorkerContext, stop_requested, worker_context
from videopoet.training.loop import Cadence, run_loop
from videopoet.training.step_log import StepLog
from videopoet.training.zero import (
    gathered_state_dict,
    load_deepspeed_config,
    load_engine_checkpoint,
    load_partitioned,
    zero_stage,
)

MODEL_KIND = "sr-transformer"
ENGINE_STATE = "engine_state.json"  # deepspeed checkpoints: step, data position, tag, world size (rank 0)


def _mix(*values: Any) -> int:
    """A 62-bit seed from values (the same on every machine and Python run)."""
    digest = hashlib.sha1(",".join(str(v) for v in values).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


# --------------------------------------------------------------------------------------------------
# data


class SRStream:
    """Deterministic endless stream of SR rows; `state()` / `load_state()` give exact resume."""

    def __init__(self, root: Any, cfg: SRTrainConfig):
        self.shards = list_sr_shards(root)
        self.infos = [sr_shard_info(p) for p in self.shards]
        for info in self.infos:
            if info.hr_grid != tuple(cfg.model.hr_grid) or info.text_dim != cfg.model.text_dim:
                raise ConfigError(f"{info.path}: SR shard of HR grid {list(info.hr_grid)} and text_dim "
                                  f"{info.text_dim}, the model has model.hr_grid={list(cfg.model.hr_grid)} and "
                                  f"model.text_dim={cfg.model.text_dim}")
        if sum(i.num_rows for i in self.infos) == 0:
            raise ConfigError(f"--data {root}: the SR shards hold no rows")
        self.seed = cfg.data.seed
        self.epoch, self.shard_pos, self.row_pos = 0, 0, 0
        self._cache: tuple[int, list] | None = None

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "shard_pos": self.shard_pos, "row_pos": self.row_pos}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.shard_pos, self.row_pos = int(state["epoch"]), int(state["shard_pos"]), int(state["row_pos"])

    def _perm(self, n: int, *key: Any) -> list[int]:
        return torch.randperm(n, generator=torch.Generator().manual_seed(_mix(self.seed, *key))).tolist()

    def _rows(self, index: int) -> list:
        if self._cache is None or self._cache[0] != index:
            self._cache = (index, read_sr_shard(self.shards[index])[0])
        return self._cache[1]

    def next_rows(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < n:
            order = self._perm(len(self.shards), "shards", self.epoch)
            if self.shard_pos >= len(order):
                self.epoch, self.shard_pos, self.row_pos = self.epoch + 1, 0, 0
                continue
            index = order[self.shard_pos]
            count = self.infos[index].num_rows
            if self.row_pos >= count:
                self.shard_pos, self.row_pos = self.shard_pos + 1, 0
                continue
            rows = self._rows(index)
            perm = self._perm(count, "rows", self.epoch, index)
            take = min(n - len(out), count - self.row_pos)
            out += [rows[i] for i in perm[self.row_pos:self.row_pos + take]]
            self.row_pos += take
        return out


def collate(rows: list[dict[str, Any]], cfg: SRTrainConfig, device: torch.device):
    """Rows -> HR ids [B, T, H, W], LR ids [B, T, H/2, W/2], text [B, 64, D], text mask [B, 64] on `device`."""
    t, h, w = cfg.model.hr_grid
    hr = torch.from_numpy(np.stack([r["hr_tokens"] for r in rows])).long().view(len(rows), t, h, w)
    lr = torch.from_numpy(np.stack([r["lr_tokens"] for r in rows])).long().view(len(rows), t, h // 2, w // 2)
    text = torch.from_numpy(np.stack([r["text_emb"] for r in rows])).float()
    mask = torch.from_numpy(np.stack([r["text_mask"] for r in rows])).bool()
    return hr, lr, text, mask, device


# --------------------------------------------------------------------------------------------------
# the objective with per-example draws


class MaskedLogits(nn.Module):
    """The module DeepSpeed wraps: forward = the factor logits (lo, hi) at the masked positions.

    DeepSpeed's engine only intercepts `forward`, and a step needs the transformer and its heads;
    its state-dict keys are the transformer's, prefixed with "model."."""

    def __init__(self, model: SRTransformer):
        super().__init__()
        self.model = model

    def forward(self, tokens, lr_tokens, text_emb, text_mask, lr_keep, mask):
        return self.model.logits(self.model(tokens, lr_tokens, text_emb, text_mask, lr_keep)[mask])


def batch_loss(model: SRTransformer, hr, lr, text, text_mask, cfg: SRTrainConfig, seeds: list[int], device,
               autocast=contextlib.nullcontext, forward=None):
    """Sum over masked positions of CE_512(lo) + CE_512(hi) and the counts [n, lo right, hi right, both right].

    Example i's draws (LR noise, condition drops, mask) come from torch.Generator().manual_seed(seeds[i]) in
    `training_loss`'s order, so one example with the same generator reproduces `training_loss` exactly.
    `forward`: what computes the logits (a DeepSpeed engine around MaskedLogits(model)); default MaskedLogits(model)."""
    noisy, keeps, masks, tmasks = [], [], [], []
    n_hr = hr[0].numel()
    for i, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        lr_i, keep_i, tm_i = prepare_conditions(lr[i:i + 1], text_mask[i:i + 1], cfg.objective, g)
        noisy.append(lr_i)
        keeps.append(keep_i)
        tmasks.append(tm_i)
        masks.append(draw_mask(1, n_hr, g).view_as(hr[i:i + 1]))
    mask = torch.cat(masks).to(device)
    hr, lr_in = hr.to(device), torch.cat(noisy).to(device)
    forward = forward if forward is not None else MaskedLogits(model)
    with autocast():
        logits_lo, logits_hi = forward(hr.masked_fill(mask, MASK_ID), lr_in, text.to(device),
                                       torch.cat(tmasks).to(device), torch.cat(keeps).to(device), mask)
    targets = hr[mask]
    loss, n = factorized_loss(logits_lo, logits_hi, targets)
    with torch.no_grad():
        lo, hi = split_tokens(targets)
        ok_lo, ok_hi = logits_lo.argmax(-1) == lo, logits_hi.argmax(-1) == hi
        counts = torch.tensor([n, ok_lo.sum().item(), ok_hi.sum().item(), (ok_lo & ok_hi).sum().item()],
                              dtype=torch.float64)
    return loss * n, counts


def lr_at(cfg: SRTrainConfig, step: int) -> float:
    """Linear warm-up over optim.warmup_steps, then cosine decay to lr * min_lr_ratio at cfg.steps."""
    o = cfg.optim
    if o.warmup_steps > 0 and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = min(1.0, (step - o.warmup_steps) / max(1, cfg.steps - o.warmup_steps))
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def seeded_model(cfg: SRTrainConfig) -> SRTransformer:
    """The initial SR transformer, a function of cfg.seed alone: fp32 on the CPU, torch's global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return SRTransformer(cfg.model)


# --------------------------------------------------------------------------------------------------
# the trainer (videopoet.training.interface.StatefulTrainer)


class SRTrainer:
    """The SR transformer, AdamW, the LR schedule, the data stream; one rank of a data-parallel job.

    `engine` is MaskedLogits(model) (ddp) or the DeepSpeed engine wrapping it; `opt` is torch's AdamW or
    DeepSpeed's ZeRO optimizer around it; `model` is the SR transformer (partitioned under ZeRO-3)."""

    def __init__(self, cfg: SRTrainConfig, data: Any, ctx: WorkerContext | None = None, *,
                 out: Path | None = None, tracker: Tracker | None = None, video_tokenizer: str | None = None):
        cfg.validate()
        self.cfg, self.ctx = cfg, ctx or worker_context(use_gpu=False)
        self.device = self.ctx.device
        if cfg.data.batch_size < self.ctx.world_size:
            raise ConfigError(f"data.batch_size={cfg.data.batch_size} is smaller than the {self.ctx.world_size} "
                              "workers: every worker needs an example")
        self.kind = cfg.engine
        self.amp = cfg.optim.bf16 and self.device.type == "cuda"
        if self.kind == "deepspeed":
            self._build_deepspeed()
        else:
            self.model = seeded_model(cfg).to(self.device)
            self.params = [p for p in self.model.parameters() if p.requires_grad]
            self.opt = torch.optim.AdamW(self.params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                         weight_decay=cfg.optim.weight_decay)
            self.engine = MaskedLogits(self.model)
        self.stream = SRStream(data, cfg)
        self.eval_rows = read_sr_shard(self.stream.shards[0])[0][:cfg.data.eval_examples]
        self.out, self.tracker = out, tracker or Tracker.disabled()
        self.video_tokenizer_path = video_tokenizer
        self._video_tokenizer = None
        self.step = 0

    def _build_deepspeed(self) -> None:
        import deepspeed

        cfg, rank = self.cfg, self.ctx.rank
        ds_config = load_deepspeed_config(cfg.deepspeed, grad_clip=cfg.optim.grad_clip, bf16=self.amp,
                                          key="deepspeed")
        if zero_stage(ds_config) == 3:
            # Built partitioned (no rank holds the whole model). The constructor's reset_parameters ran on
            # already-partitioned submodules, so rank 0's seeded fp32 build is copied in: the ddp path's weights.
            with torch.random.fork_rng(devices=[]), deepspeed.zero.Init(config_dict_or_path=ds_config):
                self.model = SRTransformer(cfg.model)
            load_partitioned(self.model, seeded_model(cfg).state_dict() if rank == 0 else None, rank)
        else:
            self.model = seeded_model(cfg)
        # One parameter group, as the ddp path: weight decay on every parameter.
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                weight_decay=cfg.optim.weight_decay)
        self.engine, self.opt, _, _ = deepspeed.initialize(model=MaskedLogits(self.model), optimizer=opt,
                                                           config=ds_config,
                                                           dist_init_required=self.ctx.distributed or None)

    def _autocast(self):
        # ddp only: the deepspeed engine holds bf16 weights itself when bf16 is on
        use = self.amp and self.kind == "ddp"
        return torch.autocast("cuda", dtype=torch.bfloat16) if use else contextlib.nullcontext()

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """ddp: everything (model, AdamW, step, data position, RNG). deepspeed: all but the model and
        optimizer, which DeepSpeed's engine checkpoint holds (save_payload)."""
        state = {"step": self.step, "data": self.stream.state(), "rng_cpu": torch.get_rng_state()}
        if self.kind == "ddp":
            state.update(model=self.model.state_dict(), opt=self.opt.state_dict())
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.kind == "ddp":
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        self.stream.load_state(state["data"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    def save_payload(self, directory: Path) -> None:
        """This rank's part of a checkpoint (every rank calls it): ddp rank 0's state.pt; deepspeed every
        rank's ZeRO shards (engine.save_checkpoint, tag step_<N>) and RNG, rank 0's engine_state.json."""
        directory = Path(directory)
        if self.kind == "ddp":
            if self.ctx.is_main:
                save_state_file(directory, self.state_dict())
            return
        tag = f"step_{self.step:08d}"
        self.engine.save_checkpoint(str(directory), tag=tag)
        state = self.state_dict()
        rng = {k: state.pop(k) for k in ("rng_cpu", "rng_cuda") if k in state}
        torch.save(rng, directory / f"rng_rank{self.ctx.rank}.pt")
        if self.ctx.is_main:
            (directory / ENGINE_STATE).write_text(json.dumps(
                {**state, "engine": self.kind, "tag": tag, "world_size": self.ctx.world_size}, indent=1))

    def load_payload(self, directory: Path) -> None:
        directory = Path(directory)
        if self.kind == "ddp":
            self.load_state_dict(load_state_file(directory, map_location=self.device))
            return
        state = json.loads((directory / ENGINE_STATE).read_text())
        try:
            load_engine_checkpoint(self.engine, directory, state["tag"], saved_world=state["world_size"],
                                   world=self.ctx.world_size)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        rng = torch.load(directory / f"rng_rank{self.ctx.rank}.pt", weights_only=True)
        self.load_state_dict({**state, **rng})

    def export(self, directory: Path) -> str | None:
        """The SR weights as an "sr-transformer" checkpoint (what the cascade loads), written by rank 0;
        under deepspeed a collective that gathers the fp32 (master) weights. Returns the hash on rank 0."""
        if self.kind == "deepspeed":
            weights = gathered_state_dict(self.model, self.ctx.rank, fp32_master=True)
        else:
            weights = self.model.state_dict() if self.ctx.is_main else None
        if weights is None:
            return None
        return save_checkpoint(directory, weights, kind=MODEL_KIND, config=self.cfg.model,
                               extra={"step": self.step, "stage": self.cfg.stage})

    # -- one step ------------------------------------------------------------------------------------
    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.ctx.distributed:
            t = t.to(self.device)
            dist.all_reduce(t)
        return t.cpu() if t.device.type != "cpu" else t

    def train_step(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        cfg, rank, world = self.cfg, self.ctx.rank, self.ctx.world_size
        rows = self.stream.next_rows(cfg.data.batch_size)
        index = list(range(rank, len(rows), world))
        hr, lr, text, tmask, _ = collate([rows[i] for i in index], cfg, self.device)
        seeds = [_mix(cfg.data.seed, "example", self.step, i) for i in index]
        self.model.train()
        loss_sum, counts = batch_loss(self.model, hr, lr, text, tmask, cfg, seeds, self.device, self._autocast,
                                      forward=self.engine)
        n_global = self._all_reduce(counts[:1].clone())[0].item()
        lr_now = lr_at(cfg, self.step)
        if self.kind == "deepspeed":
            grad_norm = self._deepspeed_update(loss_sum, n_global, lr_now)
        else:
            grad_norm = self._ddp_update(loss_sum, n_global, lr_now)
        totals = self._all_reduce(torch.cat([loss_sum.detach().double().cpu().view(1), counts]))
        self.step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        n = totals[1].item()
        tokens = cfg.data.batch_size * hr[0].numel()
        return {"loss": totals[0].item() / n, "acc/lo": totals[2].item() / n, "acc/hi": totals[3].item() / n,
                "acc/token": totals[4].item() / n, "lr": lr_now, "grad_norm": grad_norm,
                "masked_tokens": int(n), "step_time_s": dt, "tokens_per_s": tokens / dt}

    def _deepspeed_update(self, loss_sum: torch.Tensor, n_global: float, lr_now: float) -> float:
        """DeepSpeed averages gradients over the ranks: world * (this rank's sum) / (global count) makes
        the average the ddp path's sum over ranks of (rank's sum) / (global count)."""
        for group in self.opt.param_groups:
            group["lr"] = lr_now
        self.engine.backward(loss_sum * (self.ctx.world_size / n_global))
        self.engine.step()  # clips by gradient_clipping (optim.grad_clip; 0: none) as clip_grad_norm_ does
        grad_norm = self.engine.get_global_grad_norm()
        return float(grad_norm) if grad_norm is not None else float("nan")

    def _ddp_update(self, loss_sum: torch.Tensor, n_global: float, lr_now: float) -> float:
        cfg = self.cfg
        (loss_sum / n_global).backward()
        for p in self.params:  # zeros, not None: every rank reduces the same buffer; AdamW sees every param
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.ctx.distributed:  # DDP by hand: one all-reduce of the flat gradient (a sum: loss / global n)
            flat = torch.cat([p.grad.reshape(-1) for p in self.params])
            dist.all_reduce(flat)
            offset = 0
            for p in self.params:
                p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        for group in self.opt.param_groups:
            group["lr"] = lr_now
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return grad_norm

    # -- evaluation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss and masked-token accuracy on the eval rows with fixed draws (rank 0), and the LR | SR | HR video.

        Under deepspeed every rank runs the forward passes (ZeRO gathers are collectives); rank 0 reports."""
        if not self.eval_rows or (not self.ctx.is_main and self.kind == "ddp"):
            return {}
        cfg = self.cfg
        hr, lr, text, tmask, _ = collate(self.eval_rows, cfg, self.device)
        seeds = [_mix(cfg.data.seed, "eval", i) for i in range(len(self.eval_rows))]
        self.model.eval()
        loss_sum, counts = batch_loss(self.model, hr, lr, text, tmask, cfg, seeds, self.device, self._autocast,
                                      forward=self.engine)
        n = counts[0].item()
        metrics = {"eval/loss": loss_sum.item() / n, "eval/acc_lo": counts[1].item() / n,
                   "eval/acc_hi": counts[2].item() / n, "eval/acc_token": counts[3].item() / n}
        if self.video_tokenizer_path and self.out is not None:
            path = self.write_video(hr[:1], lr[:1], text[:1], tmask[:1])
            if path is not None:
                self.tracker.log_artifact(path, "sr_videos")
        return metrics if self.ctx.is_main else {}

    def write_video(self, hr, lr, text, tmask) -> Path | None:
        """Sample SR tokens for one example and write LR (2x nearest) | SR | HR decoded side by side (rank 0;
        under deepspeed every rank samples, a collective)."""
        from videopoet.pipeline.media.writer import write_mp4
        from videopoet.tokenizers.magvit2 import VideoTokenizer, tensor_to_video
        from videopoet.trainer.sr.sampling import sample, stage_sampling

        sr = sample(self.model, lr.to(self.device), text.to(self.device), tmask.to(self.device),
                    stage_sampling(f"stage{self.cfg.stage}", steps=self.cfg.sample_steps, seed=self.cfg.data.seed))
        if not self.ctx.is_main:
            return None
        if self._video_tokenizer is None:
            self._video_tokenizer = VideoTokenizer.load(self.video_tokenizer_path, device=self.device)
        tok = self._video_tokenizer
        videos = [tok.decode(x.to(self.device)).float()[0] for x in (lr, sr, hr)]
        videos[0] = videos[0].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        side = np.concatenate([tensor_to_video(v).numpy() for v in videos], axis=2)
        path = Path(self.out) / "eval_videos" / f"step_{self.step:08d}.mp4"
        write_mp4(path, side, fps=8, crf=None)
        return path


# --------------------------------------------------------------------------------------------------
# the job: driver (train) and worker (train_worker)


def train_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Resume or start, train to cfg.steps (or the absolute `stop_after`), save; the summary."""
    cfg = from_dict(SRTrainConfig, loop_config["config"])
    out, quiet = Path(loop_config["out"]), loop_config["quiet"]
    ctx = worker_context(use_gpu=True)
    tracker = Tracker.attach(loop_config["run_id"]) if ctx.is_main else Tracker.disabled()
    trainer = SRTrainer(cfg, loop_config["data"], ctx, out=out, tracker=tracker,
                        video_tokenizer=loop_config.get("video_tokenizer"))
    manager = CheckpointManager.for_config(out, kind=TRAIN_STATE_KIND, cfg=cfg, keep=cfg.keep_checkpoints)
    resume = manager.resume_point()
    if resume is not None:
        trainer.load_payload(resume[0])
        if not quiet and ctx.is_main:
            print(f"resuming from {resume[0]} (step {trainer.step})")
    tracker.set_tags({"resumed_from_step": trainer.step, "stage": cfg.stage, "world_size": ctx.world_size,
                      "engine": cfg.engine})
    cadence = Cadence(max_steps=cfg.steps, log_every=cfg.log_every, eval_every=cfg.eval_every,
                      save_every=cfg.save_every, stop_after=loop_config.get("stop_after"))
    t0 = time.perf_counter()
    with StepLog(out / "losses.jsonl", tracker, resumed_step=trainer.step, last_step=cadence.end,
                 enabled=ctx.is_main) as step_log:
        def save() -> None:
            """Rank 0 stages, every rank writes its part, rank 0 commits; then the model/ export."""
            step = trainer.step
            if ctx.is_main:
                step_log.flush()
                manager.begin(step)
            ctx.barrier()
            trainer.save_payload(manager.staging_dir(step))
            ctx.barrier()
            if ctx.is_main:
                manager.commit(step, extra={"step": step, "world_size": ctx.world_size, "engine": cfg.engine})
            trainer.export(out / "model")  # a collective under deepspeed
            ctx.barrier()

        evaluated: list[int] = []  # the same on every rank (the final evaluation is a collective under ZeRO)

        def on_eval(metrics: dict[str, float], step: int) -> None:
            evaluated.append(step)
            step_log.on_eval(metrics, step)

        result = run_loop(trainer, cadence, save=save, log=step_log.log, on_eval=on_eval,
                          stop_requested=stop_requested(loop_config, ctx), any_rank=ctx.any_rank,
                          is_main=ctx.is_main, progress=None if quiet else "train-sr")
    metrics = dict(step_log.eval_metrics) if evaluated else trainer.evaluate()
    summary = {"run_id": loop_config["run_id"], "step": trainer.step, "steps_this_run": result.steps_run,
               "stopped": result.stopped, "reason": result.reason, "seconds": time.perf_counter() - t0,
               "world_size": ctx.world_size, "model": str(out / "model"), **result.last, **metrics}
    if ctx.is_main:
        tracker.flush()
        write_summary(out, summary)
    return summary


def train(cfg: SRTrainConfig, data: Any, out: str | Path, *, stop_after: int | None = None,
          num_workers: int = 0, video_tokenizer: str | None = None, run_name: str | None = None,
          quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) up to cfg.steps; `stop_after` (an absolute step) ends this invocation early,
    checkpointed. `num_workers`: 0 = this process (ddp only), N >= 1 = N Ray Train workers. Returns the summary."""
    try:
        cfg.validate()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if cfg.engine == "deepspeed" and num_workers < 1:
        raise ConfigError("engine=deepspeed trains on Ray Train workers: give --num-workers N >= 1 "
                          "(1 for one GPU), or engine=ddp to train in this process")
    if cfg.engine == "deepspeed" and not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed's CPU accelerator; the workers inherit it
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.engine == "deepspeed":  # ZeRO shards are per rank: refuse another worker count before Ray starts
        resume = CheckpointManager.for_config(out, kind=TRAIN_STATE_KIND, cfg=cfg).resume_point()
        saved = resume[1].get("extra", {}).get("world_size") if resume is not None else None
        if saved is not None and saved != num_workers:
            raise ConfigError(f"{resume[0]}: ZeRO checkpoint of {saved} workers; resume it with --num-workers {saved}")
    SRStream(data, cfg)  # refuse mismatched shards before MLflow and Ray
    data = [str(p.resolve()) for p in list_sr_shards(data)]
    if video_tokenizer is not None:
        video_tokenizer = str(Path(video_tokenizer).resolve())
    t0 = time.perf_counter()
    summary = run_training(train_worker, cfg, job="train-sr", kind=TRAIN_STATE_KIND, run_dir=out,
                           num_workers=num_workers, run_name=run_name, tags={"stage": str(cfg.stage)},
                           loop_config={"data": data, "stop_after": stop_after, "quiet": quiet,
                                        "video_tokenizer": video_tokenizer})
    elapsed = time.perf_counter() - t0
    if not quiet:
        done = summary["steps_this_run"]
        print(f"train-sr stage {cfg.stage}: {done} steps in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.2f} steps/s)"
              f"; step {summary['step']}/{cfg.steps}; loss {summary.get('loss', float('nan')):.3f}, eval masked-token "
              f"accuracy lo {summary.get('eval/acc_lo', float('nan')):.3f} hi "
              f"{summary.get('eval/acc_hi', float('nan')):.3f}; model {summary['model']}")
    return summary


def run(args) -> int:
    """`videopoet train-sr` (arguments: videopoet.trainer.sr.train_cli)."""
    cfg = RECIPES.get(args.config, list(args.overrides))
    if args.config in RECIPES.names() and args.config.startswith("stage") and args.config != f"stage{args.stage}":
        raise ConfigError(f"--config {args.config} is the stage-{args.config[-1]} recipe, but --stage {args.stage}")
    if cfg.stage != args.stage:
        cfg = dataclasses.replace(cfg, stage=args.stage)
    list_sr_shards(args.data)  # a directory, its shards/, a .parquet or a glob; else one line (UsageError)
    output_dir(args.out, "--out")
    train(cfg, args.data, args.out, stop_after=args.stop_after, num_workers=args.num_workers,
          video_tokenizer=args.video_tokenizer, run_name=args.run_name)
    return 0
