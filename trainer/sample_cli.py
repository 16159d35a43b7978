"""Arguments of `videopoet sample` (argument spec: standard library only; the job is videopoet.trainer.sample)."""

from __future__ import annotations

import argparse

NAME = "sample"
HELP = "generate a video (or image) from a trained LM and write .mp4"
DESCRIPTION = """\
Generate a clip with a trained LM and write it as .mp4 (with audio when asked).

    videopoet sample --task t2v --checkpoint runs/lm/export --video-tokenizer ckpt/magvit2 \\
        --caption "a dog running on the beach" --cfg-scale 4 --top-p 0.9 --out dog.mp4
    videopoet sample --task i2v --image cat.jpg --caption "a cat turns its head" ...
    videopoet sample --task fp --video clip.mp4 ...          # continue from the video's first 5 frames
    videopoet sample --task t2v ... --extend 2               # 17 + 2 x 12 frames (paper §7.2)
    videopoet sample --task t2v ... --audio-tokenizer ckpt/soundstream   # + video-to-audio, muxed

The LM checkpoint is the consolidated export of `videopoet train` (videopoet-lm). Text goes
through the same frozen encoder the token shards used (--text-encoder DIR; default the embedded
MiniLM, which only fits models trained on MiniLM embeddings: the width is checked)."""

TASKS = ("t2v", "t2i", "i2v", "fp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--task", choices=TASKS, required=True,
                   help="t2v text-to-video, t2i text-to-image, i2v image-to-video, fp frame prediction")
    p.add_argument("--checkpoint", required=True, help="consolidated LM export directory (videopoet-lm)")
    p.add_argument("--video-tokenizer", required=True, help="MAGVIT-v2 checkpoint directory")
    p.add_argument("--audio-tokenizer", help="SoundStream checkpoint directory: also generate audio (video-to-audio)")
    p.add_argument("--text-encoder", help="local text encoder directory (default: embedded MiniLM)")
    p.add_argument("--caption", help="text prompt (needed by t2v; optional for i2v, fp and t2i)")
    p.add_argument("--image", help="input image for i2v, or for fp (then 1-frame prediction)")
    p.add_argument("--video", help="input video for fp: its first 5 frames at 8 fps are the condition")
    p.add_argument("--format", choices=("square", "portrait"), default="square", help="128x128 or 128x224 (w x h)")
    p.add_argument("--frames", type=int, choices=(17, 41), default=17, help="output length (8 fps)")
    p.add_argument("--extend", type=int, default=0, help="continue the video this many times (12 frames each)")
    p.add_argument("--out", default="sample.mp4", help="output .mp4 (t2i: .png also works)")
    p.add_argument("--cfg-scale", type=float, default=None, help="classifier-free guidance scale (needs --caption)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1, help="samples; files get _1, _2, ... suffixes")
    p.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    p.set_defaults(run="videopoet.trainer.sample:run")
