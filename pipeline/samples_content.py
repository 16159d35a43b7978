"""What the sample videos show: file specs, painted frames (texture, square, pan, cut, flashes), the click track."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from videopoet.pipeline.samples_counter import draw_counter

SEED = 20231218  # VideoPoet's arXiv date; any fixed value works


@dataclass
class VideoSpec:
    name: str
    width: int
    height: int
    fps: Fraction | None  # None: variable frame rate (frame_times given by vfr_durations)
    frames: int
    motion: str = "square"  # "square" | "pan" | "none"
    speed: int = 2  # px/frame of the square (moving right) or of the pan (content moving left)
    audio: str | None = "aac"  # "aac" | "libopus" | None
    audio_rate: int = 48000
    audio_layout: str = "stereo"
    video_codec: str = "libx264"
    scene_cut: int | None = None
    flashes: tuple[int, ...] = ()
    caption: str = ""
    vfr_durations: tuple[Fraction, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    rotation: int = 0  # display rotation (CCW degrees, a multiple of 90): frames are stored turned
    # the other way, as phones store portrait video; width/height are the displayed size


def _vfr_durations(n: int) -> tuple[Fraction, ...]:
    # uneven gaps: 1/60, 1/30, 1/20, 1/15 s in a fixed shuffled pattern (mean ~ 0.038 s, ~26 fps)
    rng = np.random.default_rng(SEED + 1)
    choices = (Fraction(1, 60), Fraction(1, 30), Fraction(1, 20), Fraction(1, 15))
    return tuple(choices[int(k)] for k in rng.integers(0, 4, size=n))


def _specs() -> list[VideoSpec]:
    f = Fraction
    return [
        VideoSpec("h264_24fps_320x240_square.mp4", 320, 240, f(24), 72, "square", 2,
                  flashes=(6, 30, 55), caption="a checkered square slides right over a soft gradient"),
        VideoSpec("h264_25fps_320x180_pan.mp4", 320, 180, f(25), 75, "pan", 3, audio_rate=44100,
                  audio_layout="mono", flashes=(10, 40, 61),
                  caption="the camera pans right across a colourful blotchy texture"),
        VideoSpec("h264_2997fps_256x144_cut.mp4", 256, 144, f(30000, 1001), 90, "pan", 2, audio=None,
                  scene_cut=45, caption="a slow pan over one texture, then a cut to another"),
        VideoSpec("h264_30fps_180x320_portrait.mp4", 180, 320, f(30), 90, "square", 1,
                  flashes=(15, 50, 80), caption="a square slides right in a tall portrait frame"),
        VideoSpec("h264_60fps_320x180.mp4", 320, 180, f(60), 150, "square", 1,
                  flashes=(20, 75, 131), caption="a square slides right, filmed at 60 frames per second"),
        VideoSpec("h264_vfr_320x240.mp4", 320, 240, None, 80, "square", 2, flashes=(12, 47),
                  vfr_durations=_vfr_durations(80),
                  caption="a square slides right, variable frame rate"),
        VideoSpec("vp9_30fps_320x240.webm", 320, 240, f(30), 75, "square", 2, audio="libopus",
                  video_codec="libvpx-vp9", flashes=(9, 44, 66),
                  caption="a square slides right, VP9 and Opus in WebM"),
        VideoSpec("vp9_25fps_144x256_portrait.webm", 144, 256, f(25), 60, "pan", 2, audio=None,
                  video_codec="libvpx-vp9", caption="a portrait pan across a texture, no sound"),
        VideoSpec("h264_30fps_96x72_tiny.mp4", 96, 72, f(30), 75, "pan", 1, audio=None,
                  caption="a tiny video of a slow pan"),
        VideoSpec("h264_25fps_160x120_12s.mp4", 160, 120, f(25), 300, "pan", 1,
                  flashes=(25, 130, 222, 290), scene_cut=150,
                  caption="a twelve second pan with a scene cut in the middle"),
        VideoSpec("h264_30fps_1920x1080_short.mp4", 1920, 1080, f(30), 15, "square", 8,
                  caption="half a second of full HD, too short for one clip"),
    ]


# ----------------------------------------------------------------------------- content


def _texture(h: int, w: int, seed: int, palette: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.random((max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    tex = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    tex = np.clip(tex, 0, 1)
    lo, hi = ((30, 200), (90, 250))[palette]
    base = np.array(((1.0, 0.6, 0.3), (0.3, 0.7, 1.0))[palette], np.float32)
    return (lo + (hi - lo) * tex * base).astype(np.uint8)


def _gradient(h: int, w: int) -> np.ndarray:
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    img = np.stack([60 + 60 * x + 0 * y, 70 + 50 * y + 0 * x, 120 + 40 * (1 - x) + 0 * y], axis=-1)
    return img.astype(np.uint8)


def _square_geometry(spec: VideoSpec) -> tuple[int, int, int]:
    short = min(spec.width, spec.height)
    size = max(6, int(0.14 * short))
    y0 = int(0.78 * spec.height)
    x0 = int(0.05 * spec.width)
    return size, x0, min(y0, spec.height - size - 1)


class _Painter:
    """Frame i of a spec, deterministic."""

    def __init__(self, spec: VideoSpec, seed: int):
        self.spec = spec
        h, w = spec.height, spec.width
        if spec.motion == "pan":
            span = w + spec.speed * spec.frames + 1
            self.tex = [_texture(h, span, seed, 0), _texture(h, span, seed + 7, 1)]
        else:
            self.grad = _gradient(h, w)
            self.grad2 = 255 - self.grad
        size, x0, y0 = _square_geometry(spec)
        self.size, self.x0, self.y0 = size, x0, y0
        blk = max(2, size // 4)
        yy, xx = np.mgrid[0:size, 0:size]
        checker = ((yy // blk + xx // blk) % 2).astype(bool)
        self.square = np.where(checker[..., None], np.array([230, 40, 40], np.uint8),
                               np.array([250, 220, 60], np.uint8))

    def frame(self, i: int) -> np.ndarray:
        s = self.spec
        w = s.width
        scene = 1 if (s.scene_cut is not None and i >= s.scene_cut) else 0
        if s.motion == "pan":
            off = s.speed * i
            img = self.tex[scene][:, off:off + w].copy()
        else:
            img = (self.grad2 if scene else self.grad).copy()
        if i in s.flashes:
            img[:] = 255
        if s.motion == "square":
            x = self.x0 + s.speed * i
            x = min(x, w - self.size)
            img[self.y0:self.y0 + self.size, x:x + self.size] = self.square
        draw_counter(img, i)
        return img


def _frame_times(spec: VideoSpec) -> list[Fraction]:
    if spec.fps is None:
        t, out = Fraction(0), []
        for d in spec.vfr_durations:
            out.append(t)
            t += d
        return out
    return [Fraction(i) / spec.fps for i in range(spec.frames)]


def _duration(spec: VideoSpec) -> Fraction:
    if spec.fps is None:
        return sum(spec.vfr_durations, Fraction(0))
    return Fraction(spec.frames) / spec.fps


CLICK_HZ = 2000.0
CLICK_HALF_S = 0.001
TONE_HZ = 220.0


def _audio_signal(rate: int, n: int, clicks_s: list[float]) -> np.ndarray:
    t = np.arange(n, dtype=np.float64) / rate
    sig = 0.05 * np.sin(2 * np.pi * TONE_HZ * t)
    half = int(round(CLICK_HALF_S * rate))
    win = np.hanning(2 * half + 1)
    for tc in clicks_s:
        c = int(round(tc * rate))
        a, b = max(0, c - half), min(n, c + half + 1)
        k = np.arange(a, b)
        sig[a:b] += 0.8 * win[k - c + half] * np.sin(2 * np.pi * CLICK_HZ * (k - c) / rate)
    return sig.astype(np.float32)
