"""The media config (MediaConfig) and the constants every decoder shares: 8 fps, 16 kHz, the output formats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CLIP_FPS = 8
AUDIO_RATE = 16000
# name -> (width, height). The LM formats are what the LM models; the "_2x"/"_4x" ones are the
# super-resolution cascade's high-resolution targets (same windows and frame pick, only for SR tokenize).
FORMATS = {"square": (128, 128), "portrait": (128, 224),
           "square_2x": (256, 256), "portrait_2x": (256, 448), "portrait_4x": (512, 896)}
LM_FORMATS = ("square", "portrait")
# HR format -> the format its SR stage starts from (half its width and height): the stage's input
SR_INPUT_FORMATS = {"square_2x": "square", "portrait_2x": "portrait", "portrait_4x": "portrait_2x"}


def sr_stage(hr_format: str) -> int:
    """The cascade stage that produces `hr_format`: 1 from an LM format, 2 from a stage-1 output."""
    return 1 if SR_INPUT_FORMATS[hr_format] in LM_FORMATS else 1 + sr_stage(SR_INPUT_FORMATS[hr_format])


# The one list of still-image extensions: sources.py marks these inputs as images, images.py decodes
# them (one 1-frame clip). GIF is not on it: a GIF is an animation and decodes as video.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class MediaConfig:
    """How inputs become clips. Nested inside the ingest config as `media`."""

    fps: int = 8
    clip_frames: tuple[int, ...] = (17,)  # 17 (2.125 s) and/or 41 (5.125 s)
    clips_per_video: int = 4  # max windows per video per length (0 = as many as fit)
    clip_stride_s: float | None = None  # None: non-overlapping windows; else stride in seconds
    formats: tuple[str, ...] = ("square",)  # "square" 128x128, "portrait" 128w x 224h; SR: FORMATS
    decoder: Literal["pyav", "decord"] = "pyav"  # docs/architecture.md "Media decoding": why PyAV
    audio: bool = True
    flow: Literal["dis", "raft", "none"] = "dis"
    depth: Literal["midas", "none"] = "none"
    raft_checkpoint: str | None = None
    raft_model: Literal["raft_small", "raft_large"] = "raft_small"
    midas_checkpoint: str | None = None
    midas_model: Literal["midas_v21_small", "dpt_large_384"] = "midas_v21_small"
    decode_timeout_s: float = 120.0  # per input; <= 0 decodes in the calling process, no limit
    max_pixels: int = 7680 * 4320  # 8K UHD; larger frames are rejected (stage "probe")
    min_side: int = 16  # smaller frames are rejected (stage "probe")
    strict_duration: bool = True  # a header claiming much more than decodes fails ("decode")
    duration_tolerance_s: float = 1.0  # ... "much more" = more than max(this, 10% of the claim)
    max_flow_px: float = 16.0  # flow (px at clip size) clipped to +-this, linear to 0..255, 128 = 0
    raft_updates: int = 12  # RAFT refinement iterations (torchvision's default)
    condition_batch: int = 16  # frame pairs / frames per RAFT or MiDaS forward
    decode_threads: int = 0  # PyAV codec threads (0 = FFmpeg's choice)
    # PyAV, H.264/HEVC: do not decode non-reference frames that no window picks (the decoder's
    # skip_frame, set per packet); same clips, bit for bit, as decoding every frame
    skip_unneeded_frames: bool = True
    seek: Literal["auto", "always", "never"] = "auto"  # PyAV: seek to each window instead of decoding
    # everything; "auto" = when the video is >= 30 s and the kept windows cover <= 1/3 of it

    def validate(self) -> None:
        if self.fps != CLIP_FPS:
            raise ValueError(f"media.fps={self.fps}: only {CLIP_FPS} fps is supported (the paper's clip rate)")
        if not self.clip_frames or any(t < 1 for t in self.clip_frames):
            raise ValueError(f"media.clip_frames={self.clip_frames!r}: need at least one length >= 1")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ValueError(f"media.formats={self.formats!r}: allowed {sorted(FORMATS)}")
        if self.clips_per_video < 0:
            raise ValueError(f"media.clips_per_video={self.clips_per_video}: must be >= 0 (0 = all)")
        if self.clip_stride_s is not None and self.clip_stride_s <= 0:
            raise ValueError(f"media.clip_stride_s={self.clip_stride_s}: must be > 0 or null")
