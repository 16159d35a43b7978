"""`videopoet train-sr`: SR token shards, exact resume, config refusal, the CLI, MLflow, Ray Train DDP."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from videopoet.cli import main
from videopoet.config import ConfigError
from videopoet.pipeline.sr_shards import (
    SR_FORMAT_VERSION,
    VERSION_KEY,
    SRShardError,
    list_sr_shards,
    read_sr_shard,
    synthetic_sr_rows,
    write_sr_shard,
)
from videopoet.trainer.sr import train as sr_train
from videopoet.trainer.sr.objective import training_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# the tiny recipe, a few steps of 4 examples; every cadence path runs (log, eval, save, final save)
FAST = ["steps=6", "data.batch_size=4", "eval_every=3", "save_every=3", "optim.warmup_steps=2"]
GRID = (2, 8, 8)
TEXT_DIM = 384


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("sr_shards")
    for i in range(2):
        write_sr_shard(d / "shards" / f"s{i}.parquet", synthetic_sr_rows(5, GRID, TEXT_DIM, seed=i, codes=4096),
                       hr_grid=GRID, text_dim=TEXT_DIM)
    return d


@pytest.fixture(autouse=True)
def _mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def _losses(out):
    return [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]


def _weights(out):
    from videopoet.training.checkpoints import CheckpointManager, load_state_file

    latest = CheckpointManager(out, kind="sr-train", config={}).latest()
    return load_state_file(latest)["model"]


# -- the shard format ------------------------------------------------------------------------------


def test_sr_shard_round_trip_and_refusals(tmp_path):
    rows = synthetic_sr_rows(3, GRID, 16, seed=7)
    path = tmp_path / "a.parquet"
    assert write_sr_shard(path, rows, hr_grid=GRID, text_dim=16) == 3
    back, info = read_sr_shard(path)
    assert info.hr_grid == GRID and info.text_dim == 16 and info.num_rows == 3 and info.lr_grid == (2, 4, 4)
    for a, b in zip(rows, back):
        assert a["key"] == b["key"]
        assert b["hr_tokens"].dtype == np.int64 and np.array_equal(a["hr_tokens"], b["hr_tokens"])
        assert np.array_equal(a["lr_tokens"], b["lr_tokens"]) and np.array_equal(a["text_mask"], b["text_mask"])
        assert b["text_emb"].dtype == np.float32 and np.array_equal(a["text_emb"], b["text_emb"])
    assert list_sr_shards(tmp_path) == [path]
    # another format version: refused, one line naming the version
    table = pq.read_table(path)
    other = SR_FORMAT_VERSION + 1
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, VERSION_KEY: str(other).encode()}),
                   tmp_path / "other.parquet")
    with pytest.raises(SRShardError, match=f"format version {other}, this code reads {SR_FORMAT_VERSION}") as err:
        read_sr_shard(tmp_path / "other.parquet")
    assert "\n" not in str(err.value)
    pq.write_table(table.replace_schema_metadata({}), tmp_path / "plain.parquet")
    with pytest.raises(SRShardError, match="not a videopoet SR token shard"):
        read_sr_shard(tmp_path / "plain.parquet")
    # invalid rows: nothing written
    bad = dict(rows[0], lr_tokens=rows[0]["lr_tokens"][:-1])
    with pytest.raises(SRShardError, match="lr_tokens has 31 ids, the grid needs 32"):
        write_sr_shard(tmp_path / "bad.parquet", [bad], hr_grid=GRID, text_dim=16)
    with pytest.raises(SRShardError, match=r"ids must lie in 0\.\.262143"):
        write_sr_shard(tmp_path / "bad.parquet", [dict(rows[0], hr_tokens=rows[0]["hr_tokens"] + (1 << 18))],
                       hr_grid=GRID, text_dim=16)
    assert not (tmp_path / "bad.parquet").exists()


# -- the objective with per-example draws -----------------------------------------------------------


def test_batch_loss_of_one_example_is_training_loss():
    cfg = sr_train.RECIPES.get("tiny")
    torch.manual_seed(0)
    model = sr_train.SRTransformer(cfg.model)
    rows = synthetic_sr_rows(2, GRID, TEXT_DIM, seed=3)
    hr, lr, text, mask, _ = sr_train.collate(rows, cfg, torch.device("cpu"))
    loss_sum, counts = sr_train.batch_loss(model, hr[:1], lr[:1], text[:1], mask[:1], cfg, [123], "cpu")
    ref, n = training_loss(model, hr[:1], lr[:1], text[:1], mask[:1], cfg.objective, torch.Generator().manual_seed(123))
    assert counts[0].item() == n
    torch.testing.assert_close(loss_sum / n, ref, rtol=0, atol=0)
    # a batch's sum is the sum of its examples' sums (the split over workers does not change a step)
    both, counts2 = sr_train.batch_loss(model, hr, lr, text, mask, cfg, [123, 456], "cpu")
    second, counts1 = sr_train.batch_loss(model, hr[1:], lr[1:], text[1:], mask[1:], cfg, [456], "cpu")
    torch.testing.assert_close(both, loss_sum + second, rtol=1e-5, atol=1e-4)
    assert torch.equal(counts2, counts + counts1)


# -- the job ----------------------------------------------------------------------------------------


def test_resume_equals_uninterrupted_and_changed_config_refused(shards, tmp_path):
    cfg = sr_train.RECIPES.get("tiny", FAST)
    full = sr_train.train(cfg, shards, tmp_path / "full", quiet=True)
    assert full["step"] == 6 and not full["stopped"]
    part = sr_train.train(cfg, shards, tmp_path / "part", stop_after=4, quiet=True)
    assert part["step"] == 4 and part["stopped"] and part["reason"] == "stop_after"
    resumed = sr_train.train(cfg, shards, tmp_path / "part", quiet=True)
    assert resumed["step"] == 6 and resumed["steps_this_run"] == 2
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("step_time_s", "tokens_per_s")} for r in rows]  # noqa: E731
    assert strip(_losses(tmp_path / "part")) == strip(_losses(tmp_path / "full"))
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "part" / "model").is_dir()
    # a changed config is refused, naming the key
    changed = sr_train.RECIPES.get("tiny", FAST + ["optim.lr=0.01"])
    with pytest.raises(ConfigError, match="differing keys: optim.lr"):
        sr_train.train(changed, shards, tmp_path / "part", quiet=True)


def test_cli_runs_with_mlflow_metrics_and_video(shards, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from videopoet.tokenizers.magvit2 import VideoTokenizer

    tok_dir = tmp_path / "video_tokenizer"
    torch.manual_seed(0)
    VideoTokenizer.from_recipe("tiny").save(tok_dir)
    out = tmp_path / "run"
    rc = main(["train-sr", "--stage", "1", "--config", "tiny", "--data", str(shards), "--out", str(out),
               "--video-tokenizer", str(tok_dir), "steps=2", "data.batch_size=2", "eval_every=2", "sample_steps=2"])
    assert rc == 0
    assert "train-sr stage 1: 2 steps" in capsys.readouterr().out
    videos = sorted((out / "eval_videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["step_00000002.mp4"]
    run_id = json.loads((out / "last_summary.json").read_text())["run_id"]
    client = MlflowClient()
    metrics = client.get_run(run_id).data.metrics
    for key in ("loss", "acc/lo", "acc/hi", "acc/token", "tokens_per_s", "eval/acc_lo", "eval/acc_hi"):
        assert key in metrics, key
    assert [a.path for a in client.list_artifacts(run_id, "sr_videos")] == ["sr_videos/step_00000002.mp4"]
    # --stage and a stage recipe that disagree: one line, exit 2 (before any model is built)
    rc = main(["train-sr", "--stage", "2", "--config", "stage1", "--data", str(shards), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "stage-1 recipe, but --stage 2" in err and len(err.strip().splitlines()) == 1


def test_shards_of_another_grid_refused(shards, tmp_path):
    cfg = sr_train.RECIPES.get("tiny", FAST + ["model.hr_grid=[2,16,8]", "model.windows=[[1,16,2],[1,2,8],[2,2,2]]"])
    with pytest.raises(ConfigError, match=r"HR grid \[2, 8, 8\].*model.hr_grid=\[2, 16, 8\]"):
        sr_train.train(cfg, shards, tmp_path / "g", quiet=True)


@pytest.mark.slow
def test_two_ray_train_workers_equal_one_process(shards, tmp_path):
    cfg = sr_train.RECIPES.get("tiny", ["steps=2", "data.batch_size=4", "eval_every=0", "save_every=0"])
    sr_train.train(cfg, shards, tmp_path / "one", quiet=True)
    two = sr_train.train(cfg, shards, tmp_path / "two", num_workers=2, quiet=True)
    assert two["world_size"] == 2 and two["step"] == 2
    assert (tmp_path / "two" / "checkpoints" / "step_00000002" / "state.pt").is_file()
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [r["masked_tokens"] for r in a] == [r["masked_tokens"] for r in b]
    for ra, rb in zip(a, b):
        assert np.isfinite(rb["loss"]) and ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    wa, wb = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
