"""LM training speed: tokens/s, achieved FLOP/s / MFU, ZeRO-3 overhead, and ZeRO-3 memory for 8B.

    .venv/bin/python bench/train.py                  # CPU: tiny recipe, plain vs ZeRO-3, 8B estimator
    .venv/bin/python bench/train.py --two-ranks      # + 2 CPU ranks (ZeRO-3 vs plain all-reduce)
    .venv/bin/python bench/train.py --gpu            # one GPU: 1B recipe tokens/s and MFU (plain bf16 and ZeRO-3)
    .venv/bin/python bench/train.py --loader         # AGD loader only: rows read per row used, s/step, index bytes

Data: synthetic token shards (pipeline.token_shards.synthetic_rows) with the real latent grids
(17-frame 128x128 video: 5x16x16 = 1,280 visual tokens; image: 256), all tasks, AGD batches from the
recipe's tokens-per-step budget. Speed does not depend on the token values.

Figures (JSON in bench/results/train[_gpu].json):
- tokens_per_s, achieved FLOP/s (model.flops_per_token(L) x tokens / step time; 6N + attention)
  and, on a GPU, MFU = FLOP/s / engine.peak_flops (H100 SXM dense bf16 989 TFLOP/s by default);
- zero3_over_plain: median over the same steps (same AGD batches) of ZeRO-3 step time / plain step
  time, one process (ZeRO-3's partitioning, gather hooks and flat optimiser, no communication), and
  with --two-ranks the same for 2 processes (ZeRO-3 gather/reduce-scatter vs a plain all-reduce);
- loader (--loader): one simulated rank of 8 and of 64 (ranks 0 and W-1, each with its own reader), at
  the issue's batch (tokens_per_step 2,080,000: 100 t2i rows and 24 t2v rows per rank at 64 ranks),
  before (one stream, shuffle_window 16, every column) and after (lanes = 64, shuffle_window 1, the
  task's columns): rows read per row used, row groups read per step, loader s/step; index bytes per
  sample in the heap and on disk; and the tiny CPU training run's loader wait per step with prefetch;
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


def make_loader_shards(root: Path, images: int, videos: int) -> Path:
    """Image rows and video rows in separate shards (as image and video data sets are tokenized), 128-row
    row groups; the real latent grids (t2i 325, t2v 1,351 tokens), but text_dim 16 and no condition or
    audio columns keep 82k rows cheap: rows read per row used does not depend on the row size."""
    from videopoet.pipeline import token_shards as ts

    def tiled(rows, n, tag):
        return [{**rows[i % len(rows)], "key": f"{tag}{i:07d}"} for i in range(n)]

    img = ts.synthetic_rows(128, 1, text_dim=16, image_fraction=1.0)
    vid = ts.synthetic_rows(128, 2, num_frames=(17,), text_dim=16, image_fraction=0.0, caption_fraction=1.0,
                            cond_fraction=0.0, audio_fraction=0.0)
    ts.write_token_shard(root / "loader" / "images.parquet", tiled(img, images, "img"), row_group_size=128)
    ts.write_token_shard(root / "loader" / "videos.parquet", tiled(vid, videos, "vid"), row_group_size=128)
    return root / "loader"


def bench_loader(root: Path, steps: int = 8) -> dict:
    """Rows read per row used and loader s/step for simulated ranks, before/after, from one run."""
    from videopoet.trainer.data import AGDLoader, DataConfig, ShardIndex

    shards = make_loader_shards(root, images=64 * 8 * 128, videos=64 * 2 * 128)
    tasks = ["t2i", "t2v"]
    index = ShardIndex.build([shards], tasks, cache_dir=root / "index")
    samples = sum(g.size for g in index.groups)
    setups = {"before": dict(lanes=1, shuffle_window=16), "after": dict(lanes=64, shuffle_window=1)}
    out: dict = {"rows": {"images": 64 * 8 * 128, "videos": 64 * 2 * 128, "row_group_size": 128},
                 "tokens_per_step": 2_080_000, "steps_per_rank": steps, "groups": index.summary(),
                 "index_heap_bytes": index.ram_bytes(), "index_disk_bytes": index.disk_bytes(),
                 "index_heap_bytes_per_sample": index.ram_bytes() / samples,
                 "index_disk_bytes_per_sample": index.disk_bytes() / samples,
                 "index_before_bytes_per_sample": 12}
    for name, kw in setups.items():
        for world in (8, 64):
            for rank in (0, world - 1):
                cfg = DataConfig(shards=[str(shards)], tasks=tasks, tokens_per_step=2_080_000, batch_multiple=64,
                                 cond_dropout=0.1, seed=0, **kw)
                loader = AGDLoader(cfg, total_steps=100, index=index, prefetch=False)
                if name == "before":  # the former reader: every column
                    loader.batch_for = _all_columns(loader)
                t0 = time.perf_counter()
                rows = sum(loader.next_batch(rank, world).tokens.shape[0] for _ in range(steps))
                dt = time.perf_counter() - t0
                st = loader.store.stats()
                out[f"{name}_w{world}_r{rank}"] = {
                    "rows_used": rows, "rows_read": st["rows_read"],
                    "rows_read_per_row_used": round(st["rows_read_per_row_used"], 3),
                    "row_groups_read_per_step": round(st["row_groups_read"] / steps, 2),
                    "loader_s_per_step": round(dt / steps, 4)}
    # hidden behind compute: the prefetching loader of rank 0 of 64 while the step computes for
    # compute_s (an estimate of the 300m recipe's GPU step: 6 x 300M x 32.5k tokens at 40% of 989 TFLOP/s)
    compute_s = 0.15
    for name, kw in setups.items():
        cfg = DataConfig(shards=[str(shards)], tasks=tasks, tokens_per_step=2_080_000, batch_multiple=64,
                         cond_dropout=0.1, seed=0, **kw)
        loader = AGDLoader(cfg, total_steps=100, index=index, prefetch=True)
        if name == "before":
            loader.batch_for = _all_columns(loader)
        for _ in range(steps):
            loader.next_batch(0, 64)
            time.sleep(compute_s)
        loader.close()
        out[f"{name}_prefetch_w64"] = {"compute_s_per_step": compute_s,
                                       "loader_wait_s_per_step": round(loader.wait_s / steps, 4),
                                       "loader_build_s_per_step": round(loader.load_s / (steps + 1), 4)}
    return out


def _all_columns(loader):
    from videopoet.trainer.data import collate

    def batch_for(plan):
        return collate(plan, loader.store.rows(plan.positions, None), loader.index.groups[plan.group].name)
    return batch_for


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
    n = warmup + steps
    wait = {"loader_wait_s_per_step": round(plain.loader.wait_s / n, 5),
            "loader_build_s_per_step": round(plain.loader.load_s / n, 5),
            "step_s_median": statistics.median(m["step_time_s"] for m in a)}
    return {"plain": summarise(a, peak), "zero3": summarise(b, peak), "zero3_over_plain": round(paired_ratio(b, a), 3),
            "num_params": plain.flops.num_params, "peak_flops": peak, "prefetch": wait}


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
    parser.add_argument("--loader", action="store_true", help="AGD loader figures only")
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
    if args.loader:
        with tempfile.TemporaryDirectory() as tmp:
            result["loader"] = bench_loader(Path(tmp), args.steps or 8)
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        out = Path(args.out or Path(__file__).resolve().parent / "results" / "train_loader.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=str))
        print(json.dumps(result, indent=1, default=str))
        return 0
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
