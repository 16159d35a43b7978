"""SR transformer speed and memory: forward+backward tokens/s and peak memory per layer type, windowed vs full.

    .venv/bin/python bench/sr.py                                        # CPU: recipes tiny, demo (fp32)
    .venv/bin/python bench/sr.py --device cuda                          # GPU: stage1, stage2 (bf16 autocast)
    .venv/bin/python bench/sr.py --device cuda --recipes stage2 --batch 1

Models are built at random init (speed does not depend on the weights). Per recipe, on activations of the
recipe's HR grid (batch --batch, default: the train recipe's batch on the CPU, 1 on a GPU), each case is
one forward and one backward (against a fixed random output gradient):
- axis layer vertical / horizontal / temporal: one whole AxisLayer (windowed self-attention, windowed LR
  cross-attention, SwiGLU MLP), the three layers of a block;
- self-attention in each axis window, and full self-attention over the whole grid (the same sequence
  length, one SDPA call, no mask): what windowing saves;
- LR cross-attention in each axis's half-size window; the text cross-attention (every token over 64 slots);
- the whole model: embeddings, every block, both 512-way heads and the factorised cross-entropy (the
  recipe's gradient checkpointing as configured).
tokens/s = HR tokens of the batch / the best of --repeats timed runs after one warm-up run (the best: on
a shared machine other work only ever adds time; the JSON also has the median).
Peak memory: on a GPU torch.cuda.max_memory_allocated above what was allocated before the case; on the CPU
the torch profiler's memory events (profile_memory=True): the peak of the running sum of every allocation
and free during one run, i.e. the peak above what was live before it (tracemalloc cannot see torch's
allocator). JSON: --out (default bench/results/sr.json).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/tokenize.py shadows the standard library's `tokenize` (which torch imports): drop bench/ from the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from einops import rearrange  # noqa: E402

from videopoet.trainer.sr.config import RECIPES_TRAIN  # noqa: E402
from videopoet.trainer.sr.model import MASK_ID, SR_RECIPES, SRTransformer  # noqa: E402
from videopoet.trainer.sr.objective import factorized_loss  # noqa: E402
from videopoet.trainer.sr.windows import lr_window  # noqa: E402

AXES = ("vertical", "horizontal", "temporal")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(fn, device: torch.device) -> int:
    """Peak bytes allocated by one run of fn above what was allocated before it."""
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        if e.device_type() == torch.device("cpu").type or str(e.device_type()).endswith("CPU"):
            live += e.nbytes()
            peak = max(peak, live)
    return peak


def time_runs(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """(best, median) seconds of `repeats` runs after a warm-up run."""
    fn()  # warm-up (kernel selection, allocator)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def cases(model: SRTransformer, batch: int, device: torch.device, autocast):
    """{name: fn}: each fn runs one forward and one backward of its case."""
    cfg = model.cfg
    T, H, W = cfg.hr_grid
    D = cfg.d_model
    g = torch.Generator(device).manual_seed(0)

    def randn(*shape, grad=True):
        return torch.randn(*shape, generator=g, device=device).requires_grad_(grad)

    x = randn(batch, T, H, W, D)
    lr = randn(batch, T, H // 2, W // 2, D)
    text = randn(batch, cfg.text_slots, D)
    out_grad = randn(batch, T, H, W, D, grad=False)
    block = model.blocks[0]

    def fwd_bwd(forward):
        def run():
            with autocast():
                y = forward()
            torch.autograd.backward(y.float(), out_grad)
            model.zero_grad(set_to_none=True)
            for t in (x, lr, text):
                t.grad = None
        return run

    def full_self(layer):
        def forward():
            flat = rearrange(layer.self_norm(x), "b t h w d -> b (t h w) d")
            return layer.self_attn(flat, flat).view_as(x)
        return forward

    out = {}
    for axis, layer in zip(AXES, block.layers):
        out[f"axis layer {axis} {tuple(layer.window)}"] = fwd_bwd(lambda layer=layer: layer(x, lr))
    for axis, layer in zip(AXES, block.layers):
        out[f"self-attention {axis} window {tuple(layer.window)}"] = fwd_bwd(
            lambda layer=layer: layer._windowed(layer.self_attn, layer.self_norm(x), None))
    out[f"full self-attention (whole grid, {T * H * W} tokens)"] = fwd_bwd(full_self(block.layers[0]))
    for axis, layer in zip(AXES, block.layers):
        out[f"LR cross-attention {axis} window {lr_window(layer.window)}"] = fwd_bwd(
            lambda layer=layer: layer._windowed(layer.lr_attn, layer.lr_norm(x), lr))
    out[f"text cross-attention ({cfg.text_slots} slots)"] = fwd_bwd(lambda: block.text_step(x, text))

    hr = torch.randint(0, 1 << 18, (batch, T, H, W), generator=g, device=device)
    lr_tokens = torch.randint(0, 1 << 18, (batch, T, H // 2, W // 2), generator=g, device=device)
    text_emb = torch.randn(batch, cfg.text_slots, cfg.text_dim, generator=g, device=device)
    masked = torch.rand(batch, T, H, W, generator=g, device=device) < 0.5

    def whole():
        with autocast():
            hidden = model(hr.masked_fill(masked, MASK_ID), lr_tokens, text_emb)
            lo, hi = model.logits(hidden[masked])
        loss, _ = factorized_loss(lo.float(), hi.float(), hr[masked])
        loss.backward()
        model.zero_grad(set_to_none=True)

    out[f"whole model ({cfg.n_blocks} blocks, {model.num_params() / 1e6:.1f}M params)"] = whole
    return out


def bench_recipe(name: str, batch: int | None, device: torch.device, repeats: int) -> dict:
    cfg = SR_RECIPES.get(name)
    if batch is None:
        batch = RECIPES_TRAIN.get(name).data.batch_size if device.type == "cpu" else 1
    torch.manual_seed(0)
    model = SRTransformer(cfg).to(device).train()
    amp = device.type == "cuda"

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if amp else torch.autocast("cpu", enabled=False)

    tokens = batch * cfg.hr_grid[0] * cfg.hr_grid[1] * cfg.hr_grid[2]
    print(f"bench sr: recipe {name}: HR grid {tuple(cfg.hr_grid)}, batch {batch} ({tokens} HR tokens), d_model "
          f"{cfg.d_model}, {'bf16 autocast' if amp else 'fp32'} on {device.type}", flush=True)
    rows = {}
    for case, fn in cases(model, batch, device, autocast).items():
        seconds, median = time_runs(fn, device, repeats)
        peak = peak_bytes(fn, device)
        rows[case] = {"seconds": seconds, "median_seconds": median, "tokens_per_s": tokens / seconds,
                      "peak_mib": peak / 2**20}
        print(f"  {case:<58} {tokens / seconds:>12,.0f} tok/s  {seconds * 1e3:>9.1f} ms  peak {peak / 2**20:>9.1f} MiB",
              flush=True)
    return {"hr_grid": list(cfg.hr_grid), "windows": [list(w) for w in cfg.windows], "batch": batch,
            "tokens": tokens, "d_model": cfg.d_model, "n_blocks": cfg.n_blocks, "params": model.num_params(),
            "dtype": "bf16-autocast" if amp else "fp32", "cases": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--recipes", default=None, help="comma-separated SR recipes (default: tiny,demo on the CPU, "
                                                    "stage1,stage2 on cuda)")
    ap.add_argument("--batch", type=int, default=None, help="default: the train recipe's batch (CPU), 1 (cuda)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per case (the best is reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default="bench/results/sr.json")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench sr: --device cuda but no GPU here", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.recipes.split(",") if args.recipes else (["tiny", "demo"] if device.type == "cpu"
                                                          else ["stage1", "stage2"])
    t0 = time.perf_counter()
    results = {name: bench_recipe(name, args.batch, device, args.repeats) for name in names}
    report = {
        "bench": "sr", "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "device": args.device, "repeats": args.repeats,
        "memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "torch profiler memory events",
        "recipes": results, "seconds": time.perf_counter() - t0,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench sr: {len(names)} recipe(s) in {report['seconds']:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
