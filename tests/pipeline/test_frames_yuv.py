"""The PyAV frame -> format path (cut the source box, libswscale to planar RGB at the format size) against references.

Reference 1 (exact): the format's source box cut by hand (numpy copy of the YUV planes into a new
frame, tagged like the source; the box is crop_box of the displayed frame, the one decord's path and
images cut, mapped to the stored frame through an index grid rotated like the display and rounded
down to the chroma grid), then swscale straight to packed RGB24 at the format size with the area
filter and full chroma interpolation (SWS_FULL_CHR_H_INT), rotated for display. The path must equal
it within 1 level on <= 1% of the values (mean < 0.01): swscale's planar output rounds a few values
one level apart from its packed output (version 4 measured ~0.2%); sources in BT.601 / BT.709 /
BT.2020, limited and full range, 4:2:0 / 4:2:2 / NV12, at every format size.

Reference 2 (geometry, independent of swscale's scaler): a float area resample (cv2.INTER_AREA) of
the same box cut from swscale's full-resolution RGB of the whole frame. It differs from the path
where chroma is upsampled differently (sharp colour edges) and in swscale's area kernel, hence
loose bounds: mean <= 1.5 levels, 99th percentile <= 12 (measured at most 1.13 and 8.5 over these
cases); a box one chroma step (2 source pixels) off reads a mean of 1.9-6 and p99 12-62, so the
path's pixels must also fit the box better than each of the four boxes 2 pixels left, right, up
and down of it (test_a_shifted_box_fails_both_references).
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from av.video.reformatter import Interpolation, VideoReformatter

from videopoet.pipeline.media.config import FORMATS
from videopoet.pipeline.media.frames import FrameConverter, _frame_formats_pyav
from videopoet.pipeline.media.geometry import crop_box

# source sizes: odd crop offsets rounded to even (426x240 square: box x 93 -> 92; 854x480: 187 -> 186),
# odd box widths (426x240 portrait: 137x240), an odd-sized 4:2:0 frame, portrait sources, and ones
# large enough for every format in FORMATS (square_2x, portrait_2x, portrait_4x) to be a shrink
SIZES = [(426, 240), (640, 360), (854, 480), (800, 600), (250, 500), (427, 241), (1280, 720), (720, 1280)]


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


def _stored_box(frame, fmt: str, rotation: int) -> tuple[int, int, int, int]:
    """The format's source box in the stored frame, found by rotating an index grid like the display."""
    out_w, out_h = FORMATS[fmt]
    index = np.arange(frame.width * frame.height).reshape(frame.height, frame.width)
    shown = np.rot90(index, k=rotation // 90)
    x0, y0, w, h = crop_box(shown.shape[1], shown.shape[0], out_w, out_h)
    ys, xs = np.divmod(shown[y0:y0 + h, x0:x0 + w], frame.width)
    x, y = int(xs.min()), int(ys.min())
    step = 1 if frame.format.name in ("rgb24", "gbrp") else 2  # every YUV format here: 4:2:x, even x
    step_y = 2 if frame.format.name in ("yuv420p", "yuvj420p", "nv12") else 1
    return x - x % step, y - y % step_y, int(xs.max()) - x + 1, int(ys.max()) - y + 1


def _cut(frame, box) -> av.VideoFrame:
    """The region as a new frame: the planes copied by numpy, the colour tags copied."""
    x, y, w, h = box
    sub_x, sub_y = (1, 1) if frame.format.name == "rgb24" else (2, 2 if frame.format.name != "yuv422p" else 1)
    cut = av.VideoFrame(w, h, frame.format.name)
    for i, (src, dst) in enumerate(zip(frame.planes, cut.planes)):
        bpp = 3 if frame.format.name == "rgb24" else (2 if frame.format.name == "nv12" and i == 1 else 1)
        fx, fy = (1, 1) if i == 0 else (sub_x, sub_y)
        a = np.frombuffer(src, np.uint8).reshape(src.height, src.line_size)
        cols = dst.width * bpp
        b = np.frombuffer(dst, np.uint8).reshape(dst.height, dst.line_size)
        b[:, :cols] = a[y // fy:y // fy + dst.height, x // fx * bpp:x // fx * bpp + cols]
    cut.colorspace, cut.color_range = frame.colorspace, frame.color_range
    return cut


def _sited(frame, chroma_location: str) -> av.VideoFrame:
    """The frame tagged with a chroma location (PyAV does not expose it; FFmpeg's setparams sets it)."""
    graph = av.filter.Graph()
    src = graph.add("buffer", f"video_size={frame.width}x{frame.height}:pix_fmt={frame.format.name}:time_base=1/1"
                              f":colorspace={int(frame.colorspace)}:range={int(frame.color_range)}")
    tag = graph.add("setparams", f"chroma_location={chroma_location}")
    sink = graph.add("buffersink")
    src.link_to(tag)
    tag.link_to(sink)
    graph.configure()
    graph.push(frame)
    return graph.pull()


def _reference(frame, fmt: str, rotation: int, dx: int = 0, dy: int = 0, chroma_location: str | None = None):
    """swscale's full-chroma RGB24 of the hand-cut source box at the format size, rotated for display;
    `chroma_location`: the decoder's chroma siting, which the cut copy must carry like the frame does."""
    out_w, out_h = FORMATS[fmt]
    x, y, w, h = _stored_box(frame, fmt, rotation)
    sw, sh = (out_h, out_w) if rotation in (90, 270) else (out_w, out_h)
    cut = _cut(frame, (x + dx, y + dy, w, h))
    if chroma_location is not None:
        cut = _sited(cut, chroma_location)
    rgb = VideoReformatter().reformat(cut, width=sw, height=sh, format="rgb24",
                                      interpolation=Interpolation.AREA | Interpolation.FULL_CHR_H_INT).to_ndarray()
    return np.rot90(rgb, k=rotation // 90)


def _float_reference(frame, fmt: str, rotation: int, dx: int = 0, dy: int = 0) -> np.ndarray | None:
    """The same box (moved by dx, dy stored pixels) cut from swscale's full-resolution RGB of the whole
    frame, area-resampled in float; None when the moved box leaves the frame."""
    out_w, out_h = FORMATS[fmt]
    x, y, w, h = _stored_box(frame, fmt, rotation)
    x, y = x + dx, y + dy
    if x < 0 or y < 0 or x + w > frame.width or y + h > frame.height:
        return None
    full = frame.reformat(format="rgb24", interpolation=Interpolation.BILINEAR | Interpolation.FULL_CHR_H_INT
                          | Interpolation.ACCURATE_RND).to_ndarray().astype(np.float32)
    region = np.rot90(full[y:y + h, x:x + w], k=rotation // 90)
    return cv2.resize(np.ascontiguousarray(region), (out_w, out_h), interpolation=cv2.INTER_AREA)


def _assert_close(mine: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert mine.shape == ref.shape and mine.dtype == np.uint8 and mine.flags.c_contiguous, what
    diff = np.abs(mine.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01 and diff.mean() < 0.01, \
        f"{what}: max {diff.max()} mean {diff.mean():.4f} off {(diff > 0).mean():.4f}"


def _geometry_error(mine: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    diff = np.abs(mine.astype(np.float32) - ref)
    return float(diff.mean()), float(np.percentile(diff, 99))


def _assert_geometry(mine: np.ndarray, frame, fmt: str, rotation: int, what: str, dx: int = 0, dy: int = 0) -> None:
    """Close to the float reference of the box (moved by dx, dy), and closer to it than to the box one
    chroma step (2 pixels) left, right, up or down of it."""
    ref = _float_reference(frame, fmt, rotation, dx, dy)
    assert mine.shape == ref.shape, what
    mean, p99 = _geometry_error(mine, ref)
    assert mean <= 1.5 and p99 <= 12, f"{what}: mean {mean:.3f} p99 {p99:.2f}"
    for ddx, ddy in [(-2, 0), (2, 0), (0, -2), (0, 2)]:
        moved = _float_reference(frame, fmt, rotation, dx + ddx, dy + ddy)
        if moved is not None:
            other = _geometry_error(mine, moved)[0]
            assert other > mean, f"{what}: the box moved by ({ddx}, {ddy}) fits better ({other:.3f} < {mean:.3f})"


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
        got = _frame_formats_pyav(frame, formats, FrameConverter())
        for fmt in formats:
            what = f"{pix_fmt} csp {colorspace} {width}x{height} {fmt}"
            _assert_close(got[fmt], _reference(frame, fmt, 0), what)
            _assert_geometry(got[fmt], frame, fmt, 0, what)
    assert set(_shrinking(1280, 720)) | set(_shrinking(720, 1280)) == set(FORMATS)


def test_a_shifted_box_fails_both_references():
    """The deliberate break: references for the box one chroma step (2 source pixels) right or down
    of the path's reject the path's pixels."""
    for width, height in [(426, 240), (854, 480), (720, 1280)]:
        frame = _yuv_frame(_content(width, height, 5), "yuv420p", 1, 1)
        for fmt in _shrinking(width, height):
            got = _frame_formats_pyav(frame, [fmt], FrameConverter())[fmt]
            x, y, w, h = _stored_box(frame, fmt, 0)
            dx, dy = (2, 0) if x + w + 2 <= width else (0, 2)
            with pytest.raises(AssertionError):
                _assert_geometry(got, frame, fmt, 0, "moved", dx, dy)
            with pytest.raises(AssertionError):
                _assert_close(got, _reference(frame, fmt, 0, dx, dy), "moved")


def test_matrix_and_range_are_honoured():
    """The frame's tags reach swscale: the same pixels tagged BT.601 give other colours."""
    rgb = _content(426, 240, 7)
    bt709 = _yuv_frame(rgb, "yuv420p", 1, 1)
    got = _frame_formats_pyav(bt709, ["square"], FrameConverter())["square"]
    bt709.colorspace = 5  # the same pixels, mis-tagged as BT.601
    wrong = _reference(bt709, "square", 0)
    assert np.abs(got.astype(int) - wrong).max() > 10


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_frames_crop_the_displayed_centre(rotation):
    for width, height in [(426, 240), (250, 500), (427, 241), (1280, 720)]:
        frame = _yuv_frame(_content(width, height, rotation), "yuv420p", 2, 0)
        formats = _shrinking(width, height, rotation)
        got = _frame_formats_pyav(frame, formats, FrameConverter(), rotation=rotation)
        for fmt in formats:
            what = f"rot {rotation} {width}x{height} {fmt}"
            _assert_close(got[fmt], _reference(frame, fmt, rotation), what)
            _assert_geometry(got[fmt], frame, fmt, rotation, what)


def test_rgb_and_enlarged_frames():
    """An RGB source: its box (any offset: no chroma grid) scaled by swscale equals swscale's RGB24
    of that box within 1 level; a frame smaller than the format is converted whole and enlarged
    (bicubic), the box the same as geometry.resize_crop's."""
    from videopoet.pipeline.media.geometry import resize_crop

    rgb = _content(427, 240, 3)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    for fmt in _shrinking(427, 240):
        got = _frame_formats_pyav(frame, [fmt], FrameConverter())[fmt]
        x, y, w, h = crop_box(427, 240, *FORMATS[fmt])
        assert x % 2 == 1 and _stored_box(frame, fmt, 0) == (x, y, w, h)  # odd: not rounded for RGB
        ref = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[y:y + h, x:x + w]), format="rgb24")
        _assert_close(got, ref.reformat(width=FORMATS[fmt][0], height=FORMATS[fmt][1], format="rgb24",
                                        interpolation="AREA").to_ndarray(), f"rgb24 {fmt}")
    small = _yuv_frame(_content(100, 90, 4), "yuv420p", 2, 0)
    got = _frame_formats_pyav(small, ["square"], FrameConverter())["square"]
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


@pytest.mark.parametrize("name,codec,pix_fmt,colorspace,color_range,want,siting", [
    ("bt601.mp4", "libx264", "yuv420p", None, None, (2, 0), "left"),  # untagged: BT.601 limited
    ("bt709.mp4", "libx264", "yuv420p", 1, 1, (1, 1), "left"),
    ("full.avi", "mjpeg", "yuvj420p", 5, 2, (None, 2), "center"),
])
def test_encoded_clips_match_swscale_rgb(tmp_path, name, codec, pix_fmt, colorspace, color_range, want, siting):
    """Real decoder output (tags as the decoder sets them, chroma siting included: H.264 says left,
    JPEG centre) at every format the clip can shrink to."""
    path = tmp_path / name
    _encode(path, codec, pix_fmt, colorspace, color_range)
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 4
    csp, rng = want
    assert (csp is None or frames[0].colorspace == csp) and frames[0].color_range == rng
    converter = FrameConverter()
    for frame in frames:
        formats = _shrinking(frame.width, frame.height)
        got = _frame_formats_pyav(frame, formats, converter)
        for fmt in formats:
            _assert_close(got[fmt], _reference(frame, fmt, 0, chroma_location=siting), f"{name} {fmt}")
            _assert_geometry(got[fmt], frame, fmt, 0, f"{name} {fmt}")
    if siting == "left":  # the cut kept the decoder's siting: the same cut without it is another picture
        unsited = _reference(frames[0], "square", 0)
        assert np.abs(_frame_formats_pyav(frames[0], ["square"], converter)["square"].astype(int) - unsited).max() > 10
