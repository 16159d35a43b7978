"""The audio mix: channels mixed to mono with `downmix_weights` by FFmpeg's pan filter, then resampled to 16 kHz."""

from __future__ import annotations

import av
import numpy as np
import pytest

from videopoet.pipeline.media.audio import _MonoResampler, downmix_weights


def _frames(layout: str, rate: int, fmt: str, seconds: float, seed: int) -> list[av.AudioFrame]:
    """1024-sample frames: a different tone plus noise on every channel (so a wrong weight shows)."""
    rng = np.random.default_rng(seed)
    channels = len(av.AudioLayout(layout).channels)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    data = np.stack([0.3 * np.sin(2 * np.pi * (200 + 150 * c) * t) + 0.05 * rng.standard_normal(n)
                     for c in range(channels)]).astype(np.float32)
    frames = []
    for a in range(0, n, 1024):
        chunk = data[:, a:a + 1024]
        if fmt == "s16":  # packed int16, interleaved
            arr = np.round(chunk.T.reshape(1, -1) * 32767).astype(np.int16)
        else:
            arr = np.ascontiguousarray(chunk)
        frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout=layout)
        frame.sample_rate = rate
        frames.append(frame)
    return frames


def _mix(resampler, frames) -> np.ndarray:
    out = [f.to_ndarray()[0] for frame in frames for f in resampler.resample(frame)]
    out += [f.to_ndarray()[0] for f in resampler.resample(None)]
    return np.concatenate(out)


@pytest.mark.parametrize("layout,rate,fmt", [("mono", 44_100, "fltp"), ("stereo", 44_100, "fltp"),
                                             ("5.1", 48_000, "fltp"), ("stereo", 48_000, "s16"),
                                             ("5.1(side)", 32_000, "fltp")])
def test_mix_then_resample_equals_resample_then_mix(layout, rate, fmt):
    """Resampling is linear, so mixing first must give what resampling every channel and mixing
    with the documented weights gives (the version 3 order), up to float rounding; every sample
    comes out (frames are pulled in batches)."""
    frames = _frames(layout, rate, fmt, 1.3, seed=len(layout))
    names = [c.name for c in frames[0].layout.channels]
    weights = downmix_weights(names)
    per_channel = av.AudioResampler(format="fltp", layout=layout, rate=16_000)
    want = np.concatenate([weights @ f.to_ndarray() for frame in frames for f in per_channel.resample(frame)]
                          + [weights @ f.to_ndarray() for f in per_channel.resample(None)])
    got = _mix(_MonoResampler(frames[0]), frames)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5
    assert np.sqrt(np.mean(got ** 2)) > 0.05  # real signal, not silence


def test_weights_are_the_documented_ones():
    """DC on one channel at a time: the mono output is that channel's weight (the pan matrix is
    downmix_weights, not libswresample's default, which would give 0.707 per stereo side)."""
    layout, rate = "5.1", 48_000
    names = [c.name for c in av.AudioLayout(layout).channels]
    for k, w in enumerate(downmix_weights(names)):
        data = np.zeros((len(names), 1024), np.float32)
        data[k] = 0.5
        frames = []
        for _ in range(8):
            frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
            frame.sample_rate = rate
            frames.append(frame)
        got = _mix(_MonoResampler(frames[0]), frames)
        middle = got[len(got) // 4: 3 * len(got) // 4]  # away from the resampler's edges
        assert np.allclose(middle, 0.5 * w, atol=1e-6), (names[k], middle[:3], w)


def test_a_frame_that_does_not_match_raises():
    stereo = _frames("stereo", 44_100, "fltp", 0.1, 0)
    resampler = _MonoResampler(stereo[0])
    resampler.resample(stereo[0])
    with pytest.raises(ValueError):
        resampler.resample(_frames("stereo", 48_000, "fltp", 0.1, 0)[0])
