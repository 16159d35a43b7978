"""`videopoet train-tokenizer audio`: train the SoundStream audio tokenizer on clip shards.

    videopoet train-tokenizer audio --data CLIP_SHARDS [--config tiny|paper|FILE.yaml] [--out DIR] [key=value ...]

Losses (SoundStream, arXiv 2107.03312; ../shared/reference/tokenizer.md §4):
  G = rec_weight * L_rec + adv_weight * L_adv + feat_weight * L_feat + RVQ commitment
  L_rec   multi-scale mel: windows 2^6..2^11, hop window/4, 64 mels;
          sum_s mean|S_s(x) - S_s(x_hat)| + sqrt(s/2) * mean_t ||log S_s(x) - log S_s(x_hat)||_2
  L_adv   hinge, averaged over discriminators: 3 MelGAN-style waveform discriminators (x1, x1/2,
          x1/4 average-pooled) and an STFT discriminator (W 1024, H 256, real+imag channels)
  L_feat  mean |D_k^l(x) - D_k^l(x_hat)| over every discriminator layer (real features detached)
  Weights 1 / 1 / 100 (the paper's), not lucidrains' 1e-5 multi-spectral weight; plus an optional
  time-domain L1 (`loss.wave_weight`, EnCodec's l_t; on in `tiny` only). The adversarial
  terms start after `loss.gan_start_step` (reconstruction-only warm-up).

Outputs under --out:
  tokenizer/                 the latest AudioTokenizer checkpoint (kind "soundstream"; what
                             `videopoet tokenize` loads), written at every save and at the end
  train_state/step_NNNNNNNN/ everything needed to resume exactly: model, discriminators, both
                             optimisers, step, RNG states, data position (kind "soundstream-train")
  losses.jsonl               one line per step (step, losses), also logged to MLflow
A second run with the same --out resumes from the newest train_state (the config must match).

Data: audio of the clips in --data (clips without audio are skipped). Each clip is held out for
evaluation when sha1(key) falls in the `data.holdout_fraction`; held-out clips are never trained
on. Training crops `data.segment_samples` at a position drawn from a generator seeded by
(seed, epoch, clip index), so the stream, and therefore a resumed run, is exactly reproducible.
Shard order is reshuffled every epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from videopoet.config import RecipeRegistry
from videopoet.tokenizers import soundstream_config
from videopoet.tokenizers.soundstream_config import SoundStreamConfig

TRAIN_STATE_KIND = "soundstream-train"


@dataclass
class DiscConfig:
    wave_scales: int = 3
    wave_channels: int = 16
    wave_max_channels: int = 1024
    stft_channels: int = 32
    stft_window: int = 1024
    stft_hop: int = 256


@dataclass
class LossConfig:
    rec_weight: float = 1.0
    adv_weight: float = 1.0
    feat_weight: float = 100.0
    # Time-domain L1 (EnCodec's l_t); 0 in the SoundStream recipe. The tiny recipe turns it on:
    # with minutes of CPU training, mel + GAN alone do not align the waveform's phase (SI-SNR).
    wave_weight: float = 0.0
    mel_windows: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])
    n_mels: int = 64
    # Floor of the mel magnitudes before the log. At 1e-5 the sqrt(w/2)-weighted log term of digital
    # silence (exact zeros between clicks or bursts) dwarfs everything else until the decoder emits
    # ~1e-7; the tiny recipe floors at 1e-2 (~ -95 dB under a full-scale tone at w 2048).
    log_floor: float = 1e-5
    gan_start_step: int = 2000

    def validate(self) -> None:
        if any(w < 16 or w & (w - 1) for w in self.mel_windows):
            raise ValueError(f"mel_windows {self.mel_windows}: each must be a power of two >= 16")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    disc_lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    grad_clip: float = 10.0


@dataclass
class DataConfig:
    segment_samples: int = 16_000
    batch_size: int = 16
    holdout_fraction: float = 0.05
    eval_clips: int = 8
    seed: int = 0

    def validate(self) -> None:
        if self.segment_samples < 2048:
            raise ValueError(f"segment_samples={self.segment_samples}: at least 2048 (the largest mel window)")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction={self.holdout_fraction} must lie in [0, 1)")


@dataclass
class AudioTrainConfig:
    model: SoundStreamConfig = field(default_factory=SoundStreamConfig)
    disc: DiscConfig = field(default_factory=DiscConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 100_000
    log_every: int = 50
    eval_every: int = 2000
    save_every: int = 2000
    keep_checkpoints: int = 2

    def validate(self) -> None:
        if self.steps < 1 or self.log_every < 1 or self.eval_every < 1 or self.save_every < 1:
            raise ValueError("steps, log_every, eval_every and save_every must be positive")
        if self.data.segment_samples < self.model.hop:
            raise ValueError("data.segment_samples is shorter than one frame")


RECIPES: RecipeRegistry[AudioTrainConfig] = RecipeRegistry(AudioTrainConfig)


@RECIPES.register
def paper() -> AudioTrainConfig:
    """SoundStream at 16 kHz (C = 32), 2 s crops, batch 32, GAN after 2k steps.

    3,200 frames per step is 3.1 per code, above SoundStream's dead-code threshold of 2 (with
    fewer, EMA counts stay below 2 and most codes are re-drawn every step).

    videopoet train-tokenizer audio --data CLIP_SHARDS --config paper
    """
    return AudioTrainConfig(model=soundstream_config.paper(), data=DataConfig(segment_samples=32_000, batch_size=32))


@RECIPES.register
def tiny() -> AudioTrainConfig:
    """CPU-sized: tiny model and discriminators, 0.5 s crops, batch 8; minutes on a laptop.

    Time-domain L1 at 100,000: the mel term's gradient ignores phase and dominates a smaller L1
    (bench/audio.py --learn, 600 CPU-s, held-out mel distance / SI-SNR: 1.36 / -35.9 dB at 20,000,
    1.31 / -29.2 dB at 100,000, 1.61 / -21.4 dB at 200,000; at 2,000 SI-SNR was -48.7 dB after 150
    CPU-s). GAN after 1,000 reconstruction-only steps (a GAN step costs ~2 plain ones, and at step
    300 the waveform is not aligned yet).

    videopoet train-tokenizer audio --data CLIP_SHARDS --config tiny steps=200
    """
    # 200 frames per step is 0.2 per code: the dead-code threshold scales down with it.
    return AudioTrainConfig(
        model=dataclasses.replace(soundstream_config.tiny(), dead_code_threshold=0.1),
        disc=DiscConfig(wave_channels=4, wave_max_channels=64, stft_channels=8),
        loss=LossConfig(gan_start_step=1000, wave_weight=100_000.0, log_floor=1e-2),
        optim=OptimConfig(lr=1e-3, disc_lr=3e-4, betas=[0.8, 0.99], grad_clip=10.0),
        data=DataConfig(segment_samples=8000, batch_size=8, eval_clips=4),
        steps=1500, log_every=10, eval_every=250, save_every=250,
    )


# --------------------------------------------------------------------------------------------------
# discriminators and losses (small plain modules; torch imported lazily for a fast --help)


def build_modules():
    import torch
    from torch import nn
    from torch.nn import functional as F
    from torch.nn.utils.parametrizations import weight_norm

    from videopoet.eval.audio_metrics import MelSpectrogram

    class WaveDiscriminator(nn.Module):
        """MelGAN discriminator: grouped strided convs; returns (logits, feature maps)."""

        def __init__(self, channels: int, max_channels: int):
            super().__init__()
            widths = [channels] + [min(channels * 4 ** i, max_channels) for i in range(1, 5)]
            layers = [weight_norm(nn.Conv1d(1, channels, 15, padding=7))]
            for c_in, c_out in zip(widths[:-1], widths[1:]):
                layers.append(weight_norm(nn.Conv1d(c_in, c_out, 41, stride=4, padding=20, groups=max(1, c_in // 4))))
            layers.append(weight_norm(nn.Conv1d(widths[-1], widths[-1], 5, padding=2)))
            self.layers = nn.ModuleList(layers)
            self.out = weight_norm(nn.Conv1d(widths[-1], 1, 3, padding=1))

        def forward(self, x):
            feats = []
            for layer in self.layers:
                x = F.leaky_relu(layer(x), 0.2)
                feats.append(x)
            return self.out(x), feats

    class STFTDiscriminator(nn.Module):
        """SoundStream's STFT discriminator on real and imaginary parts as 2 channels [B, 2, T, F]."""

        def __init__(self, channels: int, window: int, hop: int):
            super().__init__()
            self.window, self.hop = window, hop
            self.register_buffer("hann", torch.hann_window(window), persistent=False)
            layers = [weight_norm(nn.Conv2d(2, channels, 7, padding=3))]
            c_in = channels
            for mult, stride in ((1, (1, 2)), (2, (2, 2)), (4, (1, 2)), (4, (2, 2)), (8, (1, 2)), (8, (2, 2))):
                c_out = channels * mult
                layers.append(weight_norm(nn.Conv2d(c_in, c_in, 3, padding=1)))
                layers.append(weight_norm(nn.Conv2d(c_in, c_out, (stride[0] + 2, stride[1] + 2), stride=stride,
                                                    padding=1)))
                c_in = c_out
            self.layers = nn.ModuleList(layers)
            self.out = weight_norm(nn.Conv2d(c_in, 1, 1))

        def forward(self, wave):
            spec = torch.stft(wave.squeeze(1), self.window, self.hop, window=self.hann, return_complex=True)
            x = torch.view_as_real(spec).permute(0, 3, 2, 1)  # [B, 2, T, F]
            feats = []
            for layer in self.layers:
                x = F.leaky_relu(layer(x), 0.2)
                feats.append(x)
            return self.out(x).mean(dim=-1), feats  # logits over time [B, 1, T']

    class Discriminators(nn.Module):
        def __init__(self, cfg: DiscConfig):
            super().__init__()
            self.waves = nn.ModuleList(WaveDiscriminator(cfg.wave_channels, cfg.wave_max_channels)
                                       for _ in range(cfg.wave_scales))
            self.stft = STFTDiscriminator(cfg.stft_channels, cfg.stft_window, cfg.stft_hop)

        def forward(self, wave):
            outs = [self.stft(wave)]
            x = wave
            for i, disc in enumerate(self.waves):
                if i:
                    x = F.avg_pool1d(x, 4, stride=2, padding=1)
                outs.append(disc(x))
            return outs

    class MultiScaleMelLoss(nn.Module):
        def __init__(self, cfg: LossConfig, sample_rate: int):
            super().__init__()
            self.mels = nn.ModuleList(MelSpectrogram(w, cfg.n_mels, sample_rate) for w in cfg.mel_windows)
            self.alphas = [math.sqrt(w / 2) for w in cfg.mel_windows]
            self.floor = cfg.log_floor

        def forward(self, ref, est):
            total = 0.0
            for mel, alpha in zip(self.mels, self.alphas):
                a, b = mel(ref), mel(est)
                log_diff = torch.log(a.clamp(min=self.floor)) - torch.log(b.clamp(min=self.floor))
                total = total + (a - b).abs().mean() + alpha * log_diff.pow(2).sum(dim=1).add(1e-8).sqrt().mean()
            return total

    return Discriminators, MultiScaleMelLoss


