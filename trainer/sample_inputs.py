"""Reading and conditioning the inputs of `videopoet sample`: images, videos, audio, COMMIT masks, flow + depth.

Everything goes through the code ingest and tokenize use, so a request looks like a training row:
frames through pipeline.media (probe_and_decode: 8 fps windows, centre crop to the format), COMMIT
condition videos through tokenizers.commit (the default `--mask centre` is exactly the trained
mask; a `--mask x0,y0,x1,y1` box applies the same fill rules to another box), the stylization
condition through pipeline.conditions.ConditionModel (DIS flow + depth, as ingest) and the video
tokenizer's encode (as pipeline.tokenize_encode), audio through SoundStream's encode
(level-major codes, as tokenize). Errors are SampleError (one line naming the flag).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from videopoet.config import ConfigError
from videopoet.pipeline.conditions import ConditionModel
from videopoet.pipeline.media import MediaConfig, MediaError, probe_and_decode
from videopoet.pipeline.media.audio import _decode_audio_only
from videopoet.pipeline.media.writer import AUDIO_RATE, FPS
from videopoet.tokenizers import commit
from videopoet.tokenizers.magvit2 import video_to_tensor


class SampleError(ConfigError):
    """A bad sampling request; the message names the argument and the reason (exit 2)."""


# ---------------------------------------------------------------------------------------------
# files


def load_image(path: str, video_format: str):
    """uint8 [H, W, 3] centre-cropped to the format's aspect and resized (128x128 or 128 wide x 224 high)."""
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


def load_clip(path: str, video_format: str, frames: int, *, audio: bool = False, flag: str = "--video"):
    """The first window of `path` (pipeline.media.DecodedClip: rgb uint8 [frames, H, W, 3], int16 audio or None)."""
    cfg = MediaConfig(clip_frames=(frames,), clips_per_video=1, formats=(video_format,), audio=audio, flow="none")
    try:
        clips = probe_and_decode(path, cfg, is_image=False)
    except MediaError as err:
        if err.error_class == "TooShort":  # the decoder's message says how long it is and what one clip needs
            raise SampleError(f"{flag} {path}: too short for {frames} frames at {FPS} fps ({err.message})") from None
        raise SampleError(f"{flag} {path}: {err}") from None
    if not clips:
        raise SampleError(f"{flag} {path}: shorter than {frames} frames at {FPS} fps "
                          f"({frames / FPS:.3f} s); give a longer video or --frames 17")
    return clips[0]


def load_video_frames(path: str, video_format: str, frames: int):
    """uint8 [frames, H, W, 3]: the first window of `path` at 8 fps in the format (pipeline.media)."""
    return load_clip(path, video_format, frames).rgb


def load_audio(path: str, frames: int, flag: str = "--audio") -> np.ndarray:
    """float32 mono 16 kHz samples [frames / 8 s] from the start of any file with an audio stream."""
    try:
        result = _decode_audio_only(path)
    except Exception as err:  # PyAV raises its own error classes (FileNotFoundError among them)
        raise SampleError(f"{flag} {path}: cannot read ({' '.join(str(err).split())})") from None
    if result is None or result.samples.size == 0:
        raise SampleError(f"{flag} {path}: no audio stream")
    need = frames * AUDIO_RATE // FPS
    if result.samples.size < need:
        raise SampleError(f"{flag} {path}: {result.samples.size / AUDIO_RATE:.3f} s of audio, shorter than "
                          f"the {need / AUDIO_RATE:.3f} s of a {frames}-frame clip")
    return np.asarray(result.samples[:need], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# conditions


def parse_mask(text: str | None) -> tuple[int, int, int, int] | None:
    """--mask: None for 'centre' (the trained central H/2 x W/2 box), else a pixel box (x0, y0, x1, y1)."""
    if text is None or text in ("centre", "center"):
        return None
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or box[0] >= box[2] or box[1] >= box[3] or min(box) < 0:
        raise SampleError(f"--mask {text}: expected 'centre' or a pixel box x0,y0,x1,y1 with x0 < x1 and y0 < y1")
    return box  # type: ignore[return-value]


def masked_video(video: torch.Tensor, task: str, box: tuple[int, int, int, int] | None) -> torch.Tensor:
    """The COMMIT condition video [B, 3, T, H, W] of inpaint / outpaint; box None = tokenizers.commit's own."""
    if box is None:
        return commit.condition_video(video, task)
    h, w = video.shape[-2:]
    x0, y0, x1, y1 = box
    if x1 > w or y1 > h:
        raise SampleError(f"--mask {x0},{y0},{x1},{y1}: outside the {w}x{h} frame")
    if task == "inpaint":  # the box is generated: black, as commit's inpaint fill
        out = video.clone()
        out[..., y0:y1, x0:x1] = commit.INPAINT_FILL
        return out
    # outpaint: the box is kept, its border pixels replicated outward (commit's outpaint fill)
    return F.pad(video[..., y0:y1, x0:x1], (x0, w - x1, y0, h - y1, 0, 0), mode="replicate")


def style_condition(clip, flow: str = "dis", depth: str = "none", midas_checkpoint: str | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3] (flow x, flow y, depth) of a decoded clip, by the ConditionModel ingest runs."""
    if flow == "none" and depth == "none":
        raise SampleError("--flow none with --depth none leaves stylization no condition")
    cfg = MediaConfig(clip_frames=(clip.num_frames,), formats=(clip.format,), flow=flow, depth=depth,
                      midas_checkpoint=midas_checkpoint)
    try:
        return ConditionModel(cfg)([clip])[0]
    except (ValueError, OSError) as err:
        raise SampleError(f"--flow/--depth: {' '.join(str(err).split())}") from None


def encode_video(vt, rgb: np.ndarray) -> np.ndarray:
    """Raw MAGVIT-v2 codes [t*h*w] of uint8 [T, H, W, 3] (T = 1 or 1 + 4k)."""
    return vt.encode(video_to_tensor(rgb).unsqueeze(0).to(vt.device)).flatten().cpu().numpy()


def encode_audio(at, wave: np.ndarray) -> np.ndarray:
    """Level-major SoundStream codes [4 * F] of float mono samples (as pipeline.tokenize_encode)."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32)).reshape(1, 1, -1)
    return at.encode(x.to(at.device)).cpu().numpy()[0].reshape(-1)
