"""`videopoet tokenize`'s arguments (job: videopoet.pipeline.tokenize); standard library and torch-free configs only."""

from __future__ import annotations

import argparse

from videopoet.jobs.cli_args import add_engine_arguments
from videopoet.pipeline.tokenize_config import TOKENIZE_RECIPES

NAME = "tokenize"
HELP = "clip shards -> token shards for every pretraining task (Beam, Ray or local; exactly once)"
DESCRIPTION = """\
Tokenize clip shards with the MAGVIT-v2 video tokenizer, the SoundStream audio tokenizer and a
frozen text encoder into Parquet token shards with per-task sequence lengths, a manifest and a
dataset summary. Rerunning into the same --output resumes; other checkpoints are refused. Trailing
key=value arguments override the config (e.g. encode_batch=16 any_size=true).

Examples:
    videopoet tokenize --config tiny --input demo_out/clips --output demo_out/tokens \\
        --video-tokenizer demo_out/video_tokenizer/tokenizer --audio-tokenizer demo_out/audio_tokenizer/tokenizer
    videopoet tokenize --engine ray --input "/data/clips/shards/shard-00*.tar" --output /data/tokens ..."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", default="default",
                        help=f"recipe ({', '.join(TOKENIZE_RECIPES.names())}) or YAML file")
    parser.add_argument("--input", help="clip shards: the output directory of `videopoet ingest`, its shards/ folder, "
                                          "one .tar or a glob")
    parser.add_argument("--output",
                        help="output directory (shards/, manifest/, stats/, manifest.parquet, summary.json, summary/)")
    parser.add_argument("--video-tokenizer", help="video tokenizer checkpoint directory")
    parser.add_argument("--audio-tokenizer", help="audio tokenizer checkpoint directory")
    parser.add_argument("--text-encoder", help="local text encoder model directory (default: the embedded MiniLM)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="model device (default: auto)")
    add_engine_arguments(parser, num_cpus_help="logical CPUs of a local Ray / local Beam workers",
                         use_gpu_help="run the models on GPU actors (Ray)")
    parser.set_defaults(run="videopoet.pipeline.tokenize:run_from_args", log_under="output")
