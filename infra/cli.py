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
    "videopoet.trainer.sample_cli",
    "videopoet.demo_cli",
)
DESCRIPTION = ("VideoPoet data pipeline, tokenizers and trainer. "
               "Stages: ingest -> train-tokenizer -> tokenize -> train -> sample.")


# TRANSITION (removed once every command has its spec module): the old register() modules.
_LEGACY = {
    "videopoet.pipeline.samples_cli": "videopoet.samples",
    "videopoet.pipeline.ingest_cli": "videopoet.pipeline.ingest",
    "videopoet.pipeline.tokenize_cli": "videopoet.pipeline.tokenize",
    "videopoet.trainer.train_cli": "videopoet.trainer.train",
    "videopoet.demo_cli": "videopoet.demo",
}


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="videopoet", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_SPECS:
        try:
            spec = importlib.import_module(name)
        except ModuleNotFoundError:
            importlib.import_module(_LEGACY[name]).register(sub)
            continue
        if hasattr(spec, "register"):
            spec.register(sub)
            continue
        spec.add_arguments(sub.add_parser(spec.NAME, help=spec.HELP, description=spec.DESCRIPTION))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = commands.parse(build_parser(), argv)
    if hasattr(args, "func"):
        args.run = None
        try:
            return int(args.func(args) or 0)
        except commands.ConfigError as err:
            print(f"videopoet {args.command}: config error: {err}", file=sys.stderr)
            return 2
    return commands.run_args(args)


if __name__ == "__main__":
    sys.exit(main())
