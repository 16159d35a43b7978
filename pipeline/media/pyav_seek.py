"""PyAV seek mode: on long videos, seek to each run of kept windows instead of decoding every frame."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from videopoet.pipeline.media.clip import _VideoResult
from videopoet.pipeline.media.config import CLIP_FPS, MediaConfig
from videopoet.pipeline.media.frames import FrameConverter, _displayed_size, _frame_formats_pyav
from videopoet.pipeline.media.probe import _frac_time
from videopoet.pipeline.media.windows import _Picker

SEEK_MIN_DURATION_S = 30
SEEK_MARGINS_S = (Fraction(1, 2), Fraction(2), Fraction(8))


def _use_seek(cfg: MediaConfig, planned, info: dict) -> bool:
    if cfg.seek == "never" or planned is None or info["claimed_duration"] is None:
        return False
    if cfg.seek == "always":
        return True
    claimed = info["claimed_duration"]
    kept = sum(len(ws) * Fraction(t, CLIP_FPS) for t, ws in planned.items())
    return claimed >= SEEK_MIN_DURATION_S and kept <= claimed / 3


def _decode_pyav_sparse(container, vstream, path: str, cfg: MediaConfig, planned, info: dict) -> _VideoResult | None:
    """Seek to each run of kept windows (a keyframe at least 0.5 s before it), decode only through
    its last picked frame, and probe the stream end by seeking near the claimed end. Same pick rule
    and same pixels as the sequential pass; source frame indices are round((t - t_0) * average
    fps), exact for constant frame rate. Returns None when the file cannot be handled this way
    (the caller then decodes everything)."""
    import av

    tb = Fraction(vstream.time_base) if vstream.time_base else None
    rate = Fraction(vstream.average_rate) if vstream.average_rate else None
    if tb is None or rate is None:
        return None
    dt = 1 / rate
    try:
        first = next(container.decode(vstream))
    except (StopIteration, av.error.FFmpegError):
        return None
    t0 = _frac_time(first.pts, tb)
    _displayed_size(info, first)
    if t0 is None:
        return None
    taus = _Picker(cfg, planned).planned_times
    converter = FrameConverter()
    segments: list[list[Fraction]] = []
    for tau in taus:  # runs of needed times less than 2 s apart share one seek
        if segments and tau - segments[-1][-1] < 2:
            segments[-1].append(tau)
        else:
            segments.append([tau])
    picks: dict[Fraction, int] = {}
    images: dict[tuple[int, str], np.ndarray] = {}
    decoded = 0

    def index(t: Fraction) -> int:
        return int(round((t - t0) * rate))

    def settle(frame, a: Fraction, b: Fraction, need: list[Fraction]) -> None:
        hit = [tau for tau in need if a - t0 <= tau < b - t0]
        if not hit:
            return
        j = index(a)
        for fmt, img in _frame_formats_pyav(frame, cfg.formats, converter).items():
            images[(j, fmt)] = img
        for tau in hit:
            picks[tau] = j

    def run(need: list[Fraction], margin: Fraction) -> bool:
        """Decode one segment; False when the seek landed after its first needed time."""
        nonlocal decoded
        target = t0 + need[0] - margin
        container.seek(max(0, math.floor(target / tb)), stream=vstream, backward=True)
        prev = None
        for frame in container.decode(vstream):
            decoded += 1
            t = _frac_time(frame.pts, tb)
            if t is None:
                return False
            if prev is None:
                if t > t0 + need[0]:
                    return False
            elif t > prev[1]:
                settle(prev[0], prev[1], t, need)
                if t > t0 + need[-1]:
                    return True
            prev = (frame, t)
        if prev is not None:  # the stream ended inside the segment
            d = prev[0].duration * tb if prev[0].duration else dt
            settle(prev[0], prev[1], prev[1] + d, need)
        return True

    try:
        for need in segments:
            for margin in SEEK_MARGINS_S + (need[0] + 1,):
                if run(need, margin):
                    break
            else:
                return None
        # where does the stream really end? decode the last few seconds
        claimed = info["claimed_duration"]
        container.seek(max(0, math.floor((t0 + claimed - 3) / tb)), stream=vstream, backward=True)
        last = None
        for frame in container.decode(vstream):
            decoded += 1
            t = _frac_time(frame.pts, tb)
            if t is not None and (last is None or t > last[1]):
                last = (frame, t)
    except av.error.FFmpegError:
        return None
    if last is None or last[1] < t0 + claimed - 3 - 1:
        return None  # nothing decodes near the claimed end: let the full pass find out why
    end = last[1] + (last[0].duration * tb if last[0].duration else dt)
    note = f"seek mode: decoded {decoded} of ~{int(claimed * rate)} frames"
    ranges = [(t0 + need[0], t0 + need[-1] + Fraction(1, CLIP_FPS)) for need in segments]
    return _VideoResult([t0], end, picks, images, [note], sparse=True, segments=ranges)