# --------------------------------------------------------------------------------------------------
# data


def _mix(*values: int) -> int:
    """A 62-bit seed from integers (the same on every machine and Python run)."""
    digest = hashlib.sha1(",".join(str(v) for v in values).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def is_holdout(key: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")
    return h / 2 ** 64 < fraction


class AudioCropStream:
    """Endless deterministic stream of training crops; `state()` / `load_state()` give exact resume.

    Position = (epoch, index in that epoch's shard order, clip index in the shard). Shard order is a
    permutation seeded by (seed, epoch); a clip's crop offset by (seed, epoch, shard, clip)."""

    def __init__(self, root: str | Path, segment: int, fraction: float, seed: int):
        from videopoet.pipeline.clip_shards import list_shards

        self.shards = list_shards(root)
        if not self.shards:
            raise FileNotFoundError(f"--data {root}: no clip shards (*.tar) found")
        self.segment, self.fraction, self.seed = segment, fraction, seed
        self.epoch, self.shard_pos, self.clip_pos = 0, 0, 0

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "shard_pos": self.shard_pos, "clip_pos": self.clip_pos}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.shard_pos, self.clip_pos = int(state["epoch"]), int(state["shard_pos"]), int(state["clip_pos"])

    def _order(self, epoch: int) -> list[int]:
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.shards), generator=g).tolist()

    def __iter__(self) -> Iterator:
        import torch

        from videopoet.pipeline.clip_shards import iter_clip_shard
        from videopoet.tokenizers.soundstream import int16_to_float

        while True:
            order = self._order(self.epoch)
            yielded = False
            while self.shard_pos < len(order):
                shard_index = order[self.shard_pos]
                for i, clip in enumerate(iter_clip_shard(self.shards[shard_index])):
                    if i < self.clip_pos:
                        continue
                    self.clip_pos = i + 1
                    if clip.audio is None or len(clip.audio) == 0 or is_holdout(clip.key, self.fraction):
                        continue
                    wave = int16_to_float(clip.audio)
                    if wave.shape[-1] < self.segment:
                        wave = torch.nn.functional.pad(wave, (0, self.segment - wave.shape[-1]))
                    g = torch.Generator().manual_seed(_mix(self.seed, self.epoch, shard_index, i))
                    start = int(torch.randint(0, wave.shape[-1] - self.segment + 1, (1,), generator=g))
                    yielded = True
                    yield wave[:, start:start + self.segment]
                self.shard_pos += 1
                self.clip_pos = 0
            self.epoch += 1
            self.shard_pos = 0
            if not yielded:
                raise ValueError(f"{self.shards[0].parent}: no training audio (clips without audio or all held out)")

    def batches(self, batch_size: int) -> Iterator[tuple[Any, dict[str, int]]]:
        """Yield (wave [B, 1, S], the stream position after this batch)."""
        import torch

        buf = []
        for crop in self:
            buf.append(crop)
            if len(buf) == batch_size:
                yield torch.stack(buf), self.state()
                buf = []


