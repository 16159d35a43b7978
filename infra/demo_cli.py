"""Arguments of `videopoet demo` (argument spec: standard library only; the job is videopoet.demo)."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "run every stage end to end on the embedded defaults (CPU, minutes)"
DESCRIPTION = """\
The whole system end to end on the embedded defaults, on the CPU, in minutes. Stages (each one is
the real job, run with tiny settings): make-samples, ingest (Beam local runner), train-tokenizer
(video and audio), tokenize (Ray local), train (ZeRO-3 under Ray Train, 2 CPU workers), sample.
Every stage is tracked in MLflow; stages already complete are reused on a second run."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    parser.add_argument("--fresh", action="store_true", help="delete the output directory first")
    parser.add_argument("--stages", default="", help="comma-separated subset of stages to run (always rerun)")
    parser.add_argument("--tokenizer-steps", type=int, default=40, help="video tokenizer training steps")
    parser.add_argument("--audio-steps", type=int, default=20, help="audio tokenizer training steps")
    parser.add_argument("--verbose", action="store_true",
                        help="print every job's command and output here (default: one line per stage + its summary; "
                             "the rest goes to the log file each line names)")
    parser.add_argument("--lm-steps", type=int, default=100, help="LM training steps")
    parser.add_argument("--sr-steps", type=int, default=30, help="SR stage-1 training steps")
    parser.set_defaults(run="videopoet.demo:run")
