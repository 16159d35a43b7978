"""`videopoet train-sr` with engine=deepspeed: ZeRO-3 on 2 Ray Train workers == the 1-process ddp run, exact
resume through DeepSpeed's checkpoints, and a consolidated export the SR cascade loads.

One module-scoped set of runs (the Ray and DeepSpeed starts are the cost), tiny recipe, CPU, gloo, fp32:
  ddp   engine=ddp, one process, steps 0-2 (the reference)
  ds    engine=deepspeed (infra/deepspeed/zero3_cpu.json), 2 Ray Train workers: stopped after step 1
        (stop_after=1), then the same call again, which resumes from checkpoints/step_00000001 (DeepSpeed's
        ZeRO-3 shards) and runs steps 1-2, with --video-tokenizer so the final evaluation samples and
        decodes the LR | SR | HR video (every rank samples: a collective under ZeRO-3)
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from videopoet.config import ConfigError
from videopoet.pipeline.sr_shards import read_sr_shard, synthetic_sr_rows, write_sr_shard
from videopoet.trainer.sr import train as sr_train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

GRID = (2, 8, 8)
TEXT_DIM = 384
STEPS = 3
COMMON = [f"steps={STEPS}", "data.batch_size=4", "eval_every=0", "save_every=0", "optim.warmup_steps=2"]
# Loss tolerance, relative (losses ~12.4). Both runs see the same examples with the same per-example draws
# and start from the same weights (rank 0's seeded fp32 build copied into the ZeRO-3 partitions); ZeRO-3
# reduce-scatters world * (rank's CE sum) / (global count) and averages, ddp takes the sum over ranks
# divided by the global count, so gradients differ by float32 rounding only, and AdamW moves weights by
# lr * O(1) per step. Measured: |loss difference| <= 5.2e-7 (one float32 ulp at 12.4 is 9.5e-7), weights
# <= 1.4e-6 after 3 steps. 1e-5 (1.2e-4 absolute) keeps a margin of > 100x, and stays far below what a
# broken resume does (test_the_tolerance_sees_a_lost_optimizer_state measures a fresh AdamW after step 1).
LOSS_RTOL = 1e-5
WEIGHT_TOL = {"rtol": 1e-4, "atol": 1e-5}  # as tests/trainer/test_sr_train.py's 2-worker ddp test


def _losses(out):
    return [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import ray

    from videopoet.tokenizers.magvit2 import VideoTokenizer

    tmp = tmp_path_factory.mktemp("sr_zero")
    shards = tmp / "sr_shards"
    for i in range(2):
        write_sr_shard(shards / "shards" / f"s{i}.parquet", synthetic_sr_rows(5, GRID, TEXT_DIM, seed=i, codes=4096),
                       hr_grid=GRID, text_dim=TEXT_DIM)
    torch.manual_seed(0)
    VideoTokenizer.from_recipe("tiny").save(tmp / "video_tokenizer")
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    out = {"tmp": tmp, "shards": shards}
    try:
        out["ddp"] = sr_train.train(sr_train.RECIPES.get("tiny", COMMON), shards, tmp / "ddp", quiet=True)
        ds_cfg = sr_train.RECIPES.get("tiny", COMMON + ["engine=deepspeed", "deepspeed=zero3_cpu"])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            out["ds_part"] = sr_train.train(ds_cfg, shards, tmp / "ds", num_workers=2, stop_after=1, quiet=True)
            out["ds_checkpoints"] = sorted(p.name for p in (tmp / "ds" / "checkpoints").iterdir())
            out["ds"] = sr_train.train(ds_cfg, shards, tmp / "ds", num_workers=2, quiet=True,
                                       video_tokenizer=tmp / "video_tokenizer")
        finally:
            ray.shutdown()
        yield out
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def test_zero3_on_two_workers_equals_the_ddp_process(runs):
    from mlflow.tracking import MlflowClient

    tmp = runs["tmp"]
    ref, ds = _losses(tmp / "ddp"), _losses(tmp / "ds")
    assert [r["step"] for r in ds] == [1, 2, 3] and runs["ds"]["world_size"] == 2
    assert [r["masked_tokens"] for r in ds] == [r["masked_tokens"] for r in ref]  # the same examples and draws
    for a, b in zip(ref, ds):
        assert np.isfinite(b["loss"]) and b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL), (a, b)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=LOSS_RTOL), (a, b)
        assert b["lr"] == a["lr"]  # the same schedule, set per step
        for key in ("acc/lo", "acc/hi", "acc/token"):
            assert b[key] == pytest.approx(a[key], abs=1.5 / a["masked_tokens"]), key  # a flipped argmax at most
    assert runs["ds"]["eval/loss"] == pytest.approx(runs["ddp"]["eval/loss"], rel=LOSS_RTOL)
    # DeepSpeed's layout inside the shared checkpoint directory: every rank's ZeRO-3 shards and RNG
    step = tmp / "ds" / "checkpoints" / "step_00000003"
    files = {p.relative_to(step).as_posix() for p in step.rglob("*") if p.is_file()}
    for rank in (0, 1):
        assert f"step_00000003/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" in files
        assert f"rng_rank{rank}.pt" in files
    assert {"meta.json", "engine_state.json"} <= files and "state.pt" not in files
    # sharded: each rank's fp32 master weights + AdamW moments cover half the model (ZeRO-3 partitions)
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    held = []
    for rank in (0, 1):
        with torch.serialization.safe_globals([ZeroStageEnum, LossScaler]):
            blob = torch.load(step / "step_00000003" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt",
                              map_location="cpu", weights_only=True)["optimizer_state_dict"]
        assert blob["partition_count"] == 2
        held.append(sum(t.numel() for t in blob["fp32_flat_groups"]))
        moments = blob["optimizer_state_dict"]["state"].values()
        assert sum(m["exp_avg"].numel() for m in moments) == held[-1]  # AdamW's state: this rank's share only
    total = sr_train.SRTransformer(sr_train.RECIPES.get("tiny").model).num_params()
    assert sum(held) == total and max(held) <= total // 2 + 1, (held, total)
    meta = json.loads((step / "meta.json").read_text())
    assert meta["kind"] == "sr-train" and meta["config"]["engine"] == "deepspeed" and meta["extra"]["world_size"] == 2
    # MLflow: the ddp path's metrics, and the eval video every rank sampled for
    run_id = runs["ds"]["run_id"]
    client = MlflowClient()
    metrics = client.get_run(run_id).data.metrics
    for key in ("loss", "acc/lo", "acc/hi", "acc/token", "lr", "grad_norm", "tokens_per_s"):
        assert key in metrics, key
    assert [a.path for a in client.list_artifacts(run_id, "sr_videos")] == ["sr_videos/step_00000003.mp4"]
    assert (tmp / "ds" / "eval_videos" / "step_00000003.mp4").stat().st_size > 0


def test_stop_and_resume_equals_uninterrupted(runs):
    tmp = runs["tmp"]
    part, full = runs["ds_part"], runs["ds"]
    assert part["step"] == 1 and part["stopped"] and part["reason"] == "stop_after"
    assert runs["ds_checkpoints"] == ["step_00000001"]
    assert full["step"] == STEPS and full["steps_this_run"] == STEPS - 1 and not full["stopped"]
    # steps 2-3 ran from DeepSpeed's step-1 checkpoint (model, AdamW partitions, data position, RNG) and
    # equal the uninterrupted reference as closely as step 1 does
    ref = _losses(tmp / "ddp")
    resumed = _losses(tmp / "ds")[1:]
    for a, b in zip(ref[1:], resumed):
        assert b["masked_tokens"] == a["masked_tokens"] and b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL)
    from videopoet.checkpoint import load_checkpoint

    wa, meta_a = load_checkpoint(tmp / "ddp" / "model", kind="sr-transformer")
    wb, meta_b = load_checkpoint(tmp / "ds" / "model", kind="sr-transformer")
    assert sorted(wa) == sorted(wb) and meta_b["extra"]["step"] == STEPS and meta_a["config"] == meta_b["config"]
    for k in wa:
        assert wb[k].dtype == torch.float32
        torch.testing.assert_close(wb[k], wa[k], **WEIGHT_TOL)


def test_the_tolerance_sees_a_lost_optimizer_state(runs):
    """The ddp trainer in this process, AdamW replaced by a fresh one after step 1 (what a resume that lost the
    optimizer state would do): its step-2/3 losses leave the reference by far more than LOSS_RTOL."""
    cfg = sr_train.RECIPES.get("tiny", COMMON)
    trainer = sr_train.SRTrainer(cfg, runs["shards"])
    losses = [trainer.train_step()["loss"]]
    trainer.opt = torch.optim.AdamW(trainer.params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                    weight_decay=cfg.optim.weight_decay)
    losses += [trainer.train_step()["loss"] for _ in range(STEPS - 1)]
    ref = [r["loss"] for r in _losses(runs["tmp"] / "ddp")]
    assert losses[0] == ref[0]  # the same process path up to the break
    shift = max(abs(a - b) / abs(b) for a, b in zip(losses[1:], ref[1:]))
    assert shift > 20 * LOSS_RTOL, shift


def test_the_export_loads_in_the_cascade(runs):
    from videopoet.trainer.sr import cascade
    from videopoet.trainer.sr.sampling import guided_logits

    tmp = runs["tmp"]
    ds_stage = cascade.load_cascade([tmp / "ds"], steps=2, seed=1)[0]  # a run directory: its model/
    ddp_stage = cascade.load_cascade([tmp / "ddp"], steps=2, seed=1)[0]
    assert ds_stage.stage == 1 and ds_stage.hr_grid == GRID
    rows = read_sr_shard(sorted((runs["shards"] / "shards").glob("*.parquet"))[0])[0][:2]
    cfg = sr_train.RECIPES.get("tiny")
    hr, lr, text, mask, _ = sr_train.collate(rows, cfg, torch.device("cpu"))
    (hr_tokens,) = cascade.run_cascade([ds_stage], lr, text, mask, progress=False)
    assert hr_tokens.shape == (2, *GRID) and int(hr_tokens.min()) >= 0 and int(hr_tokens.max()) < 1 << 18
    # the loaded model computes what the ddp export computes
    with torch.no_grad():
        a = guided_logits(ds_stage.model, hr, lr, text, mask, text_scale=2.0, lr_scale=1.5)
        b = guided_logits(ddp_stage.model, hr, lr, text, mask, text_scale=2.0, lr_scale=1.5)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)


def test_deepspeed_refusals_are_one_line(runs, tmp_path):
    shards = runs["shards"]
    cfg = sr_train.RECIPES.get("tiny", COMMON + ["engine=deepspeed"])
    with pytest.raises(ConfigError, match="engine=deepspeed trains on Ray Train workers") as err:
        sr_train.train(cfg, shards, tmp_path / "in_process", quiet=True)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"deepspeed='zero9'.*named configs: \[.*'zero3_cpu'"):
        sr_train.train(sr_train.RECIPES.get("tiny", COMMON + ["engine=deepspeed", "deepspeed=zero9"]), shards,
                       tmp_path / "bad", num_workers=2, quiet=True)
    # ZeRO shards are per rank: another worker count is refused before Ray starts
    with pytest.raises(ConfigError, match="ZeRO checkpoint of 2 workers; resume it with --num-workers 2"):
        sr_train.train(cfg, shards, runs["tmp"] / "ds", num_workers=1, quiet=True)
    # the ds run's checkpoints are refused for a ddp config (another engine: another config)
    with pytest.raises(ConfigError, match="differing keys: engine"):
        sr_train.train(sr_train.RECIPES.get("tiny", COMMON), shards, runs["tmp"] / "ds", quiet=True)