def load_eval_waves(root: str | Path, cfg: DataConfig) -> tuple[list, bool]:
    """Up to `eval_clips` held-out clips (whole); falls back to the first training clips when the
    data has no held-out clip (a tiny data set), saying so."""
    from videopoet.pipeline.clip_shards import iter_clips
    from videopoet.tokenizers.soundstream import int16_to_float

    held, first = [], []
    for clip in iter_clips(root):
        if clip.audio is None or len(clip.audio) < 2048:
            continue
        wave = int16_to_float(clip.audio)
        if is_holdout(clip.key, cfg.holdout_fraction):
            held.append((clip.key, wave))
            if len(held) >= cfg.eval_clips:
                break
        elif len(first) < cfg.eval_clips:
            first.append((clip.key, wave))
    return (held, True) if held else (first, False)


# --------------------------------------------------------------------------------------------------
# evaluation


def evaluate(model, eval_waves: list) -> dict[str, float]:
    """Held-out mel distance, SI-SNR (through encode -> decode, the public path) and code usage."""
    import torch

    from videopoet.eval.audio_metrics import codebook_usage, mel_distance, si_snr

    mels, snrs, all_codes = [], [], []
    for _, wave in eval_waves:
        x = wave.unsqueeze(0)  # [1, 1, S]
        codes = model.encode(x)
        y = model.decode(codes, length=x.shape[-1]).cpu()
        mels.append(float(mel_distance(x, y)[0]))
        snrs.append(float(si_snr(x, y)[0]))
        all_codes.append(codes.cpu().flatten(2))
    metrics = {"eval/mel_distance": sum(mels) / len(mels), "eval/si_snr_db": sum(snrs) / len(snrs)}
    codes = torch.cat([c.permute(1, 0, 2).reshape(c.shape[1], -1) for c in all_codes], dim=1).unsqueeze(0)
    for level, usage in enumerate(codebook_usage(codes, model.cfg.codebook_size)):
        metrics[f"usage/level{level}_eval_used_fraction"] = usage["used_fraction"]
        metrics[f"usage/level{level}_eval_perplexity"] = usage["perplexity"]
    for level, layer in enumerate(model.rvq.layers):
        alive = (layer._codebook.cluster_size >= model.cfg.dead_code_threshold).float().mean()
        metrics[f"usage/level{level}_alive_fraction"] = float(alive)
    return metrics


