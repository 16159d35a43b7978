"""`videopoet train-tokenizer video`: train the MAGVIT-v2 video tokenizer on clip shards.

    videopoet train-tokenizer video --data CLIP_SHARDS --out runs/vtok --config tiny [key=value ...]
    videopoet train-tokenizer video --data s3://... --config paper --num-workers 8     # Ray Train, DDP

Objective (MAGVIT-v2, ../shared/reference/tokenizer.md §1.4): L2 reconstruction + perceptual loss on
the logits of a frozen torchvision classifier loaded from a local state dict (off without one) +
non-saturating GAN with a 3D StyleGAN-style discriminator (blur-pool downsampling, LeCAM, R1),
switched on after `loss.gan_start_step` + LFQ commitment 0.25 and annealed entropy 0.1. EMA of the
generator weights (the exported tokenizer). Two phases: `image_steps` of image pretraining on single
frames with the 2D network (temporal kernel 1), then inflation into the causal 3D network
(magvit2.inflate_state_dict) and video training.

Distribution: `--num-workers N` runs the loop under Ray Train (TorchTrainer: DDP, gloo on CPU, nccl
on GPUs); N = 1 without `--ray` runs it in this process. Shards are assigned to ranks per epoch
(clips round-robin when there are fewer shards than ranks); the LFQ codebook entropy is all-reduced.
bf16 autocast on CUDA (`bf16=true`); LFQ, entropy and norms compute in fp32.

Checkpoints (`<out>/checkpoints/step_XXXXXXXX`, every `save_every` steps and at the end) hold the
model, EMA, discriminator, both optimisers, LeCAM state, RNG states, the phase and the data position
(epoch, batches consumed), so a resumed run repeats the uninterrupted loss curve exactly; the EMA
tokenizer is exported to `<out>/tokenizer` (VideoTokenizer.load). Rerunning the same command
resumes from the latest checkpoint. MLflow (rank 0): losses, entropies, learning rate, held-out PSNR /
SSIM, codebook utilisation, and side-by-side original|reconstruction .mp4 artifacts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Iterator

from videopoet.config import config_hash, from_dict, to_dict
from videopoet.tokenizers.video_config import (  # noqa: F401  (re-exported)
    RECIPES_TRAIN as RECIPES, TRAIN_KIND, DataConfig, LossConfig, OptimConfig, VideoTrainConfig,
)

# ------------------------------------------------------------------------------------------------
# Discriminator and losses


def _blur_down(x, temporal: bool):
    """Blur pool (Zhang 2019): [1,2,1] binomial blur in space, then 2x average downsampling."""
    import torch
    import torch.nn.functional as F

    c = x.shape[1]
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    k2 = (k[:, None] * k[None, :]) / 16
    x = F.conv3d(F.pad(x, (1, 1, 1, 1, 0, 0), mode="replicate"),
                 k2.view(1, 1, 1, 3, 3).expand(c, 1, 1, 3, 3), groups=c)
    kt = 2 if temporal and x.shape[2] >= 2 else 1
    return F.avg_pool3d(x, (kt, 2, 2))


def build_discriminator(cfg: LossConfig):
    import torch
    from torch import nn

    class DiscBlock(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
            self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
            self.skip = nn.Conv3d(cin, cout, 1, bias=False)

        def forward(self, x):
            h = nn.functional.leaky_relu(self.conv1(x), 0.2)
            h = nn.functional.leaky_relu(self.conv2(_blur_down(h, True)), 0.2)
            return (self.skip(_blur_down(x, True)) + h) / math.sqrt(2)

    class Discriminator3D(nn.Module):
        """StyleGAN-style 3D discriminator (MAGVIT): residual blocks with blur-pool downsampling."""

        def __init__(self):
            super().__init__()
            ch = cfg.disc_channels
            self.conv_in = nn.Conv3d(3, ch, 3, padding=1)
            blocks, cin = [], ch
            for m in cfg.disc_channel_mult:
                blocks.append(DiscBlock(cin, ch * m))
                cin = ch * m
            self.blocks = nn.Sequential(*blocks)
            self.conv_out = nn.Conv3d(cin, cin, 3, padding=1)
            self.head = nn.Linear(cin, 1)

        def forward(self, x):
            h = self.blocks(nn.functional.leaky_relu(self.conv_in(x), 0.2))
            h = nn.functional.leaky_relu(self.conv_out(h), 0.2)
            return self.head(h.float().mean(dim=(2, 3, 4))).squeeze(-1)

    return Discriminator3D()


class PerceptualLoss:
    """L2 between the logits of a frozen torchvision classifier on real and reconstructed frames
    (MAGVIT's "perceptual loss on logits"). Weights come from a local state-dict file only."""

    def __init__(self, arch: str, weights_path: str, device):
        import torch
        import torchvision

        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"loss.perceptual_weights={weights_path}: no such file")
        net = getattr(torchvision.models, arch)(weights=None)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"loss.perceptual_weights={weights_path}: not a torchvision {arch} state dict ({str(err)[:200]})") from None
        self.net = net.eval().requires_grad_(False).to(device)
        self.mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def __call__(self, recon, real):
        from einops import rearrange

        def logits(v):
            frames = rearrange(v, "b c t h w -> (b t) c h w")
            return self.net(((frames + 1) / 2 - self.mean) / self.std)

        with __import__("torch").no_grad():
            target = logits(real)
        return (logits(recon) - target).float().square().mean()


