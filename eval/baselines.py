"""Reference points for the tokenizer evaluation (`videopoet eval tokenizer video|audio`).

Video (float clips [N, 3, T, H, W] in [-1, 1]):
- `predict_the_mean`: every value of every clip is the one scalar mean of the whole clip set (an
  oracle: it sees the held-out set). Its MSE is the set's variance, so when every clip has the same
  spread its PSNR is 10 log10(1 / var) with values in [0, 1].
- `per_clip_mean_colour`: each clip replaced by its own mean RGB (3 numbers per clip).

Audio (float waves in [-1, 1], 16 kHz):
- `opus_roundtrip`: encode with PyAV's `libopus` at a bitrate, decode, resample back to the input rate,
  trim to the input length. libopus's lowest bitrate is 6 kbps (a lower request encodes at ~6 kbps), so
  `opus_bitrate` clamps a request to [6 kbps, 510 kbps] and the report says so; the SoundStream
  tokenizer's own rate (4 levels x 10 bits x 50 Hz = 2 kbps) therefore maps to Opus at 6 kbps.
- `mulaw_roundtrip`: resample to 8 kHz, 8-bit mu-law (mu = 255), expand, resample back (64 kbps).
  The companding alone has the closed-form error bound `mulaw_error_bound`.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch

OPUS_MIN_BPS = 6_000
OPUS_MAX_BPS = 510_000
MU = 255


# -- video ------------------------------------------------------------------------------------------
def predict_the_mean(clips: torch.Tensor) -> torch.Tensor:
    """Every value replaced by the clip set's scalar mean (same shape)."""
    return torch.full_like(clips, float(clips.double().mean()))


def per_clip_mean_colour(clips: torch.Tensor) -> torch.Tensor:
    """Each clip [3, T, H, W] replaced by its mean colour (mean over T, H, W per channel)."""
    return clips.mean(dim=(2, 3, 4), keepdim=True).expand_as(clips).clone()


# -- audio: Opus -------------------------------------------------------------------------------------
def opus_bitrate(requested_bps: float) -> int:
    """The bitrate libopus is asked for: the request clamped to libopus's [6, 510] kbps."""
    return int(min(max(round(requested_bps), OPUS_MIN_BPS), OPUS_MAX_BPS))


def opus_roundtrip(wave: np.ndarray, sample_rate: int, bitrate_bps: int) -> tuple[np.ndarray, float]:
    """Mono float wave -> (decoded wave of the same length and rate, payload bitrate in bps).

    The payload bitrate counts the Opus packets only (no Ogg framing)."""
    import av

    x = np.clip(np.asarray(wave, np.float32).reshape(-1), -1, 1)
    pcm = np.round(x * 32767).astype(np.int16)[None, :]
    buf = io.BytesIO()
    payload = 0
    with av.open(buf, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=sample_rate, layout="mono")
        stream.bit_rate = int(bitrate_bps)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for packets in (stream.encode(frame), stream.encode(None)):
            for packet in packets:
                payload += packet.size
                container.mux(packet)
    buf.seek(0)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    out = []
    with av.open(buf) as container:
        for frame in container.decode(audio=0):
            for f in resampler.resample(frame):
                out.append(f.to_ndarray().reshape(-1))
        for f in resampler.resample(None):
            out.append(f.to_ndarray().reshape(-1))
    y = np.concatenate(out) if out else np.zeros(0, np.float32)
    y = np.pad(y, (0, max(0, x.size - y.size)))[: x.size]
    return y.astype(np.float32), payload * 8 / (x.size / sample_rate)


# -- audio: mu-law -----------------------------------------------------------------------------------
def mulaw_encode(x: np.ndarray, mu: int = MU, bits: int = 8) -> np.ndarray:
    """float in [-1, 1] -> integer codes 0 .. 2^bits - 1 (uniform quantisation of the companded value)."""
    x = np.clip(np.asarray(x, np.float64), -1, 1)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu)
    levels = (1 << bits) - 1
    return np.round((y + 1) / 2 * levels).astype(np.int64)


def mulaw_decode(q: np.ndarray, mu: int = MU, bits: int = 8) -> np.ndarray:
    levels = (1 << bits) - 1
    y = np.asarray(q, np.float64) / levels * 2 - 1
    return np.sign(y) * np.expm1(np.abs(y) * math.log1p(mu)) / mu


def mulaw_error_bound(x: np.ndarray, mu: int = MU, bits: int = 8) -> np.ndarray:
    """Largest |x - decode(encode(x))| for each x: (1/mu + |x|) * ((1 + mu)^(1/levels) - 1).

    The companded value moves by at most half a step, 1 / levels; the expansion f(y) = ((1+mu)^y - 1)/mu
    is convex and superadditive, so the error is at most f(|y| + 1/levels) - f(|y|)."""
    levels = (1 << bits) - 1
    return (1.0 / mu + np.abs(np.clip(x, -1, 1))) * ((1.0 + mu) ** (1.0 / levels) - 1.0)


def mulaw_roundtrip(wave: np.ndarray, sample_rate: int, rate: int = 8_000, bits: int = 8) -> np.ndarray:
    """Mono float wave -> 8 kHz 8-bit mu-law -> back to `sample_rate`, same length."""
    from scipy.signal import resample_poly

    x = np.asarray(wave, np.float64).reshape(-1)
    g = math.gcd(sample_rate, rate)
    low = resample_poly(x, rate // g, sample_rate // g) if rate != sample_rate else x
    coded = mulaw_decode(mulaw_encode(low, bits=bits), bits=bits)
    y = resample_poly(coded, sample_rate // g, rate // g) if rate != sample_rate else coded
    y = np.pad(y, (0, max(0, x.size - y.size)))[: x.size]
    return np.clip(y, -1, 1).astype(np.float32)
