"""Encoding the sample files bit-exactly with PyAV: videos with their truth, audio-only files, still images.

Determinism: single-threaded encoders, `+bitexact` container and codec flags (no encoder version
strings, no random Matroska UIDs), no timestamps. The audio frames go through the shared writer
loop (videopoet.pipeline.media.writer.encode_audio).
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from videopoet.pipeline.media.writer import encode_audio
from videopoet.pipeline.samples_content import (
    SEED,
    VideoSpec,
    _audio_signal,
    _duration,
    _frame_times,
    _Painter,
    _square_geometry,
)
from videopoet.pipeline.samples_counter import COUNTER_DATA_BITS, COUNTER_GRID, counter_cell_px


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
        encode_audio(out, as_, _audio_signal(spec.audio_rate, n, clicks), spec.audio_rate, spec.audio_layout)
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
    encode_audio(out, st, _audio_signal(rate, 3 * rate, [0.5, 1.5, 2.5]), rate, "stereo")
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
