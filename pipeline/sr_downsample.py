"""The SR stage's low-resolution input: a clip's bicubic, antialiased 2x downsample, back in uint8.

The super-resolution model is trained on the LR tokens of this video (docs/formats.md "SR token
shards"): the HR clip shrunk to the stage's input size the way a user's low-resolution clip would
look, so it is rounded back to uint8 frames before it is tokenized.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def downsample_2x(rgb: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3] (H and W even) -> uint8 [T, H/2, W/2, 3]: torch bicubic with antialias
    (a low-pass matched to the factor, so fine detail averages out instead of aliasing), rounded."""
    if rgb.dtype != np.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.shape[1] % 2 or rgb.shape[2] % 2:
        raise ValueError(f"downsample_2x: need uint8 [T, H, W, 3] with even H and W, got {rgb.dtype} {rgb.shape}")
    t, h, w, _ = rgb.shape
    frames = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float()  # [T, 3, H, W]
    small = F.interpolate(frames, size=(h // 2, w // 2), mode="bicubic", antialias=True, align_corners=False)
    return small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
