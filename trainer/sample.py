"""The `videopoet sample` job: generate with a trained LM, any of its tasks, and write .mp4 (+ audio), .png or .wav.

Arguments: videopoet.trainer.sample_cli. A request is checked first (SampleError, a ConfigError:
exit 2 with one line naming the flag); models load once per run (`Models`: the LM export, MAGVIT-v2,
SoundStream and the text encoder, each when first needed); the inputs are read and conditioned by
videopoet.trainer.sample_inputs (the ingest/tokenize code paths); the request rows go through
videopoet.trainer.sampling (layouts from pipeline.tasks); everything is written by the one media
writer (videopoet.pipeline.media.writer). `--chain steps.yaml` runs several steps (sample_chain).
`--super-resolve SR1[,SR2]` sends the LM's video tokens through the SR cascade (trainer.sr.cascade) and
writes --out at the HR size, <out stem>_base.mp4 at the LM's.

CLI task -> layout task: t2v, t2i, uncond (--frames 1: the t2i layout with the null text, an
unconditional image), i2v, fp (fp5 from --video, fp1 from --image), inpaint, outpaint, style, a2v,
v2a, avcont.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from videopoet.checkpoint import CheckpointError
from videopoet.paths import output_file
from videopoet.pipeline.media.config import FORMATS
from videopoet.pipeline.media.writer import AUDIO_RATE, FPS, write_mp4, write_wav
from videopoet.pipeline.tasks import TASKS, build_layout
from videopoet.tokenizers.commit import condition_video
from videopoet.tokenizers.magvit2 import VideoTokenizer, tensor_to_video, video_to_tensor
from videopoet.tokenizers.soundstream import AudioTokenizer
from videopoet.tokenizers.text_encoder import TextEncoder
from videopoet.trainer.sample_chain import run_chain
from videopoet.trainer.sample_inputs import (  # noqa: F401  (load_image, load_video_frames: job API)
    SampleError,
    encode_audio,
    encode_video,
    load_audio,
    load_clip,
    load_image,
    load_video_frames,
    masked_video,
    parse_mask,
    style_condition,
)
from videopoet.trainer.sampling import (
    SamplingConfig,
    extend_video,
    fp5_condition,
    generate,
    load_lm,
    request_row,
    trained_tasks,
)
from videopoet.trainer.sr import cascade

VIDEO_INPUT_TASKS = ("inpaint", "outpaint", "style", "v2a", "avcont")  # --video required (fp: --video or --image)
AUDIO_TASKS = ("a2v", "v2a", "avcont")  # need --audio-tokenizer


class Models:
    """The models of one run, each loaded when first needed, with flag-naming errors."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device = args, device
        self._lm = self._vt = self._at = self._text = self._sr = None
        self._trained: tuple[str, ...] | None | bool = False

    def _load(self, flag: str, path: str | None, loader):
        if path is not None and not Path(path).is_dir():
            raise SampleError(f"{flag} {path}: no such checkpoint directory")
        try:
            return loader(path, device=self.device)
        except (CheckpointError, ValueError) as err:
            raise SampleError(f"{flag} {path}: {err}") from None

    @property
    def lm(self):
        if self._lm is None:
            self._lm = self._load("--checkpoint", self.args.checkpoint, load_lm)
        return self._lm

    @property
    def vt(self):
        if self._vt is None:
            self._vt = self._load("--video-tokenizer", self.args.video_tokenizer, VideoTokenizer.load)
        return self._vt

    def at(self, task: str):
        if self._at is None:
            if not self.args.audio_tokenizer:
                raise SampleError(f"--task {task} needs --audio-tokenizer (SoundStream)")
            self._at = self._load("--audio-tokenizer", self.args.audio_tokenizer, AudioTokenizer.load)
        return self._at

    @property
    def sr(self) -> list[cascade.SRStage]:
        """The SR cascade of --super-resolve (loaded once, grids chained and checked)."""
        if self._sr is None:
            a = self.args
            self._sr = cascade.load_cascade(
                cascade.parse_paths(a.super_resolve), self.device, steps=a.sr_steps, seed=a.seed,
                text_scales=cascade.parse_scales(a.sr_text_scale, "--sr-text-scale"),
                lr_scales=cascade.parse_scales(a.sr_lr_scale, "--sr-lr-scale"))
        return self._sr

    def check_trained(self, layout_task: str, flag: str) -> None:
        """SampleError when the export's train config lists its tasks and `layout_task` is not among them."""
        if self._trained is False:
            self.lm  # noqa: B018  (loads and checks the checkpoint first)
            self._trained = trained_tasks(self.args.checkpoint)
        if self._trained is not None and layout_task not in self._trained:
            raise SampleError(f"{flag}: the checkpoint was not trained on task {layout_task!r} "
                              f"(its tasks: {', '.join(self._trained)})")

    def text(self, caption: str):
        """(emb float [64, D], mask bool [64]) of a caption, with the encoder width checked against the LM."""
        if self._text is None:
            self._text = TextEncoder(self.args.text_encoder, device=str(self.device))
        enc = self._text
        if enc.width != self.lm.cfg.text_dim:
            raise SampleError(f"--text-encoder: {enc.identity} is {enc.width} wide, the LM was trained on "
                              f"{self.lm.cfg.text_dim}-wide embeddings (give the encoder the token shards used)")
        emb, mask, _ = enc.encode([caption])
        return emb[0].float().numpy(), mask[0].numpy()


