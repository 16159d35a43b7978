"""The PyAV frame -> format path (libswscale to planar RGB at the cover size, crop) against libswscale's RGB24.

Reference: swscale scaling the whole frame straight to packed RGB24 at the cover size with the area
filter and full chroma interpolation (SWS_FULL_CHR_H_INT; what swscale's default does at odd output
widths), rotated for display, then the centre crop. The path must equal it on sources in BT.601 /
BT.709 / BT.2020, limited and full range, 4:2:0 / 4:2:2 / NV12, at every format size: bit for bit at
most cover sizes; at a few (426x240 -> 398x224, 854x480 -> 797x448) swscale's planar output rounds
~0.2% of the values one level apart from its packed output, hence max 1 level, mean < 0.01.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from av.video.reformatter import Interpolation, VideoReformatter

from videopoet.pipeline.media.config import FORMATS
from videopoet.pipeline.media.frames import _frame_formats_pyav

# source sizes: odd and even cover widths, odd crop offsets (426x240 -> 227x128 at x 49; 800x600 ->
# 171x128 at x 21), portrait sources, and one large enough for every format to be a shrink
SIZES = [(426, 240), (640, 360), (854, 480), (800, 600), (250, 500), (1280, 720), (720, 1280)]


def _content(width: int, height: int, seed: int) -> np.ndarray:
    """RGB test card: smooth colour gradients, blurred noise, saturated discs with sharp edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 17 + y / 23)], -1)
    img += cv2.GaussianBlur(rng.normal(0, 40, (height, width, 3)).astype(np.float32), (0, 0), 2)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for k, colour in enumerate([(255, 255, 0), (255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        centre = (int(width * (0.2 + 0.2 * k)), int(height * (0.3 + 0.15 * k)))
        cv2.circle(img, centre, max(4, min(width, height) // 8), colour, -1)
    return img


def _yuv_frame(rgb: np.ndarray, pix_fmt: str, colorspace: int, color_range: int) -> av.VideoFrame:
    """The RGB card as a YUV frame in that matrix and range, tagged with them (as a decoder would)."""
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    yuv = frame.reformat(format=pix_fmt, dst_colorspace=colorspace, dst_color_range=color_range)
    yuv.colorspace, yuv.color_range = colorspace, color_range
    return yuv


def _reference(frame, fmt: str, rotation: int) -> np.ndarray:
    """swscale's full-chroma RGB24 of the whole frame at the cover size, rotated for display, cropped."""
    out_w, out_h = FORMATS[fmt]
    disp_w, disp_h = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
    scale = max(out_w / disp_w, out_h / disp_h)
    cover_w, cover_h = max(out_w, round(disp_w * scale)), max(out_h, round(disp_h * scale))
    sw, sh = (cover_h, cover_w) if rotation in (90, 270) else (cover_w, cover_h)
    rgb = VideoReformatter().reformat(frame, width=sw, height=sh, format="rgb24",
                                      interpolation=Interpolation.AREA | Interpolation.FULL_CHR_H_INT).to_ndarray()
    rgb = np.rot90(rgb, k=rotation // 90)
    x0, y0 = (cover_w - out_w) // 2, (cover_h - out_h) // 2
    return rgb[y0:y0 + out_h, x0:x0 + out_w]


def _assert_close(mine: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert mine.shape == ref.shape and mine.dtype == np.uint8 and mine.flags.c_contiguous, what
    diff = np.abs(mine.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1 and diff.mean() < 0.01, f"{what}: max {diff.max()} mean {diff.mean():.4f}"


def _shrinking(width: int, height: int, rotation: int = 0) -> list[str]:
    disp_w, disp_h = (height, width) if rotation in (90, 270) else (width, height)
    return [f for f, (w, h) in FORMATS.items() if disp_w >= w and disp_h >= h]


@pytest.mark.parametrize("pix_fmt,colorspace,color_range", [
    ("yuv420p", 2, 0),  # unspecified matrix and range: what most web H.264 says (swscale: BT.601 limited)
    ("yuv420p", 6, 1),  # BT.601 (SMPTE 170M) limited
    ("yuv420p", 1, 1),  # BT.709 limited
    ("yuvj420p", 5, 2),  # BT.601 full range, MJPEG style
    ("yuv420p", 1, 2),  # BT.709 full range
    ("yuv422p", 9, 1),  # BT.2020 limited, 4:2:2
    ("nv12", 1, 1),  # semi-planar
])
def test_every_format_size_matches_swscale_rgb(pix_fmt, colorspace, color_range):
    for i, (width, height) in enumerate(SIZES):
        frame = _yuv_frame(_content(width, height, i), pix_fmt, colorspace, color_range)
        formats = _shrinking(width, height)
        assert formats, (width, height)
        got = _frame_formats_pyav(frame, formats, VideoReformatter())
        for fmt in formats:
            _assert_close(got[fmt], _reference(frame, fmt, 0), f"{pix_fmt} csp {colorspace} {width}x{height} {fmt}")


def test_matrix_and_range_are_honoured():
    """The frame's tags reach swscale: the same pixels tagged BT.601 give other colours."""
    rgb = _content(426, 240, 7)
    bt709 = _yuv_frame(rgb, "yuv420p", 1, 1)
    got = _frame_formats_pyav(bt709, ["square"], VideoReformatter())["square"]
    bt709.colorspace = 5  # the same pixels, mis-tagged as BT.601
    wrong = _reference(bt709, "square", 0)
    assert np.abs(got.astype(int) - wrong).max() > 10


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_frames_crop_the_displayed_centre(rotation):
    for width, height in [(426, 240), (250, 500)]:
        frame = _yuv_frame(_content(width, height, rotation), "yuv420p", 2, 0)
        formats = _shrinking(width, height, rotation)
        got = _frame_formats_pyav(frame, formats, VideoReformatter(), rotation=rotation)
        for fmt in formats:
            _assert_close(got[fmt], _reference(frame, fmt, rotation), f"rot {rotation} {width}x{height} {fmt}")


def test_non_yuv_and_enlarged_frames_keep_their_paths():
    """An RGB source gives swscale's default RGB24 bit for bit (no chroma to interpolate); a frame
    smaller than the format is converted whole and enlarged (bicubic)."""
    from videopoet.pipeline.media.geometry import resize_crop

    rgb = _content(426, 240, 3)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    got = _frame_formats_pyav(frame, ["square"], VideoReformatter())["square"]
    ref = frame.reformat(width=227, height=128, format="rgb24", interpolation="AREA").to_ndarray()[:, 49:177]
    assert np.array_equal(got, ref)
    small = _yuv_frame(_content(100, 90, 4), "yuv420p", 2, 0)
    got = _frame_formats_pyav(small, ["square"], VideoReformatter())["square"]
    assert np.array_equal(got, resize_crop(small.to_ndarray(format="rgb24"), 128, 128))


def _encode(path, codec: str, pix_fmt: str, colorspace: int | None, color_range: int | None, size=(426, 240)):
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
        if colorspace is not None:
            stream.codec_context.colorspace = colorspace
            stream.codec_context.color_range = color_range
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.roll(_content(*size, 11), 9 * i, axis=1), format="rgb24")
            if colorspace is not None:
                frame = frame.reformat(format=pix_fmt, dst_colorspace=colorspace, dst_color_range=color_range)
                frame.colorspace, frame.color_range = colorspace, color_range
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


@pytest.mark.parametrize("name,codec,pix_fmt,colorspace,color_range,want", [
    ("bt601.mp4", "libx264", "yuv420p", None, None, (2, 0)),  # untagged: BT.601 limited
    ("bt709.mp4", "libx264", "yuv420p", 1, 1, (1, 1)),
    ("full.avi", "mjpeg", "yuvj420p", 5, 2, (None, 2)),
])
def test_encoded_clips_match_swscale_rgb(tmp_path, name, codec, pix_fmt, colorspace, color_range, want):
    """Real decoder output (tags as the decoder sets them) at every format the clip can shrink to."""
    path = tmp_path / name
    _encode(path, codec, pix_fmt, colorspace, color_range)
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 4
    csp, rng = want
    assert (csp is None or frames[0].colorspace == csp) and frames[0].color_range == rng
    reformatter = VideoReformatter()
    for frame in frames:
        formats = _shrinking(frame.width, frame.height)
        got = _frame_formats_pyav(frame, formats, reformatter)
        for fmt in formats:
            _assert_close(got[fmt], _reference(frame, fmt, 0), f"{name} {fmt}")
