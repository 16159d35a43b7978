"""Argument spec of `videopoet super-resolve`: a low-resolution clip through the SR cascade (no torch here)."""

from __future__ import annotations

import argparse

NAME = "super-resolve"
HELP = "super-resolve a low-resolution video through the SR cascade (stage 1 [, stage 2]) and write .mp4"
DESCRIPTION = """Super-resolve a clip in token space (paper §3.3): tokenize it, run the SR stages, decode.

Examples:
    videopoet super-resolve --video clip.mp4 --sr runs/sr1/model --video-tokenizer runs/vt/tokenizer \\
        --caption "a dog running on the beach" --out clip_256.mp4
    videopoet super-resolve --video clip.mp4 --sr runs/sr1/model,runs/sr2/model --video-tokenizer DIR --out hr.mp4

The clip is read as ingest reads it (8 fps, the first 17 frames, centre-cropped and resized to stage 1's
input size: its LR token grid times the tokenizer's compression, e.g. 128x128 for an LR grid (5, 16, 16)),
tokenized with --video-tokenizer (the tokenizer the SR token shards were made with), passed through the
stages (MaskGIT, 24 steps, each stage's paper guidance: text 4 / LR 1, then 8 / 2) and decoded. The input's
soundtrack, if any, is kept. --caption goes through the same frozen text encoder as the SR shards
(--text-encoder DIR; default the embedded MiniLM)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--video", required=True, help="input video (any length >= 17 frames at 8 fps)")
    parser.add_argument("--sr", required=True, metavar="SR1_DIR[,SR2_DIR]",
                        help="SR checkpoints: the model/ directories of `videopoet train-sr`, stage 1 first")
    parser.add_argument("--video-tokenizer", required=True, metavar="DIR", help="MAGVIT-v2 checkpoint directory")
    parser.add_argument("--caption", help="text prompt (optional: without it the text condition is dropped)")
    parser.add_argument("--text-encoder", metavar="DIR", help="local text encoder directory (default: embedded MiniLM)")
    parser.add_argument("--out", default="super_resolved.mp4", help="output .mp4 (default super_resolved.mp4)")
    parser.add_argument("--sr-steps", type=int, default=None, help="MaskGIT steps per stage (default 24)")
    parser.add_argument("--sr-text-scale", metavar="S[,S2]",
                        help="text guidance, one value or one per stage (default: 4 stage 1, 8 stage 2)")
    parser.add_argument("--sr-lr-scale", metavar="S[,S2]",
                        help="low-resolution guidance, one value or one per stage (default: 1 stage 1, 2 stage 2)")
    parser.add_argument("--seed", type=int, default=0, help="stage k draws from seed + k (default 0)")
    parser.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    parser.set_defaults(run="videopoet.trainer.sr.super_resolve:run", log_under="out")
