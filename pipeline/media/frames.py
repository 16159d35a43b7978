"""A decoded PyAV frame -> the output formats: one libswscale pass to the cover size, display rotation, crop."""

from __future__ import annotations

import numpy as np

from videopoet.pipeline.media.config import FORMATS
from videopoet.pipeline.media.geometry import resize_crop


def _displayed_size(info: dict, frame) -> None:
    """Report the size as displayed: a 90/270 degree display rotation swaps width and height."""
    if int(round(getattr(frame, "rotation", 0) or 0)) % 180 == 90 and not info.get("rotated"):
        info["width"], info["height"], info["rotated"] = info["height"], info["width"], True


def _rotate_displayed(img: np.ndarray, rotation: int) -> np.ndarray:
    # display-matrix rotation (phones store portrait video as rotated landscape): PyAV gives the
    # counterclockwise angle the player applies; np.rot90 turns counterclockwise too
    if rotation in (90, 180, 270):
        img = np.ascontiguousarray(np.rot90(img, k=rotation // 90))
    return img


def _frame_formats_pyav(frame, formats, reformatter) -> dict[str, np.ndarray]:
    """The frame in each output format. Shrinking (the usual case) is one libswscale pass from YUV
    straight to RGB at the cover size (area filter), then a centre crop: converting the full frame
    to RGB and resizing it afterwards cost 4-5x more CPU (bench/ingest.py; 720p source). Enlarging
    a frame smaller than the format goes through resize_crop (bicubic). `reformatter` (one
    av.video.reformatter.VideoReformatter per input) keeps the libswscale context between frames;
    `frame.reformat` builds a new one per call (7-13% of the conversion's CPU)."""
    rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
    src_w, src_h = frame.width, frame.height
    disp_w, disp_h = (src_h, src_w) if rotation in (90, 270) else (src_w, src_h)
    out: dict[str, np.ndarray] = {}
    full = None
    for fmt in formats:
        out_w, out_h = FORMATS[fmt]
        if disp_w < out_w or disp_h < out_h:
            if full is None:
                full = _rotate_displayed(frame.to_ndarray(format="rgb24"), rotation)
            out[fmt] = resize_crop(full, out_w, out_h)
            continue
        scale = max(out_w / disp_w, out_h / disp_h)
        cover_w, cover_h = max(out_w, round(disp_w * scale)), max(out_h, round(disp_h * scale))
        sw, sh = (cover_h, cover_w) if rotation in (90, 270) else (cover_w, cover_h)
        img = reformatter.reformat(frame, width=sw, height=sh, format="rgb24", interpolation="AREA")
        img = _rotate_displayed(img.to_ndarray(), rotation)
        x0, y0 = (cover_w - out_w) // 2, (cover_h - out_h) // 2
        out[fmt] = np.ascontiguousarray(img[y0:y0 + out_h, x0:x0 + out_w])
    return out
