"""Argument spec of `videopoet train-tokenizer video|audio`: the two tokenizer training jobs (no torch here)."""

from __future__ import annotations

import argparse

from videopoet.tokenizers.soundstream_config import RECIPES_TRAIN as AUDIO_RECIPES
from videopoet.tokenizers.video_config import RECIPES_TRAIN as VIDEO_RECIPES

NAME = "train-tokenizer"
HELP = "train the video (MAGVIT-v2) or audio (SoundStream) tokenizer"
DESCRIPTION = """\
Train a tokenizer on clip shards; tracked in MLflow. Rerunning the same command resumes from the
latest checkpoint in --out (a different config is refused, naming the keys).

Examples:
    videopoet train-tokenizer video --data demo_out/clips --out demo_out/video_tokenizer --config tiny steps=40
    videopoet train-tokenizer audio --data demo_out/clips --out demo_out/audio_tokenizer --config tiny steps=20
The tokenizer for `videopoet tokenize` is then <--out>/tokenizer."""
# The same meaning in every training job (videopoet.training.launch.NUM_WORKERS_HELP; spelled out
# here so that building the parser imports no torch).
NUM_WORKERS_HELP = ("0 = train in this process (no Ray); N >= 1 = N data-parallel Ray Train workers "
                    "(TorchTrainer; gloo on CPU, NCCL on GPU)")
DATA_HELP = "clip shards: the output directory of `videopoet ingest`, its shards/ folder, one .tar or a glob"
STOP_AFTER_HELP = ("stop (checkpointed) once the run reaches this absolute step; the same command without it "
                   "resumes")


def _video(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--out", default="runs/video_tokenizer",
                        help="output directory: checkpoints/, tokenizer/ (the EMA tokenizer), eval_videos/")
    parser.add_argument("--config", default="tiny", help=f"recipe ({', '.join(VIDEO_RECIPES.names())}) or YAML file")
    parser.add_argument("--num-workers", type=int, default=0, help=NUM_WORKERS_HELP + " (default 0)")
    parser.add_argument("--stop-after", type=int, default=None, help=STOP_AFTER_HELP)
    parser.add_argument("--time-limit-min", type=float, default=None,
                        help="stop (checkpointed) after this many minutes; rerun to resume")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=500")
    parser.set_defaults(run="videopoet.tokenizers.train_video:run", log_under="out")


def _audio(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--config", default="tiny", help=f"recipe ({', '.join(AUDIO_RECIPES.names())}) or YAML file")
    parser.add_argument("--out", default="checkpoints/audio_tokenizer",
                        help="output directory; a run with the same --out resumes "
                             "(default: checkpoints/audio_tokenizer)")
    parser.add_argument("--num-workers", type=int, default=0,
                        help=NUM_WORKERS_HELP + "; this job trains on one worker: 0 (default) or 1")
    parser.add_argument("--stop-after", type=int, default=None, help=STOP_AFTER_HELP)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--run-name", default=None, help="MLflow run name")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. steps=200 data.batch_size=4")
    parser.set_defaults(run="videopoet.tokenizers.train_audio:run", log_under="out")


KINDS = {
    "video": (_video, "Train the MAGVIT-v2 video tokenizer on clip shards."),
    "audio": (_audio, "Train the SoundStream audio tokenizer on clip shards."),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, (add, help_text) in KINDS.items():
        add(kinds.add_parser(kind, help=help_text, description=help_text + "\n\n" + DESCRIPTION.split("\n\n", 1)[1],
                             formatter_class=argparse.RawDescriptionHelpFormatter))
