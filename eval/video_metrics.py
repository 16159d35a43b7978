"""Reconstruction metrics for videos and images: PSNR and SSIM, batched in torch.

Inputs are float tensors in [-1, 1] shaped [B, 3, T, H, W] (video) or [B, 3, H, W] (image); both
are mapped to [0, 1] first, so PSNR uses peak 1 (the same number as uint8 with peak 255).
SSIM follows Wang et al. 2004 (11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, 'valid'
windows), computed per frame and per channel and averaged: the common definition of video SSIM
in the tokenizer literature (frame-wise mean). Hand-written because no SSIM package is installed
(no scikit-image / torchmetrics / pytorch-msssim in the stack); tests check it against scipy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _frames01(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] or [B, 3, H, W] in [-1, 1] -> [N, 3, H, W] in [0, 1] (frames stacked)."""
    if x.ndim == 5:
        x = x.transpose(1, 2).reshape(-1, x.shape[1], x.shape[3], x.shape[4])
    elif x.ndim != 4:
        raise ValueError(f"expected [B, 3, T, H, W] or [B, 3, H, W], got shape {tuple(x.shape)}")
    return (x.float().clamp(-1, 1) + 1) / 2


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per clip ([B]); mean squared error over all frames, pixels and channels."""
    if x.shape != y.shape:
        raise ValueError(f"psnr: shapes differ {tuple(x.shape)} vs {tuple(y.shape)}")
    mse = ((x.float().clamp(-1, 1) - y.float().clamp(-1, 1)) / 2).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    return (g / g.sum()).float()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM per clip/image ([B]), frame-wise and channel-wise averaged."""
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ {tuple(x.shape)} vs {tuple(y.shape)}")
    batch = x.shape[0]
    a, b = _frames01(x), _frames01(y)
    if min(a.shape[-2:]) < window:
        raise ValueError(f"ssim: frames of {tuple(a.shape[-2:])} are smaller than the {window}px window")
    c = a.shape[1]
    g = _gaussian_window(window, sigma).to(a.device)
    kernel_h = g.view(1, 1, window, 1).expand(c, 1, window, 1)
    kernel_w = g.view(1, 1, 1, window).expand(c, 1, 1, window)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, 'valid' region
        return F.conv2d(F.conv2d(t, kernel_h, groups=c), kernel_w, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.reshape(batch, -1).mean(1)
