"""`videopoet sample`: generate a clip with a trained LM and write it as .mp4 (with audio when asked).

    videopoet sample --task t2v --checkpoint runs/lm/export --video-tokenizer ckpt/magvit2 \\
        --caption "a dog running on the beach" --cfg-scale 4 --top-p 0.9 --out dog.mp4
    videopoet sample --task i2v --image cat.jpg --caption "a cat turns its head" ...
    videopoet sample --task fp --video clip.mp4 ...          # continue from the video's first 5 frames
    videopoet sample --task t2v ... --extend 2               # 17 + 2 x 12 frames (paper §7.2)
    videopoet sample --task t2v ... --audio-tokenizer ckpt/soundstream   # + video-to-audio, muxed

The LM checkpoint is the consolidated export of `videopoet train` (videopoet-lm). Text goes
through the same frozen encoder the token shards used (--text-encoder DIR; default the embedded
MiniLM, which only fits models trained on MiniLM embeddings: the width is checked).
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

TASKS = ("t2v", "t2i", "i2v", "fp")
FPS = 8
AUDIO_RATE = 16_000


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sample", help="generate a video (or image) from a trained LM and write .mp4",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.set_defaults(func=run)


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


def write_mp4(path: str | Path, rgb, audio=None, fps: int = FPS, audio_rate: int = AUDIO_RATE) -> None:
    """uint8 [T, H, W, 3] (+ float mono [S] in [-1, 1]) -> H.264 (+ AAC) .mp4 with PyAV."""
    import av
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height = int(rgb.shape[2]), int(rgb.shape[1])
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": "16", "preset": "medium"}
        as_ = None
        if audio is not None:
            as_ = out.add_stream("aac", rate=audio_rate)
            as_.layout = "mono"
        for i, frame in enumerate(rgb):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
        if as_ is not None:
            fmt = as_.codec_context.format
            size = as_.codec_context.frame_size or 1024
            sig = np.asarray(audio, dtype=np.float32).reshape(-1)
            for pos in range(0, len(sig), size):
                chunk = sig[pos: pos + size][None, :]
                data = chunk if fmt.is_planar else np.ascontiguousarray(chunk.T).reshape(1, -1)
                af = av.AudioFrame.from_ndarray(data, format=fmt.name, layout="mono")
                af.sample_rate = audio_rate
                af.pts = pos
                af.time_base = Fraction(1, audio_rate)
                for pkt in as_.encode(af):
                    out.mux(pkt)
            for pkt in as_.encode(None):
                out.mux(pkt)


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

    import numpy as np
    import torch

    from videopoet.tokenizers.magvit2 import VideoTokenizer, tensor_to_video, video_to_tensor
    from videopoet.trainer.sampling import (SamplingConfig, extend_video, fp5_condition, generate, load_lm,
                                            request_row)

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
