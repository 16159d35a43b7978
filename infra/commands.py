"""The command protocol: argument-spec modules, parsing with trailing overrides, running a job.

A command's argument-spec module (standard library and torch-free config modules only) defines
NAME, HELP, DESCRIPTION and `add_arguments(parser)`; `add_arguments` sets the parser default
`run="package.module:function"`. The job module is imported only when its command runs, so
building the parser (`videopoet --help`) never imports torch, Ray, Beam or the models.

Every command also takes `--log-level` and `--log-file` (videopoet.logs): library logging goes to
the log file (default `<output>/logs/<command>.log`, where the spec's `log_under` default names the
output: an argument, or `override:KEY:DEFAULT` for a `key=value` override), the terminal shows the
job's own lines and real warnings. A user mistake (ConfigError, UsageError, a path that is a file
or missing, an argparse error) is one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable

from videopoet import logs
from videopoet.config import ConfigError, UsageError

USER_EXIT = 2
# OS errors that, escaping a job, mean a path given on the command line is wrong (not a bug in the job)
PATH_ERRORS = (FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `videopoet train: error: ... (videopoet train --help)`, exit 2."""

    def error(self, message: str):
        self.exit(USER_EXIT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _leaves(parser: argparse.ArgumentParser) -> Iterable[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for action in subs:
        for child in action.choices.values():
            yield from _leaves(child)


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logging")
    group.add_argument("--log-level", default="WARNING", type=str.upper, choices=logs.LEVELS,
                       help="terminal level of library logging (Ray, DeepSpeed, Beam, MLflow, torch); the log "
                            "file gets INFO and above (default WARNING)")
    group.add_argument("--log-file", default=None,
                       help="append library logging here (default: <output>/logs/<command>.log)")


def build_parser(specs: Iterable[ModuleType], *, description: str = "") -> argparse.ArgumentParser:
    parser = Parser(prog="videopoet", description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for spec in specs:
        spec.add_arguments(sub.add_parser(spec.NAME, help=spec.HELP, description=spec.DESCRIPTION))
    for leaf in _leaves(parser):
        if leaf is not parser:
            add_log_arguments(leaf)
    return parser


def default_log_file(args: argparse.Namespace) -> Path | None:
    """`<output>/logs/<command>.log`, the output named by the spec's `log_under` default (None: no file)."""
    under = getattr(args, "log_under", None)
    if not under:
        return None
    if under.startswith("override:"):
        _, key, default = under.split(":", 2)
        out = next((o.split("=", 1)[1] for o in getattr(args, "overrides", None) or [] if o.startswith(key + "=")),
                   default)
    else:
        out = getattr(args, under, None)
    if out and Path(out).suffix and not Path(out).is_dir():  # a file output (sample --out x.mp4): its folder
        out = str(Path(out).parent)
    return logs.default_log_file(out, args.command) if out else None


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


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def run_args(args: argparse.Namespace) -> int:
    """Run the job the parsed command names; a user mistake is one line on stderr and exit 2."""
    if hasattr(args, "log_level"):
        logs.setup(args.log_level, args.log_file or default_log_file(args))
    try:
        code = resolve(args.run)(args)
    except ConfigError as err:
        print(f"videopoet {args.command}: config error: {_one_line(err)}", file=sys.stderr)
        return USER_EXIT
    except UsageError as err:
        print(f"videopoet {args.command}: {_one_line(err)}", file=sys.stderr)
        return USER_EXIT
    except PATH_ERRORS as err:
        if getattr(args, "log_level", "") == "DEBUG":
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"videopoet {args.command}: {where}{_one_line(err.strerror or err)} (--log-level DEBUG shows where)",
              file=sys.stderr)
        return USER_EXIT
    return int(code or 0)


def main_for(spec: ModuleType, argv: list[str] | None = None) -> int:
    """`python -m <job module> ARGS` == `videopoet <command> ARGS`, with that command's parser only."""
    parser = build_parser([spec])
    return run_args(parse(parser, [spec.NAME, *(sys.argv[1:] if argv is None else argv)]))
