"""Argument spec of `videopoet train`: pretrain the prefix LM (AGD, ZeRO-3, Ray Train, MLflow); no torch here."""

from __future__ import annotations

import argparse

NAME = "train"
HELP = "pretrain the prefix LM (AGD, DeepSpeed ZeRO-3, Ray Train, MLflow)"
DESCRIPTION = """Pretrain the prefix LM on token shards with AGD, DeepSpeed ZeRO-3 and Ray Train.

Examples:
    videopoet train --config tiny data.shards=[demo_out/tokens] checkpoint.dir=demo_out/lm  # local Ray, ZeRO-3
    videopoet train --config tiny data.shards=[demo_out/tokens] --num-workers 0 # one process, plain PyTorch
    videopoet train --config 1b data.shards=[/data/tokens] --use-gpu --num-workers 8
    videopoet train --config 8b data.shards=[/data/tokens] --ray-address auto --use-gpu --num-workers 64 \\
        checkpoint.dir=/shared/runs
    videopoet train --export demo_out/lm/demo-lm/checkpoints/step_00000100 --out lm_export  # consolidate weights

data.shards lists token shards: the output directory of `videopoet tokenize`, its shards/ folder, a
.parquet file or a glob. The run writes <checkpoint.dir>/<checkpoint.name>/ (checkpoints/, export/).

Running the same command again resumes the run (same checkpoint.dir and run name) from its latest
checkpoint (<checkpoint.dir>/<run name>/checkpoints/step_<N>/): model, optimiser, LR schedule, data
position and RNG; a changed config is refused, naming the differing keys. SIGTERM/SIGINT checkpoint
at the next step boundary and stop; checkpoint.stop_after=K stops at the absolute step K. Metrics go
to MLflow (./mlflow.db unless MLFLOW_TRACKING_URI is set).
"""
# The same meaning in every training job (videopoet.training.launch.NUM_WORKERS_HELP).
NUM_WORKERS_HELP = ("0 = train in this process (no Ray); N >= 1 = N data-parallel Ray Train workers "
                    "(TorchTrainer; gloo on CPU, NCCL on GPU)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", default="tiny", help="recipe (tiny, 300m, 1b, 8b) or YAML file (default: tiny)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start a local Ray)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help=NUM_WORKERS_HELP + "; with 0 the plain PyTorch engine (no DeepSpeed). "
                             "Default: the recipe's engine.num_workers")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker, NCCL, bf16")
    parser.add_argument("--engine", choices=("deepspeed", "plain"), default=None,
                        help="deepspeed (ZeRO-3, default) or plain PyTorch (the reference)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--summary-json", default=None, help="also write the run summary to this JSON file")
    parser.add_argument("--export", default=None, metavar="CHECKPOINT_DIR",
                        help="instead of training: consolidate a training checkpoint into a videopoet-lm checkpoint")
    parser.add_argument("--out", default=None, help="output directory of --export")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. schedule.max_steps=500")
    parser.set_defaults(run="videopoet.trainer.train:run", log_under="override:checkpoint.dir:runs")
