"""The `videopoet` command: one subcommand per job.

Each job's module exposes `register(subparsers)`, which adds its subparser and sets
`func=<callable taking the parsed args and returning an exit code>`. Modules are imported lazily
at parser-build time only (heavy libraries are imported inside the job functions), so
`videopoet --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from videopoet.config import ConfigError

# Order is the order `videopoet --help` lists them (the order of the stages).
COMMAND_MODULES = (
    "videopoet.samples",
    "videopoet.pipeline.ingest",
    "videopoet.tokenizers.cli",
    "videopoet.pipeline.tokenize",
    "videopoet.trainer.train",
    "videopoet.trainer.sample_cli",
    "videopoet.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videopoet",
        description="VideoPoet data pipeline, tokenizers and trainer. "
        "Stages: ingest -> train-tokenizer -> tokenize -> train -> sample.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except ConfigError as err:
        print(f"videopoet {args.command}: config error: {err}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
