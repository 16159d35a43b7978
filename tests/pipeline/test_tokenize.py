"""The tokenize job: token shapes at the production sizes and lengths, decode(encode) sanity on the
tiny checkpoints, Beam == Ray == local byte for byte, kill -9 + rerun == uninterrupted, failure rows
for corrupt clips, and refusal of other tokenizer checkpoints in an existing output.

Tiny tokenizers with random weights are saved by the tests; clip shards are written from generated
arrays (32x32 frames with any_size=true for the engine tests: same code paths, 16x fewer pixels)."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from videopoet.pipeline import manifest as mf
from videopoet.pipeline.clip_shards import Clip, clip_members, write_clip_shard, write_tar_atomic
from videopoet.pipeline.token_shards import iter_token_rows, read_token_shard
from videopoet.pipeline.tokenize import (
    REFUSALS_FILE,
    TOKENIZE_RECIPES,
    TokenizerMismatch,
    read_manifest,
    run_tokenize,
)

pytestmark = pytest.mark.timeout(400)

VIDEO_TINY = ["channels=4", "norm_groups=2"]
AUDIO_TINY = ["channels=2", "latent_dim=16", "kmeans_iters=1"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    import torch

    from videopoet.tokenizers.magvit2 import VideoTokenizer
    from videopoet.tokenizers.soundstream import AudioTokenizer

    root = tmp_path_factory.mktemp("tok_ckpts")
    torch.manual_seed(0)
    VideoTokenizer.from_recipe("tiny", VIDEO_TINY).save(root / "video")
    torch.manual_seed(1)
    VideoTokenizer.from_recipe("tiny", VIDEO_TINY).save(root / "video_other")
    AudioTokenizer.from_recipe("tiny", AUDIO_TINY).save(root / "audio")
    return root


def _clip(rng, key, frames, h, w, *, audio=True, cond=True, caption="a red ball rolls"):
    return Clip(
        key=key, rgb=rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8),
        audio=rng.integers(-8000, 8000, frames * 2000, dtype=np.int16) if audio and frames > 1 else None,
        cond=rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8) if cond and frames > 1 else None,
        meta={"caption": caption, "source_uri": f"gen://{key}"},
    )


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


# Expected failures of the engine-test input: key -> (stage, error_class)
BAD = {
    "s1_len16": ("check", "BadLength"),
    "s1_audio": ("check", "AudioLength"),
    "s1_cond": ("check", "BadArray"),
    "s2_garbage": ("read", "BadMember"),
    "s2_pickle": ("read", "BadMember"),
    "s2_norgb": ("read", "MissingMember"),
    "s2_dup": ("read", "DuplicateMember"),
    "s3_cut": ("read", "DamagedShard"),
}


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory):
    """Four small shards: good clips of every kind, corrupt clips, bad members, a truncated tar."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("tok_clips")
    write_clip_shard(root / "shard-0.tar", [
        _clip(rng, "s0_full", 17, 32, 32), _clip(rng, "s0_nocap", 17, 32, 32, caption=""),
        _clip(rng, "s0_image", 1, 32, 32), _clip(rng, "s0_portrait", 17, 56, 32, cond=False),
    ])
    members = clip_members(_clip(rng, "s1_ok", 17, 32, 32, audio=False))
    members += clip_members(Clip("s1_len16", rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), {"caption": "x"}))
    members += [("s1_audio.rgb.npy", _npy(rng.integers(0, 256, (17, 32, 32, 3), dtype=np.uint8))),
                ("s1_audio.audio.npy", _npy(np.zeros(1000, np.int16))), ("s1_audio.json", b'{"caption": "y"}')]
    members += [("s1_cond.rgb.npy", _npy(rng.integers(0, 256, (17, 32, 32, 3), dtype=np.uint8))),
                ("s1_cond.cond.npy", _npy(np.zeros((17, 16, 16, 3), np.uint8))), ("s1_cond.json", b"{}")]
    write_tar_atomic(root / "shard-1.tar", members)
    members = [("s2_garbage.rgb.npy", b"not an npy file"), ("s2_garbage.json", b"{}"),
               ("s2_pickle.rgb.npy", _npy(np.array([{"a": 1}], dtype=object))), ("s2_pickle.json", b"{}"),
               ("s2_norgb.json", b'{"caption": "z"}')]
    dup = _npy(rng.integers(0, 256, (17, 32, 32, 3), dtype=np.uint8))
    members += [("s2_dup.rgb.npy", dup), ("s2_dup.json", b"{}"), ("s2_dup.rgb.npy", dup)]
    members += clip_members(_clip(rng, "s2_ok", 41, 32, 32))
    write_tar_atomic(root / "shard-2.tar", members)
    path = root / "shard-3.tar"
    write_clip_shard(path, [_clip(rng, "s3_ok", 17, 32, 32), _clip(rng, "s3_cut", 17, 32, 32)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 30_000])  # cuts into the second clip's arrays
    return root


