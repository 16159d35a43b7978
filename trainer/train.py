"""`videopoet train`: pretrain the prefix LM on token shards with AGD, DeepSpeed ZeRO-3 and Ray Train.

Examples:
    videopoet train --config tiny data.shards=[demo_out/tokens]                 # local Ray, 2 CPU workers, ZeRO-3
    videopoet train --config tiny data.shards=[demo_out/tokens] --num-workers 0 # one process, plain PyTorch
    videopoet train --config 1b data.shards=[/data/tokens] --use-gpu --num-workers 8
    videopoet train --config 8b data.shards=[/data/tokens] --ray-address auto --use-gpu --num-workers 64 \\
        checkpoint.dir=/shared/runs
    videopoet train --export runs/<run>/checkpoint_... --out lm_export          # consolidate weights for sampling

Running the same command again resumes the run (same checkpoint.dir and run name) from its latest
checkpoint: model, optimiser, LR schedule, data position and RNG. SIGTERM/SIGINT checkpoint at the
next step boundary and stop. Metrics go to MLflow (./mlflow.db unless MLFLOW_TRACKING_URI is set).
"""

from __future__ import annotations

import argparse
import json
import sys


def _config(args: argparse.Namespace):
    from videopoet.trainer.config import TRAIN_RECIPES

    overrides = list(args.overrides)
    if args.num_workers is not None:
        overrides.append(f"engine.num_workers={args.num_workers}")
    if args.use_gpu:
        overrides.append("engine.use_gpu=true")
    if args.ray_address:
        overrides.append(f"engine.ray_address={args.ray_address}")
    if args.engine:
        overrides.append(f"engine.kind={args.engine}")
    return TRAIN_RECIPES.get(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    if args.export:
        if not args.out:
            print("videopoet train --export needs --out DIR", file=sys.stderr)
            return 2
        from videopoet.trainer.engine import export_checkpoint

        digest = export_checkpoint(args.export, args.out)
        print(f"exported {args.export} -> {args.out} (videopoet-lm, sha256 {digest[:16]})")
        return 0
    cfg = _config(args)
    if not cfg.data.shards:
        print("videopoet train: config error: data.shards is empty; pass data.shards=[DIR,...] "
              "(token shards written by `videopoet tokenize`)", file=sys.stderr)
        return 2
    from videopoet.trainer import engine
    from videopoet.tracking import tracking_uri

    if cfg.engine.num_workers == 0:
        if cfg.engine.kind != "plain":
            cfg = engine.dataclasses_replace_engine(cfg, kind="plain")
        summary = engine.run_local(cfg, progress=not args.no_progress)
    else:
        summary = engine.run_ray(cfg, progress=not args.no_progress)
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=1, default=str)
    state = "stopped (run the same command to resume)" if summary.get("stopped") else "done"
    print(
        f"train {state}: step {summary.get('step')} ({summary.get('steps_run')} steps this run), "
        f"{summary.get('tokens', 0):,} tokens at {summary.get('tokens_per_s', 0):,.0f} tokens/s, "
        f"final loss {summary.get('final_loss')}; checkpoint {summary.get('checkpoint')}; "
        f"export {summary.get('export', '-')}; MLflow run {summary.get('mlflow_run_id')} at {tracking_uri()}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="pretrain the prefix LM (AGD, DeepSpeed ZeRO-3, Ray Train, MLflow)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default="tiny", help="recipe (tiny, 300m, 1b, 8b) or YAML file (default: tiny)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start a local Ray)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="data-parallel Ray Train workers; 0 = this process only, plain PyTorch (no Ray, no DeepSpeed)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker, NCCL, bf16")
    parser.add_argument("--engine", choices=("deepspeed", "plain"), default=None,
                        help="deepspeed (ZeRO-3, default) or plain PyTorch (the reference)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--summary-json", default=None, help="also write the run summary to this JSON file")
    parser.add_argument("--export", default=None, metavar="CHECKPOINT_DIR",
                        help="instead of training: consolidate a training checkpoint into a videopoet-lm checkpoint")
    parser.add_argument("--out", default=None, help="output directory of --export")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. schedule.max_steps=500")
    parser.set_defaults(func=run)
