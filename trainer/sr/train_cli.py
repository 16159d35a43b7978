"""Argument spec of `videopoet train-sr`: train the SR transformer on SR token shards (no torch here)."""

from __future__ import annotations

import argparse

NAME = "train-sr"
HELP = "train the super-resolution transformer (stage 1 or 2) on SR token shards"
DESCRIPTION = """Train the SR transformer (MAGVIT masked-token modelling on HR tokens given LR tokens and text).

Examples:
    videopoet train-sr --stage 1 --config tiny --data runs/sr_tokens --out runs/sr1 steps=20
    videopoet train-sr --stage 1 --config stage1 --data /data/sr1_tokens --out /shared/runs/sr1 --num-workers 8
    videopoet train-sr --stage 2 --config stage2 --data /data/sr2_tokens --out /shared/runs/sr2 \\
        --num-workers 8 --video-tokenizer /shared/runs/video_tokenizer/tokenizer

--data lists SR token shards (docs/formats.md "SR token shards"): a directory, its shards/ folder, a
.parquet file or a glob. Rerunning the same command resumes from the latest checkpoint in --out
(model, AdamW, LR schedule, data position, RNG); a changed config is refused, naming the differing keys.
Metrics (loss, masked-token accuracy per factor group, tokens/s) go to MLflow (./mlflow.db unless
MLFLOW_TRACKING_URI is set); with --video-tokenizer each evaluation also logs an LR | SR | HR .mp4.
"""
# The same meaning in every training job (videopoet.training.launch.NUM_WORKERS_HELP).
NUM_WORKERS_HELP = ("0 = train in this process (no Ray); N >= 1 = N data-parallel Ray Train workers "
                    "(TorchTrainer; gloo on CPU, NCCL on GPU)")
RECIPE_NAMES = ("tiny", "demo", "stage1", "stage2")  # videopoet.trainer.sr.config.RECIPES_TRAIN (no import here)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True,
                        help="1: LM resolution -> 2x; 2: 2x -> 4x (the eval video's guidance scales)")
    parser.add_argument("--config", default="tiny",
                        help=f"recipe ({', '.join(RECIPE_NAMES)}) or YAML file (default: tiny)")
    parser.add_argument("--data", required=True,
                        help="SR token shards: a directory, its shards/ folder, one .parquet or a glob")
    parser.add_argument("--out", default="runs/sr",
                        help="output directory: checkpoints/, model/, losses.jsonl, eval_videos/ (default runs/sr)")
    parser.add_argument("--num-workers", type=int, default=0, help=NUM_WORKERS_HELP + " (default 0)")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop (checkpointed) once the run reaches this absolute step; the same command "
                             "without it resumes")
    parser.add_argument("--video-tokenizer", default=None, metavar="DIR",
                        help="a video tokenizer checkpoint: evaluations also write LR | SR | HR videos")
    parser.add_argument("--run-name", default=None, help="MLflow run name")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. steps=500 data.batch_size=16")
    parser.set_defaults(run="videopoet.trainer.sr.train:run", log_under="out")