# Pinned: MAGVIT's float results (and so its tokens) depend on the intra-op thread count, and the
# kill-and-rerun test compares a fresh subprocess with this process, whose count other test modules
# may have changed.
TORCH_THREADS = "torch_threads=2"


def _cfg(ckpts, inp, out, engine, extra=()):
    return TOKENIZE_RECIPES.get("tiny", [
        f"input={inp}", f"output={out}", f"engine={engine}", f"video_tokenizer={ckpts / 'video'}",
        f"audio_tokenizer={ckpts / 'audio'}", "any_size=true", "progress=false", "track=false", TORCH_THREADS, *extra])


STATS = ("stats",)  # tokenize also writes per-unit statistics, which every engine must reproduce


@pytest.fixture(scope="module")
def reference(ckpts, clips_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok_local")
    return out, run_tokenize(_cfg(ckpts, clips_dir, out, "local"))


def test_every_clip_has_a_row_with_the_right_status(reference):
    out, summary = reference
    rows = read_manifest(out / mf.MERGED_FILE).to_pylist()
    status = {r["key"]: r for r in rows}
    ok = {"s0_full", "s0_nocap", "s0_image", "s0_portrait", "s1_ok", "s2_ok", "s3_ok"}
    assert set(status) == ok | set(BAD)
    for key in ok:
        assert status[key]["status"] == "ok", status[key]
    for key, (stage, cls) in BAD.items():
        r = status[key]
        assert (r["status"], r["stage"], r["error_class"]) == ("failed", stage, cls), r
        assert key in r["message"] and r["input_shard"] in r["message"]
    assert summary["clips_ok"] == len(ok) and summary["clips_failed"] == len(BAD)
    assert summary["failures_by_class"]["BadMember"] == 2 and summary["duplicate_keys"] == 0
    # token rows hold exactly the ok clips, each in the shard its manifest row names
    tokens = {r["key"]: r for r in iter_token_rows(out / mf.SHARDS_DIR)}
    assert set(tokens) == ok
    assert not list(out.rglob("*.tmp"))


def test_rows_follow_the_clip_contents(reference, ckpts):
    out, summary = reference
    rows = {r["key"]: r for r in iter_token_rows(out / mf.SHARDS_DIR)}
    full, nocap, image, portrait = rows["s0_full"], rows["s0_nocap"], rows["s0_image"], rows["s0_portrait"]
    assert (full["latent_t"], full["latent_h"], full["latent_w"]) == (5, 4, 4)
    assert (portrait["latent_t"], portrait["latent_h"], portrait["latent_w"]) == (5, 7, 4)
    assert portrait["video_format"] == "portrait" and full["video_format"] == "square"
    assert (rows["s2_ok"]["latent_t"], rows["s2_ok"]["audio_frames"]) == (11, 256)
    assert full["audio_frames"] == 106 and full["audio_tokens"].size == 4 * 106
    assert rows["s1_ok"]["audio_tokens"] is None and rows["s1_ok"]["audio_frames"] == 0
    assert full["style_tokens"] is not None and portrait["style_tokens"] is None
    assert full["text_emb"].shape == (64, 384) and full["text_mask"].sum() > 2 and nocap["text_emb"] is None
    assert image["video_tokens"].size == 16 and image["first_frame_tokens"] is None and image["fp1_tokens"] is None
    # hashes name the exact checkpoints
    meta = json.loads((ckpts / "video" / "meta.json").read_text())
    assert {r["video_tokenizer_hash"] for r in rows.values()} == {meta["content_hash"]}
    # len_<task>: what each clip can serve
    assert full["len_style"] > 0 and nocap["len_style"] == 0 and nocap["len_t2v"] == 0 and full["len_t2v"] > 0
    assert image["len_t2i"] > 0 and image["len_i2v"] == 0 and full["len_t2i"] == 0
    assert full["len_v2a"] > 0 and rows["s1_ok"]["len_v2a"] == 0
    # style: s0_full, s1_ok, s2_ok, s3_ok: cond + caption
    assert summary["samples_per_task"]["t2i"] == 1 and summary["samples_per_task"]["style"] == 4
    lengths = summary["samples_per_task_and_length"]["uncond"]
    assert sum(lengths.values()) == 6 and len(lengths) == 3  # 17x32x32, 17x56x32, 41x32x32
    assert summary["codebook_usage"]["video"]["tokens"] == sum(r["video_tokens"].size for r in rows.values())
    assert Path(summary["plots"][0]).stat().st_size > 1000


def test_causal_tokenizer_first_frame_and_fp1_agree_with_the_video(reference):
    """MAGVIT-v2 is causal: latent frame 0 sees frame 0 only, so the first-frame tokens and the fp1
    condition's first latent frame equal the video's first latent frame, while later fp1 frames
    (frame 0 repeated) differ from the video's."""
    rows = {r["key"]: r for r in iter_token_rows(reference[0] / mf.SHARDS_DIR)}
    for key in ("s0_full", "s0_portrait", "s2_ok"):
        r = rows[key]
        hw = r["latent_h"] * r["latent_w"]
        np.testing.assert_array_equal(r["first_frame_tokens"], r["video_tokens"][:hw])
        np.testing.assert_array_equal(r["fp1_tokens"][:hw], r["video_tokens"][:hw])
        assert not np.array_equal(r["fp1_tokens"][hw:], r["video_tokens"][hw:])


def test_rerun_skips_everything_and_changes_nothing(output_digests, reference, ckpts, clips_dir):
    out, _ = reference
    before = output_digests(out, STATS)
    summary = run_tokenize(_cfg(ckpts, clips_dir, out, "local"))
    assert summary["units_this_run"] == 0 and output_digests(out, STATS) == before


def test_summary_and_plots_are_logged_to_mlflow(reference, ckpts, clips_dir, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("VIDEOPOET_EXPERIMENT", "tokenize-test")
    summary = run_tokenize(_cfg(ckpts, clips_dir, reference[0], "local", ["track=true"]))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tokenize-test"], output_format="list")
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert metrics["clips_ok"] == summary["clips_ok"] == reference[1]["clips_ok"]
    assert metrics["samples_t2i"] == 1 and metrics["video_codes_used"] == summary["codebook_usage"]["video"]["used"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id, "summary")}
    assert artifacts == {"summary/codebook_usage.png", "summary/task_lengths.png"}


def test_other_tokenizer_checkpoint_is_refused_and_recorded(output_digests, reference, ckpts, clips_dir, capsys):
    from videopoet.cli import main

    out, _ = reference
    before = output_digests(out, STATS)
    cfg = _cfg(ckpts, clips_dir, out, "local", [f"video_tokenizer={ckpts / 'video_other'}"])
    with pytest.raises(TokenizerMismatch, match="video_tokenizer_hash"):
        run_tokenize(cfg)
    code = main(["tokenize", "--config", "tiny", "--engine", "local", "--input", str(clips_dir), "--output", str(out),
                 "--video-tokenizer", str(ckpts / "video_other"), "--audio-tokenizer", str(ckpts / "audio"),
                 "--no-progress", "--no-track", "any_size=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "refusing to mix" in err[0]
    records = [json.loads(line) for line in (out / REFUSALS_FILE).read_text().splitlines()]
    assert len(records) == 2 and {r["error_class"] for r in records} == {"TokenizerMismatch"}
    assert output_digests(out, STATS) == before  # nothing of the other tokenizer got in


def test_beam_output_is_byte_identical(output_digests, reference, ckpts, clips_dir, tmp_path):
    summary = run_tokenize(_cfg(ckpts, clips_dir, tmp_path, "beam"))
    assert output_digests(tmp_path, STATS) == output_digests(reference[0], STATS)
    assert summary["clips_ok"] == reference[1]["clips_ok"]


def test_ray_output_is_byte_identical(output_digests, reference, ckpts, clips_dir, ray_local, tmp_path):
    summary = run_tokenize(_cfg(ckpts, clips_dir, tmp_path, "ray"))
    assert output_digests(tmp_path, STATS) == output_digests(reference[0], STATS)
    assert summary["clips_ok"] == reference[1]["clips_ok"]


def _kill_after_first_commit(ckpts, inp, out, engine) -> int:
    """Run the CLI job in its own process group; SIGKILL the group once unit 0 is committed."""
    cmd = [sys.executable, "-m", "videopoet.cli", "tokenize", "--config", "tiny", "--engine", engine,
           "--input", str(inp), "--output", str(out), "--video-tokenizer", str(ckpts / "video"),
           "--audio-tokenizer", str(ckpts / "audio"), "--no-progress", "--no-track", "any_size=true", TORCH_THREADS]
    if engine == "ray":
        cmd.append("ray.num_cpus=2")
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not mf.is_committed(out, 0):
            if proc.poll() is not None:
                raise AssertionError(f"job ended before its first commit: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "no unit committed within 300 s"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return len(mf.committed_batches(out))


# Beam only: the resume logic (plan, skip committed units, clean the others) is the driver's and the
# same for every engine, and Ray's bytes are checked against local above; one subprocess is enough.
@pytest.mark.parametrize("engine", ["beam"])
def test_kill_and_rerun_equals_uninterrupted(output_digests, engine, reference, ckpts, clips_dir, tmp_path, request):
    committed = _kill_after_first_commit(ckpts, clips_dir, tmp_path, engine)
    total = reference[1]["units"]
    assert 1 <= committed < total, f"kill landed after {committed}/{total} units"
    assert not (tmp_path / mf.MERGED_FILE).exists()
    if engine == "ray":
        request.getfixturevalue("ray_local")
    summary = run_tokenize(_cfg(ckpts, clips_dir, tmp_path, engine))
    assert summary["units_this_run"] == total - committed
    assert output_digests(tmp_path, STATS) == output_digests(reference[0], STATS)
    assert not list(tmp_path.rglob("*.tmp"))


def test_production_sizes_and_lengths(ckpts, tmp_path):
    """128x128 and 224x128 (height x width) at 17 frames, 41 frames, and an image, with the
    production size check on: token counts, audio frames, and decode(encode) sanity."""
    import torch

    from videopoet.tokenizers.magvit2 import VideoTokenizer
    from videopoet.tokenizers.soundstream import AudioTokenizer

    rng = np.random.default_rng(1)
    clips = [_clip(rng, "sq17", 17, 128, 128), _clip(rng, "pt17", 17, 224, 128, cond=False),
             _clip(rng, "sq41", 41, 128, 128, cond=False), _clip(rng, "img", 1, 128, 128),
             _clip(rng, "odd", 17, 96, 128)]
    for c in clips:
        c.meta["format"] = "portrait" if c.rgb.shape[1] > c.rgb.shape[2] else "square"
    write_clip_shard(tmp_path / "in" / "a.tar", clips)
    cfg = _cfg(ckpts, tmp_path / "in", tmp_path / "out", "local", ["any_size=false"])
    summary = run_tokenize(cfg)
    status = {r["key"]: r for r in read_manifest(tmp_path / "out" / mf.MERGED_FILE).to_pylist()}
    assert status["odd"]["error_class"] == "BadSize" and summary["clips_ok"] == 4
    rows = {r["key"]: r for r in iter_token_rows(tmp_path / "out" / mf.SHARDS_DIR)}
    assert rows["sq17"]["video_tokens"].size == 1280 and rows["pt17"]["video_tokens"].size == 2240
    assert rows["img"]["video_tokens"].size == 256 and rows["sq41"]["latent_t"] == 11
    assert rows["sq41"]["video_tokens"].size == 11 * 256
    for key, n in (("sq17", 1280), ("pt17", 2240)):
        for col in ("fp1_tokens", "fp5_tokens", "inpaint_tokens", "outpaint_tokens"):
            assert rows[key][col].size == n
    assert rows["sq17"]["style_tokens"].size == 1280 and rows["pt17"]["first_frame_tokens"].size == 28 * 16
    assert rows["sq17"]["audio_frames"] == 106 and rows["sq41"]["audio_frames"] == 256
    table = read_token_shard(next((tmp_path / "out" / mf.SHARDS_DIR).glob("*.parquet")))
    assert table.num_rows == 4

    vt = VideoTokenizer.load(ckpts / "video", device="cpu")
    at = AudioTokenizer.load(ckpts / "audio", device="cpu")
    r = rows["pt17"]
    tokens = torch.as_tensor(r["video_tokens"], dtype=torch.long).view(1, r["latent_t"], r["latent_h"], r["latent_w"])
    video = vt.decode(tokens)
    assert video.shape == (1, 3, 17, 224, 128) and torch.isfinite(video).all() and video.abs().max() <= 1
    # encode(decode(tokens)) gives the same grid back (a well-formed round trip at this shape)
    assert vt.encode(video).shape == tokens.shape
    codes = torch.as_tensor(rows["sq17"]["audio_tokens"], dtype=torch.long).view(1, 4, -1)
    wave = at.decode(codes, length=34_000)
    assert wave.shape == (1, 1, 34_000) and torch.isfinite(wave).all()


def test_shards_from_the_real_ingest_job(sample_media, ckpts, tmp_path):
    """Clip shards written by `videopoet ingest` (a video with audio, square + portrait, DIS flow
    conditions, and a captioned image) tokenize with the production size checks on."""
    from videopoet.pipeline.ingest import INGEST_RECIPES, run_ingest

    truth = json.loads((sample_media / "truth.json").read_text())["files"]
    names = ["h264_24fps_320x240_square.mp4", "image_320x240.jpg"]
    listing = tmp_path / "inputs.jsonl"
    listing.write_text("".join(json.dumps({"path": str(sample_media / n), "caption": truth[n]["caption"], "id": n})
                               + "\n" for n in names))
    run_ingest(INGEST_RECIPES.get("tiny", [
        f"input={listing}", f"output={tmp_path / 'clips'}", "engine=local", "media.clips_per_video=1",
        "media.flow=dis", "media.depth=none", "media.formats=[square,portrait]", "progress=false", "track=false"]))
    summary = run_tokenize(_cfg(ckpts, tmp_path / "clips" / mf.SHARDS_DIR, tmp_path / "out", "local",
                                ["any_size=false"]))
    assert summary["clips_failed"] == 0 and summary["clips_ok"] == 3, summary["failures_by_class"]
    rows = {(r["video_format"], r["num_frames"]): r for r in iter_token_rows(tmp_path / "out" / mf.SHARDS_DIR)}
    assert set(rows) == {("square", 17), ("portrait", 17), ("square", 1)}
    assert rows[("square", 17)]["video_tokens"].size == 1280 and rows[("portrait", 17)]["video_tokens"].size == 2240
    assert rows[("square", 1)]["video_tokens"].size == 256 and rows[("square", 1)]["len_t2i"] > 0
    for fmt in ("square", "portrait"):
        r = rows[(fmt, 17)]
        assert r["audio_frames"] == 106 and r["style_tokens"] is not None and r["len_style"] > 0
        assert r["caption"] == truth[names[0]]["caption"] and r["source_uri"].endswith(names[0])


def test_worker_refuses_a_checkpoint_replaced_after_planning(ckpts, tmp_path):
    """Workers check the models they load against the plan's hashes (a checkpoint overwritten on
    disk while the job runs must not slip other tokens into the output)."""
    import shutil

    from videopoet.pipeline import tokenize_models as tk

    path = tmp_path / "video"
    shutil.copytree(ckpts / "video", path)
    cfg = _cfg(ckpts, tmp_path, tmp_path / "out", "local", [f"video_tokenizer={path}"])
    planned = tk.model_identity(cfg)
    assert tk.load_models(cfg, planned).identity() == planned
    shutil.rmtree(path)
    shutil.copytree(ckpts / "video_other", path)
    # a worker that loaded the planned weights before the swap keeps using them (they are the plan's)
    assert tk.load_models(cfg, planned).identity() == planned
    tk._MODELS.clear()  # a worker process started after the swap loads what is on disk now
    with pytest.raises(TokenizerMismatch, match="video_tokenizer_hash"):
        tk.load_models(cfg, planned)


def test_model_stage_failures_cost_the_clip_or_stop_the_unit():
    """A stage failing on one clip fails that clip alone (its batch mates are redone one by one);
    failing on every clip, or out of memory, is a worker fault: StageError, nothing committed."""
    from videopoet.pipeline.clip_shards import ClipItem
    from videopoet.pipeline.tokenize_encode import StageError, _run_stage

    def items(*keys):
        return [ClipItem(k, clip=Clip(k, np.zeros((1, 8, 8, 3), np.uint8), {"caption": k})) for k in keys]

    def fn(clips):
        if any(c.key.startswith("bad") for c in clips):
            raise ValueError(f"cannot encode {[c.key for c in clips]}")
        return [c.key.upper() for c in clips]

    group = items("a", "bad1", "b")
    assert _run_stage("video_tokenizer", {0: group}, fn, "s.tar") == {"a": "A", "b": "B"}
    assert [(i.key, i.ok, i.error_class) for i in group] == [
        ("a", True, None), ("bad1", False, "ValueError"), ("b", True, None)
    ]
    assert "s.tar: clip bad1: video_tokenizer failed (cannot encode ['bad1'])" == group[1].message
    with pytest.raises(StageError, match="all 2 clips"):
        _run_stage("audio_tokenizer", {0: items("bad1", "bad2")}, fn, "s.tar")

    def oom(clips):
        raise MemoryError("no room")

    with pytest.raises(StageError, match="out of memory"):
        _run_stage("video_tokenizer", {0: items("a")}, oom, "s.tar")