def write_wav(path: Path, wave, sample_rate: int = 16_000) -> None:
    import wave as wavmod

    import numpy as np

    pcm = (np.clip(wave.reshape(-1).cpu().numpy(), -1.0, 1.0) * 32767.0).astype("<i2")
    with wavmod.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


# --------------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """One process, one device. Holds model, discriminators, optimisers and the data stream."""

    def __init__(self, cfg: AudioTrainConfig, data: str | Path, device: str | None = None):
        import torch

        from videopoet.tokenizers import soundstream

        Discriminators, MultiScaleMelLoss = build_modules()
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.manual_seed(cfg.data.seed)
        self.model = soundstream.AudioTokenizer(cfg.model).to(self.device)
        self.model.reset_codebooks()  # k-means on the first real batch (SoundStream)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.model.seed + 1)
            self.disc = Discriminators(cfg.disc).to(self.device)
        self.rec_loss = MultiScaleMelLoss(cfg.loss, cfg.model.sample_rate).to(self.device)
        betas = tuple(cfg.optim.betas)
        self.opt_g = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, betas=betas, weight_decay=0.0)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg.optim.disc_lr, betas=betas, weight_decay=0.0)
        self.stream = AudioCropStream(data, cfg.data.segment_samples, cfg.data.holdout_fraction, cfg.data.seed)
        self.step = 0

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        import torch

        state = {
            "model": self.model.state_dict(), "disc": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "step": self.step, "data": self.stream.state(), "rng_cpu": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        self.model.load_state_dict(state["model"])
        self.disc.load_state_dict(state["disc"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.stream.load_state(state["data"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    # -- one step ------------------------------------------------------------------------------------
    def train_step(self, wave) -> dict[str, float]:
        import torch
        from torch.nn import functional as F

        cfg = self.cfg
        wave = wave.to(self.device)
        self.model.train()
        recon, _, commit = self.model(wave)
        target = wave[..., : recon.shape[-1]]
        rec = self.rec_loss(target, recon)
        loss = cfg.loss.rec_weight * rec + commit
        logs = {"loss/rec_mel": rec.item(), "loss/commit": commit.item()}
        if cfg.loss.wave_weight:
            wave_l1 = (target - recon).abs().mean()
            loss = loss + cfg.loss.wave_weight * wave_l1
            logs["loss/wave_l1"] = wave_l1.item()
        gan = self.step >= cfg.loss.gan_start_step
        if gan:
            self.disc.requires_grad_(False)
            fake_outs = self.disc(recon)
            with torch.no_grad():
                real_outs = self.disc(target)
            adv = sum(F.relu(1 - logits).mean() for logits, _ in fake_outs) / len(fake_outs)
            feat_terms = [(fr.detach() - ff).abs().mean() for (_, frs), (_, ffs) in zip(real_outs, fake_outs)
                          for fr, ff in zip(frs, ffs)]
            feat = sum(feat_terms) / len(feat_terms)
            loss = loss + cfg.loss.adv_weight * adv + cfg.loss.feat_weight * feat
            logs.update({"loss/g_adv": adv.item(), "loss/feat": feat.item()})
            self.disc.requires_grad_(True)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        logs["grad_norm/g"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip))
        self.opt_g.step()
        logs["loss/g_total"] = loss.item()
        if gan:
            real_outs = self.disc(target)
            fake_outs = self.disc(recon.detach())
            d_loss = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean()
                         for (r, _), (f, _) in zip(real_outs, fake_outs)) / len(real_outs)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), cfg.optim.grad_clip)
            self.opt_d.step()
            logs["loss/d"] = d_loss.item()
        self.model.mark_modified()
        self.step += 1
        return logs


def _train_state_dirs(out: Path) -> list[Path]:
    root = out / "train_state"
    return sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")) if root.is_dir() else []


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += _config_diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            keys.append(f"{prefix}{k}")
    return keys


def train(cfg: AudioTrainConfig, data: str | Path, out: str | Path, *, stop_after: int | None = None,
          device: str | None = None, run_name: str | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) up to cfg.steps; `stop_after` ends this invocation early at that step (as a
    kill would, after a save). Returns a summary with the final metrics and checkpoint paths."""
    import mlflow
    import torch
    from tqdm import tqdm

    from videopoet.checkpoint import load_checkpoint, save_checkpoint
    from videopoet.config import ConfigError, to_dict
    from videopoet.tracking import start_run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, data, device=device)
    existing = _train_state_dirs(out)
    if existing:
        state, meta = load_checkpoint(existing[-1], kind=TRAIN_STATE_KIND)
        diff = _config_diff(meta["config"], to_dict(cfg))
        if diff:
            raise ConfigError(f"--out {out}: holds a run with a different config ({', '.join(diff[:5])}); "
                              "use another --out or the same config")
        trainer.load_state_dict(state)
        if not quiet:
            print(f"resuming from {existing[-1]} (step {trainer.step})")
    frames = cfg.data.batch_size * (cfg.data.segment_samples // cfg.model.hop)
    if cfg.model.dead_code_threshold > frames / cfg.model.codebook_size:
        print(f"warning: {frames} frames per step is {frames / cfg.model.codebook_size:.2f} per code, below "
              f"model.dead_code_threshold={cfg.model.dead_code_threshold}: codes will be re-drawn every step; "
              "raise data.batch_size or lower the threshold", file=sys.stderr)
    eval_waves, held_out = load_eval_waves(data, cfg.data)
    if not eval_waves:
        raise ValueError(f"--data {data}: no clip with audio")
    losses_path = out / "losses.jsonl"
    if losses_path.exists():  # drop lines past the resumed step (a kill between log and save)
        kept = [ln for ln in losses_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= trainer.step]
        losses_path.write_text("".join(ln + "\n" for ln in kept))
    end = min(cfg.steps, stop_after) if stop_after is not None else cfg.steps

    def save() -> None:
        path = out / "train_state" / f"step_{trainer.step:08d}"
        save_checkpoint(path, trainer.state_dict(), kind=TRAIN_STATE_KIND, config=cfg,
                        extra={"step": trainer.step})
        trainer.model.save(out / "tokenizer", extra={"step": trainer.step, "train_config": to_dict(cfg)})
        for old in _train_state_dirs(out)[:-cfg.keep_checkpoints]:
            import shutil

            shutil.rmtree(old)

    metrics: dict[str, float] = {}
    t0, start_step = time.perf_counter(), trainer.step
    with start_run("train-tokenizer-audio", cfg, run_name=run_name,
                   tags={"resumed_from_step": str(start_step), "eval_set": "held-out" if held_out else "training clips"}) as run:
        if not held_out:
            print("warning: no held-out clip in --data (too few clips); evaluating on training clips", file=sys.stderr)
        bar = tqdm(total=end, initial=trainer.step, desc="train audio tokenizer", disable=quiet, unit="step")
        batches = trainer.stream.batches(cfg.data.batch_size)
        with open(losses_path, "a") as log_file:
            while trainer.step < end:
                wave, _ = next(batches)
                logs = trainer.train_step(wave)
                log_file.write(json.dumps({"step": trainer.step, **logs}) + "\n")
                bar.update(1)
                if trainer.step % cfg.log_every == 0 or trainer.step == end:
                    mlflow.log_metrics(logs, step=trainer.step)
                    bar.set_postfix(rec=f"{logs['loss/rec_mel']:.3f}")
                if trainer.step % cfg.eval_every == 0 or trainer.step == end:
                    metrics = evaluate(trainer.model, eval_waves)
                    mlflow.log_metrics(metrics, step=trainer.step)
                if trainer.step % cfg.save_every == 0 or trainer.step == end:
                    log_file.flush()
                    save()
        bar.close()
        if not metrics:
            metrics = evaluate(trainer.model, eval_waves)
        wav_dir = out / "samples"
        wav_dir.mkdir(exist_ok=True)
        for key, wave in eval_waves[:2]:
            codes = trainer.model.encode(wave.unsqueeze(0))
            write_wav(wav_dir / f"{key}_original.wav", wave)
            write_wav(wav_dir / f"{key}_reconstructed.wav", trainer.model.decode(codes, length=wave.shape[-1]))
        mlflow.log_artifacts(str(wav_dir), "audio")
        content_hash = trainer.model.content_hash
        mlflow.set_tags({"tokenizer.content_hash": content_hash, "tokenizer.path": str((out / "tokenizer").resolve())})
        run_id = run.info.run_id
    steps_done = trainer.step - start_step
    elapsed = time.perf_counter() - t0
    summary = {"run_id": run_id, "step": trainer.step, "steps_this_run": steps_done, "seconds": elapsed,
               "tokenizer": str(out / "tokenizer"), "content_hash": content_hash, **metrics}
    if not quiet:
        print(f"train-tokenizer audio: {steps_done} steps in {elapsed:.1f} s "
              f"({steps_done / max(elapsed, 1e-9):.2f} steps/s, {steps_done * cfg.data.batch_size * cfg.data.segment_samples / cfg.model.sample_rate / max(elapsed, 1e-9):.1f} s of audio/s); "
              f"step {trainer.step}/{cfg.steps}; held-out mel distance {metrics['eval/mel_distance']:.3f}, "
              f"SI-SNR {metrics['eval/si_snr_db']:.2f} dB; tokenizer {out / 'tokenizer'} ({content_hash[:12]})")
    return summary


# --------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="clip shard directory (or one .tar)")
    parser.add_argument("--config", default="tiny", help=f"recipe ({', '.join(RECIPES.names())}) or YAML file")
    parser.add_argument("--out", default="checkpoints/audio_tokenizer",
                        help="output directory; a run with the same --out resumes (default: checkpoints/audio_tokenizer)")
    parser.add_argument("--num-workers", type=int, default=1,
                        help="data-parallel workers (only 1, in-process, is supported so far)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--run-name", default=None, help="MLflow run name")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=200 data.batch_size=4")


def run(args: argparse.Namespace) -> int:
    from videopoet.config import ConfigError

    cfg = RECIPES.get(args.config, list(args.overrides))
    if args.num_workers != 1:
        raise ConfigError(f"--num-workers={args.num_workers}: only 1 (in-process) is supported so far")
    if not Path(args.data).exists():
        print(f"videopoet train-tokenizer audio: --data {args.data}: no such file or directory", file=sys.stderr)
        return 2
    train(cfg, args.data, args.out, device=args.device, run_name=args.run_name)
    return 0

