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


# --- More classes: DV, ASF/WMV, FLV, 3GP with AMR-NB, MJPEG + PCM AVI, 5.1 AAC, VFR -----------------
# Each is a 3 s file with the counter burned in; windows every 0.25 s (4 overlapping 17-frame
# windows) so most of the file's frames are checked against the reference pick.

STRIDE = 0.25
SURROUND_FREQS = [300.0, 500.0, 700.0, 80.0, 1100.0, 1300.0]  # FL FR FC LFE BL BR


def _write(path, fmt: str, vcodec: str, n: int, fps: int, w: int, h: int, pix_fmt: str, acodec: str | None = None,
           rate: int = 48000, layout: str = "stereo", freqs: list[float] | None = None, bit_rate: int | None = None,
           times: list[int] | None = None, tb: Fraction | None = None) -> None:
    """n counter frames (pts i, or `times` in `tb` units) and n / fps s of a 0.3 sine per channel."""
    with av.open(str(path), "w", format=fmt) as c:
        vs = c.add_stream(vcodec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        if tb is not None:
            vs.codec_context.time_base = tb
        a = c.add_stream(acodec, rate=rate, layout=layout) if acodec else None
        if a is not None and bit_rate:
            a.bit_rate = bit_rate
        for i in range(n):
            img = np.full((h, w, 3), 40, np.uint8)
            draw_counter(img, i)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = times[i] if times else i
            if tb is not None:
                f.time_base = tb
            c.mux(vs.encode(f))
        c.mux(vs.encode())
        if a is None:
            return
        fr = np.asarray(freqs or [440.0 * (k + 1) for k in range(len(a.layout.channels))])[:, None]
        total = n * rate // fps
        for s in range(0, total, 1024):
            t = np.arange(s, min(s + 1024, total))[None] / rate
            af = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * fr * t)).astype(np.float32), format="fltp",
                                            layout=layout)
            af.sample_rate, af.pts = rate, s
            c.mux(a.encode(af))
        c.mux(a.encode())


