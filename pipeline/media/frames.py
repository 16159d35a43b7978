"""A decoded PyAV frame -> the output formats: cut each source box, one libswscale pass to planar RGB, rotate."""

from __future__ import annotations

import functools

import numpy as np

from videopoet.pipeline.media.config import FORMATS
from videopoet.pipeline.media.geometry import crop_box, resize_crop


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


def _planar_rgb(gbrp) -> np.ndarray:
    """[h, w, 3] RGB of a gbrp frame: views of the frame's planes (order G, B, R), interleaved by cv2.merge."""
    import cv2

    g, b, r = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :gbrp.width] for p in gbrp.planes)
    return cv2.merge([r, g, b])


@functools.lru_cache(maxsize=64)
def _chroma_step(pix_fmt: str) -> tuple[int, int]:
    """(x, y) pixels one chroma sample covers in this pixel format: (2, 2) for 4:2:0 and NV12, (2, 1)
    for 4:2:2, (1, 1) for 4:4:4, RGB, grey and palette formats. A crop must start on that grid or
    its chroma would be shifted against its luma."""
    import av

    chroma = [c for c in av.VideoFormat(pix_fmt, 64, 64).components if c.is_chroma]
    return (64 // chroma[0].width, 64 // chroma[0].height) if chroma else (1, 1)


class FrameConverter:
    """Per input: cuts each format's source box out of the decoded frame into a compact frame (an
    FFmpeg filter graph `crop,copy`: every frame property, chroma siting included, carries over)
    and keeps one libswscale context per format between frames (`frame.reformat` builds a new one
    per call: 7-13% of the conversion's CPU; one shared context would be rebuilt whenever the box
    size changes). The copy pays: swscale reading the box in place from a decoded frame no longer
    in cache cost as much as scaling the whole frame (854x480 -> 128x128: 0.28 vs 0.26 ms), the
    copy (one memcpy per row, C) then scaling from cache 0.11 ms."""

    def __init__(self) -> None:
        self._graphs: dict[tuple, object] = {}
        self._scalers: dict[str, object] = {}

    def crop(self, frame, box: tuple[int, int, int, int]):
        """The frame's region (x, y, w, h), copied, as a frame with the same format and properties."""
        import av

        x, y, w, h = box
        key = (frame.width, frame.height, frame.format.name, frame.colorspace, frame.color_range, box)
        graph = self._graphs.get(key)
        if graph is None:
            graph = av.filter.Graph()
            src = graph.add("buffer", f"video_size={frame.width}x{frame.height}:pix_fmt={frame.format.name}"
                                      f":time_base=1/1:colorspace={int(frame.colorspace)}:range={int(frame.color_range)}")
            # exact=1: the box is used as given (crop would round x/y down to the chroma grid itself;
            # _frame_formats_pyav already did, and the sizes must stay odd where they are odd)
            crop = graph.add("crop", f"w={w}:h={h}:x={x}:y={y}:exact=1")
            copy = graph.add("copy")
            sink = graph.add("buffersink")
            src.link_to(crop)
            crop.link_to(copy)
            copy.link_to(sink)
            graph.configure()
            self._graphs[key] = graph
        graph.push(frame)
        return graph.pull()

    def scaler(self, fmt: str):
        from av.video.reformatter import VideoReformatter

        if fmt not in self._scalers:
            self._scalers[fmt] = VideoReformatter()
        return self._scalers[fmt]


def _frame_formats_pyav(frame, formats, converter: FrameConverter,
                        rotation: int | None = None) -> dict[str, np.ndarray]:
    """The frame in each output format. Shrinking (the usual case): the format's source box
    (geometry.crop_box of the displayed frame, the box decord's path and images cut too; its
    offsets rounded down to the chroma grid, i.e. even for 4:2:0) is copied out of the decoded
    frame, and one libswscale pass (area filter) scales that box straight to the format
    size in planar RGB (gbrp), interleaved by cv2.merge. Copying and scaling only the kept box
    costs 0.5-0.75x of scaling the whole frame to the cover size and cropping afterwards (pipeline
    version 4; the web-resolution set: 0.33 -> 0.24 cpu-s for 2,142 frames,
    docs/results/2026-12-04-ingest-web-resolution-2.md), and swscale's packed RGB24 output cost
    ~1.8x its planar output. The pixels are swscale's RGB24 of the box with full chroma
    interpolation (SWS_FULL_CHR_H_INT) within one level, whatever the source's colour matrix,
    range and bit depth (tests/pipeline/test_frames_yuv.py). Enlarging a frame smaller than the
    format goes through resize_crop (bicubic). `converter` (one FrameConverter per input) keeps
    the crop graphs and swscale contexts between frames. `rotation` overrides the frame's display
    rotation (tests)."""
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
        x, y, w, h = _stored_box(rotation, src_w, src_h, *crop_box(disp_w, disp_h, out_w, out_h))
        step_x, step_y = _chroma_step(frame.format.name)
        box = (x - x % step_x, y - y % step_y, w, h)
        sw, sh = (out_h, out_w) if rotation in (90, 270) else (out_w, out_h)
        region = frame if box == (0, 0, src_w, src_h) else converter.crop(frame, box)
        planar = converter.scaler(fmt).reformat(region, width=sw, height=sh, format="gbrp", interpolation="AREA")
        out[fmt] = _rotate_displayed(_planar_rgb(planar), rotation)
    return out
