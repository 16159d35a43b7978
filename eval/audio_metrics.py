"""Audio reconstruction metrics and the mel spectrograms that the SoundStream losses share.

- `mel_distance(ref, est)`: mean over three resolutions (windows 512, 1024, 2048 at hop window/4,
  64 mel bins at 16 kHz) of the mean absolute difference of log10 mel magnitudes (floored at 1e-5).
  0 for a perfect reconstruction; lower is better. Same idea as DAC's mel-distance metric.
- `si_snr(ref, est)`: scale-invariant SNR in dB per example (zero-mean signals, est projected on
  ref). Higher is better. An all-zero estimate gets 0 dB by convention (its projection and error
  are both zero; we add the same epsilon to both energies), the same as plain SNR of silence.
- `codebook_usage(codes, codebook_size)`: per level, the fraction of codes used and the perplexity.

Written with torch only (torchaudio is not in the stack); the mel filterbank is the HTK-scale
triangular one (torchaudio.functional.melscale_fbanks with mel_scale="htk", norm=None).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

EPS = 1e-8


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """[n_fft // 2 + 1, n_mels] triangular filters on the HTK mel scale (some stay empty when the
    FFT is coarser than the mel grid, e.g. a 64-sample window; they then contribute zeros)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))),
                          n_mels + 2, dtype=torch.float64)
    pts = mel_to_hz(mels)
    diff = pts[1:] - pts[:-1]
    slopes = pts.unsqueeze(0) - freqs.unsqueeze(1)  # [bins, n_mels + 2]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0).to(torch.float32)


class MelSpectrogram(nn.Module):
    """wave [B, 1, S] or [B, S] -> mel magnitude [B, n_mels, T] (Hann window, centred frames)."""

    def __init__(self, window: int, n_mels: int = 64, sample_rate: int = 16_000, hop: int | None = None):
        super().__init__()
        self.window = window
        self.hop = hop or window // 4
        self.register_buffer("hann", torch.hann_window(window), persistent=False)
        self.register_buffer("fbank", mel_filterbank(window, n_mels, sample_rate), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.ndim == 3:
            wave = wave.squeeze(1)
        spec = torch.stft(wave.float(), self.window, self.hop, window=self.hann, center=True,
                          pad_mode="reflect" if wave.shape[-1] > self.window // 2 else "constant",
                          return_complex=True).abs()
        return torch.einsum("bft,fm->bmt", spec, self.fbank)


class MelDistance(nn.Module):
    def __init__(self, windows: Sequence[int] = (512, 1024, 2048), n_mels: int = 64, sample_rate: int = 16_000):
        super().__init__()
        self.mels = nn.ModuleList(MelSpectrogram(w, n_mels, sample_rate) for w in windows)

    def forward(self, ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
        """Per-example distance [B]."""
        total = 0.0
        for mel in self.mels:
            a = torch.log10(mel(ref).clamp(min=1e-5))
            b = torch.log10(mel(est).clamp(min=1e-5))
            total = total + (a - b).abs().mean(dim=(1, 2))
        return total / len(self.mels)


_MEL_DISTANCE: dict[tuple, MelDistance] = {}


def _match(ref: torch.Tensor, est: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ref = ref.reshape(ref.shape[0], -1).float()
    est = est.reshape(est.shape[0], -1).float().to(ref.device)
    if ref.shape != est.shape:
        raise ValueError(f"ref {tuple(ref.shape)} and est {tuple(est.shape)}: shapes differ (pad or trim first)")
    return ref, est


@torch.no_grad()
def mel_distance(ref: torch.Tensor, est: torch.Tensor, sample_rate: int = 16_000) -> torch.Tensor:
    """Per-example log-mel L1 distance [B] between waves [B, 1, S] (or [B, S])."""
    ref, est = _match(ref, est)
    key = (sample_rate, str(ref.device))
    if key not in _MEL_DISTANCE:
        _MEL_DISTANCE[key] = MelDistance(sample_rate=sample_rate).to(ref.device)
    return _MEL_DISTANCE[key](ref, est)


@torch.no_grad()
def si_snr(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    """Per-example scale-invariant SNR in dB [B]."""
    ref, est = _match(ref, est)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    est = est - est.mean(dim=-1, keepdim=True)
    scale = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + EPS)
    target = scale * ref
    noise = est - target
    return 10.0 * torch.log10((target.pow(2).sum(-1) + EPS) / (noise.pow(2).sum(-1) + EPS))


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> list[dict[str, float]]:
    """codes [B, Q, F] -> per level {"used_fraction", "perplexity"} (perplexity = exp(entropy) of
    the code histogram: codebook_size when uniform, 1 when one code is used)."""
    out = []
    for level in range(codes.shape[1]):
        counts = torch.bincount(codes[:, level].reshape(-1).cpu(), minlength=codebook_size).double()
        p = counts / counts.sum().clamp(min=1)
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        out.append({"used_fraction": float((counts > 0).sum()) / codebook_size,
                    "perplexity": float(math.exp(float(entropy)))})
    return out
