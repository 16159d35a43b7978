"""`videopoet train-tokenizer audio`: train the SoundStream audio tokenizer on clip shards."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="clip shard directory (or one .tar)")
    parser.add_argument("--config", default="tiny", help="recipe name (tiny, paper) or YAML file")
    parser.add_argument("--out", default="checkpoints/audio", help="output directory")
    parser.add_argument("--num-workers", type=int, default=1, help="data-parallel workers")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("train-tokenizer audio: in progress")
