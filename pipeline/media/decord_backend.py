"""The decord frame decoder (opt-in: media.decoder=decord); PyAV still probes and decodes the audio."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from videopoet.pipeline.media.audio import _decode_audio_only
from videopoet.pipeline.media.clip import _VideoResult
from videopoet.pipeline.media.config import FORMATS, MediaConfig
from videopoet.pipeline.media.errors import MediaError
from videopoet.pipeline.media.geometry import resize_crop
from videopoet.pipeline.media.probe import _probe_only
from videopoet.pipeline.media.windows import _Picker


def _decode_decord(path: str, cfg: MediaConfig, planned, want_audio: bool):
    """decord for the frames; PyAV for probing and audio (decord's audio reader is less robust)."""
    import decord

    info = _probe_only(path, cfg)
    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=max(0, cfg.decode_threads))
        n = len(vr)
        if n == 0:
            raise MediaError("decode", "NoFramesDecoded", f"{path}: the video stream decoded to no frames")
        stamps = vr.get_frame_timestamp(range(n))  # [n, 2] start, end seconds
    except MediaError:
        raise
    except Exception as err:
        raise MediaError("decode", "DecordError", f"{path}: decord failed ({str(err).splitlines()[0][:200]})") from None
    times = [Fraction(float(s)).limit_denominator(1_000_000) for s in stamps[:, 0]]
    end = Fraction(float(stamps[-1, 1])).limit_denominator(1_000_000)
    if end <= times[-1]:
        end = times[-1] + (times[-1] - times[-2] if n > 1 else Fraction(1, 25))
    picker = _Picker(cfg, planned)
    picks: dict[Fraction, int] = {}
    bounds = times[1:] + [end]
    for j in range(n):
        for tau in picker.times_in(times[j] - times[0], bounds[j] - times[0]):
            picks[tau] = j
    idx = sorted(set(picks.values()))
    images: dict[tuple[int, str], np.ndarray] = {}
    try:
        for start in range(0, len(idx), 32):
            part = idx[start:start + 32]
            batch = vr.get_batch(part).asnumpy()
            for j, img in zip(part, batch):
                for fmt in cfg.formats:
                    images[(j, fmt)] = resize_crop(img, *FORMATS[fmt])
    except Exception as err:
        raise MediaError("decode", "DecordError", f"{path}: decord failed ({str(err).splitlines()[0][:200]})") from None
    del vr
    audio = None
    if want_audio and info["has_audio_stream"]:
        audio = _decode_audio_only(path)
    return _VideoResult(times, end, picks, images, []), audio, info
