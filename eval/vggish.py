"""VGGish (torchvggish's state-dict layout) with VGGish's log-mel front end, and FAD over its 128-d embeddings.

Front end (AudioSet `vggish_params` / `mel_features`, eval.md §4), in numpy because torchaudio is not installed
here (its only wheel on this machine's index, 2.11, does not match torch 2.14) and the reference is numpy itself:
16 kHz mono float audio; STFT magnitude with a periodic Hann window of 400 samples (25 ms), hop 160 (10 ms), FFT
512, no padding; 64 mel bands (HTK mel 1127 ln(1 + f/700)) from 125 to 7500 Hz, triangular, DC bin zeroed;
log(mel + 0.01); examples of 96 frames x 64 bands (0.96 s).
Chunking (`chunking=`): "fad" (default) is Google's FAD reference (frechet_audio_distance/audioset_model.py): the
clip is cut into whole 1 s pieces (16000 samples, or every `step` samples), each giving one 96 x 64 example; a
trailing piece under 1 s is dropped. "vggish" is torchvggish / VGGish's `waveform_to_examples`: one log-mel of the
whole clip framed every 0.96 s. Either way a 10 s clip gives 10 embeddings. Loudness (`normalize=True`, the FAD
reference default): audio /= max(0.1, max(audio)), at most +20 dB.
Network (torchvggish `VGG`): `features.*` = conv3x3 64, pool, 128, pool, 256, 256, pool, 512, 512, pool (ReLU after
each conv; state-dict indices 0, 3, 6, 8, 11, 13), the [512, 6, 4] map flattened in TF's (H, W, C) order, then
`embeddings.*` = fc 4096, ReLU, fc 4096, ReLU, fc 128 (indices 0, 2, 4). The embedding is the 128-d fc output
before the PCA / 8-bit quantisation postprocessor. `post_relu=False` (default) takes it before the final ReLU, as
current TF VGGish (whose fc2 has no activation) and `frechet-audio-distance` (use_activation=False) do;
`post_relu=True` applies torchvggish's last ReLU (its `embeddings.5`), as older vggish_slim did.
FAD: all per-second embeddings of all clips pooled into one `FeatureStats` per set; `fad` is their Fréchet distance
(unbiased covariance, as `np.cov` in the FAD ports).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from videopoet.eval.frechet import FeatureStats, frechet_distance
from videopoet.eval.weights_errors import BadWeights, load_state_dict_file, require_path, sha256_files

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT = 512  # next power of two above the window
MEL_BANDS = 64
MEL_LOW, MEL_HIGH = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s of 10 ms frames
CONV_INDICES = (0, 3, 6, 8, 11, 13)
FC_INDICES = (0, 2, 4)
HINT = "put torchvggish's state dict there (vggish-10086976.pth: features.0.weight ... embeddings.4.bias)"


def hertz_to_mel(hz):
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


def mel_matrix(num_bins: int = FFT // 2 + 1) -> np.ndarray:
    """[num_bins, 64] triangular HTK-mel weights from 125 to 7500 Hz, the DC bin zeroed (as VGGish)."""
    bins_mel = hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, num_bins))
    edges = np.linspace(hertz_to_mel(MEL_LOW), hertz_to_mel(MEL_HIGH), MEL_BANDS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0] = 0.0
    return weights


def _frames(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Non-padded frames of the leading axis: [1 + (len - length) // hop, length, ...] (none if too short)."""
    count = 0 if x.shape[0] < length else 1 + (x.shape[0] - length) // hop
    index = np.arange(length)[None] + hop * np.arange(count)[:, None]
    return x[index]


