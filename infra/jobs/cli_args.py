"""The engine flags every data job's command takes, and their config overrides (standard library only)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_engine_arguments(parser: argparse.ArgumentParser, *, num_cpus_help: str, use_gpu_help: str) -> None:
    """The execution flags every pipeline job shares (engine, Beam/Ray placement, progress, tracking)."""
    parser.add_argument("--engine", choices=["beam", "ray", "local"], help="execution engine (default: beam)")
    parser.add_argument("--beam-options",
                        help='extra Beam pipeline options, e.g. "--runner=DataflowRunner --project=p"')
    parser.add_argument("--ray-address", help="join a Ray cluster ('auto' or host:port) instead of starting one")
    parser.add_argument("--num-cpus", type=int, help=num_cpus_help)
    parser.add_argument("--use-gpu", action="store_true", help=use_gpu_help)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-track", action="store_true", help="do not log an MLflow run")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def as_override(key: str, value: Any) -> list[str]:
    """`key=value` for a flag that was given (strings JSON-quoted so they parse as strings); [] if not."""
    if value is None:
        return []
    return [f"{key}={json.dumps(value) if isinstance(value, str) else value}"]


def engine_overrides(args: argparse.Namespace, *, beam_processes_for_cpus: bool = False) -> list[str]:
    """Config overrides for the flags added by add_engine_arguments."""
    flags = as_override("engine", args.engine) + as_override("beam.options", args.beam_options)
    flags += as_override("ray.address", args.ray_address)
    if args.num_cpus is not None:
        flags += as_override("ray.num_cpus", args.num_cpus) + as_override("beam.num_workers", args.num_cpus)
        if beam_processes_for_cpus and args.num_cpus > 1:  # local Beam runners use several cores only in processes
            flags += as_override("beam.running_mode", "multi_processing")
    if args.use_gpu:
        flags += as_override("ray.use_gpu", True)
    if args.no_progress:
        flags += as_override("progress", False)
    if args.no_track:
        flags += as_override("track", False)
    return flags
