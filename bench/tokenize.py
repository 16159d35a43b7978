"""Tokenize throughput: clips/s of the whole job per engine, and the model stages per clip.

    .venv/bin/python bench/tokenize.py                                   # CPU, tiny tokenizers
    .venv/bin/python bench/tokenize.py --recipe paper --device cuda --engines local,ray --clips 64

Checkpoints of the chosen recipe (`tiny`: the project's CPU tokenizers; `paper`: MAGVIT-v2 widths and
SoundStream C=32) are saved with random weights: speed does not depend on the weights. Input clips
are generated: `--frames` at `--size` (height x width) with 16 kHz audio, a cond video and a caption
each, `--clips-per-shard` per shard (one shard is one work unit).

Figures:
- per engine: clips/s of the job's wall time (read, all model stages, token shards, manifest,
  summary), with the models already loaded in this process for local/Beam (in_memory runner) and
  loaded by the Ray actors inside the timed run (reported separately as `model_load_seconds`);
- stages (local process): seconds per clip of the video tokenizer (video + first frame + 4 COMMIT
  conditions + style = 6 video encodes and an image encode), the audio tokenizer and the text encoder.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's `tokenize` (which linecache, inspect and torch
# import): drop bench/ from the import path before anything imports it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402


def make_inputs(root: Path, clips: int, per_shard: int, frames: int, h: int, w: int, seed: int = 0) -> Path:
    import numpy as np

    from videopoet.pipeline.clip_shards import Clip, write_clip_shard

    rng = np.random.default_rng(seed)
    fmt = "portrait" if h > w else "square"
    made = [Clip(key=f"bench{i:05d}", rgb=rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8),
                 audio=rng.integers(-8000, 8000, frames * 2000, dtype=np.int16) if frames > 1 else None,
                 cond=rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8) if frames > 1 else None,
                 meta={"caption": f"a generated clip number {i} with moving colours", "format": fmt,
                       "source_uri": f"bench://{i}"})
            for i in range(clips)]
    folder = root / "clips"
    for s in range(0, clips, per_shard):
        write_clip_shard(folder / f"shard-{s // per_shard:05d}.tar", made[s:s + per_shard])
    return folder


def make_checkpoints(root: Path, recipe: str) -> tuple[Path, Path]:
    import torch

    from videopoet.tokenizers.magvit2 import VideoTokenizer
    from videopoet.tokenizers.soundstream import AudioTokenizer

    torch.manual_seed(0)
    VideoTokenizer.from_recipe(recipe).save(root / "video")
    AudioTokenizer.from_recipe(recipe).save(root / "audio")
    return root / "video", root / "audio"


def stage_times(cfg, inputs: Path, repeat: int = 1) -> dict[str, float]:
    """Seconds per clip of each model stage on the first shard, models already loaded."""
    from videopoet.pipeline import tokenize_encode as enc
    from videopoet.pipeline.clip_shards import read_clip_shard
    from videopoet.pipeline.tokenize_models import load_models

    models = load_models(cfg)
    first = sorted(inputs.glob("*.tar"))[0]
    clips = [it.clip for it in read_clip_shard(first, first.name)]
    sync = _sync(models.device)
    out = {}
    for name, fn in (
        ("video_tokenizer", lambda: enc._encode_videos(models, clips, cfg.encode_batch)),
        ("audio_tokenizer", lambda: enc._encode_audio(models, clips, cfg.audio_batch)),
        ("text_encoder", lambda: models.text.encode([c.meta["caption"] for c in clips])),
    ):
        fn()  # warm-up (kernels, allocator)
        sync()
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        sync()
        out[f"{name}_s_per_clip"] = (time.perf_counter() - t0) / repeat / len(clips)
    return out


def _sync(device: str):
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", choices=["tiny", "paper"], default="tiny", help="tokenizer recipe (random weights)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    ap.add_argument("--engines", default="local,beam,ray", help="comma-separated: local, beam, ray")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--clips-per-shard", type=int, default=2)
    ap.add_argument("--frames", type=int, default=17, choices=[17, 41])
    ap.add_argument("--size", default="128x128", help="height x width: 128x128 or 224x128")
    ap.add_argument("--encode-batch", type=int, default=8)
    ap.add_argument("--num-cpus", type=int, default=0, help="logical CPUs of the local Ray (0 = this machine's)")
    ap.add_argument("--out", default="bench/results/tokenize.json")
    args = ap.parse_args(argv)

    import torch

    from videopoet.pipeline.tokenize import TOKENIZE_RECIPES, run_tokenize
    from videopoet.pipeline.tokenize_models import load_models, model_identity

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench tokenize: --device cuda but no GPU here", file=sys.stderr)
        return 2
    h, w = (int(x) for x in args.size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    try:
        t0 = time.perf_counter()
        video_ckpt, audio_ckpt = make_checkpoints(work / "ckpt", args.recipe)
        inputs = make_inputs(work, args.clips, args.clips_per_shard, args.frames, h, w)
        print(f"bench tokenize: {args.clips} clips of {args.frames}x{h}x{w} in "
              f"{-(-args.clips // args.clips_per_shard)} "
              f"shards, recipe {args.recipe}, device {args.device} "
              f"(setup {time.perf_counter() - t0:.1f} s)", flush=True)

        def cfg_for(engine: str, out: Path):
            extra = [f"ray.num_cpus={args.num_cpus}"] if args.num_cpus else []
            if engine == "ray" and args.device == "cuda":
                extra += ["ray.use_gpu=true"]
            return TOKENIZE_RECIPES.get("default", [
                f"input={inputs}", f"output={out}", f"engine={engine}", f"video_tokenizer={video_ckpt}",
                f"audio_tokenizer={audio_ckpt}", f"device={args.device}", f"encode_batch={args.encode_batch}",
                "progress=false", "track=false", "plots=false", *extra])

        t0 = time.perf_counter()
        load_models(cfg_for("local", work / "unused"), model_identity(cfg_for("local", work / "unused")))
        load_s = time.perf_counter() - t0
        stages = stage_times(cfg_for("local", work / "unused"), inputs)
        engines = {}
        for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
            out = work / f"out-{engine}"
            s = run_tokenize(cfg_for(engine, out))
            engines[engine] = {"clips": s["clips_ok"], "wall_seconds": s["wall_seconds"],
                               "clips_per_s": s["clips_per_s"], "includes_model_load": engine == "ray"}
            shutil.rmtree(out, ignore_errors=True)
            print(f"{engine}: {s['clips_per_s']:.3f} clips/s ({s['clips_ok']} clips in {s['wall_seconds']:.1f} s)",
                  flush=True)
        report = {
            "bench": "tokenize", "host": platform.node(), "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            # other work on a shared machine slows every figure; this says how busy it was
            "load_average_1m_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "recipe": args.recipe, "device": args.device, "frames": args.frames, "size": args.size,
            "clips": args.clips, "clips_per_shard": args.clips_per_shard, "encode_batch": args.encode_batch,
            "model_load_seconds": load_s, "stages": stages, "engines": engines,
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print("stages (s/clip): " + ", ".join(f"{k.replace('_s_per_clip', '')} {v:.3f}" for k, v in stages.items()))
        print(f"-> {out}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
