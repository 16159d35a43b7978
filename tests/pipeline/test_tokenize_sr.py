"""The SR data path: ingest's high-resolution formats (size, same frame pick, antialiasing, no change
to the LM formats' clips) and `videopoet tokenize --mode sr` (HR tokens, LR tokens of the bicubic 2x
downsample, the LM mode's text embeddings; skips with reasons; local == Ray; train-sr reads them).

Inputs are generated videos (H.264 at crf 0, so a 1-pixel checkerboard survives the encoder) and a
tiny random-weight video tokenizer (spatial factor 8, as MAGVIT-v2)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videopoet.cli import main
from videopoet.pipeline import manifest as mf
from videopoet.pipeline.clip_shards import Clip, iter_clips, write_clip_shard
from videopoet.pipeline.ingest import INGEST_RECIPES, run_ingest
from videopoet.pipeline.media.writer import write_mp4
from videopoet.pipeline.sr_downsample import downsample_2x
from videopoet.pipeline.sr_shards import SR_FORMAT_VERSION, list_sr_shards, read_sr_shard
from videopoet.pipeline.token_shards import iter_token_rows
from videopoet.pipeline.tokenize import TOKENIZE_RECIPES, read_manifest, run_tokenize
from videopoet.tokenizers.magvit2 import VideoTokenizer, video_to_tensor
from videopoet.tokenizers.soundstream import AudioTokenizer

pytestmark = [pytest.mark.timeout(400), pytest.mark.usefixtures("one_torch_thread")]

VIDEO_TINY = ["channels=4", "norm_groups=2"]
CAPTION = "a bright square slides over a checkerboard"
CHECKER = (slice(40, 560), slice(40, 280))  # rows, columns of the 600x600 source holding a 1-px checkerboard


def _video(size: int, frames: int, seed: int) -> np.ndarray:
    """A smooth gradient with a moving bright square; for size 600, a 1-pixel checkerboard on the left half."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, rng.integers(0, 255))], -1).astype(np.uint8)
    out = np.repeat(base[None], frames, 0)
    for t in range(frames):
        x0 = (size // 2 + 7 * t) % (size - size // 5)
        out[t, size // 3: size // 3 + size // 5, x0: x0 + size // 5] = (250, 240, 30)
    if size == 600:
        checker = ((yy + xx) % 2 * 255).astype(np.uint8)[CHECKER]
        out[:, CHECKER[0], CHECKER[1]] = checker[None, :, :, None]
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr_src")
    videos = {"big.mp4": (600, CAPTION), "small.mp4": (200, "a yellow square on a gradient"), "nocap.mp4": (160, "")}
    for i, (name, (size, _)) in enumerate(videos.items()):
        write_mp4(root / name, _video(size, 24, seed=i), fps=8, crf=0)
    listing = root / "inputs.jsonl"
    listing.write_text("".join(json.dumps({"path": str(root / n), "caption": c, "id": n}) + "\n"
                               for n, (_, c) in videos.items()))
    return listing


def _ingest(listing, out, formats):
    run_ingest(INGEST_RECIPES.get("tiny", [
        f"input={listing}", f"output={out}", "engine=local", "media.clips_per_video=1", "media.clip_frames=[17]",
        "media.flow=dis", "media.depth=none", f"media.formats=[{','.join(formats)}]", "progress=false",
        "track=false"]))
    return {(c.meta["source_id"], c.meta["format"]): c for c in iter_clips(out / mf.SHARDS_DIR)}


@pytest.fixture(scope="module")
def ingested(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("sr_clips")
    return out, _ingest(sources, out, ["square", "square_2x"])


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr_ckpts")
    torch.manual_seed(0)
    VideoTokenizer.from_recipe("tiny", VIDEO_TINY).save(root / "video")
    AudioTokenizer.from_recipe("tiny", ["channels=2", "latent_dim=16", "kmeans_iters=1"]).save(root / "audio")
    return root


@pytest.fixture(scope="module")
def sr_input(ingested, tmp_path_factory):
    """The ingest's shards plus one hand-made shard: a 41-frame square_2x clip (skipped: OtherLength)
    and a 'square_2x' clip of the wrong size (failed: BadSize)."""
    out, _ = ingested
    root = tmp_path_factory.mktemp("sr_input")
    for p in sorted((out / mf.SHARDS_DIR).glob("*.tar")):
        (root / p.name).write_bytes(p.read_bytes())
    rng = np.random.default_rng(5)
    meta = {"caption": "x", "format": "square_2x"}
    write_clip_shard(root / "zz-extra.tar", [
        Clip("long41", rng.integers(0, 256, (41, 256, 256, 3), dtype=np.uint8), dict(meta)),
        Clip("wrongsize", rng.integers(0, 256, (17, 128, 128, 3), dtype=np.uint8), dict(meta)),
    ])
    return root


@pytest.fixture(scope="module")
def sr_local(sr_input, ckpts, tmp_path_factory):
    out = tmp_path_factory.mktemp("sr_tokens")
    rc = main(["tokenize", "--config", "tiny", "--mode", "sr", "--sr-format", "square_2x", "--input", str(sr_input),
               "--output", str(out), "--video-tokenizer", str(ckpts / "video"), "--engine", "local",
               "--no-progress", "--no-track", "torch_threads=1"])
    assert rc == 0
    return out


# -- ingest ---------------------------------------------------------------------------------------


def test_hr_format_size_frame_pick_and_no_conditions(ingested):
    _, clips = ingested
    assert set(clips) == {(s, f) for s in ("big.mp4", "small.mp4", "nocap.mp4") for f in ("square", "square_2x")}
    for source in ("big.mp4", "small.mp4", "nocap.mp4"):
        base, hr = clips[(source, "square")], clips[(source, "square_2x")]
        assert hr.rgb.shape == (17, 256, 256, 3) and (hr.meta["width"], hr.meta["height"]) == (256, 256)
        assert base.rgb.shape == (17, 128, 128, 3)
        # the same window and the same source frames as the base format
        for k in ("source_frame_indices", "start_time_s", "window_index", "num_frames"):
            assert hr.meta[k] == base.meta[k], k
        # flow/depth are the LM's stylization condition: computed for the base format only
        assert base.cond is not None and hr.cond is None and hr.meta["flow"] == "none"
    # a shrunk HR frame looks like the base frame (same crop, same content)
    hr_small = downsample_2x(clips[("big.mp4", "square_2x")].rgb).astype(int)
    assert np.abs(hr_small - clips[("big.mp4", "square")].rgb).mean() < 6


def test_portrait_cascade_formats(sources, tmp_path):
    """portrait (128x224) -> portrait_2x (256x448) -> portrait_4x (512x896), width x height: one window,
    the same source frames, and each stage's 2x downsample looks like the format below it."""
    listing = tmp_path / "big.jsonl"
    listing.write_text(sources.read_text().splitlines()[0] + "\n")
    clips = _ingest(listing, tmp_path / "clips", ["portrait", "portrait_2x", "portrait_4x"])
    sizes = {fmt: clips[("big.mp4", fmt)].rgb.shape for fmt in ("portrait", "portrait_2x", "portrait_4x")}
    assert sizes == {"portrait": (17, 224, 128, 3), "portrait_2x": (17, 448, 256, 3), "portrait_4x": (17, 896, 512, 3)}
    picks = {tuple(c.meta["source_frame_indices"]) for c in clips.values()}
    assert len(picks) == 1
    for hr, lr in (("portrait_4x", "portrait_2x"), ("portrait_2x", "portrait")):
        diff = np.abs(downsample_2x(clips[("big.mp4", hr)].rgb).astype(int) - clips[("big.mp4", lr)].rgb)
        # the median: 896x512 enlarges the 600 px source (bicubic), which rings on the 1-px checkerboard
        assert np.median(diff) <= 3 and diff.mean() < 12, (hr, lr, np.median(diff), diff.mean())


def test_hr_formats_are_antialiased(ingested):
    """The 1-px checkerboard (600 px source -> 256 and 128) averages to flat grey; point sampling the
    same source frame at the same positions gives full-contrast stripes (what aliasing would look like)."""
    _, clips = ingested
    frame = _video(600, 1, 0)[0, :, :, 0].astype(float)
    for fmt, size in (("square_2x", 256), ("square", 128)):
        rgb = clips[("big.mp4", fmt)].rgb[0, :, :, 0].astype(float)
        # output pixels whose source footprint lies well inside the checkerboard
        scale = 600 / size
        rows = [i for i in range(size) if 60 <= (i + 0.5) * scale <= 540]
        cols = [j for j in range(size) if 60 <= (j + 0.5) * scale <= 260]
        patch = rgb[np.ix_(rows, cols)]
        assert abs(patch.mean() - 127.5) < 12 and patch.std() < 10, (fmt, patch.mean(), patch.std())
        nearest = frame[np.ix_([int((i + 0.5) * scale) for i in rows], [int((j + 0.5) * scale) for j in cols])]
        assert nearest.std() > 100  # the test can fail: without a low-pass the pattern aliases


def test_lm_format_clips_unchanged_by_hr_formats(sources, ingested, tmp_path):
    _, with_hr = ingested
    alone = _ingest(sources, tmp_path / "clips", ["square"])
    assert set(alone) == {(s, "square") for s in ("big.mp4", "small.mp4", "nocap.mp4")}
    for key, clip in alone.items():
        other = with_hr[key]
        assert np.array_equal(clip.rgb, other.rgb) and np.array_equal(clip.cond, other.cond)
        assert np.array_equal(clip.audio, other.audio) if clip.audio is not None else other.audio is None


# -- tokenize --mode sr ---------------------------------------------------------------------------


def test_sr_rows_skips_and_summary(sr_local, ckpts):
    out = sr_local
    status = {r["key"]: r for r in read_manifest(out / mf.MERGED_FILE).to_pylist()}
    summary = json.loads((out / mf.SUMMARY_FILE).read_text())
    by_status = {}
    for r in status.values():
        by_status.setdefault((r["status"], r["error_class"]), []).append(r["key"])
    assert len(by_status[("ok", None)]) == 2  # big and small: captioned square_2x clips
    assert len(by_status[("skipped", "OtherFormat")]) == 3  # the square clips
    assert len(by_status[("skipped", "NoCaption")]) == 1
    assert by_status[("skipped", "OtherLength")] == ["long41"] and by_status[("failed", "BadSize")] == ["wrongsize"]
    assert "wrongsize" in status["wrongsize"]["message"] and "128x128" in status["wrongsize"]["message"]
    assert (summary["clips_ok"], summary["clips_skipped"], summary["clips_failed"]) == (2, 5, 1)
    assert summary["skips_by_reason"] == {"NoCaption": 1, "OtherFormat": 3, "OtherLength": 1}
    assert summary["mode"] == "sr" and summary["hr_grids"] == [[5, 32, 32]]
    assert summary["audio_tokenizer_hash"] == ""
    shards = list_sr_shards(out)
    assert len(shards) == 1  # only the units with kept clips write a shard
    rows, info = read_sr_shard(shards[0])
    assert (info.hr_grid, info.lr_grid, info.text_dim) == ((5, 32, 32), (5, 16, 16), 384)
    assert (info.hr_format, info.stage) == ("square_2x", 1)
    assert info.video_tokenizer_hash == summary["video_tokenizer_hash"] and SR_FORMAT_VERSION == 2
    assert {r["key"] for r in rows} == set(by_status[("ok", None)])


def test_sr_tokens_are_the_hr_clip_and_its_bicubic_downsample(sr_local, ingested, ckpts):
    _, clips = ingested
    by_key = {c.key: c for c in clips.values()}
    vt = VideoTokenizer.load(ckpts / "video", device="cpu").eval()
    rows, _ = read_sr_shard(list_sr_shards(sr_local)[0])
    for row in rows:
        hr = by_key[row["key"]].rgb
        # my own downsample: bicubic, antialiased, on the float frames, rounded back to uint8
        x = torch.from_numpy(hr).permute(0, 3, 1, 2).float()
        lr = F.interpolate(x, scale_factor=0.5, mode="bicubic", antialias=True).round().clamp(0, 255)
        lr = lr.to(torch.uint8).permute(0, 2, 3, 1).numpy()
        assert lr.shape == (17, 128, 128, 3) and np.array_equal(lr, downsample_2x(hr))
        with torch.no_grad():
            want_hr = vt.encode(video_to_tensor(hr)[None]).reshape(-1).numpy()
            want_lr = vt.encode(video_to_tensor(lr)[None]).reshape(-1).numpy()
        assert np.array_equal(row["hr_tokens"], want_hr) and np.array_equal(row["lr_tokens"], want_lr)
        assert row["hr_tokens"].size == 5 * 32 * 32 and row["lr_tokens"].size == 5 * 16 * 16


def test_downsample_matches_pil_bicubic():
    """An independent check of the filter: PIL's bicubic shrink is antialiased (the kernel widens
    with the factor); torch's antialias=True follows it to within rounding."""
    from PIL import Image

    rng = np.random.default_rng(0)
    frame = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
    frame[:, :48] = ((np.add.outer(np.arange(64), np.arange(48)) % 2) * 255)[:, :, None]
    ours = downsample_2x(frame[None])[0].astype(int)
    pil = np.asarray(Image.fromarray(frame).resize((48, 32), Image.BICUBIC)).astype(int)
    assert np.abs(ours - pil).max() <= 2
    assert np.abs(ours[2:-2, 2:21] - 127.5).max() < 3  # the checkerboard (inside) becomes grey, not stripes


def test_lm_mode_skips_hr_clips_and_shares_text_embeddings(ingested, sr_local, ckpts, tmp_path):
    out, _ = ingested
    summary = run_tokenize(TOKENIZE_RECIPES.get("tiny", [
        f"input={out}", f"output={tmp_path / 'lm'}", "engine=local", f"video_tokenizer={ckpts / 'video'}",
        f"audio_tokenizer={ckpts / 'audio'}", "progress=false", "track=false", "torch_threads=1"]))
    assert (summary["clips_ok"], summary["clips_skipped"], summary["clips_failed"]) == (3, 3, 0)
    assert summary["skips_by_reason"] == {"SRFormat": 3}
    lm = {r["caption"]: r for r in iter_token_rows(tmp_path / "lm" / mf.SHARDS_DIR)}
    assert {r["video_format"] for r in lm.values()} == {"square"}
    rows, _ = read_sr_shard(list_sr_shards(sr_local)[0])
    clips = {c.key: c for c in ingested[1].values()}
    for row in rows:
        ref = lm[clips[row["key"]].meta["caption"]]
        assert np.array_equal(row["text_mask"], ref["text_mask"])
        assert np.array_equal(row["text_emb"], np.asarray(ref["text_emb"], dtype=np.float32))
    # mode sr without a format, or a format that is not an SR format: one clear error
    from videopoet.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match="sr_format"):
        TOKENIZE_RECIPES.get("tiny", ["mode=sr", "sr_format=square"]).validate()


def test_rerun_changes_nothing_and_modes_never_mix(sr_input, sr_local, ckpts, output_digests):
    from videopoet.config import ConfigError

    before = output_digests(sr_local, ("stats",))
    base = [f"input={sr_input}", f"output={sr_local}", "engine=local", f"video_tokenizer={ckpts / 'video'}",
            "progress=false", "track=false", "torch_threads=1"]
    again = run_tokenize(TOKENIZE_RECIPES.get("tiny", base + ["mode=sr", "sr_format=square_2x"]))
    assert again["units_this_run"] == 0 and again["clips_ok"] == 2
    assert output_digests(sr_local, ("stats",)) == before
    # the LM mode, or another HR format, into this output: refused by the plan (other content settings)
    for extra, why in ((["mode=lm", f"audio_tokenizer={ckpts / 'audio'}"], "holds SR token shards"),
                       (["mode=sr", "sr_format=portrait_2x"], "content_config_hash")):
        with pytest.raises(ConfigError, match=why):
            run_tokenize(TOKENIZE_RECIPES.get("tiny", base + extra))
    assert output_digests(sr_local, ("stats",)) == before


def test_ray_engine_writes_the_same_bytes(sr_input, sr_local, ckpts, output_digests, ray_local, tmp_path):
    summary = run_tokenize(TOKENIZE_RECIPES.get("tiny", [
        f"input={sr_input}", f"output={tmp_path / 'ray'}", "engine=ray", f"video_tokenizer={ckpts / 'video'}",
        "mode=sr", "sr_format=square_2x", "progress=false", "track=false", "torch_threads=1"]))
    assert summary["clips_ok"] == 2
    assert output_digests(tmp_path / "ray", ("stats",)) == output_digests(sr_local, ("stats",))


def test_train_sr_consumes_the_shards(sr_local, tmp_path, monkeypatch):
    """`videopoet train-sr` (the tiny recipe with the square_2x grid) trains two steps on the shards."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rc = main(["train-sr", "--stage", "1", "--config", "tiny", "--data", str(sr_local), "--out", str(tmp_path / "run"),
               "model.hr_grid=[5,32,32]", "model.windows=[[1,32,4],[1,4,32],[5,4,4]]", "steps=2",
               "data.batch_size=2", "data.eval_examples=1", "eval_every=2", "save_every=2", "optim.warmup_steps=1"])
    assert rc == 0
    losses = [json.loads(line) for line in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses] == [1, 2] and all(np.isfinite(r["loss"]) for r in losses)
