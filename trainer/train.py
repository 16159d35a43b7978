"""`videopoet train`: pretrain the prefix LM (arguments: videopoet.trainer.train_cli; the job: trainer.engine).

    python -m videopoet.trainer.train ARGS   ==   videopoet train ARGS
"""

from __future__ import annotations

import argparse
import json
import sys

from videopoet import commands
from videopoet.paths import input_dir, output_dir, output_file
from videopoet.pipeline.token_shards import list_token_shards
from videopoet.trainer import train_cli
from videopoet.trainer.config import TRAIN_RECIPES


def _config(args: argparse.Namespace):
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
    from videopoet.tracking import tracking_uri
    from videopoet.trainer import engine

    if args.export:
        if not args.out:
            print("videopoet train --export needs --out DIR", file=sys.stderr)
            return 2
        input_dir(args.export, "--export", "a training checkpoint directory (<run dir>/checkpoints/step_<N>/)",
                  needs=("trainer_state.json",))
        output_dir(args.out, "--out")
        digest = engine.export_checkpoint(args.export, args.out)
        print(f"exported {args.export} -> {args.out} (videopoet-lm, sha256 {digest[:16]})")
        return 0
    cfg = _config(args)
    if not cfg.data.shards:
        print("videopoet train: config error: data.shards is empty; pass data.shards=[DIR,...] "
              "(token shards written by `videopoet tokenize`)", file=sys.stderr)
        return 2
    list_token_shards(list(cfg.data.shards))  # tokenize outputs, shards folders, files, globs; else one line
    output_dir(cfg.checkpoint.dir, "checkpoint.dir")
    if args.summary_json:
        output_file(args.summary_json, "--summary-json")
    summary = engine.run(cfg, progress=not args.no_progress)
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


if __name__ == "__main__":
    sys.exit(commands.main_for(train_cli))
