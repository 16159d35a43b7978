"""`videopoet train-tokenizer video|audio`: the two tokenizer training jobs."""

from __future__ import annotations

import argparse
import importlib

KINDS = {
    "video": ("videopoet.tokenizers.train_video", "Train the MAGVIT-v2 video tokenizer on clip shards."),
    "audio": ("videopoet.tokenizers.train_audio", "Train the SoundStream audio tokenizer on clip shards."),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-tokenizer", help="train the video (MAGVIT-v2) or audio (SoundStream) tokenizer",
        description="Train a tokenizer on clip shards; tracked in MLflow.",
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, (module_name, help_text) in KINDS.items():
        module = importlib.import_module(module_name)
        kind_parser = kinds.add_parser(kind, help=help_text, description=help_text)
        module.add_arguments(kind_parser)
        kind_parser.set_defaults(func=module.run)