# ------------------------------------------------------------------------------------------------
# Data


class ClipBatches:
    """Deterministic per-rank batches of clips for one phase ('image' or 'video').

    Epoch e: shards in an order shuffled with (seed, e); rank r takes shards r, r+W, ... (or every
    W-th clip when there are fewer shards than ranks), passes them through a shuffle buffer seeded
    with (seed, e, r), drops held-out and too-short clips, and batches them. `batches(e, skip)`
    replays epoch e from its start, skipping `skip` batches: that is how a resume lands on the same
    data position.
    """

    def __init__(self, root: str | Path, cfg: DataConfig, batch_size: int, seed: int,
                 rank: int, world: int, held_out: set[str]):
        from videopoet.pipeline.clip_shards import list_shards

        self.shards = list_shards(root)
        if not self.shards:
            raise FileNotFoundError(f"--data {root}: no clip shards (*.tar) found")
        self.cfg, self.batch_size, self.seed = cfg, batch_size, seed
        self.rank, self.world, self.held_out = rank, world, held_out

    def _clips(self, epoch: int) -> Iterator[Any]:
        from videopoet.pipeline.clip_shards import iter_clip_shard

        order = list(self.shards)
        random.Random(f"{self.seed}-{epoch}").shuffle(order)
        if len(order) >= self.world:
            for shard in order[self.rank::self.world]:
                yield from iter_clip_shard(shard)
        else:
            i = 0
            for shard in order:
                for clip in iter_clip_shard(shard):
                    if i % self.world == self.rank:
                        yield clip
                    i += 1

    def _shuffled(self, epoch: int) -> Iterator[Any]:
        rng = random.Random(f"{self.seed}-{epoch}-{self.rank}")
        buf: list = []
        for clip in self._clips(epoch):
            if clip.key in self.held_out:
                continue
            buf.append(clip)
            if len(buf) >= max(1, self.cfg.shuffle_buffer):
                yield buf.pop(rng.randrange(len(buf)))
        while buf:
            yield buf.pop(rng.randrange(len(buf)))

    def batches(self, epoch: int, phase: str, skip: int = 0) -> Iterator[Any]:
        import torch

        group: list = []
        done = 0
        for clip in self._shuffled(epoch):
            if phase == "video" and clip.rgb.shape[0] < self.cfg.frames:
                continue
            group.append(clip)
            if len(group) == self.batch_size:
                if done >= skip:
                    yield torch.stack([clip_tensor(c.rgb, self.cfg, phase) for c in group])
                done += 1
                group = []


def clip_tensor(rgb, cfg: DataConfig, phase: str):
    """uint8 [T, H, W, 3] -> float [3, T', h, w] in [-1, 1]: 1 frame (image) or `frames` frames."""
    import torch.nn.functional as F

    from videopoet.tokenizers.magvit2 import video_to_tensor

    frames = 1 if phase == "image" else cfg.frames
    x = video_to_tensor(rgb[:frames])
    if x.shape[-2:] != (cfg.height, cfg.width):
        x = F.interpolate(x, size=(cfg.height, cfg.width), mode="area").clamp(-1, 1)
    return x


