"""Arguments of `videopoet status` (argument spec: standard library only; the job is videopoet.status)."""

from __future__ import annotations

import argparse

NAME = "status"
HELP = "what a job's output directory holds: committed units, failures, throughput, what a rerun would do"
DESCRIPTION = """\
Read any job's output directory and say where it stands, without starting anything:
  ingest / tokenize output   committed units of the plan, failures by class (one example each),
                             throughput from summary.json, and what a rerun would do
  training run directory     checkpoints (steps, kind), export, STOP request, and what a rerun would do
                             (train-tokenizer --out, or <checkpoint.dir>/<run name> of `videopoet train`)

Examples:
    videopoet status demo_out/clips
    videopoet status demo_out/tokens
    videopoet status demo_out/video_tokenizer
    videopoet status demo_out/lm/demo-lm"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("out", metavar="OUT", help="a job's output directory")
    parser.add_argument("--json", action="store_true", help="print the status as one JSON object")
    parser.set_defaults(run="videopoet.status:run")
