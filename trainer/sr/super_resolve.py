"""`videopoet super-resolve`: a user's low-resolution clip -> tokens -> the SR cascade -> decoded .mp4.

Arguments: videopoet.trainer.sr.super_resolve_cli. The clip is decoded by the sampling job's reader
(trainer.sample_inputs.load_clip: pipeline.media as ingest, 8 fps, the first window) in the media
format whose size is stage 1's input (its LR grid times the tokenizer's compression; no such format:
one line naming it), tokenized by the video tokenizer, super-resolved (trainer.sr.cascade) and decoded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from videopoet.checkpoint import CheckpointError
from videopoet.config import UsageError
from videopoet.paths import output_file
from videopoet.pipeline.media.config import FORMATS
from videopoet.pipeline.media.writer import write_mp4
from videopoet.tokenizers.magvit2 import VideoTokenizer, tensor_to_video, video_to_tensor
from videopoet.tokenizers.text_encoder import TextEncoder
from videopoet.trainer.sample_inputs import SampleError, load_clip
from videopoet.trainer.sr import cascade


def input_format(vt: VideoTokenizer, lr_grid, flag: str) -> tuple[str, int]:
    """(media format name, frames) whose tokens have the grid `lr_grid` under `vt`; UsageError if none."""
    t, h, w = lr_grid
    frames = 1 + (t - 1) * vt.cfg.temporal_factor
    size = (w * vt.cfg.spatial_factor, h * vt.cfg.spatial_factor)  # (width, height), as FORMATS
    for name, wh in FORMATS.items():
        if tuple(wh) == size:
            return name, frames
    raise UsageError(f"{flag}: stage 1 takes {size[0]}x{size[1]} video (LR grid {tuple(lr_grid)}), which is no "
                     f"media format ({', '.join(f'{n} {a}x{b}' for n, (a, b) in FORMATS.items())})")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = output_file(args.out, "--out")
    if not Path(args.video).is_file():
        raise UsageError(f"--video {args.video}: no such file")
    stages = cascade.load_cascade(cascade.parse_paths(args.sr), device, steps=args.sr_steps, seed=args.seed,
                                  text_scales=cascade.parse_scales(args.sr_text_scale, "--sr-text-scale"),
                                  lr_scales=cascade.parse_scales(args.sr_lr_scale, "--sr-lr-scale"), flag="--sr")
    if not Path(args.video_tokenizer).is_dir():
        raise UsageError(f"--video-tokenizer {args.video_tokenizer}: no such checkpoint directory")
    try:
        vt = VideoTokenizer.load(args.video_tokenizer, device=device)
    except (CheckpointError, ValueError) as err:
        raise UsageError(f"--video-tokenizer {args.video_tokenizer}: {' '.join(str(err).split())}") from None
    fmt, frames = input_format(vt, stages[0].lr_grid, "--sr")
    try:
        clip = load_clip(args.video, fmt, frames, audio=True)
    except SampleError as err:
        raise UsageError(str(err)) from None
    tokens = vt.encode(video_to_tensor(clip.rgb).unsqueeze(0).to(device))
    text_emb = text_mask = None
    if args.caption:
        emb, mask, _ = TextEncoder(args.text_encoder, device=str(device)).encode([args.caption])
        text_emb, text_mask = emb.float(), mask.bool()
    hr = cascade.run_cascade(stages, tokens, text_emb, text_mask, flag="--sr")[-1]
    rgb = tensor_to_video(vt.decode(hr)[0].float()).numpy()
    audio = None if clip.audio is None else clip.audio.astype(np.float32) / 32768.0
    write_mp4(out, rgb, audio)
    _, h, w, _ = rgb.shape
    lr_h, lr_w = clip.rgb.shape[1:3]
    print(f"videopoet super-resolve: {args.video} ({frames} frames as {lr_w}x{lr_h}) -> {out} ({rgb.shape[0]} "
          f"frames of {w}x{h}{', with audio' if audio is not None else ''}) through {len(stages)} SR stage(s) in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0
