"""The decord frame decoder (opt-in: media.decoder=decord); PyAV still probes and decodes the audio."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from videopoet.pipeline.media.audio import _decode_audio_only
from videopoet.pipeline.media.clip import _VideoResult
from videopoet.pipeline.media.config import FORMATS, MediaConfig
from videopoet.pipeline.media.errors import MediaError
from videopoet.pipeline.media.geometry import resize_crop
from videopoet.pipeline.media.probe import _packet_index, _probe_only
from videopoet.pipeline.media.windows import _Picker


def _timeline(path: str, stamps: np.ndarray, info: dict) -> tuple[list[Fraction], Fraction]:
    """Frame k's presentation time and the end of the last frame. decord's own timestamps are
    garbage for MPEG-4 Part 2 B-frames in AVI (out of order, one end 1.9e14 h away): when the
    video packets' sorted times (probe._packet_index) are as many as decord's frames, frame k is
    shown at the k-th of them (decord, like any decoder, gives frames in presentation order); else
    decord's stamps when they increase and end within twice the claimed duration; else k / fps."""
    n = len(stamps)
    dt = Fraction(1 / info["average_fps"]).limit_denominator(1_000_000) if info["average_fps"] else Fraction(1, 25)
    packet_times, _ = _packet_index(path)
    times = [Fraction(float(s)).limit_denominator(1_000_000) for s in stamps[:, 0]]
    end = Fraction(float(stamps[-1, 1])).limit_denominator(1_000_000)
    claimed = info["claimed_duration"]
    sane = (all(a < b for a, b in zip(times, times[1:])) and np.isfinite(stamps).all()
            and (claimed is None or end - times[0] <= 2 * claimed + 1))
    if packet_times is not None and len(packet_times) == n:
        times = packet_times
        end = end if sane and end > times[-1] else times[-1] + dt
    elif not sane:
        times = [k * dt for k in range(n)]
        end = n * dt
    if end <= times[-1]:
        end = times[-1] + (times[-1] - times[-2] if n > 1 else dt)
    return times, end


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
    times, end = _timeline(path, stamps, info)
    picker = _Picker(cfg, planned)
    picks: dict[Fraction, int] = {}
    bounds = times[1:] + [end]
    for j in range(n):
        for tau in picker.times_in(times[j] - times[0], bounds[j] - times[0]):
            picks[tau] = j
    idx = sorted(set(picks.values()))
    images: dict[tuple[int, str], np.ndarray] = {}
    # decord seeks by timestamp and then counts frames from the keyframe it meant to reach; in ASF
    # (WMV) the seek lands on an earlier keyframe, so a frame reached by a seek is a GOP early
    # (a WMV2 file: frame 25 read as 13). ASF is read from frame 0 without seeking.
    wanted = set(idx)
    order = list(range(idx[-1] + 1)) if (idx and info.get("format") == "asf") else idx
    try:
        for start in range(0, len(order), 32):
            part = order[start:start + 32]
            batch = vr.get_batch(part).asnumpy()
            for j, img in zip(part, batch):
                if j not in wanted:
                    continue
                for fmt in cfg.formats:
                    images[(j, fmt)] = resize_crop(img, *FORMATS[fmt])
    except Exception as err:
        raise MediaError("decode", "DecordError", f"{path}: decord failed ({str(err).splitlines()[0][:200]})") from None
    del vr
    audio = None
    if want_audio and info["has_audio_stream"]:
        audio = _decode_audio_only(path)
    return _VideoResult(times, end, picks, images, []), audio, info
