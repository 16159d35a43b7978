"""`videopoet tokenize`'s arguments (job: videopoet.pipeline.tokenize); standard library and torch-free configs only."""

from __future__ import annotations

import argparse

from videopoet.jobs.cli_args import add_engine_arguments
from videopoet.pipeline.tokenize_config import SR_FORMATS, TOKENIZE_RECIPES

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
    videopoet tokenize --engine ray --input "/data/clips/shards/shard-00*.tar" --output /data/tokens ...

--mode sr writes SR token shards instead (for `videopoet train-sr`): per clip of --sr-format, the
HR tokens, the tokens of its bicubic 2x downsample and the text embeddings; other clips are skipped
with a reason, and no audio tokenizer is needed:
    videopoet tokenize --mode sr --sr-format portrait_2x --input /data/clips --output /data/sr1_tokens \\
        --video-tokenizer ckpt/magvit2"""


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
    parser.add_argument("--mode", choices=["lm", "sr"], help="lm: LM token shards (default); sr: SR token shards")
    parser.add_argument("--sr-format", choices=SR_FORMATS,
                        help="--mode sr: the HR clip format (stage 1: portrait_2x or square_2x; stage 2: portrait_4x)")
    add_engine_arguments(parser, num_cpus_help="logical CPUs of a local Ray / local Beam workers",
                         use_gpu_help="run the models on GPU actors (Ray)")
    parser.set_defaults(run="videopoet.pipeline.tokenize:run_from_args", log_under="output")