def log_mel(audio: np.ndarray) -> np.ndarray:
    """16 kHz mono audio [S] -> log-mel spectrogram [frames, 64] (VGGish's parameters)."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic Hann
    spectrum = np.abs(np.fft.rfft(_frames(audio, WINDOW, HOP) * window, FFT))
    return np.log(spectrum @ mel_matrix(spectrum.shape[1]) + LOG_OFFSET)


def vggish_examples(audio, chunking: str = "fad", step: int | None = None, normalize: bool = True) -> np.ndarray:
    """16 kHz mono float audio [S] -> log-mel examples [n, 96, 64] (see the module docstring for `chunking`)."""
    x = np.asarray(audio, np.float64)
    if x.ndim != 1:
        raise ValueError(f"VGGish: expected mono audio [S] at {SAMPLE_RATE} Hz, got shape {x.shape}")
    if normalize and x.size:
        x = x / max(0.1, float(x.max()))
    if chunking == "fad":
        pieces = _frames(x, SAMPLE_RATE, step or SAMPLE_RATE)
        examples = [_frames(log_mel(piece), EXAMPLE_FRAMES, EXAMPLE_FRAMES) for piece in pieces]
        return np.concatenate(examples) if examples else np.zeros((0, EXAMPLE_FRAMES, MEL_BANDS))
    if chunking == "vggish":
        return _frames(log_mel(x), EXAMPLE_FRAMES, EXAMPLE_FRAMES)
    raise ValueError(f"VGGish: chunking must be 'fad' or 'vggish', got {chunking!r}")


class VGGish(nn.Module):
    """torchvggish's VGG: `features` (conv stack) and `embeddings` (fc 4096, 4096, 128); input [B, 1, 96, 64]."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 256, 512, 512), fc_width: int = 4096,
                 embed_dim: int = 128, post_relu: bool = False):
        super().__init__()
        layers, c_in = [], 1
        for i, width in enumerate(widths):  # pools after convs 0, 1, 3, 5: indices 0 3 6 8 11 13 as torchvggish
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
            if i in (0, 1, 3, 5):
                layers.append(nn.MaxPool2d(2, 2))
            c_in = width
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(nn.Linear(c_in * 6 * 4, fc_width), nn.ReLU(), nn.Linear(fc_width, fc_width),
                                        nn.ReLU(), nn.Linear(fc_width, embed_dim))
        self.post_relu = post_relu
        self.weights_sha256 = ""

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        h = self.features(examples)  # [B, C, 6, 4]
        h = h.permute(0, 2, 3, 1).flatten(1)  # TF's NHWC flattening, as torchvggish's two transposes
        h = self.embeddings(h)
        return F.relu(h) if self.post_relu else h


def load_vggish(path, device: str | torch.device = "cpu", post_relu: bool = False) -> VGGish:
    """VGGish from a local torchvggish state dict (.pth/.pt via weights_only, or .safetensors); never downloads."""
    path = require_path(path, "VGGish weights", HINT)
    state = load_state_dict_file(path, "VGGish weights")
    names = [f"features.{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")]
    names += [f"embeddings.{i}.{p}" for i in FC_INDICES for p in ("weight", "bias")]
    missing = [n for n in names if n not in state]
    if missing:
        raise BadWeights(f"VGGish weights: {path} lacks {missing[0]} ({len(missing)} of the 18 tensors missing)")
    widths = tuple(int(state[f"features.{i}.weight"].shape[0]) for i in CONV_INDICES)
    model = VGGish(widths, int(state["embeddings.0.weight"].shape[0]), int(state["embeddings.4.weight"].shape[0]),
                   post_relu)
    try:  # torchvggish files may also carry pca_eigen_vectors / pca_means: the embedding is taken before PCA
        model.load_state_dict({n: state[n].float() for n in names})
    except RuntimeError as err:
        raise BadWeights(f"VGGish weights: {path}: {str(err).splitlines()[-1].strip()}") from None
    model.weights_sha256 = sha256_files([path])
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def vggish_embeddings(audio_16k, model: VGGish, batch_size: int = 64, **examples_kwargs) -> np.ndarray:
    """16 kHz mono audio [S] -> VGGish embeddings [n, 128] float64, one per ~1 s (see `vggish_examples`)."""
    examples = vggish_examples(audio_16k, **examples_kwargs)
    device = next(model.parameters()).device
    out = [np.zeros((0, model.embeddings[-1].out_features))]
    for i in range(0, len(examples), batch_size):
        x = torch.from_numpy(examples[i:i + batch_size]).float()[:, None].to(device)
        out.append(model(x).double().cpu().numpy())
    return np.concatenate(out)


def vggish_stats(clips, model: VGGish, stats: FeatureStats | None = None, **kwargs) -> FeatureStats:
    """Every per-second embedding of every 16 kHz clip pooled into one FeatureStats (other workers': .merge)."""
    stats = FeatureStats() if stats is None else stats
    for audio in clips:
        stats.update(vggish_embeddings(audio, model, **kwargs))
    return stats


def fad(stats_a: FeatureStats, stats_b: FeatureStats) -> float:
    """FAD: Fréchet distance of two sets' pooled per-second VGGish embeddings (unbiased covariances)."""
    return frechet_distance(stats_a, stats_b, unbiased=True)
