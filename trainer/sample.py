"""The `videopoet sample` job: generate clips with a trained LM and write them as .mp4 (or .png for t2i).

Arguments: videopoet.trainer.sample_cli. Inputs are checked first (SampleError: exit 2 with one
line naming the flag); the LM export, the MAGVIT-v2 (and SoundStream) checkpoints and the text
encoder are loaded; the request rows go through videopoet.trainer.sampling; the video (and the
video-to-audio track) is written by the one media writer (videopoet.pipeline.media.writer).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from videopoet.pipeline.media.writer import AUDIO_RATE, FPS, write_mp4


class SampleError(ValueError):
    """A bad sampling request; the message names the argument and the reason."""


# ---------------------------------------------------------------------------------------------
# inputs


def load_image(path: str, video_format: str):
    """uint8 [H, W, 3] centre-cropped to the format's aspect and resized (128x128 or 128 wide x 224 high)."""
    import numpy as np
    from PIL import Image

    width, height = 128, (224 if video_format == "portrait" else 128)
    try:
        img = Image.open(path).convert("RGB")
    except (OSError, ValueError) as err:
        raise SampleError(f"--image {path}: cannot read ({err})") from None
    w, h = img.size
    scale = max(width / w, height / h)
    img = img.resize((max(width, round(w * scale)), max(height, round(h * scale))), Image.BICUBIC)
    left, top = (img.size[0] - width) // 2, (img.size[1] - height) // 2
    return np.array(img.crop((left, top, left + width, top + height)), dtype=np.uint8)


def load_video_frames(path: str, video_format: str, frames: int):
    """uint8 [frames, H, W, 3]: the first window of `path` at 8 fps in the format (pipeline.media)."""
    from videopoet.pipeline.media import MediaConfig, MediaError, probe_and_decode

    cfg = MediaConfig(clip_frames=(frames,), clips_per_video=1, formats=(video_format,), audio=False, flow="none")
    try:
        clips = probe_and_decode(path, cfg, is_image=False)
    except MediaError as err:
        raise SampleError(f"--video {path}: {err}") from None
    if not clips:
        raise SampleError(f"--video {path}: shorter than {frames} frames at {FPS} fps")
    return clips[0].rgb


# ---------------------------------------------------------------------------------------------
# output


def _out_path(out: str, index: int, count: int) -> Path:
    p = Path(out)
    return p if count == 1 else p.with_name(f"{p.stem}_{index + 1}{p.suffix}")


