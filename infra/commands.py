"""The command protocol: argument-spec modules, parsing with trailing overrides, running a job.

A command's argument-spec module (standard library and torch-free config modules only) defines
NAME, HELP, DESCRIPTION and `add_arguments(parser)`; `add_arguments` sets the parser default
`run="package.module:function"`. The job module is imported only when its command runs, so
building the parser (`videopoet --help`) never imports torch, Ray, Beam or the models.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import Iterable

from videopoet.config import ConfigError


def build_parser(specs: Iterable[ModuleType], *, description: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videopoet", description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for spec in specs:
        spec.add_arguments(sub.add_parser(spec.NAME, help=spec.HELP, description=spec.DESCRIPTION))
    return parser


def resolve(target: str):
    """The function a `run="module:function"` default names (imports the job module now)."""
    module_name, _, func_name = target.partition(":")
    return getattr(importlib.import_module(module_name), func_name)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse a command line; flags may follow `key=value` overrides (`--config tiny a=b --no-progress c=d`)."""
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*(args.overrides or []), *extra]
    return args


def run_args(args: argparse.Namespace) -> int:
    """Run the job the parsed command names; a config mistake is one line on stderr and exit 2."""
    try:
        code = resolve(args.run)(args)
    except ConfigError as err:
        print(f"videopoet {args.command}: config error: {err}", file=sys.stderr)
        return 2
    return int(code or 0)


def main_for(spec: ModuleType, argv: list[str] | None = None) -> int:
    """`python -m <job module> ARGS` == `videopoet <command> ARGS`, with that command's parser only."""
    parser = build_parser([spec])
    return run_args(parse(parser, [spec.NAME, *(sys.argv[1:] if argv is None else argv)]))
