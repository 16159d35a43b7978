"""Video tokenizer benchmarks (JSON to bench/results/tokenizer_<mode>.json).

    python bench/tokenizer.py                                   # speed: tiny, CPU, 17x128x128
    python bench/tokenizer.py --recipe paper --device cuda --bf16 --batch 16   # the GPU target \
(>= 90 clips/s encode on an H100)
    python bench/tokenizer.py --mode lfq-memory                 # LFQ entropy: factorised vs brute-force peak memory
    python bench/tokenizer.py --mode learn --minutes 10         # tiny trained on moving shapes: \
held-out PSNR vs baselines

speed: encode and decode clips/s (median of --iters timed batches after warm-up).
lfq-memory: peak memory of the exact codebook-entropy computation at N tokens, measured (CUDA:
max_memory_allocated; CPU: peak RSS of a fresh subprocess above its baseline) for the factorised
form at N = 10,240 and for the brute-force N x 2^18 form at the N that fit, plus the analytic figures.
learn: writes moving-shape clip shards, trains the tiny recipe in-process (GAN off) within the time
budget, and reports held-out PSNR/SSIM of the EMA tokenizer against predicting the training-set mean
video and predicting each clip's own mean colour.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# `python bench/tokenizer.py` puts bench/ first on sys.path, where bench/tokenize.py would shadow the
# standard library's `tokenize` (used by linecache/torch): drop the script's folder.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

RESULTS = Path(__file__).resolve().parent / "results"


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def bench_speed(args) -> dict:
    import torch

    from videopoet.tokenizers.magvit2 import VideoTokenizer

    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = VideoTokenizer.from_recipe(args.recipe).to(device).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    video = torch.rand(args.batch, 3, args.frames, args.height, args.width, device=device) * 2 - 1
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    encode, decode = model.encode, model.decode
    if args.compile:
        encode, decode = torch.compile(model.encode), torch.compile(model.decode)

    def timed(fn, *a):
        times = []
        for i in range(args.warmup + args.iters):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with amp:
                out = fn(*a)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        return out, statistics.median(times)

    tokens, t_enc = timed(encode, video)
    _, t_dec = timed(decode, tokens)
    params = {k: sum(p.numel() for p in getattr(model, k).parameters()) for k in ("encoder", "decoder")}
    result = {
        "recipe": args.recipe, "device": _device_name(str(device)), "bf16": args.bf16, "compile": args.compile,
        "batch": args.batch, "clip": [args.frames, args.height, args.width], "tokens": list(tokens.shape[1:]),
        "encoder_params_m": params["encoder"] / 1e6, "decoder_params_m": params["decoder"] / 1e6,
        "encode_clips_per_s": args.batch / t_enc, "decode_clips_per_s": args.batch / t_dec,
        "encode_frames_per_s": args.batch * args.frames / t_enc,
        "decode_frames_per_s": args.batch * args.frames / t_dec,
    }
    if device.type == "cuda":
        result["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


_MEM_CHILD = r"""
import resource, sys, torch
from videopoet.tokenizers.lfq import brute_force_entropy_terms, lfq_entropy_terms
form, n, device = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
z = (torch.randn(n, 18, device=device) * 0.01).requires_grad_(True)
fn = lfq_entropy_terms if form == "factorised" else brute_force_entropy_terms
fn(z[:8])  # warm up kernels / allocator before the baseline
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
s, c = fn(z)
(s - c).backward()
if device == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(peak)
"""


def _measure(form: str, n: int, device: str) -> int:
    out = subprocess.run([sys.executable, "-c", _MEM_CHILD, form, str(n), device],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def bench_lfq_memory(args) -> dict:
    n = args.tokens
    k = 1 << 18
    mib = 2**20
    method = ("cuda max_memory_allocated" if args.device.startswith("cuda")
              else "peak RSS (ru_maxrss) of a fresh process above its baseline, forward + backward")
    result = {
        "tokens": n, "bits": 18, "method": method, "device": _device_name(args.device),
        "analytic": {
            "factorised_mib": "two N x 512 fp32 factor matrices + 512 x 512 marginal: "
                              f"{(2 * n * 512 + 512 * 512) * 4 / mib:.1f} MiB per copy",
            "brute_force_gib": f"N x 2^18 fp32 logits: {n * k * 4 / 2**30:.1f} GiB per copy "
                               "(logits, log-probs, probs and their grads: several copies)",
        },
    }
    result["factorised_peak_mib"] = _measure("factorised", n, args.device) / mib
    brute = {}
    for m in args.brute_tokens:
        brute[m] = _measure("brute", m, args.device) / mib
        print(f"  brute force N={m}: {brute[m]:.0f} MiB", flush=True)
    result["brute_force_peak_mib"] = brute
    if brute:
        largest = max(brute)
        per_token = brute[largest] / largest
        result["brute_force_extrapolated_gib_at_n"] = per_token * n / 1024
        result["brute_force_bytes_per_token_measured"] = per_token * mib
    return result


def _moving_shapes(key: str, seed: int, frames: int, size: int):
    import numpy as np

    from videopoet.pipeline.clip_shards import Clip

    rng = np.random.default_rng(seed)
    rgb = np.empty((frames, size, size, 3), np.uint8)
    rgb[:] = rng.integers(0, 100, 3)
    yy, xx = np.mgrid[:size, :size]
    shapes = []
    for _ in range(int(rng.integers(1, 4))):
        r = int(rng.integers(size // 10, size // 4))
        shapes.append((rng.integers(r, size - r, 2).astype(float), rng.uniform(-2, 2, 2),
                       rng.integers(100, 256, 3), r, bool(rng.integers(0, 2))))
    for f in range(frames):
        for pos, vel, col, r, circle in shapes:
            cy, cx = np.clip(pos + vel * f, r, size - r)
            if circle:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            else:
                mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
            rgb[f][mask] = col
    return Clip(key=key, rgb=rgb, meta={"caption": "moving shapes"})


def bench_learn(args) -> dict:
    import torch

    from videopoet.eval.video_metrics import psnr, ssim
    from videopoet.pipeline.clip_shards import iter_clips, write_clip_shard
    from videopoet.tokenizers.magvit2 import VideoTokenizer, video_to_tensor
    from videopoet.tokenizers.train_video import RECIPES, train

    work = Path(tempfile.mkdtemp(prefix="bench_vtok_"))
    data = work / "clips"
    frames, size = args.frames, args.height
    n_eval = 8
    for s in range(4):
        clips = [_moving_shapes(f"s{s}c{i}", 1000 * s + i, frames, size) for i in range(args.clips // 4)]
        write_clip_shard(data / f"shard-{s:05d}.tar", clips)
    overrides = [f"steps={args.steps}", f"image_steps={args.steps // 5}", "loss.gan_weight=0",
                 f"data.frames={frames}", f"data.height={size}", f"data.width={size}",
                 f"data.eval_clips={n_eval}", f"eval_every={args.steps}", f"save_every={args.steps}",
                 "log_every=10", *args.override]
    cfg = RECIPES.get("tiny", overrides)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    t0 = time.perf_counter()
    history = train(cfg, data, work / "run", time_limit_s=60 * args.minutes)
    train_s = time.perf_counter() - t0
    model = VideoTokenizer.load(work / "run" / "tokenizer")
    clips = list(iter_clips(data))
    held = clips[:n_eval]  # train_video holds out the first clips of the first shard
    train_clips = clips[n_eval:]
    x = torch.stack([video_to_tensor(c.rgb) for c in held])
    mean_video = torch.stack([video_to_tensor(c.rgb) for c in train_clips]).mean(0, keepdim=True)
    with torch.no_grad():
        recon = model.decode(model.encode(x))
    own_mean = x.mean(dim=(2, 3, 4), keepdim=True).expand_as(x)
    return {
        "recipe": "tiny", "device": _device_name("cpu"), "clips": len(clips), "held_out": n_eval,
        "clip": [frames, size, size], "steps_planned": args.steps, "steps_done": history[-1]["step"] if history else 0,
        "train_seconds": train_s,
        "final_train_recon_mse": statistics.mean(h["loss/recon"] for h in history[-10:]),
        "held_out_psnr": float(psnr(recon, x).mean()), "held_out_ssim": float(ssim(recon, x).mean()),
        "baseline_dataset_mean_psnr": float(psnr(mean_video.expand_as(x), x).mean()),
        "baseline_dataset_mean_ssim": float(ssim(mean_video.expand_as(x).contiguous(), x).mean()),
        "baseline_clip_mean_colour_psnr": float(psnr(own_mean, x).mean()),
        "unique_codes_held_out": int(torch.unique(model.encode(x)).numel()),
        "work_dir": str(work),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["speed", "lfq-memory", "learn"], default="speed")
    parser.add_argument("--recipe", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=10_240)
    parser.add_argument("--brute-tokens", type=int, nargs="*", default=[256, 1024])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--minutes", type=float, default=9.0, help="training time budget (learn)")
    parser.add_argument("--override", nargs="*", default=[], help="extra train config key=value (learn)")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/tokenizer_<mode>.json)")
    args = parser.parse_args(argv)
    if args.mode == "learn":
        args.frames, args.height = args.frames or 9, args.height or 32
        result = bench_learn(args)
    else:
        args.frames, args.height, args.width = args.frames or 17, args.height or 128, args.width or 128
        result = bench_speed(args) if args.mode == "speed" else bench_lfq_memory(args)
    result["mode"] = args.mode
    out = Path(args.out) if args.out else RESULTS / f"tokenizer_{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
