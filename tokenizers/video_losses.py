"""The video tokenizer's training-loss modules: the 3D StyleGAN-style discriminator and the perceptual loss.

Discriminator3D (MAGVIT): residual blocks of 3x3x3 convs with blur-pool downsampling (Zhang 2019)
in space and time, a linear head on the mean feature; the GAN terms, LeCAM and R1 are computed by
the trainer. PerceptualLoss: L2 between the logits of a frozen torchvision classifier on real and
reconstructed frames (MAGVIT's "perceptual loss on logits"), weights from a local state-dict file
only (no network access).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from einops import rearrange
from torch import nn

from videopoet.tokenizers.video_config import LossConfig


def blur_down(x: torch.Tensor, temporal: bool) -> torch.Tensor:
    """Blur pool (Zhang 2019): [1,2,1] binomial blur in space, then 2x average downsampling."""
    c = x.shape[1]
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    k2 = (k[:, None] * k[None, :]) / 16
    x = F.conv3d(F.pad(x, (1, 1, 1, 1, 0, 0), mode="replicate"),
                 k2.view(1, 1, 1, 3, 3).expand(c, 1, 1, 3, 3), groups=c)
    kt = 2 if temporal and x.shape[2] >= 2 else 1
    return F.avg_pool3d(x, (kt, 2, 2))


class DiscBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.skip = nn.Conv3d(cin, cout, 1, bias=False)

    def forward(self, x):
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.leaky_relu(self.conv2(blur_down(h, True)), 0.2)
        return (self.skip(blur_down(x, True)) + h) / math.sqrt(2)


class Discriminator3D(nn.Module):
    """StyleGAN-style 3D discriminator (MAGVIT): residual blocks with blur-pool downsampling."""

    def __init__(self, cfg: LossConfig):
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
        h = self.blocks(F.leaky_relu(self.conv_in(x), 0.2))
        h = F.leaky_relu(self.conv_out(h), 0.2)
        return self.head(h.float().mean(dim=(2, 3, 4))).squeeze(-1)


class PerceptualLoss(nn.Module):
    """L2 between the logits of a frozen torchvision classifier on real and reconstructed frames."""

    def __init__(self, arch: str, weights_path: str, device: torch.device | str = "cpu"):
        super().__init__()
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
            raise ValueError(f"loss.perceptual_weights={weights_path}: not a torchvision {arch} state dict "
                             f"({str(err)[:200]})") from None
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.to(device)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.net.eval()  # frozen: batch norm statistics never update
        return self

    def logits(self, video: torch.Tensor) -> torch.Tensor:
        frames = rearrange(video, "b c t h w -> (b t) c h w")
        return self.net(((frames + 1) / 2 - self.mean) / self.std)

    def forward(self, recon: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.logits(real)
        return (self.logits(recon) - target).float().square().mean()
