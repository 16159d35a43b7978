"""The 8 fps window pick: which windows a video of a given length holds, which are kept, which times they need.

Source frame j (in presentation order) is shown during its presentation interval
[t_j, t_{j+1}) where t_j = pts_j * time_base (exact rationals, no float rounding); the last frame's
interval ends at t_last + its duration (the packet duration, else the median frame gap). Let t_0 be
the first frame's time. Window w of T frames starts at offset o_w = w * stride (stride = T/8 s by
default: non-overlapping windows; else `clip_stride_s`) and its output frame i is the source frame
whose interval contains t_0 + o_w + i/8. At 24 fps that is exactly source frame 3i; at 29.97 fps
floor(i * 30000 / (8 * 1001)). A window exists when its last output time lies inside the decoded
stream. When more windows fit than `clips_per_video`, N evenly spaced ones are kept (window
floor((k + 0.5) * M / N) for k < N of M): clips spread over the video rather than its first seconds.
"""

from __future__ import annotations

import bisect
import math
from fractions import Fraction

from videopoet.pipeline.media.config import CLIP_FPS, MediaConfig


def _stride(cfg: MediaConfig, frames: int) -> Fraction:
    if cfg.clip_stride_s is None:
        return Fraction(frames, CLIP_FPS)
    return Fraction(cfg.clip_stride_s).limit_denominator(1_000_000)


def count_windows(span: Fraction, frames: int, stride: Fraction) -> int:
    """Windows w >= 0 whose last output time o_w + (T-1)/8 is < span (the decoded duration)."""
    last = Fraction(frames - 1, CLIP_FPS)
    if span <= last:
        return 0
    return math.ceil((span - last) / stride)


def select_windows(m: int, n: int) -> list[int]:
    """N of M window indices, evenly spread (all when n == 0 or m <= n)."""
    if n == 0 or m <= n:
        return list(range(m))
    return [math.floor((k + Fraction(1, 2)) * m / n) for k in range(n)]


class _Picker:
    """Maps decoded frame intervals to the output times the planned windows need."""

    def __init__(self, cfg: MediaConfig, planned: dict[int, list[int]] | None):
        self.cfg = cfg
        self.planned = planned  # frames -> selected window indices; None = every window
        self.strides = {t: _stride(cfg, t) for t in cfg.clip_frames}
        # With the windows planned, every needed time is known up front: a sorted list read with a
        # cursor (callers go through the frames in time order) instead of window arithmetic in
        # Fractions for every decoded frame (~10% of the decode worker's CPU on 720p).
        self.planned_times: list[Fraction] | None = None
        if planned is not None:
            self.planned_times = sorted({w * self.strides[frames] + Fraction(i, CLIP_FPS)
                                         for frames, ws in planned.items() for w in ws for i in range(frames)})
            self._cursor = 0

    def times_in(self, a: Fraction, b: Fraction) -> list[Fraction]:
        """Output offsets (from t_0) of all needed frames that fall in [a, b)."""
        if self.planned_times is not None:
            taus, k = self.planned_times, self._cursor
            if k > 0 and taus[k - 1] >= a:  # called out of order: find the place again
                k = bisect.bisect_left(taus, a)
            while k < len(taus) and taus[k] < a:
                k += 1
            start = k
            while k < len(taus) and taus[k] < b:
                k += 1
            self._cursor = k
            return taus[start:k]
        out: set[Fraction] = set()
        for frames, stride in self.strides.items():
            lo = max(0, math.ceil((a - Fraction(frames - 1, CLIP_FPS)) / stride))
            hi = math.floor(b / stride)
            windows = range(lo, hi + 1)
            if self.planned is not None:
                sel = self.planned[frames]
                windows = [w for w in sel if lo <= w <= hi]
            for w in windows:
                o = w * stride
                i_lo = max(0, math.ceil((a - o) * CLIP_FPS))
                i_hi = min(frames - 1, math.ceil((b - o) * CLIP_FPS) - 1)
                for i in range(i_lo, i_hi + 1):
                    tau = o + Fraction(i, CLIP_FPS)
                    if a <= tau < b:
                        out.add(tau)
        return sorted(out)


def _plan(cfg: MediaConfig, claimed: Fraction | None) -> dict[int, list[int]] | None:
    if claimed is None:
        return None
    return {t: select_windows(count_windows(claimed, t, _stride(cfg, t)), cfg.clips_per_video)
            for t in cfg.clip_frames}