def _plain_decode_sized(path) -> list[tuple[int, Fraction]]:
    """(counter, presentation time) of every frame of a plain full PyAV decode, sorted by time."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        side = counter_side_in_output(v.width, v.height, v.width, v.height)
        return sorted(((decode_counter(f.to_ndarray(format="rgb24"), side), f.pts * Fraction(v.time_base))
                       for f in c.decode(v)), key=lambda x: x[1])


def _clip_counters_sized(clip) -> list[int]:
    side = counter_side_in_output(clip.source_width, clip.source_height, clip.rgb.shape[2], clip.rgb.shape[1])
    return [decode_counter(f, side) for f in clip.rgb]


VFR_MS = [20, 50, 33, 100, 67, 41, 89]  # frame durations (ms), cycled: 3.000 s in 52 frames
VFR_TIMES = [sum(VFR_MS[k % len(VFR_MS)] for k in range(i)) for i in range(53)]
CLASSES = {  # name -> (writer kwargs, frames, fps, duration, audio codec name as decoded or None)
    "dv_pal.dv": (dict(fmt="dv", vcodec="dvvideo", fps=25, w=720, h=576, pix_fmt="yuv420p", acodec="pcm_s16le"),
                  75, 25, 3.0, "pcm_s16le"),
    "wmv2.wmv": (dict(fmt="asf", vcodec="wmv2", fps=25, w=W, h=H, pix_fmt="yuv420p", acodec="wmav2", rate=44100,
                      bit_rate=64000), 75, 25, 3.0, "wmav2"),
    "flv1.flv": (dict(fmt="flv", vcodec="flv", fps=30, w=W, h=H, pix_fmt="yuv420p", acodec="libmp3lame",
                      rate=44100), 90, 30, 3.0, "mp3float"),
    "h263_amr.3gp": (dict(fmt="3gp", vcodec="h263", fps=15, w=176, h=144, pix_fmt="yuv420p",
                          acodec="libopencore_amrnb", rate=8000, layout="mono", bit_rate=12200), 45, 15, 3.0, "amrnb"),
    "mjpeg_pcm.avi": (dict(fmt="avi", vcodec="mjpeg", fps=24, w=W, h=H, pix_fmt="yuvj420p", acodec="pcm_s16le",
                           rate=44100), 72, 24, 3.0, "pcm_s16le"),
    "aac51.mp4": (dict(fmt="mp4", vcodec="libx264", fps=24, w=W, h=H, pix_fmt="yuv420p", acodec="aac", layout="5.1",
                       freqs=SURROUND_FREQS, bit_rate=384000), 72, 24, 3.0, "aac"),
    "vfr.mkv": (dict(fmt="matroska", vcodec="libx264", fps=25, w=W, h=H, pix_fmt="yuv420p", times=VFR_TIMES[:52],
                     tb=Fraction(1, 1000)), 52, None, 3.0, None),
}
NEEDS = {"h263_amr.3gp": "libopencore_amrnb", "flv1.flv": "libmp3lame", "aac51.mp4": "libx264", "vfr.mkv": "libx264"}
# decord (its own FFmpeg) opens all of these; where it could not, the test would assert its MediaError
DECORD_REFUSES: set[str] = set()


@pytest.fixture(scope="module")
def more_media(tmp_path_factory):
    d = tmp_path_factory.mktemp("real_world_more")
    for name, (kw, n, *_rest) in CLASSES.items():
        if NEEDS.get(name, "") in av.codecs_available or name not in NEEDS:
            _write(d / name, n=n, **kw)
    return d


def _decode_more(path, decoder: str, audio: bool = True):
    cfg = MediaConfig(audio=audio, decoder=decoder, clips_per_video=0, decode_timeout_s=0, clip_stride_s=STRIDE)
    return probe_and_decode(str(path), cfg)


@pytest.mark.parametrize("decoder", BACKENDS)
@pytest.mark.parametrize("name", list(CLASSES))
def test_more_classes_pick_the_reference_frames(more_media, name, decoder):
    kw, n, fps, duration, audio_codec = CLASSES[name]
    if NEEDS.get(name, "") not in av.codecs_available and name in NEEDS:
        pytest.skip(f"the bundled FFmpeg has no {NEEDS[name]} encoder")
    path = more_media / name
    ref = _plain_decode_sized(path)
    plain, times = [v for v, _ in ref], [t for _, t in ref]
    assert plain == list(range(n))  # the truth: every frame decodes, in order
    if fps is not None:
        assert all(abs(t - times[0] - Fraction(k, fps)) <= Fraction(1, 1000) for k, t in enumerate(times))
    else:
        assert [round((t - times[0]) * 1000) for t in times] == VFR_TIMES[:n]
    if name in DECORD_REFUSES and decoder == "decord":
        from videopoet.pipeline.media import MediaError

        with pytest.raises(MediaError, match="decord failed"):
            _decode_more(path, decoder)
        return
    clips = _decode_more(path, decoder)
    # span (2.75, 3] s: windows at 0, 0.25, 0.5, 0.75 s, each ending at o + 2 s inside the video
    assert len(clips) == 4, [c.notes for c in clips[:1]]
    assert [c.start_time_s for c in clips] == [0.0, 0.25, 0.5, 0.75]
    for c in clips:
        # the span is the last frame's time + its duration; FLV stores neither a duration nor better
        # than ms, and decord ends the last frame at its own guess: within one frame
        # (VFR: the last frame's duration is not stored; the median of the last gaps stands in)
        tol = 1 / fps if (fps and decoder == "decord") else (0.002 if fps else 0.1)
        assert abs(c.source_duration_s - duration) <= tol, (c.source_duration_s, duration)
        if fps is not None:
            assert abs(c.source_fps - fps) < 0.01, c.source_fps  # DV: not its 1/60000 time base's 60000
        assert (c.source_width, c.source_height) == (kw["w"], kw["h"])
        assert _clip_counters_sized(c) == _expected(times, plain, c.start_time_s, 17), (c.window_index, c.notes)
        if audio_codec is None:
            assert c.audio is None
        else:
            assert c.audio is not None and c.audio.shape == (34000,)
            assert not any("not decodable" in x or "corrupt" in x for x in c.notes), c.notes
    if audio_codec is not None:
        with av.open(str(path)) as cont:
            assert cont.streams.audio[0].codec_context.name == audio_codec
    if fps is None:  # VFR: output time t holds the frame whose [t_j, t_j+1) contains it, not round(t * fps)
        t_ms = [round(float(t - times[0]) * 1000) for t in times]
        for c in clips:
            for i, v in enumerate(_clip_counters_sized(c)):
                tau = round((c.start_time_s + i / 8) * 1000)
                assert t_ms[v] <= tau < (t_ms[v + 1] if v + 1 < len(t_ms) else 10**9), (tau, v)


def test_surround_51_downmix_is_bs775_normalised(more_media):
    """5.1 AAC, one tone per channel (0.3 each): the mono clip audio holds each tone at 0.3 x its
    channel's BS.775 weight, normalised to sum 1 (front L/R 1, centre and surrounds 1/sqrt(2), LFE 0)."""
    from videopoet.pipeline.media import AUDIO_RATE, downmix_weights

    path = more_media / "aac51.mp4"
    with av.open(str(path)) as c:
        names = [ch.name for ch in c.streams.audio[0].codec_context.layout.channels]
    assert names == ["FL", "FR", "FC", "LFE", "BL", "BR"]
    r = np.sqrt(0.5)
    want = np.array([1, 1, r, 0, r, r]) / (2 + 3 * r)
    assert np.allclose(downmix_weights(names), want, atol=1e-6)
    clip = _decode_more(path, "pyav")[1]  # 0.25 s in: away from the encoder's start
    x = clip.audio.astype(np.float64) / 32767.0
    t = np.arange(len(x)) / AUDIO_RATE
    basis = np.concatenate([[np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)] for f in SURROUND_FREQS]).T
    coef = np.linalg.lstsq(basis, x, rcond=None)[0].reshape(-1, 2)
    amp = np.hypot(coef[:, 0], coef[:, 1])  # per channel's tone
    assert np.allclose(amp, 0.3 * want, atol=0.004), (amp / 0.3, want)
    assert np.abs(x).max() < 0.3  # normalised: six 0.3 tones never sum past 0.3 (no gain, no clipping)
