"""Evaluation benchmark: I3D (the FVD feature network) clips/s on the real TF-Hub weights (bench/results/eval.json).

    python -P bench/eval.py                                   # CPU: fp32, batch 2, 16 x 224 x 224 clips
    python -P bench/eval.py --device cuda --bf16 --batch 64   # the GPU target: >= 1,000 clips/s (16 x 224^2, bf16)
    python -P bench/eval.py --device cuda --bf16 --batch 64 --channels-last --compile

What is timed: the I3D forward of already-preprocessed clips ([B, 3, 16, 224, 224] in [-1, 1], the FVD
input), median of --iters batches after --warmup; separately the FVD preprocessing (TF1 bilinear resize
of uint8 128 x 128 clips to 224 x 224, eval/fvd.py `preprocess`) per clip on the CPU, since on a GPU
machine that runs in the data workers. bf16: autocast around the forward (logits returned in float32
and accumulated in float64 by FeatureStats); `--check` also reports the bf16 logits' max abs error
against fp32 on the same batch (the FVD relevance of bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# bench/ holds tokenize.py, named like the standard library module torch imports: drop bench/ from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

RESULTS = Path(__file__).resolve().parent / "results"
GPU_TARGET_CLIPS_S = 1000


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def _timed(fn, device, warmup: int, iters: int) -> list[float]:
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def bench(args) -> dict:
    import numpy as np
    import torch

    from videopoet.eval.fvd import load_i3d, preprocess

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = load_i3d(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    forward = torch.compile(model) if args.compile else model
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(args.batch, 3, 16, 224, 224, generator=gen) * 2 - 1).to(device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)

    def step(bf16: bool = args.bf16):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return forward(x).float()

    times = _timed(step, device, args.warmup, args.iters)
    sec = statistics.median(times)
    result = {
        "device": _device_name(device), "batch": args.batch, "bf16": args.bf16, "compile": args.compile,
        "channels_last": args.channels_last, "clip": [16, 224, 224], "iters": args.iters,
        "forward_s_median": sec, "clips_per_s": args.batch / sec,
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["target_clips_per_s"] = GPU_TARGET_CLIPS_S
        result["meets_target"] = result["clips_per_s"] >= GPU_TARGET_CLIPS_S
    if args.check and args.bf16:
        ref, low = step(False), step(True)
        result["bf16_max_abs_err_logits"] = float((ref - low).abs().max())
        result["logits_abs_max"] = float(ref.abs().max())
    # preprocessing of uint8 clips (CPU, where data workers run it)
    videos = np.random.default_rng(0).integers(0, 256, (args.pre_batch, 16, 128, 128, 3), dtype=np.uint8)
    pre = statistics.median(_timed(lambda: preprocess(videos), torch.device("cpu"), 1, args.iters))
    result["preprocess_clips_per_s_cpu"] = args.pre_batch / pre
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--pre-batch", type=int, default=8, help="uint8 128x128 clips per preprocessing call")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--check", action="store_true", help="with --bf16: max abs logit error vs fp32")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "eval.json"))
    args = parser.parse_args(argv)
    result = bench(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    target = f" (target >= {GPU_TARGET_CLIPS_S})" if "target_clips_per_s" in result else ""
    print(f"bench/eval.py: I3D {result['clips_per_s']:.2f} clips/s{target} on {result['device']}, batch "
          f"{args.batch}{' bf16' if args.bf16 else ' fp32'}; FVD preprocessing "
          f"{result['preprocess_clips_per_s_cpu']:.1f} clips/s on the CPU; JSON {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