# ---------------------------------------------------------------------------------------------
# the job


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except SampleError as err:
        print(f"videopoet sample: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import time

    from videopoet.tokenizers.magvit2 import VideoTokenizer, tensor_to_video, video_to_tensor
    from videopoet.trainer.sampling import SamplingConfig, extend_video, fp5_condition, generate, load_lm, request_row

    t0 = time.perf_counter()
    if args.task == "t2v" and not args.caption:
        raise SampleError("--task t2v needs --caption")
    if args.task == "i2v" and not args.image:
        raise SampleError("--task i2v needs --image")
    if args.task == "fp" and not (args.video or args.image):
        raise SampleError("--task fp needs --video (5-frame condition) or --image (1-frame condition)")
    if args.task == "t2i" and (args.extend or args.frames != 17 or args.format != "square"):
        raise SampleError("--task t2i makes one 128x128 image: no --extend, --frames or --format")
    if args.extend and (args.frames != 17):
        raise SampleError("--extend continues 17-frame clips (the fp5 task); use --frames 17")
    if args.cfg_scale is not None and not args.caption:
        raise SampleError("--cfg-scale guides the text condition: give --caption")
    if args.num_samples < 1:
        raise SampleError("--num-samples must be >= 1")
    cfg = SamplingConfig(args.temperature, args.top_k, args.top_p, args.cfg_scale, args.seed)
    try:
        cfg.validate()
    except ValueError as err:
        raise SampleError(str(err)) from None
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    from videopoet.checkpoint import CheckpointError

    for flag, path in (("--checkpoint", args.checkpoint), ("--video-tokenizer", args.video_tokenizer),
                       ("--audio-tokenizer", args.audio_tokenizer)):
        if path is not None and not Path(path).is_dir():
            raise SampleError(f"{flag} {path}: no such checkpoint directory")
    try:
        model = load_lm(args.checkpoint, device=device)
    except (CheckpointError, ValueError) as err:
        raise SampleError(f"--checkpoint {args.checkpoint}: {err}") from None
    try:
        vt = VideoTokenizer.load(args.video_tokenizer, device=device)
    except (CheckpointError, ValueError) as err:
        raise SampleError(f"--video-tokenizer {args.video_tokenizer}: {err}") from None
    text_emb = text_mask = None
    if args.caption:
        from videopoet.tokenizers.text_encoder import TextEncoder

        encoder = TextEncoder(args.text_encoder, device=str(device))
        if encoder.width != model.cfg.text_dim:
            raise SampleError(f"--text-encoder: {encoder.identity} is {encoder.width} wide, the LM was trained on "
                              f"{model.cfg.text_dim}-wide embeddings (give the encoder the token shards used)")
        emb, mask, _ = encoder.encode([args.caption])
        text_emb, text_mask = emb[0].float().numpy(), mask[0].numpy()

    frames = 1 if args.task == "t2i" else args.frames
    task, inputs = args.task, {}
    if args.task == "i2v":
        img = video_to_tensor(load_image(args.image, args.format)[None]).unsqueeze(0)  # [1, 3, 1, H, W]
        inputs["first_frame_tokens"] = vt.encode(img.to(device)).flatten().cpu().numpy()
    elif args.task == "fp":
        if args.video:
            task = "fp5"
            clip = video_to_tensor(load_video_frames(args.video, args.format, frames)).unsqueeze(0)
            inputs["condition_tokens"] = fp5_condition(vt, clip[:, :, :5].to(device), frames)[0].cpu().numpy()
        else:
            from videopoet.tokenizers.commit import condition_video

            task = "fp1"
            img = video_to_tensor(load_image(args.image, args.format)[None]).unsqueeze(0)
            cond = condition_video(img.expand(-1, -1, frames, -1, -1).contiguous(), "fp1")
            inputs["condition_tokens"] = vt.encode(cond.to(device)).flatten().cpu().numpy()
    rows = [request_row(task, num_frames=frames, video_format=args.format, text_emb=text_emb,
                        text_mask=text_mask, **inputs) for _ in range(args.num_samples)]
    gen = generate(model, task, rows, cfg, device=device, progress=True)
    codes = gen.video_codes  # [N, t, h, w]
    if args.extend:
        video, gens = extend_video(model, vt, codes.to(device), args.extend, cfg,
                                   text_emb=None if text_emb is None else [text_emb] * len(rows),
                                   text_mask=None if text_mask is None else [text_mask] * len(rows),
                                   video_format=args.format, progress=True)
        clips = [codes] + [g.video_codes for g in gens]
    else:
        video = vt.decode(codes.to(device)).cpu()
        clips = [codes]

    audio = None
    if args.audio_tokenizer:
        if args.task == "t2i":
            raise SampleError("--audio-tokenizer: an image has no audio")
        from videopoet.tokenizers.soundstream import AudioTokenizer

        try:
            at = AudioTokenizer.load(args.audio_tokenizer, device=device)
        except (CheckpointError, ValueError) as err:
            raise SampleError(f"--audio-tokenizer {args.audio_tokenizer}: {err}") from None
        clip_samples = frames * AUDIO_RATE // FPS
        overlap = 5 * AUDIO_RATE // FPS  # extension clips repeat their first 5 frames
        waves = []
        for k, clip_codes in enumerate(clips):
            v2a_rows = [request_row("v2a", num_frames=frames, video_format=args.format, video_tokens=c.numpy())
                        for c in clip_codes]
            # fresh seed per clip so two clips never share draws
            v2a_cfg = SamplingConfig(cfg.temperature, cfg.top_k, cfg.top_p, None, cfg.seed + 1000 + k)
            agen = generate(model, "v2a", v2a_rows, v2a_cfg, device=device, progress=True)
            wave = at.decode(agen.audio_codes.to(device), length=clip_samples).cpu()[:, 0]  # [N, S]
            waves.append(wave if k == 0 else wave[:, overlap:])
        audio = torch.cat(waves, dim=1).numpy()

    outs = []
    for i in range(len(rows)):
        rgb = tensor_to_video(video[i]).numpy()  # [T, H, W, 3]
        path = _out_path(args.out, i, len(rows))
        if path.suffix.lower() == ".png":
            if rgb.shape[0] != 1:
                raise SampleError(f"--out {path}: .png holds one image; use .mp4 for video")
            from PIL import Image

            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb[0]).save(path)
        else:
            write_mp4(path, rgb, None if audio is None else audio[i])
        outs.append(path)
    seconds = time.perf_counter() - t0
    print(f"videopoet sample: wrote {len(outs)} file(s) ({video.shape[2]} frames of {video.shape[4]}x{video.shape[3]}"
          f"{', with audio' if audio is not None else ''}) in {seconds:.1f} s: {', '.join(map(str, outs))}")
    return 0
