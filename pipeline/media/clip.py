"""What a decode gives: DecodedClip (one window in one format) and the backends' per-input video result."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass
class DecodedClip:
    """One window of one input in one spatial format, before conditions."""

    window_index: int
    num_frames: int
    format: str
    start_time_s: float  # window start, seconds after the first video frame
    rgb: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray | None  # int16 [T / 8 * 16000]; None when the input has no audio stream
    source_fps: float
    source_frame_indices: list[int]  # presentation-order indices of the picked source frames
    notes: list[str] = field(default_factory=list)
    source_width: int = 0
    source_height: int = 0
    source_duration_s: float | None = None  # decoded video duration

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


@dataclass
class _VideoResult:
    times: list[Fraction]  # presentation time of every decoded frame (t_0 first)
    end: Fraction  # end of the last frame's interval
    picks: dict[Fraction, int]  # output offset -> source frame index
    images: dict[tuple[int, str], np.ndarray]  # (source index, format) -> uint8 [H, W, 3]
    notes: list[str]
    sparse: bool = False  # seek mode: `times` holds only the frames decoded, not all of them
    segments: list[tuple[Fraction, Fraction]] = field(default_factory=list)  # seek mode: decoded time ranges
