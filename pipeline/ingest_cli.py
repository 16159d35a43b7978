"""`videopoet ingest`'s arguments (the job: videopoet.pipeline.ingest); standard library and torch-free configs only."""

from __future__ import annotations

import argparse

from videopoet.jobs.cli_args import add_engine_arguments
from videopoet.pipeline.ingest_config import INGEST_RECIPES

NAME = "ingest"
HELP = "videos/images -> clip shards + Parquet manifest (Beam, Ray or local; exactly once)"
DESCRIPTION = """\
Decode videos and captioned images into 8 fps clip shards with audio and flow/depth conditions, on
Beam or Ray. Rerunning into the same --output resumes. Trailing key=value arguments override the
config (e.g. media.flow=none batch_size=32). The next stages take --output itself as their input.

Examples:
    videopoet ingest --config tiny --input demo_out/media/manifest.jsonl --output demo_out/clips
    videopoet ingest --engine ray --input /data/videos --output /data/clips batch_size=32
    videopoet status demo_out/clips                       # committed batches, failures, what a rerun does"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", default="default",
                        help=f"recipe ({', '.join(INGEST_RECIPES.names())}) or YAML file")
    parser.add_argument("--input",
                        help="directory, glob, fsspec URL, or manifest CSV/JSONL/Parquet (path[,caption][,id])")
    parser.add_argument("--output", help="output directory (shards/, manifest/, manifest.parquet, summary.json)")
    parser.add_argument("--batch-size", type=int, help="inputs per work unit (unit of commit/resume)")
    parser.add_argument("--flow", choices=["dis", "raft", "none"], help="optical flow for the condition video")
    parser.add_argument("--depth", choices=["midas", "none"], help="depth for the condition video")
    add_engine_arguments(parser, num_cpus_help="logical CPUs of a local Ray; worker processes of a local Beam runner",
                         use_gpu_help="run the condition models on GPU actors (Ray)")
    parser.set_defaults(run="videopoet.pipeline.ingest:run_from_args", log_under="output")
