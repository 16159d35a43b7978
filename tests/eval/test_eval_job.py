"""`videopoet eval generate|score|protocol` end to end on protocol stand-ins with a tiny random LM and tokenizers."""

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_clip import tiny_clip_dir

from videopoet.checkpoint import save_checkpoint
from videopoet.cli import main
from videopoet.config import to_dict
from videopoet.eval import eval_score
from videopoet.eval.eval_job import EvalGenerateConfig, resolve_protocol, run_generate
from videopoet.eval.eval_score import features_path
from videopoet.eval.protocols import list_examples, list_real, make_standin
from videopoet.jobs import commit
from videopoet.trainer.model import MODEL_RECIPES, VideoPoetLM

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TASKS = ["t2v", "fp5", "inpaint", "outpaint", "style"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from videopoet.tokenizers.magvit2 import VideoTokenizer

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    cfg = dataclasses.replace(MODEL_RECIPES.get("tiny"), d_model=16, n_heads=2, ffn_dim=48)
    # an export as `videopoet train` writes it: the train config lists the tasks (sampling refuses others)
    save_checkpoint(root / "lm", VideoPoetLM(cfg).state_dict(), kind="videopoet-lm", config={"model": to_dict(cfg)},
                    extra={"step": 1000, "train_config": {"data": {"tasks": TASKS}}})
    VideoTokenizer.from_recipe("tiny").save(root / "vt")
    return root


@pytest.fixture(scope="module")
def mlflow_env(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory):
    return make_standin("msrvtt_t2v", tmp_path_factory.mktemp("msrvtt"), n=4)


def _cfg(models, data, out, cache, engine="local", protocol="msrvtt_t2v", n=4, **kw):
    return EvalGenerateConfig(protocol=protocol, data=str(data), out=str(out), checkpoint=str(models / "lm"),
                              video_tokenizer=str(models / "vt"), cache_dir=str(cache), num_samples=n, repeats=1,
                              unit_size=2, batch_size=2, engine=engine, progress=False, track=False,
                              torch_threads=1, **kw)


@pytest.fixture(scope="module")
def reference(models, msrvtt, tmp_path_factory):
    """The local run: (output, cache dir, summary, scores)."""
    tmp = tmp_path_factory.mktemp("ref")
    summary = run_generate(_cfg(models, msrvtt, tmp / "out", tmp / "cache"))
    return tmp / "out", tmp / "cache", summary, eval_score.score_run(tmp / "out", tmp / "cache")


def _gen_features(out):
    plan = json.loads((out / commit.PLAN_FILE).read_text())
    feats = {}
    for i in range(plan["units"]):
        with np.load(features_path(out, i), allow_pickle=False) as z:
            if "index" in z.files:
                feats[i] = (z["index"].copy(), z["i3d"].copy())
    return feats


def test_row_seeds_make_a_sample_independent_of_its_batch(models):
    from videopoet.trainer.sampling import SamplingConfig, generate, load_lm, request_row

    lm = load_lm(models / "lm", device="cpu")
    rng = np.random.default_rng(0)
    rows = [request_row("t2v", text_emb=rng.standard_normal((64, 384)).astype(np.float32),
                        text_mask=np.ones(64, bool)) for _ in range(2)]
    cfg = SamplingConfig(temperature=1.0, seed=0)
    both = generate(lm, "t2v", rows, cfg, row_seeds=[11, 22], max_new_tokens=40)
    alone = generate(lm, "t2v", rows[1:], cfg, row_seeds=[22], max_new_tokens=40)
    other = generate(lm, "t2v", rows[1:], cfg, row_seeds=[23], max_new_tokens=40)
    assert torch.equal(both.tokens[1], alone.tokens[0])
    assert not torch.equal(alone.tokens[0], other.tokens[0])


def test_msrvtt_local_run_scores_and_caches_the_real_set(reference, msrvtt):
    out, cache, summary, scores = reference
    assert summary["ok"] == 4 and summary["failed"] == 0 and summary["real_clips"] == 4
    assert summary["real_stats"] == "run"  # computed from this run's real units, then cached
    assert scores["fvd"]["n_generated"] == [4] and scores["fvd"]["n_real"] == [4]
    assert np.isfinite(scores["fvd"]["mean"]) and scores["fvd"]["mean"] > 0 and scores["fvd"]["std"] == 0
    assert scores["real_stats"]["source"] == "cache"
    assert scores["protocol"]["num_samples"] == 4 and scores["weights"]["i3d_sha256"]
    assert len(list((out / "videos").glob("sample-*.mp4"))) == 4
    # the score is the Fréchet distance of the two feature sets, recomputed here from the raw features
    from videopoet.eval.frechet import FeatureStats, frechet_distance

    gen = np.concatenate([f for _, f in _gen_features(out).values()])
    real = []
    for i in range(json.loads((out / commit.PLAN_FILE).read_text())["units"]):
        with np.load(features_path(out, i), allow_pickle=False) as z:
            if "real_i3d" in z.files:
                real.append(z["real_i3d"])
    expected = frechet_distance(FeatureStats.from_features(np.concatenate(real)), FeatureStats.from_features(gen))
    assert scores["fvd"]["mean"] == pytest.approx(expected, rel=1e-9)
    # a changed protocol field names another cache entry: it misses
    protocol = resolve_protocol("msrvtt_t2v", 4, 1)
    refs = list_real(protocol, msrvtt)
    key = eval_score.real_stats_key(protocol, scores["weights"]["i3d_sha256"], refs)
    assert key == scores["real_stats"]["key"] and eval_score.cache_path(cache, key).is_file()
    changed = eval_score.real_stats_key(protocol.with_overrides(fps=24), scores["weights"]["i3d_sha256"], refs)
    assert changed != key and not eval_score.cache_path(cache, changed).exists()
    # generation-only fields share the real set
    assert eval_score.real_stats_key(protocol.with_overrides(generate_size=(64, 64)),
                                     scores["weights"]["i3d_sha256"], refs) == key


def test_ray_equals_local_and_reads_the_cache(reference, models, msrvtt, ray_local, mlflow_env, tmp_path, capsys):
    ref_out, cache, _, ref_scores = reference
    summary = run_generate(_cfg(models, msrvtt, tmp_path / "ray", cache, engine="ray"))
    assert summary["real_stats_cached"] and summary["real_clips"] == 0  # real units skipped: the cache holds them
    ours, theirs = _gen_features(tmp_path / "ray"), _gen_features(ref_out)
    assert ours.keys() == theirs.keys()
    for unit in ours:
        assert np.array_equal(ours[unit][0], theirs[unit][0])
        np.testing.assert_allclose(ours[unit][1], theirs[unit][1], rtol=0, atol=1e-6)
    # both runs scored through the CLI, compared in one table
    code = main(["eval", "score", "--run", str(ref_out), "--run", str(tmp_path / "ray"), "--cache-dir", str(cache),
                 "--out", str(tmp_path / "cmp")])
    assert code == 0
    scores = json.loads((tmp_path / "ray" / eval_score.SCORES_FILE).read_text())
    assert scores["fvd"]["mean"] == pytest.approx(ref_scores["fvd"]["mean"], abs=1e-6)
    assert scores["real_stats"]["source"] == "cache" and scores["mlflow_run_id"]
    table = (tmp_path / "cmp" / "comparison.csv").read_text().splitlines()
    assert len(table) == 3 and str(ref_out.resolve()) in table[1] and str((tmp_path / "ray").resolve()) in table[2]
    assert "| run |" in (tmp_path / "cmp" / "comparison.md").read_text()
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "cmp" / "score_vs_step.png").stat().st_size > 0
    assert "FVD" in capsys.readouterr().out