def held_out_clips(root: str | Path, cfg: DataConfig) -> list[Any]:
    """The first `eval_clips` clips (long enough for the video phase) of the first shard."""
    from videopoet.pipeline.clip_shards import iter_clip_shard, list_shards

    shards = list_shards(root)
    out = []
    if cfg.eval_clips <= 0 or not shards:
        return out
    for clip in iter_clip_shard(shards[0]):
        if clip.rgb.shape[0] >= cfg.frames:
            out.append(clip)
        if len(out) >= cfg.eval_clips:
            break
    return out


# ------------------------------------------------------------------------------------------------
# Training loop (runs in-process or as a Ray Train worker)


def _codebook_stats(tokens, bits: int) -> dict[str, float]:
    import torch

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


def _write_side_by_side(path: Path, original, reconstruction) -> None:
    """uint8 [T, H, W, 3] pair -> an H.264 .mp4 (8 fps) with original | reconstruction."""
    import av
    import numpy as np

    frames = np.concatenate([original, reconstruction], axis=2)
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = sorted((out_dir / "checkpoints").glob("step_*[0-9]"))
    return ckpts[-1] if ckpts else None


def train_loop(loop_config: dict[str, Any]) -> list[dict[str, float]]:
    """The training loop. Returns (on every rank) the per-step loss history of this invocation."""
    import numpy as np  # noqa: F401  (av/mlflow need it loaded)
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from videopoet.checkpoint import load_checkpoint, save_checkpoint
    from videopoet.eval.video_metrics import psnr, ssim
    from videopoet.tokenizers.lfq import entropy_weight_at
    from videopoet.tokenizers.magvit2 import VideoTokenizer, inflate_state_dict, tensor_to_video

    cfg: VideoTrainConfig = from_dict(VideoTrainConfig, loop_config["config"])
    out_dir = Path(loop_config["out_dir"])
    data_root = loop_config["data"]
    stop_after = loop_config.get("stop_after")
    time_limit_s = loop_config.get("time_limit_s")
    run_id, tracking_uri = loop_config.get("run_id"), loop_config.get("tracking_uri")

    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    if torch.cuda.is_available():
        import os

        # Ray Train sets LOCAL_RANK; a worker may see all of its node's GPUs or only its own.
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    amp = cfg.bf16 and device.type == "cuda"

    client = None
    if rank == 0 and run_id:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)

    def log_metrics(metrics: dict[str, float], step: int) -> None:
        if client is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    torch.manual_seed(cfg.seed)
    image_cfg = dataclasses.replace(cfg.model, temporal_kernel=1)

    def make_generator(phase: str):
        return VideoTokenizer(image_cfg if phase == "image" else cfg.model).to(device)

    def make_optimizer(params, lr):
        return torch.optim.Adam(params, lr=lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
                                weight_decay=cfg.optim.weight_decay)

    phase = "image" if cfg.image_steps > 0 else "video"
    model = make_generator(phase)
    disc = build_discriminator(cfg.loss).to(device)
    opt_g = make_optimizer(model.parameters(), cfg.optim.lr)
    opt_d = make_optimizer(disc.parameters(), cfg.optim.disc_lr)
    ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    lecam = torch.zeros(2, device=device)  # EMA of D(real), D(fake)
    step, epoch, consumed = 0, 0, 0

    perceptual = None
    if cfg.loss.perceptual_weights and cfg.loss.perceptual_weight > 0:
        perceptual = PerceptualLoss(cfg.loss.perceptual_arch, cfg.loss.perceptual_weights, device)

    latest = _latest_checkpoint(out_dir)
    if latest is not None:
        state, meta = load_checkpoint(latest, kind=TRAIN_KIND)
        saved = meta["config"]
        if config_hash(saved) != config_hash(to_dict(cfg)):
            raise ValueError(f"{latest}: written with a different config; use a new --out or the same config")
        extra = meta["extra"]
        step, epoch, consumed, phase = extra["step"], extra["epoch"], extra["consumed"], extra["phase"]
        model = make_generator(phase)
        model.load_state_dict(state["model"])
        opt_g = make_optimizer(model.parameters(), cfg.optim.lr)
        opt_g.load_state_dict(state["opt_g"])
        disc.load_state_dict(state["disc"])
        opt_d.load_state_dict(state["opt_d"])
        ema = {k: v.to(device) for k, v in state["ema"].items()}
        lecam = state["lecam"].to(device)
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"])
        if rank == 0:
            print(f"resumed from {latest} at step {step} ({phase} phase, epoch {epoch}, batch {consumed})", flush=True)

    def wrap(module):
        if not distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)

    class GeneratorForward(torch.nn.Module):  # tuple outputs for DDP
        def __init__(self, tok):
            super().__init__()
            self.tok = tok

        def forward(self, x):
            out = self.tok(x)
            q = out.quant
            return out.reconstruction, q.commit_loss, q.sample_entropy, q.codebook_entropy

    gen = wrap(GeneratorForward(model))

    held_out = held_out_clips(data_root, cfg.data)
    batches_src = ClipBatches(data_root, cfg.data, cfg.batch_size, cfg.seed, rank, world,
                              {c.key for c in held_out})

    def ema_model() -> VideoTokenizer:
        m = make_generator(phase)
        m.load_state_dict({k: v.to(m.state_dict()[k].dtype) for k, v in ema.items()})
        return m.eval()

    def save(final: bool = False) -> None:
        if rank != 0:
            return
        state = {
            "model": model.state_dict(), "ema": ema, "disc": disc.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "lecam": lecam,
            "rng_cpu": torch.get_rng_state(),
        }
        if device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state()
        path = out_dir / "checkpoints" / f"step_{step:08d}"
        save_checkpoint(path, state, kind=TRAIN_KIND, config=cfg,
                        extra={"step": step, "epoch": epoch, "consumed": consumed, "phase": phase})
        export = ema_model()
        if phase == "image":  # a usable video tokenizer at any time: inflate the image network
            video = VideoTokenizer(cfg.model)
            video.load_state_dict(inflate_state_dict(export.state_dict(), video))
            export = video
        h = export.save(out_dir / "tokenizer", extra={"step": step, "phase": phase, "train_config_hash": config_hash(cfg)})
        if client is not None and final:
            client.set_tag(run_id, "tokenizer_content_hash", h)
            client.set_tag(run_id, "tokenizer_path", str(out_dir / "tokenizer"))

    def evaluate() -> dict[str, float]:
        if rank != 0 or not held_out:
            return {}
        m = ema_model()
        if phase == "image":
            x = torch.stack([clip_tensor(c.rgb, cfg.data, "image") for c in held_out]).to(device)
        else:
            x = torch.stack([clip_tensor(c.rgb, cfg.data, "video") for c in held_out]).to(device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            tokens = m.encode(x)
            recon = m.decode(tokens).float()
        metrics = {"eval/psnr": float(psnr(recon, x).mean()), "eval/ssim": float(ssim(recon, x).mean())}
        metrics.update(_codebook_stats(tokens.cpu(), cfg.model.bits))
        if client is not None and phase == "video":
            vid_dir = out_dir / "eval_videos"
            vid_dir.mkdir(parents=True, exist_ok=True)
            path = vid_dir / f"step_{step:08d}.mp4"
            _write_side_by_side(path, tensor_to_video(x[0]).numpy(), tensor_to_video(recon[0]).numpy())
            client.log_artifact(run_id, str(path), "reconstructions")
        return metrics

    def any_rank(flag: bool) -> bool:
        if not distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def lr_factor(s: int) -> float:
        return min(1.0, (s + 1) / max(1, cfg.optim.warmup_steps))

    history: list[dict[str, float]] = []
    it = batches_src.batches(epoch, phase, consumed)
    empty_epochs = 0
    steps_this_run = 0
    stopped_by_time = False
    t_start, clips_seen = time.perf_counter(), 0
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=step, desc="train video tokenizer", disable=rank != 0, mininterval=5)
    while step < cfg.steps:
        if stop_after is not None and steps_this_run >= stop_after:
            break
        if time_limit_s is not None and any_rank(time.perf_counter() - t_start > time_limit_s):
            stopped_by_time = True
            break
        if phase == "image" and step >= cfg.image_steps:
            # inflate the image network (and its EMA) into the causal video network
            video = VideoTokenizer(cfg.model).to(device)
            video.load_state_dict(inflate_state_dict(model.state_dict(), video))
            ema_video = inflate_state_dict({k: v for k, v in ema.items()}, video)
            model, phase = video, "video"
            ema = {k: v.float() for k, v in ema_video.items()}
            opt_g = make_optimizer(model.parameters(), cfg.optim.lr)
            gen = wrap(GeneratorForward(model))
            epoch, consumed = epoch + 1, 0
            it = batches_src.batches(epoch, phase, 0)
            if rank == 0:
                print(f"step {step}: inflated the image network into the video network", flush=True)
        batch = next(it, None)
        if any_rank(batch is None):
            epoch, consumed = epoch + 1, 0
            empty_epochs += 1
            if empty_epochs > 1:
                raise ValueError(f"--data {data_root}: no batch of {cfg.batch_size} usable clips per worker "
                                 f"(need >= {cfg.data.frames} frames for the video phase)")
            it = batches_src.batches(epoch, phase, 0)
            continue
        empty_epochs = 0
        x = batch.to(device)
        for group in opt_g.param_groups:
            group["lr"] = cfg.optim.lr * lr_factor(step)
        for group in opt_d.param_groups:
            group["lr"] = cfg.optim.disc_lr * lr_factor(step)
        gan_on = cfg.loss.gan_weight > 0 and step >= cfg.loss.gan_start_step

        # ---- generator step
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            recon, commit, sample_h, code_h = gen(x)
            recon_loss = F.mse_loss(recon.float(), x)
            ent_w = entropy_weight_at(step, cfg.model.entropy_weight, cfg.model.entropy_anneal_ratio,
                                      cfg.model.entropy_anneal_steps)
            loss = cfg.loss.recon_weight * recon_loss + cfg.model.commit_weight * commit + ent_w * (sample_h - code_h)
            logs = {"loss/recon": recon_loss.item(), "loss/commit": commit.item(),
                    "entropy/sample": sample_h.item(), "entropy/codebook": code_h.item(),
                    "entropy/weight": ent_w}
            if perceptual is not None:
                p_loss = perceptual(recon, x)
                loss = loss + cfg.loss.perceptual_weight * p_loss
                logs["loss/perceptual"] = p_loss.item()
            if gan_on:
                disc.requires_grad_(False)
                g_loss = F.softplus(-disc(recon)).mean()  # bypasses DDP: D is not updated here
                disc.requires_grad_(True)
                loss = loss + cfg.loss.gan_weight * g_loss
                logs["loss/gan_g"] = g_loss.item()
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            logs["grad_norm/g"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip))
        opt_g.step()
        with torch.no_grad():
            # EMA warm-up: early on the decay is (1 + s) / (10 + s), so short runs do not export
            # mostly-initial weights; it reaches ema_decay after ~10k steps at 0.999.
            decay = min(cfg.optim.ema_decay, (1 + step) / (10 + step))
            for k, v in model.state_dict().items():
                ema[k].lerp_(v.float(), 1 - decay)
        logs["loss/total"] = loss.item()

        # ---- discriminator step
        if gan_on:
            r1_now = cfg.loss.r1_weight > 0 and step % max(1, cfg.loss.r1_every) == 0
            real = x.detach().requires_grad_(r1_now)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                both = disc(torch.cat([real, recon.detach().float()]))
                d_real, d_fake = both.float().chunk(2)
                d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
                lecam_reg = (F.relu(d_real - lecam[1]).square().mean()
                             + F.relu(lecam[0] - d_fake).square().mean())
                d_total = d_loss + cfg.loss.lecam_weight * lecam_reg
            if r1_now:
                (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
                r1 = grad.float().square().flatten(1).sum(1).mean()
                d_total = d_total + cfg.loss.r1_weight * cfg.loss.r1_every * 0.5 * r1
                logs["loss/r1"] = r1.item()
            opt_d.zero_grad(set_to_none=True)
            d_total.backward()
            if distributed:
                # Not DDP: R1 differentiates w.r.t. the input (autograd.grad), which DDP does not support.
                grads = [p.grad for p in disc.parameters() if p.grad is not None]
                flat = torch.cat([g.reshape(-1) for g in grads])
                dist.all_reduce(flat)
                flat /= world
                offset = 0
                for g in grads:
                    g.copy_(flat[offset: offset + g.numel()].view_as(g))
                    offset += g.numel()
            opt_d.step()
            with torch.no_grad():
                means = torch.stack([d_real.mean(), d_fake.mean()]).detach()
                if distributed:
                    dist.all_reduce(means)
                    means /= world
                lecam.lerp_(means, 1 - cfg.loss.lecam_decay)
            logs.update({"loss/gan_d": d_loss.item(), "loss/lecam": lecam_reg.item()})

        step += 1
        consumed += 1
        steps_this_run += 1
        clips_seen += x.shape[0] * world
        bar.update(1)
        logs["lr"] = opt_g.param_groups[0]["lr"]
        history.append({"step": step, **logs})
        if step % cfg.log_every == 0 or step == cfg.steps:
            logs["throughput/clips_per_s"] = clips_seen / (time.perf_counter() - t_start)
            log_metrics(logs, step)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            log_metrics(evaluate(), step)
        if step % cfg.save_every == 0 or step == cfg.steps:
            save(final=step == cfg.steps)
    bar.close()
    stopped = stopped_by_time or (stop_after is not None and steps_this_run >= stop_after)
    if stopped and step % cfg.save_every:
        save()  # a stop is a checkpoint: resume continues exactly here
    if rank == 0:
        secs = time.perf_counter() - t_start
        print(f"trained {steps_this_run} steps to step {step} ({clips_seen} clips, "
              f"{clips_seen / max(secs, 1e-9):.2f} clips/s, {phase} phase); tokenizer: {out_dir / 'tokenizer'}",
              flush=True)
    return history


# ------------------------------------------------------------------------------------------------
# Driver


def train(cfg: VideoTrainConfig, data: str | Path, out_dir: str | Path, *, num_workers: int = 1,
          use_ray: bool | None = None, stop_after: int | None = None,
          time_limit_s: float | None = None) -> list[dict[str, float]]:
    """Train with MLflow tracking; returns rank 0's per-step history (empty under Ray).

    `stop_after` steps or `time_limit_s` seconds end this invocation early with a checkpoint (the
    same command resumes); neither is part of the config.
    """
    from videopoet.tracking import start_run, tracking_uri

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    use_ray = num_workers > 1 if use_ray is None else use_ray
    with start_run("train-tokenizer-video", cfg, tags={"num_workers": str(num_workers),
                                                     "data": str(data)}) as run:
        loop_config = {"config": to_dict(cfg), "out_dir": str(out_dir), "data": str(Path(data).resolve()),
                       "stop_after": stop_after, "time_limit_s": time_limit_s,
                       "run_id": run.info.run_id, "tracking_uri": tracking_uri()}
        (out_dir / "run.json").write_text(json.dumps({"mlflow_run_id": run.info.run_id}))
        if not use_ray:
            return train_loop(loop_config)
        _train_with_ray(loop_config, num_workers, out_dir)
        return []


def _train_with_ray(loop_config: dict[str, Any], num_workers: int, out_dir: Path) -> None:
    import ray
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = torch.cuda.is_available()
    if not ray.is_initialized():
        import os

        if os.environ.get("RAY_ADDRESS"):  # an existing cluster
            ray.init()
        else:  # a local one, with at least one CPU per worker
            ray.init(num_cpus=None if use_gpu else max(num_workers, 2), include_dashboard=False,
                     configure_logging=False)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker=None if use_gpu else {"CPU": 1}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(storage_path=str(out_dir / "ray"), name="train"),
    )
    trainer.fit()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="clip-shard directory (or one .tar)")
    parser.add_argument("--out", default="runs/video_tokenizer",
                        help="output directory: checkpoints/, tokenizer/ (the EMA tokenizer), eval_videos/")
    parser.add_argument("--config", default="tiny", help=f"recipe ({', '.join(RECIPES.names())}) or YAML file")
    parser.add_argument("--num-workers", type=int, default=1, help="data-parallel workers (Ray Train when > 1)")
    parser.add_argument("--ray", action="store_true", help="use Ray Train even with one worker")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after this many steps in this invocation (checkpointed; rerun to resume)")
    parser.add_argument("--time-limit-min", type=float, default=None,
                        help="stop (checkpointed) after this many minutes; rerun to resume")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=500")


def run(args: argparse.Namespace) -> int:
    cfg = RECIPES.get(args.config, args.overrides)
    if args.num_workers < 1:
        raise SystemExit("--num-workers must be >= 1")
    train(cfg, args.data, args.out, num_workers=args.num_workers, use_ray=args.ray or args.num_workers > 1,
          stop_after=args.stop_after,
          time_limit_s=None if args.time_limit_min is None else 60 * args.time_limit_min)
    return 0
