"""LM training speed: tokens/s, achieved FLOP/s / MFU, ZeRO-3 overhead, and ZeRO-3 memory for 8B.

    .venv/bin/python bench/train.py                  # CPU: tiny recipe, plain vs ZeRO-3, 8B estimator
    .venv/bin/python bench/train.py --two-ranks      # + 2 CPU ranks (ZeRO-3 vs plain all-reduce)
    .venv/bin/python bench/train.py --gpu            # one GPU: 1B recipe tokens/s and MFU (plain bf16 and ZeRO-3)

Data: synthetic token shards (pipeline.token_shards.synthetic_rows) with the real latent grids
(17-frame 128x128 video: 5x16x16 = 1,280 visual tokens; image: 256), all tasks, AGD batches from the
recipe's tokens-per-step budget. Speed does not depend on the token values.

Figures (JSON in bench/results/train[_gpu].json):
- tokens_per_s, achieved FLOP/s (model.flops_per_token(L) x tokens / step time; 6N + attention)
  and, on a GPU, MFU = FLOP/s / engine.peak_flops (H100 SXM dense bf16 989 TFLOP/s by default);
- zero3_over_plain: median over the same steps (same AGD batches) of ZeRO-3 step time / plain step
  time, one process (ZeRO-3's partitioning, gather hooks and flat optimiser, no communication), and
  with --two-ranks the same for 2 processes (ZeRO-3 gather/reduce-scatter vs a plain all-reduce);
- zero3_memory_8b: DeepSpeed's estimate_zero3_model_states_mem_needs for the 8B recipe on 8-64
  GPUs (8 per node), without offload, with optimiser offload, and with parameter+optimiser offload.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds tokenize.py, named like the standard library module torch and linecache import:
# drop bench/ from the import path before anything imports it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def make_shards(root: Path, rows: int, text_dim: int, seed: int = 0) -> Path:
    from videopoet.pipeline import token_shards as ts

    data = ts.synthetic_rows(rows, seed, num_frames=(17,), formats=("square",), text_dim=text_dim, image_fraction=0.3)
    ts.write_token_shard(root / "tokens" / "part-0.parquet", data, row_group_size=16)
    return root / "tokens"


def config(recipe: str, shards: Path, overrides: list[str]):
    from videopoet.trainer.config import TRAIN_RECIPES

    cfg = TRAIN_RECIPES.get(recipe, [f"data.shards=[{shards}]", "data.batch_multiple=2", *overrides])
    return cfg


def time_steps(trainer, steps: int, warmup: int) -> list[dict]:
    for _ in range(warmup):
        trainer.train_step()
    return [trainer.train_step() for _ in range(steps)]


def summarise(ms: list[dict], peak: float | None = None) -> dict:
    tokens = sum(m["tokens"] for m in ms)
    seconds = sum(m["step_time_s"] for m in ms)
    flops = sum(m["flops_per_s"] * m["step_time_s"] for m in ms)
    out = {"steps": len(ms), "tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
           "achieved_flops_per_s": flops / seconds, "median_step_s": statistics.median(m["step_time_s"] for m in ms),
           "groups": sorted({m["group"] for m in ms}), "padding_ratio_max": max(m["padding_ratio"] for m in ms)}
    if peak:
        out["mfu"] = flops / seconds / peak
    return out


def paired_ratio(a: list[dict], b: list[dict]) -> float:
    assert [m["group"] for m in a] == [m["group"] for m in b], "the two engines must see the same AGD steps"
    return statistics.median(x["step_time_s"] / y["step_time_s"] for x, y in zip(a, b))


def single_process_env(port: int = 29611) -> None:
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def bench_engines(cfg, steps: int, warmup: int) -> dict:
    """Plain and ZeRO-3 trainers in this process, interleaved step by step on the same batches."""
    from videopoet.trainer.lm_trainer import LMTrainer as Trainer

    single_process_env()
    plain = Trainer(cfg, engine="plain")
    zero3 = Trainer(cfg, engine="deepspeed")
    for _ in range(warmup):
        plain.train_step(), zero3.train_step()
    a, b = [], []
    for _ in range(steps):  # interleaved, so machine load affects both alike
        a.append(plain.train_step())
        b.append(zero3.train_step())
    peak = cfg.engine.peak_flops if plain.device.type == "cuda" else None
    return {"plain": summarise(a, peak), "zero3": summarise(b, peak), "zero3_over_plain": round(paired_ratio(b, a), 3),
            "num_params": plain.flops.num_params, "peak_flops": peak}


def _two_rank_worker(rank: int, cfg_dict: dict, steps: int, warmup: int, out: str) -> None:
    import torch

    from videopoet.config import from_dict
    from videopoet.trainer.config import TrainConfig
    from videopoet.trainer.lm_trainer import LMTrainer as Trainer

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT="29612")
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=2)
    cfg = from_dict(TrainConfig, cfg_dict)
    plain = Trainer(cfg, engine="plain", rank=rank, world_size=2)
    zero3 = Trainer(cfg, engine="deepspeed", rank=rank, world_size=2)
    for _ in range(warmup):
        plain.train_step(), zero3.train_step()
    a, b = [], []
    for _ in range(steps):
        a.append(plain.train_step())
        b.append(zero3.train_step())
    if rank == 0:
        Path(out).write_text(json.dumps({"plain": summarise(a), "zero3": summarise(b),
                                         "zero3_over_plain": round(paired_ratio(b, a), 3)}))
    dist.destroy_process_group()


def bench_two_ranks(cfg, steps: int, warmup: int) -> dict:
    import torch.multiprocessing as mp

    from videopoet.config import to_dict

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "r.json")
        mp.spawn(_two_rank_worker, args=(to_dict(cfg), steps, warmup, out), nprocs=2)
        return json.loads(Path(out).read_text())


def zero3_memory_8b() -> dict:
    import torch
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    from videopoet.trainer.model import MODEL_RECIPES, VideoPoetLM

    with torch.device("meta"):
        model = VideoPoetLM(MODEL_RECIPES.get("8b"))
    total = model.num_params()
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    gib = 1024 ** 3
    rows = []
    for gpus in (8, 16, 32, 64):
        row = {"gpus": gpus, "nodes": gpus // 8}
        for name, kw in (("no_offload", dict(cpu_offload=False)),
                         ("optimizer_offload", dict(cpu_offload=True, cpu_offload_params=False)),
                         ("param_and_optimizer_offload", dict(cpu_offload=True, cpu_offload_params=True))):
            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(total, largest, num_gpus_per_node=8,
                                                                num_nodes=gpus // 8, zero_init=True, **kw)
            row[name] = {"gpu_gib_per_gpu": round(gpu / gib, 2), "cpu_gib_per_node": round(cpu / gib, 1)}
        rows.append(row)
    return {"total_params": total, "largest_layer_params": largest, "per_gpu_count": rows,
            "note": "model states only (DeepSpeed's formula: fp32 master + Adam + bf16 params/grads); "
                    "activations come on top"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="1B recipe on one GPU (tokens/s, MFU)")
    parser.add_argument("--two-ranks", action="store_true", help="also 2 CPU processes: ZeRO-3 vs plain all-reduce")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tokens-per-step", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if args.gpu else "cpu")
    import torch

    result: dict = {"bench": "train", "host": platform.node(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.gpu:
            if not torch.cuda.is_available():
                print("bench/train.py --gpu: no CUDA device", file=sys.stderr)
                return 2
            result["device"] = torch.cuda.get_device_name(0)
            shards = make_shards(Path(tmp), 256, text_dim=2048)
            tokens = args.tokens_per_step or 16_384
            cfg = config("1b", shards, [f"data.tokens_per_step={tokens}", "engine.use_gpu=true", "engine.num_workers=1",
                                       "data.cond_dropout=0.1", "schedule.warmup_steps=1"])
            result["recipe"] = "1b"
            result["tokens_per_step"] = tokens
            result.update(bench_engines(cfg, args.steps or 10, args.warmup))
        else:
            result["device"] = "cpu"
            shards = make_shards(Path(tmp), 96, text_dim=384)
            tokens = args.tokens_per_step or 2048
            cfg = config("tiny", shards, [f"data.tokens_per_step={tokens}", "schedule.warmup_steps=1"])
            result["recipe"] = "tiny"
            result["tokens_per_step"] = tokens
            result.update(bench_engines(cfg, args.steps or 6, args.warmup))
            if args.two_ranks:
                result["two_ranks"] = bench_two_ranks(cfg, args.steps or 6, args.warmup)
        result["zero3_memory_8b"] = zero3_memory_8b()
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out
               or Path(__file__).resolve().parent / "results" / ("train_gpu.json" if args.gpu else "train.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result, indent=1, default=str))
    p, z = result["plain"], result["zero3"]
    mfu = f", MFU plain {p.get('mfu', 0):.1%} / ZeRO-3 {z.get('mfu', 0):.1%}" if args.gpu else ""
    print(f"train bench ({result['recipe']}, {result['device']}): plain {p['tokens_per_s']:.0f} tokens/s "
          f"{p['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s, ZeRO-3 {z['tokens_per_s']:.0f} tokens/s; "
          f"ZeRO-3/plain step time {result['zero3_over_plain']:.2f}{mfu}; "
          "8B ZeRO-3 model states on 64 GPUs: "
          f"{result['zero3_memory_8b']['per_gpu_count'][-1]['no_offload']['gpu_gib_per_gpu']} GiB/GPU "
          f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
