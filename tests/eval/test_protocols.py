"""Evaluation protocols: stand-ins in the real layouts list, decode and condition as each protocol promises."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from videopoet.config import UsageError
from videopoet.eval import datasets as D
from videopoet.eval.protocols import (
    PROTOCOLS,
    Protocol,
    condition_of,
    decode_real,
    get_protocol,
    list_examples,
    list_real,
    load_example,
    make_standin,
)

PAPER = Path("/work/shared/paper/videopoet.txt")
SMALL = dict(num_samples=3, repeats=2, real_samples=2)


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("standins")
    return {name: make_standin(name, base / name, 4, seed=1) for name in PROTOCOLS}


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_standin_lists_and_loads_as_promised(name, standins):
    p = get_protocol(name).with_overrides(**SMALL)
    refs = list_examples(p, standins[name])
    assert refs == list_examples(p, standins[name])  # deterministic
    assert [r.index for r in refs] == list(range(len(refs)))
    assert list_examples(p, standins[name], limit=2) == refs[:2]
    if p.dataset == "msrvtt":  # every test caption (4 videos x 2), the train video's captions skipped
        assert len(refs) == 8 and all(not r.key.startswith("video0/") for r in refs)
    elif p.dataset == "davis":
        assert len(refs) == p.num_samples * p.repeats
    else:
        assert len(refs) == p.num_samples * p.repeats
    w, h = p.size
    ex = load_example(p, refs[0])
    assert ex.ref == refs[0]
    if p.task == "t2v":
        assert ex.real is None and ex.condition is None and refs[0].caption
        reals = list_real(p, standins[name])
        assert len(reals) == p.real_samples and reals == list_real(p, standins[name])
        clip = decode_real(p, reals[0])
        assert clip.shape == (p.frames, h, w, 3) and clip.dtype == np.uint8
        return
    assert ex.real.shape == (p.frames, h, w, 3) and ex.real.dtype == np.uint8
    assert ex.condition.dtype == np.uint8
    if name == "k600_fp":
        assert ex.condition.shape == (5, h, w, 3)
        np.testing.assert_array_equal(ex.condition, ex.real[:5])
    else:  # the LM's clip length (17) at its size; the metric clip is the first 16 frames of the same window
        gw, gh = p.generate_size
        assert ex.condition.shape == (p.generate_frames, gh, gw, 3)
        if name == "davis_style":
            assert p.size != p.generate_size
        else:
            assert ex.condition.shape[1:] == ex.real.shape[1:]
            kept = np.s_[:, :8, :8] if name == "ssv2_inpaint" else np.s_[:, 40:80, 40:80]  # a region not masked
            np.testing.assert_array_equal(ex.condition[: p.frames][kept], ex.real[kept])
    assert list_real(p, standins[name]) == refs  # paired protocols: the real set is the examples' own clips


def test_repeats_cover_small_splits_and_subsample_large_ones(standins):
    p = get_protocol("ssv2_inpaint").with_overrides(num_samples=6, repeats=2)
    keys = [r.key for r in list_examples(p, standins["ssv2_inpaint"])]
    assert len(keys) == 12
    for group in (keys[:6], keys[6:]):  # 6 > 4 videos: each repeat holds all 4, then 2 seeded draws
        assert set(group) == {"1000", "1001", "1002", "1003"} and group[:4] == ["1000", "1001", "1002", "1003"]
    sub = [r.key for r in list_examples(p.with_overrides(num_samples=2, repeats=1), standins["ssv2_inpaint"])]
    assert len(set(sub)) == 2 and sub == sorted(sub)  # a subset without replacement, in dataset order
    other = [r.key for r in list_examples(p.with_overrides(num_samples=2, repeats=1, seed=5), standins["ssv2_inpaint"])]
    assert len(set(other)) == 2


def test_k600_skips_videos_missing_from_the_copy(standins):
    p = get_protocol("k600_fp").with_overrides(num_samples=10, repeats=1)
    keys = {r.key for r in list_examples(p, standins["k600_fp"])}
    assert len(keys) == 4  # the csv has 5 rows; the stand-in omits the last row's video


def test_ucf_labels_and_prompts(standins):
    p = get_protocol("ucf101_t2v").with_overrides(num_samples=4, repeats=1)
    classes = D.ucf_classes()
    prompts = D.ucf_prompts()
    for ref in list_examples(p, standins["ucf101_t2v"]):
        name = ref.key.split("_")[1]
        assert classes[ref.label] == name and ref.caption == prompts[name]
    assert len(classes) == 101 and prompts["ApplyEyeMakeup"] == "a video of apply eye makeup"


def _marker_video(path: Path, n: int, fps: int, step: int) -> None:
    """Frame t is a flat grey of value step * t (so decoded values tell which source frame was picked)."""
    frames = np.stack([np.full((48, 64, 3), step * t, dtype=np.uint8) for t in range(n)])
    D.write_video(path, frames, fps)


def test_central_native_pick_takes_the_middle_frames(tmp_path):
    _marker_video(tmp_path / "a.mp4", 40, 30, 6)
    p = get_protocol("msrvtt_t2v")
    from videopoet.eval.protocols import ExampleRef

    clip = decode_real(p, ExampleRef(0, "a", str(tmp_path / "a.mp4"), ""))
    assert clip.shape == (16, 256, 256, 3)
    got = clip.reshape(16, -1).mean(1)
    np.testing.assert_allclose(got, 6 * np.arange(12, 28), atol=3)  # (40 - 16) // 2 = 12


def test_8fps_pick_takes_every_third_frame_at_24fps(tmp_path):
    _marker_video(tmp_path / "b.mp4", 48, 24, 5)
    from videopoet.eval.protocols import ExampleRef

    clip = decode_real(get_protocol("k600_fp"), ExampleRef(0, "b", str(tmp_path / "b.mp4"), ""))
    assert clip.shape == (16, 128, 128, 3)
    np.testing.assert_allclose(clip.reshape(16, -1).mean(1), 5 * 3 * np.arange(16), atol=3)


def test_davis_reads_16_consecutive_frames_from_the_table_start(standins):
    from PIL import Image

    from videopoet.pipeline.media import resize_crop

    p = get_protocol("davis_style")
    refs = list_examples(p, standins["davis_style"])
    bear = next(r for r in refs if r.key.startswith("bear/"))
    assert bear.start_frame == 60
    clip = load_example(p, bear).real
    folder = Path(bear.path)
    want = np.stack([resize_crop(np.asarray(Image.open(folder / f"{t:05d}.jpg").convert("RGB")), 256, 256)
                     for t in range(60, 76)])
    np.testing.assert_array_equal(clip, want)


def test_inpaint_and_outpaint_conditions_mask_the_right_region():
    rng = np.random.default_rng(0)
    real = rng.integers(1, 255, size=(16, 128, 128, 3), dtype=np.uint8)
    inpaint = condition_of(get_protocol("ssv2_inpaint"), real)
    box = (slice(None), slice(32, 96), slice(32, 96))
    assert (inpaint[box] == 0).all()
    outside = np.ones((128, 128), bool)
    outside[32:96, 32:96] = False
    np.testing.assert_array_equal(inpaint[:, outside], real[:, outside])
    outpaint = condition_of(get_protocol("ssv2_outpaint"), real)
    np.testing.assert_array_equal(outpaint[box], real[box])
    np.testing.assert_array_equal(outpaint[:, 0, 0], real[:, 32, 32])  # corners replicate the box's corners
    np.testing.assert_array_equal(outpaint[:, 10, 50], real[:, 32, 50])  # above the box: its top row
    np.testing.assert_array_equal(outpaint[:, 50, 127], real[:, 50, 95])  # right of it: its right column


def test_conditions_match_commit_encoding():
    torch = pytest.importorskip("torch")
    from videopoet.tokenizers.commit import condition_video

    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, size=(16, 64, 96, 3), dtype=np.uint8)
    video = torch.from_numpy(real).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    for name, task in (("ssv2_inpaint", "inpaint"), ("ssv2_outpaint", "outpaint")):
        ours = condition_of(get_protocol(name), real)
        theirs = ((condition_video(video, task)[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255)
        np.testing.assert_array_equal(ours, theirs.to(torch.uint8).numpy())


def test_record_holds_every_field_and_changes_with_each():
    p = get_protocol("k600_fp")
    rec = p.record()
    fields = [f.name for f in dataclasses.fields(Protocol)]
    assert set(fields) <= set(rec) and rec["protocol_version"] >= 1
    json.dumps(rec)  # JSON-ready
    changes = {"name": "x", "task": "fp1", "dataset": "ssv2", "split": "val", "num_samples": 8, "repeats": 1,
               "frames": 17, "fps": 24, "size": (64, 64), "crop": "none", "metrics": ("fvd", "is"),
               "condition_frames": 1, "mask": "centre", "real_set": "other", "seed": 3, "generate": -1,
               "generate_size": (64, 64), "generate_frames": 21, "real_split": "train", "real_samples": 5,
               "real_pick": "consecutive"}
    assert set(changes) == set(fields)
    for key, value in changes.items():
        changed = p.with_overrides(**{key: value})
        assert changed.record() != rec, key
    assert p.record(i3d_sha256="ab")["i3d_sha256"] == "ab"
    assert p.with_overrides(num_samples=8).record()["num_samples"] == 8


def test_usage_errors_are_one_line_and_name_the_input(tmp_path, standins):
    with pytest.raises(UsageError, match="allowed msrvtt_t2v") as err:
        get_protocol("msrvtt")
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="unknown field"):
        get_protocol("k600_fp").with_overrides(n=3)
    cases = {
        "msrvtt_t2v": "MSRVTT_data.json", "ucf101_t2v": "classInd.txt", "k600_fp": "test.csv",
        "ssv2_inpaint": D.SSV2_LABELS, "davis_style": "480p",
    }
    for name, missing in cases.items():
        root = tmp_path / name
        root.mkdir()
        with pytest.raises(UsageError, match=missing) as err:
            list_examples(get_protocol(name), root)
        assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="not a directory"):
        list_examples(get_protocol("k600_fp"), tmp_path / "nowhere")
    # a real root missing one split list
    (standins["ucf101_t2v"] / "ucfTrainTestlist" / "trainlist01.txt").rename(tmp_path / "moved.txt")
    try:
        with pytest.raises(UsageError, match="trainlist01.txt"):
            list_real(get_protocol("ucf101_t2v"), standins["ucf101_t2v"])
    finally:
        (tmp_path / "moved.txt").rename(standins["ucf101_t2v"] / "ucfTrainTestlist" / "trainlist01.txt")


def test_davis_table5_has_40_rows_20_videos_two_prompts_each():
    rows = D.davis_table()
    assert len(rows) == 40
    videos = [v for v, _, _ in rows]
    assert len(set(videos)) == 20 and all(videos.count(v) == 2 for v in set(videos))
    for v in set(videos):
        starts = {s for vv, s, _ in rows if vv == v}
        assert len(starts) == 1  # one start frame per video
    if not PAPER.exists():
        pytest.skip(f"{PAPER} not here: the comparison with the paper's text is skipped")
    lines = PAPER.read_text(encoding="utf-8").splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("video name\tstarting frame"))
    last = next(i for i, ln in enumerate(lines) if i > first and ln.startswith("Table 5."))
    paper = [tuple(ln.split("\t")) for ln in lines[first + 1:last] if ln.strip()]
    assert [(v.lower(), int(s), p.strip()) for v, s, p in paper] == rows


def test_data_files_are_package_data():
    import fnmatch
    import tomllib

    patterns = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["videopoet.eval"]
    files = sorted(p.name for p in D.DATA_DIR.iterdir() if p.is_file())
    assert "davis_table5.tsv" in files and "ucf101_prompts.tsv" in files
    for name in files:
        assert any(fnmatch.fnmatch(f"data/{name}", pat) for pat in patterns), name
