"""The `videopoet` command: every job's argument spec in stage order, one job run per call."""

from __future__ import annotations

import importlib
import sys

from videopoet import commands

# Order is the order `videopoet --help` lists them (the order of the stages).
COMMAND_SPECS = (
    "videopoet.pipeline.samples_cli",
    "videopoet.pipeline.ingest_cli",
    "videopoet.tokenizers.cli",
    "videopoet.pipeline.tokenize_cli",
    "videopoet.trainer.train_cli",
    "videopoet.trainer.sr.train_cli",
    "videopoet.trainer.sample_cli",
    "videopoet.trainer.sr.super_resolve_cli",
    "videopoet.status_cli",
    "videopoet.eval.eval_cli",
    "videopoet.demo_cli",
)
DESCRIPTION = ("VideoPoet data pipeline, tokenizers and trainer. "
               "Stages: ingest -> train-tokenizer -> tokenize -> train -> sample.")


def build_parser():
    return commands.build_parser([importlib.import_module(m) for m in COMMAND_SPECS], description=DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return commands.run_args(commands.parse(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
