"""A decoded PyAV frame -> the output formats: one libswscale pass to planar RGB at the cover size, rotation, crop."""

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


def _stored_box(rotation: int, stored_w: int, stored_h: int, x0: int, y0: int, w: int, h: int):
    """(x, y, w, h) in the stored (unrotated) image of the displayed region (x0, y0, w, h), for the
    counterclockwise display rotation np.rot90 applies: rotating that stored region gives the region."""
    if rotation == 90:
        return stored_w - y0 - h, x0, h, w
    if rotation == 180:
        return stored_w - x0 - w, stored_h - y0 - h, w, h
    if rotation == 270:
        return y0, stored_h - x0 - w, h, w
    return x0, y0, w, h


def _planar_crop_rgb(gbrp, box: tuple[int, int, int, int]) -> np.ndarray:
    """[h, w, 3] RGB of one region of a gbrp frame: the planes' crops are views of the frame's
    buffers (plane order G, B, R), interleaved by cv2.merge (one pass over the kept pixels only)."""
    import cv2

    x, y, w, h = box
    g, b, r = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[y:y + h, x:x + w] for p in gbrp.planes)
    return cv2.merge([r, g, b])


def _frame_formats_pyav(frame, formats, reformatter, rotation: int | None = None) -> dict[str, np.ndarray]:
    """The frame in each output format. Shrinking (the usual case) is one libswscale pass from the
    decoded pixels to planar RGB (gbrp) at the cover size (area filter), then the centre crop of
    the planes, interleaved. Converting the full frame to RGB and resizing it afterwards cost 4-5x
    more CPU (bench/ingest.py; 720p source), and swscale's packed RGB24 output cost ~1.8x its
    planar output at 426x240 (docs/results/2026-12-04-ingest-web-resolution-2.md). The pixels are
    swscale's RGB24 with full chroma interpolation (SWS_FULL_CHR_H_INT), bit for bit, whatever the
    source's colour matrix, range and bit depth (tests/pipeline/test_frames_yuv.py); swscale's
    default packed RGB24 equals that at odd output widths only, at even ones it interpolates 4:2:0
    chroma at half the horizontal resolution. Enlarging a frame smaller than the format goes
    through resize_crop (bicubic). `reformatter` (one av.video.reformatter.VideoReformatter per
    input) keeps the libswscale context between frames; `frame.reformat` builds a new one per
    call (7-13% of the conversion's CPU). `rotation` overrides the frame's display rotation (tests)."""
    if rotation is None:
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
        planar = reformatter.reformat(frame, width=sw, height=sh, format="gbrp", interpolation="AREA")
        x0, y0 = (cover_w - out_w) // 2, (cover_h - out_h) // 2
        box = _stored_box(rotation, sw, sh, x0, y0, out_w, out_h)
        out[fmt] = _rotate_displayed(_planar_crop_rgb(planar, box), rotation)
    return out
