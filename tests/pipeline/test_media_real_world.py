"""Real-world media classes (MPEG-4 Part 2 packed B-frames, sparse AVI, a bogus header duration,
odd containers) generated with PyAV, each with its known truth: frame count, duration, and which
source frame each 8 fps output frame must hold (read back from the burned-in counter)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from videopoet.pipeline.media import MediaConfig, probe_and_decode
from videopoet.pipeline.samples_counter import counter_side_in_output, decode_counter, draw_counter

W, H = 160, 120
VOP = b"\x00\x00\x01\xb6"
BACKENDS = ["pyav", "decord"]


def _img(i: int) -> np.ndarray:
    a = np.full((H, W, 3), 40, np.uint8)
    draw_counter(a, i)
    return a


def _vop_type(data: bytes) -> str:
    return "IPBS"[data[data.find(VOP) + 4] >> 6]


def _packed_mpeg4(path, n: int, fps: int) -> None:
    """MPEG-4 Part 2 with 2 B-frames, packed like DivX/Xvid in AVI: each P-VOP shares its chunk with
    the first following B-VOP and a tiny not-coded VOP takes the freed slot (a 'DivX503b1393p'
    user data marks the stream packed). PyAV/FFmpeg decode it to all n frames in order."""
    enc = av.CodecContext.create("mpeg4", "w")
    enc.width, enc.height, enc.pix_fmt = W, H, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, fps), fps
    enc.max_b_frames, enc.gop_size, enc.bit_rate = 2, 12, 800000
    raw = []
    for i in range(n):
        f = av.VideoFrame.from_ndarray(_img(i), format="rgb24").reformat(format="yuv420p")
        f.pts = i
        raw += [bytes(p) for p in enc.encode(f)]
    raw += [bytes(p) for p in enc.encode(None)]
    raw[0] = raw[0].replace(VOP, b"\x00\x00\x01\xb2DivX503b1393p" + VOP, 1)
    chunks, k = [], 0
    while k < len(raw):
        if _vop_type(raw[k]) == "P" and k + 1 < len(raw) and _vop_type(raw[k + 1]) == "B":
            chunks.append(raw[k] + raw[k + 1])
            k += 2
            while k < len(raw) and _vop_type(raw[k]) == "B":
                chunks.append(raw[k])
                k += 1
            chunks.append(VOP + b"\x7f\xff")  # the N-VOP placeholder
        else:
            chunks.append(raw[k])
            k += 1
    assert len(chunks) == n
    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt, s.codec_tag = W, H, "yuv420p", "DX50"
        for i, ch in enumerate(chunks):
            p = av.Packet(ch)
            p.stream, p.pts, p.dts, p.time_base = s, i, i, Fraction(1, fps)
            p.is_keyframe = _vop_type(ch) == "I"
            c.mux(p)


def _remux(src_path, dst_path) -> None:
    """Copy the video packets into another container (what `ffmpeg -c copy x.avi x.mkv` does)."""
    with av.open(str(src_path)) as src, av.open(str(dst_path), "w") as dst:
        s = dst.add_stream_from_template(src.streams.video[0])
        for p in src.demux(src.streams.video[0]):
            if p.dts is not None:
                p.stream = s
                dst.mux(p)


def _sparse_avi(path, slots: int, fps: int, coded: list[int]) -> None:
    """MJPEG AVI whose index holds `slots` frames but only `coded` carry data (the others are
    zero-size 'repeat the previous frame' chunks)."""
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt, enc.time_base = W, H, "yuvj420p", Fraction(1, fps)
    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("mjpeg", rate=fps)
        s.width, s.height, s.pix_fmt = W, H, "yuvj420p"
        for k in range(slots):
            data = b""
            if k in coded:
                f = av.VideoFrame.from_ndarray(_img(k), format="rgb24").reformat(format="yuvj420p")
                f.pts = k
                data = bytes(enc.encode(f)[0])
            p = av.Packet(data)
            p.stream, p.pts, p.dts, p.time_base, p.is_keyframe = s, k, k, Fraction(1, fps), True
            c.mux(p)


def _mpeg1_bad_duration(path, n: int, fps: int) -> None:
    """An MPEG-1 elementary stream whose sequence header claims the top bit rate, so that FFmpeg's
    size / bit-rate duration estimate says a few milliseconds while n frames decode."""
    with av.open(str(path), "w", format="mpeg1video") as c:
        s = c.add_stream("mpeg1video", rate=fps)
        s.width, s.height, s.pix_fmt, s.bit_rate = W, H, "yuv420p", 400000
        for i in range(n):
            f = av.VideoFrame.from_ndarray(_img(i), format="rgb24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode())
    b = bytearray(path.read_bytes())
    i = b.find(b"\x00\x00\x01\xb3")
    b[i + 8], b[i + 9], b[i + 10] = 0xFF, 0xFF, (b[i + 10] & 0x3F) | 0xC0  # bit_rate_value = 0x3FFFF
    path.write_bytes(bytes(b))


def _plain_decode_counters(path) -> list[int]:
    """The reference: a plain full PyAV decode, in the decoder's output (= presentation) order
    (packed B-frames carry wrong timestamps, so this order is the truth, not a sort by pts)."""
    with av.open(str(path)) as c:
        side = counter_side_in_output(W, H, W, H)
        return [decode_counter(f.to_ndarray(format="rgb24"), side) for f in c.decode(c.streams.video[0])]


def _plain_decode(path) -> list[tuple[int, Fraction]]:
    """(counter, presentation time) of every frame of a plain full PyAV decode, sorted by time."""
    with av.open(str(path)) as c:
        side = counter_side_in_output(W, H, W, H)
        v = c.streams.video[0]
        return sorted(((decode_counter(f.to_ndarray(format="rgb24"), side), f.pts * Fraction(v.time_base))
                       for f in c.decode(v)), key=lambda x: x[1])


def _clip_counters(clip) -> list[int]:
    side = counter_side_in_output(W, H, clip.rgb.shape[2], clip.rgb.shape[1])
    return [decode_counter(f, side) for f in clip.rgb]


def _expected(slot_times: list[Fraction], values: list[int], start: float, frames: int) -> list[int]:
    """Reference pick: output frame i holds the frame whose interval [t_j, t_j+1) contains t_0 + o + i/8."""
    out = []
    for i in range(frames):
        t = slot_times[0] + Fraction(start).limit_denominator(1000) + Fraction(i, 8)
        j = max(k for k, tj in enumerate(slot_times) if tj <= t)
        out.append(values[j])
    return out


def _decode(path, decoder, **kw):
    cfg = MediaConfig(audio=False, decoder=decoder, clips_per_video=0, decode_timeout_s=0, **kw)
    return probe_and_decode(str(path), cfg)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("real_world")
    _packed_mpeg4(d / "packed.avi", 270, 24)
    _remux(d / "packed.avi", d / "packed.mkv")
    coded = sorted({0, *(int(x) for x in np.linspace(0, 443, 68))})
    _sparse_avi(d / "sparse.avi", 444, 15, coded)
    _mpeg1_bad_duration(d / "bad_duration.m1v", 130, 24)
    return d, coded


@pytest.mark.parametrize("decoder", BACKENDS)
@pytest.mark.parametrize("name", ["packed.avi", "packed.mkv"])
def test_mpeg4_packed_b_frames_give_every_frame_in_order(media, name, decoder):
    d, _ = media
    path = d / name
    plain = _plain_decode_counters(path)
    assert plain == list(range(270))  # the truth: a plain decode gives every frame, in order
    clips = _decode(path, decoder)
    times = [Fraction(k, 24) for k in range(270)]
    assert len(clips) == 5  # 11.25 s: 5 non-overlapping 17-frame windows
    for c in clips:
        assert abs(c.source_duration_s - 11.25) < 0.01, c.source_duration_s
        assert _clip_counters(c) == _expected(times, plain, c.start_time_s, 17), (c.window_index, c.notes)
        assert c.source_frame_indices == [round(c.start_time_s * 24) + 3 * i for i in range(17)]
        assert not any("dropped" in n for n in c.notes)


@pytest.mark.parametrize("decoder", BACKENDS)
def test_sparse_avi_holds_each_frame_until_the_next(media, decoder):
    d, coded = media
    clips = _decode(d / "sparse.avi", decoder)
    times = [Fraction(k, 15) for k in coded]
    assert len(clips) == 13  # 29.6 s: floor((29.6 - 2) / 2.125) + 1 windows
    for c in clips:
        assert abs(c.source_duration_s - 29.6) < 0.01
        assert _clip_counters(c) == _expected(times, coded, c.start_time_s, 17), c.window_index


def test_wrong_header_duration_plans_from_what_decodes(media):
    d, _ = media
    path = d / "bad_duration.m1v"
    with av.open(str(path)) as c:
        assert c.duration is not None and c.duration / 1e6 < 0.1  # the bogus claim
    ref = _plain_decode(path)
    plain, times = [v for v, _ in ref], [t for _, t in ref]
    assert plain == list(range(130))
    clips = _decode(path, "pyav")
    assert len(clips) == 2 and all(abs(c.source_duration_s - 130 / 24) < 0.05 for c in clips)
    assert any("windows planned from what decodes" in n for n in clips[0].notes)
    for c in clips:  # the reference pick from the plain decode's own timestamps
        assert _clip_counters(c) == _expected(times, plain, c.start_time_s, 17)
    # decord cannot open it at all (broken metadata): a documented gap, a clean failure
    from videopoet.pipeline.media import MediaError

    with pytest.raises(MediaError, match="decord failed"):
        _decode(path, "decord")