def test_kill_mid_run_then_rerun_gives_the_same_score(reference, models, msrvtt, tmp_path):
    ref_out, _, _, ref_scores = reference
    out, cache = tmp_path / "out", tmp_path / "cache"  # a fresh cache: the real units run too
    cmd = [sys.executable, "-m", "videopoet.cli", "eval", "generate", "--protocol", "msrvtt_t2v", "--data",
           str(msrvtt), "--out", str(out), "--checkpoint", str(models / "lm"), "--video-tokenizer",
           str(models / "vt"), "--cache-dir", str(cache), "--num-samples", "4", "--repeats", "1", "--engine", "local",
           "--no-progress", "--no-track", "unit_size=2", "batch_size=2", "torch_threads=1"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not commit.is_committed(out, 0):
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
    done = len(commit.committed_units(out))
    assert 1 <= done < 4, f"kill landed after {done}/4 units"
    summary = run_generate(_cfg(models, msrvtt, out, cache))
    assert summary["units_this_run"] == 4 - done
    assert not list(out.rglob("*.tmp"))
    scores = eval_score.score_run(out, cache)
    assert scores["fvd"]["mean"] == pytest.approx(ref_scores["fvd"]["mean"], abs=1e-6)
    ours, theirs = _gen_features(out), _gen_features(ref_out)
    for unit in theirs:
        np.testing.assert_allclose(ours[unit][1], theirs[unit][1], rtol=0, atol=1e-6)


def test_scoring_videos_made_elsewhere(reference, msrvtt, tmp_path):
    """--generated: the LM is skipped; sample i is <i:06d>.mp4 (here the reference run's own sample videos)."""
    ref_out, cache, _, _ = reference
    folder = tmp_path / "mp4"
    folder.mkdir()
    for video in sorted((ref_out / "videos").glob("sample-*.mp4")):
        (folder / f"{video.stem.split('-')[1]}.mp4").write_bytes(video.read_bytes())
    cfg = _cfg(Path("/nonexistent"), msrvtt, tmp_path / "out", cache)
    cfg = dataclasses.replace(cfg, checkpoint="", video_tokenizer="", generated=str(folder))
    summary = run_generate(cfg)
    assert summary["ok"] == 4 and summary["real_stats_cached"]
    scores = eval_score.score_run(tmp_path / "out", cache)
    assert scores["fvd"]["n_generated"] == [4] and np.isfinite(scores["fvd"]["mean"])
    (folder / "000003.mp4").unlink()  # a missing video is a failed row that names the file, not a failed job
    summary = run_generate(dataclasses.replace(cfg, out=str(tmp_path / "out2")))
    assert summary["ok"] == 3 and summary["failed"] == 1


def test_refusals_are_one_line(models, msrvtt, tmp_path, capsys):
    base = ["eval", "generate", "--protocol", "msrvtt_t2v", "--data", str(msrvtt), "--out", str(tmp_path / "o"),
            "--video-tokenizer", str(models / "vt"), "--cache-dir", str(tmp_path / "c"), "--no-track"]
    assert main(base + ["--checkpoint", str(tmp_path / "missing")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert main(base) == 2  # neither --checkpoint nor --generated
    assert "--generated" in capsys.readouterr().err
    assert main(["eval", "generate", "--protocol", "nope", "--data", str(msrvtt), "--out", str(tmp_path / "o"),
                 "--checkpoint", str(models / "lm"), "--video-tokenizer", str(models / "vt"), "--no-track"]) == 2
    assert "protocol 'nope'" in capsys.readouterr().err
    assert main(["eval", "score", "--run", str(tmp_path / "none"), "--no-tracking"]) == 2
    assert "not an `eval generate` output" in capsys.readouterr().err
    assert main(["eval", "protocol"]) == 0
    out = capsys.readouterr().out
    assert "msrvtt_t2v" in out and "213" in out and "38.44" in out


def _tiny_c3d(root):
    """A narrow random C3D with TGAN2's layer names and a mean clip (torch state dict)."""
    from videopoet.eval.c3d import C3D

    torch.manual_seed(0)
    model = C3D(widths=(4, 4, 6, 6, 8, 8, 8, 8), fc_width=16, num_classes=101)
    state = {k: v for k, v in model.state_dict().items() if k != "mean"}
    state["mean"] = torch.full((3, 16, 112, 112), 100.0)
    torch.save(state, root / "c3d.pt")
    return root / "c3d.pt"


@pytest.mark.parametrize("name", ["k600_fp", "ssv2_inpaint", "ssv2_outpaint", "ucf101_t2v", "davis_style"])
def test_every_other_protocol_end_to_end(name, models, ray_local, tmp_path):
    data = make_standin(name, tmp_path / "data", n=3)
    protocol = resolve_protocol(name, 2, 1)
    assert len(list_examples(protocol, data)) == 2
    extra = {}
    if "clipsim" in protocol.metrics:
        extra["clip"] = str(tiny_clip_dir(tmp_path)[0])
    if "is" in protocol.metrics:
        extra["c3d"] = str(_tiny_c3d(tmp_path))
    # greedy: the per-example seeds are covered by the msrvtt runs above
    summary = run_generate(_cfg(models, data, tmp_path / "out", tmp_path / "cache", protocol=name, n=2,
                                temperature=0.0, **extra))
    assert summary["ok"] == 2 and summary["failed"] == 0
    scores = eval_score.score_run(tmp_path / "out", tmp_path / "cache")
    if "fvd" in protocol.metrics:
        assert np.isfinite(scores["fvd"]["mean"]) and scores["fvd"]["n_generated"] == [2]
        assert scores["fvd"]["n_real"] == [2]
    else:
        assert "fvd" not in scores
    if "clipsim" in protocol.metrics:  # davis_style: raw cosine of a random CLIP, per video then averaged
        assert scores["clipsim"]["n"] == 2 and -1 <= scores["clipsim"]["mean"] <= 1
        assert scores["weights"]["clip_sha256"]
    if "is" in protocol.metrics:  # ucf101_t2v: IS of 2 samples lies in [1, 2]
        assert 1 - 1e-9 <= scores["is"]["mean"] <= 2 + 1e-9 and scores["weights"]["c3d_sha256"]
    assert (tmp_path / "out" / "videos" / "sample-000000.mp4").is_file()
    # the same job on Ray (its own cache, so its real units run there too): the same features and scores
    run_generate(_cfg(models, data, tmp_path / "ray", tmp_path / "ray_cache", protocol=name, n=2, engine="ray",
                      temperature=0.0, **extra))
    plan = json.loads((tmp_path / "out" / commit.PLAN_FILE).read_text())
    for i in range(plan["units"]):
        with np.load(features_path(tmp_path / "out", i), allow_pickle=False) as a, \
                np.load(features_path(tmp_path / "ray", i), allow_pickle=False) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-6, err_msg=f"unit {i} {key}")
    ray_scores = eval_score.score_run(tmp_path / "ray", tmp_path / "ray_cache")
    for metric in ("fvd", "clipsim", "is"):
        if metric in scores:
            assert ray_scores[metric]["mean"] == pytest.approx(scores[metric]["mean"], abs=1e-6), metric
