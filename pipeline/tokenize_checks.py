"""The tokenize job's clip checks: fail a clip (with its reason) that cannot be tokenized as stored."""

from __future__ import annotations

from typing import Any

from videopoet.pipeline.clip_shards import ClipItem, ShardFormatError
from videopoet.pipeline.tokenize_config import AUDIO_SAMPLES_PER_FRAME, PRODUCTION_SIZES, TokenizeConfig


def check_clip(it: ClipItem, shard: str, cfg: TokenizeConfig, spatial: int, temporal: int) -> None:
    """Fail `it` (with the reason) when its arrays cannot be tokenized as they are."""
    clip = it.clip
    where = f"{shard}: clip {it.key}"
    try:
        clip.validate()
    except ShardFormatError as err:
        it.fail("check", "BadArray", f"{shard}: {err}")
        return
    t, h, w, _ = clip.rgb.shape
    if t not in (1, 17, 41) or (t - 1) % temporal:
        it.fail("check", "BadLength", f"{where}: {t} frames; expected 1 (image), 17 or 41")
        return
    fmt = clip.meta.get("format")
    if not cfg.any_size:
        if (h, w) not in PRODUCTION_SIZES:
            it.fail("check", "BadSize", f"{where}: {h}x{w} frames; expected 128x128 (square) or 224x128 "
                                        "(portrait, height x width); any_size=true accepts others")
            return
        if fmt is not None and fmt != PRODUCTION_SIZES[(h, w)]:
            it.fail("check", "FormatMismatch", f"{where}: format {fmt!r} but {h}x{w} frames")
            return
    elif h % spatial or w % spatial:
        it.fail("check", "BadSize", f"{where}: {h}x{w} frames; height and width must be multiples of {spatial}")
        return
    if t == 1 and h != w:
        it.fail("check", "BadSize", f"{where}: an image must be square, got {h}x{w}")
        return
    if clip.audio is not None and t > 1 and clip.audio.shape[0] != t * AUDIO_SAMPLES_PER_FRAME:
        it.fail("check", "AudioLength", f"{where}: {clip.audio.shape[0]} audio samples; {t} frames at 8 fps "
                                        f"need {t * AUDIO_SAMPLES_PER_FRAME} at 16 kHz")
        return
    if not isinstance(clip.meta.get("caption", ""), str):
        it.fail("check", "BadMeta", f"{where}: caption is not a string")


def video_format(clip: Any) -> str:
    fmt = clip.meta.get("format")
    if fmt in ("square", "portrait"):
        return fmt
    h, w = clip.rgb.shape[1:3]
    return "portrait" if h > w else "square"