# ---------------------------------------------------------------------------------------------
# the job


def run(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "chain", None):
            if getattr(args, "super_resolve", None):
                raise SampleError("--super-resolve applies to one --task, not to a --chain")
            return run_chain(args, Models, sample_step)
        if not args.task:
            raise SampleError("give --task (or --chain steps.yaml)")
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        sample_step(args, Models(args, device))
        return 0
    except SampleError as err:
        print(f"videopoet sample: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


def layout_task(args: argparse.Namespace) -> str:
    if args.task == "fp":
        return "fp5" if args.video else "fp1"
    if args.task == "uncond" and args.frames == 1:
        return "t2i"
    return args.task


def check_request(args: argparse.Namespace) -> None:
    """Flag combinations, before any model loads."""
    task, lt = args.task, layout_task(args)
    text_mode = TASKS[lt].text if task != "uncond" else "none"
    if text_mode == "required" and not args.caption:
        raise SampleError(f"--task {task} needs --caption")
    if text_mode == "none" and args.caption:
        raise SampleError(f"--task {task} takes no --caption (its layout has no text)")
    if task == "i2v" and not args.image:
        raise SampleError("--task i2v needs --image")
    if task == "fp" and not (args.video or args.image):
        raise SampleError("--task fp needs --video (5-frame condition) or --image (1-frame condition)")
    if task in VIDEO_INPUT_TASKS and not args.video:
        raise SampleError(f"--task {task} needs --video")
    if lt in AUDIO_TASKS and not args.audio_tokenizer:
        raise SampleError(f"--task {task} needs --audio-tokenizer (SoundStream)")
    if task == "a2v" and not (args.audio or args.video):
        raise SampleError("--task a2v needs --audio (or a --video with an audio track)")
    if args.mask is not None and task not in ("inpaint", "outpaint"):
        raise SampleError("--mask applies to --task inpaint / outpaint")
    parse_mask(args.mask)
    if args.first_frame and task != "style":
        raise SampleError("--first-frame applies to --task style")
    if task == "t2i" and (args.extend or args.frames not in (1, 17) or args.format != "square"):
        raise SampleError("--task t2i makes one 128x128 image: no --extend, --frames or --format")
    if lt == "t2i" and args.format != "square":
        raise SampleError("an image is 128x128: no --format portrait")
    if args.frames == 1 and task not in ("t2i", "uncond"):
        raise SampleError(f"--frames 1 (an image) is for --task t2i / uncond, not {task}")
    if args.extend and (args.frames != 17 or lt in ("t2i", "v2a", "avcont")):
        raise SampleError("--extend continues 17-frame video-only clips (the fp5 task); use --frames 17")
    if args.cfg_scale is not None and not args.caption:
        raise SampleError("--cfg-scale guides the text condition: give --caption")
    if args.audio_cfg_scale is not None and not args.caption:
        raise SampleError("--audio-cfg-scale guides the text condition at audio positions: give --caption")
    if args.num_samples < 1:
        raise SampleError("--num-samples must be >= 1")
    out = Path(args.out).suffix.lower()
    if out == ".png" and lt != "t2i":
        raise SampleError(f"--out {args.out}: .png holds one image; use .mp4 for video")
    if out == ".wav" and lt not in ("v2a", "avcont") and not args.audio_tokenizer:
        raise SampleError(f"--out {args.out}: .wav holds audio; --task {task} generates none")
    sr_flags = [f for f in ("sr_steps", "sr_text_scale", "sr_lr_scale") if getattr(args, f, None) is not None]
    if sr_flags and not getattr(args, "super_resolve", None):
        raise SampleError(f"--{sr_flags[0].replace('_', '-')} applies with --super-resolve")
    if getattr(args, "super_resolve", None):
        if lt in ("t2i", "v2a") or out in (".png", ".wav") or args.extend:
            raise SampleError("--super-resolve takes the 17-frame video of a video task (no t2i, v2a, .png, "
                              ".wav or --extend)")
    output_file(args.out, "--out")


def sample_step(args: argparse.Namespace, m: Models) -> list[Path]:
    """One request: check, condition the inputs, sample, decode, write. Returns the files written."""
    t0 = time.perf_counter()
    check_request(args)
    task, lt = args.task, layout_task(args)
    cfg = SamplingConfig(args.temperature, args.top_k, args.top_p, args.cfg_scale, args.seed,
                         audio_cfg_scale=args.audio_cfg_scale)
    try:
        cfg.validate()
    except ValueError as err:
        raise SampleError(str(err)) from None
    m.check_trained(lt, f"--task {task}")
    vt = m.vt
    frames = 1 if lt == "t2i" else args.frames
    if getattr(args, "super_resolve", None):  # refuse a grid mismatch before the LM runs
        width, height = FORMATS[args.format]
        cascade.check_input(m.sr, vt.latent_shape(frames, height, width))
    samples = frames * AUDIO_RATE // FPS
    text_emb = text_mask = None
    if args.caption:
        text_emb, text_mask = m.text(args.caption)

    inputs: dict = {}
    clip = wave_in = None  # the input video window, the input audio (float [S])
    if args.video and (task in VIDEO_INPUT_TASKS or task in ("fp", "a2v")):
        clip = load_clip(args.video, args.format, frames, audio=task in ("a2v", "avcont"))
    if task == "i2v":
        inputs["first_frame_tokens"] = encode_video(vt, load_image(args.image, args.format)[None])
    elif lt == "fp5":
        video = video_to_tensor(clip.rgb).unsqueeze(0).to(vt.device)
        inputs["condition_tokens"] = fp5_condition(vt, video[:, :, :5], frames)[0].cpu().numpy()
    elif lt in ("fp1", "avcont"):  # avcont continues from the first frame and its audio (paper 5.2)
        first = load_image(args.image, args.format) if lt == "fp1" else clip.rgb[0]
        img = video_to_tensor(first[None]).unsqueeze(0)
        cond = condition_video(img.expand(-1, -1, frames, -1, -1).contiguous(), "fp1")
        inputs["condition_tokens"] = vt.encode(cond.to(vt.device)).flatten().cpu().numpy()
    elif task in ("inpaint", "outpaint"):
        video = video_to_tensor(clip.rgb).unsqueeze(0)
        cond = masked_video(video, task, parse_mask(args.mask))
        inputs["condition_tokens"] = vt.encode(cond.to(vt.device)).flatten().cpu().numpy()
    elif task == "style":
        cond = style_condition(clip, args.flow, args.depth, args.midas_checkpoint)
        inputs["condition_tokens"] = encode_video(vt, cond)
        if args.first_frame or args.image:
            first = load_image(args.image, args.format) if args.image else clip.rgb[0]
            inputs["first_frame_tokens"] = encode_video(vt, first[None])
    elif task == "v2a":
        inputs["video_tokens"] = encode_video(vt, clip.rgb)
    if lt in ("a2v", "avcont"):
        if args.audio:
            wave_in = load_audio(args.audio, frames)
        elif clip is not None and clip.audio is not None:
            wave_in = clip.audio.astype(np.float32)[:samples] / 32768.0
        else:
            raise SampleError(f"--video {args.video}: no audio track; give --audio")
        inputs["audio_tokens"] = encode_audio(m.at(task), wave_in)

    rows = [request_row(lt, num_frames=frames, video_format=args.format, text_emb=text_emb,
                        text_mask=text_mask, **inputs) for _ in range(args.num_samples)]
    if task == "style" and "first_frame_tokens" in inputs:
        if not any(s.name == "first_frame" for s in build_layout(lt, rows[0]).segments):
            raise SampleError("--first-frame: this build's style layout takes no first frame (pipeline.tasks)")
    try:
        gen = generate(m.lm, lt, rows, cfg, device=m.device, progress=True)
    except ValueError as err:
        raise SampleError(f"--task {task}: {' '.join(str(err).split())}") from None

    audio = None
    if lt == "v2a":
        rgb = np.stack([clip.rgb] * len(rows))
        audio = m.at(task).decode(gen.audio_codes.to(m.device), length=samples).cpu()[:, 0].numpy()
    else:
        codes = gen.video_codes  # [N, t, h, w]
        if args.extend:
            video, gens = extend_video(m.lm, vt, codes.to(m.device), args.extend, cfg,
                                       text_emb=None if text_emb is None else [text_emb] * len(rows),
                                       text_mask=None if text_mask is None else [text_mask] * len(rows),
                                       video_format=args.format, progress=True)
            clips = [codes] + [g.video_codes for g in gens]
        else:
            video = vt.decode(codes.to(m.device)).cpu()
            clips = [codes]
        rgb = np.stack([tensor_to_video(v).numpy() for v in video])  # [N, T, H, W, 3]
        if getattr(args, "super_resolve", None):
            hr_codes = cascade.run_cascade(m.sr, codes, None if text_emb is None else torch.from_numpy(text_emb),
                                           None if text_mask is None else torch.from_numpy(text_mask))[-1]
            base_rgb, rgb = rgb, np.stack([tensor_to_video(v).numpy() for v in vt.decode(hr_codes).cpu()])
        if lt == "avcont":
            audio = m.at(task).decode(gen.audio_codes.to(m.device), length=samples).cpu()[:, 0].numpy()
        elif lt == "a2v":
            audio = np.stack([wave_in] * len(rows))
        elif args.audio_tokenizer and lt != "t2i":
            m.check_trained("v2a", "--audio-tokenizer (video-to-audio)")
            audio = _video_to_audio(m, clips, frames, cfg, args.format)
    if getattr(args, "super_resolve", None):
        _write(args, base_rgb, audio, t0, tag="_base")
    return _write(args, rgb, audio, t0)


def _video_to_audio(m: Models, clips: list[torch.Tensor], frames: int, cfg, video_format: str) -> np.ndarray:
    """A v2a track for generated clips (extension clips overlap their predecessor by 5 frames): float [N, S]."""
    at = m.at("v2a")
    clip_samples = frames * AUDIO_RATE // FPS
    overlap = 5 * AUDIO_RATE // FPS  # extension clips repeat their first 5 frames
    waves = []
    for k, clip_codes in enumerate(clips):
        v2a_rows = [request_row("v2a", num_frames=frames, video_format=video_format, video_tokens=c.numpy())
                    for c in clip_codes]
        # fresh seed per clip so two clips never share draws; v2a has no text, so no guidance
        v2a_cfg = SamplingConfig(cfg.temperature, cfg.top_k, cfg.top_p, None, cfg.seed + 1000 + k)
        agen = generate(m.lm, "v2a", v2a_rows, v2a_cfg, device=m.device, progress=True)
        wave = at.decode(agen.audio_codes.to(m.device), length=clip_samples).cpu()[:, 0]  # [N, S]
        waves.append(wave if k == 0 else wave[:, overlap:])
    return torch.cat(waves, dim=1).numpy()


def _out_path(out: str, index: int, count: int, tag: str = "") -> Path:
    p = Path(out)
    return p.with_name(f"{p.stem}{'' if count == 1 else f'_{index + 1}'}{tag}{p.suffix}")


def _write(args: argparse.Namespace, rgb: np.ndarray, audio: np.ndarray | None, t0: float,
           tag: str = "") -> list[Path]:
    outs = []
    for i in range(rgb.shape[0]):
        path = _out_path(args.out, i, rgb.shape[0], tag)
        suffix = path.suffix.lower()
        if suffix == ".png":
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb[i, 0]).save(path)
        elif suffix == ".wav":
            write_wav(path, audio[i])
        else:
            write_mp4(path, rgb[i], None if audio is None else audio[i])
        outs.append(path)
    _, t, h, w, _ = rgb.shape
    print(f"videopoet sample: {args.task}: wrote {len(outs)} file(s) ({t} frames of {w}x{h}"
          f"{', with audio' if audio is not None else ''}) in {time.perf_counter() - t0:.1f} s: "
          f"{', '.join(map(str, outs))}")
    return outs
