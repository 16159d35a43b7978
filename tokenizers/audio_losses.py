"""The SoundStream training losses' modules: waveform and STFT discriminators and the multi-scale mel loss.

Discriminators (SoundStream, arXiv 2107.03312): an STFT discriminator on real and imaginary parts
as 2 channels and MelGAN waveform discriminators at x1, x1/2, x1/4 (average pooling), all with
weight norm; each returns (logits, feature maps) for the hinge and feature-matching losses.
MultiScaleMelLoss: L1 on mel magnitudes plus sqrt(w/2) times the per-frame L2 norm of the log
difference, at every window w of `loss.mel_windows` (hop w/4).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from videopoet.eval.audio_metrics import MelSpectrogram
from videopoet.tokenizers.soundstream_config import DiscConfig, LossConfig


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
    """The STFT discriminator and `wave_scales` waveform discriminators; forward -> [(logits, feats)]."""

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
