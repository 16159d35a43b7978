"""Still images: recognising one (extension or magic bytes) and decoding it to one 1-frame 128x128 clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from videopoet.pipeline.media.clip import DecodedClip
from videopoet.pipeline.media.config import FORMATS, IMAGE_EXTENSIONS, MediaConfig
from videopoet.pipeline.media.errors import MediaError
from videopoet.pipeline.media.geometry import resize_crop


def _sniff_image(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(16)
    return (head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff")  # GIF: video (config.py)
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or head.startswith(b"BM"))


def _decode_image(path: str, cfg: MediaConfig) -> list[DecodedClip]:
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = cfg.max_pixels
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > cfg.max_pixels:
                raise MediaError("image", "ResolutionTooLarge", f"{path}: {w}x{h} exceeds max_pixels={cfg.max_pixels}")
            if min(w, h) < cfg.min_side:
                raise MediaError("image", "ResolutionTooSmall",
                                 f"{path}: {w}x{h} is smaller than min_side={cfg.min_side}")
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            img = np.asarray(im.convert("RGB"))
    except MediaError:
        raise
    except Image.DecompressionBombError as err:
        raise MediaError("image", "ResolutionTooLarge", f"{path}: {err}") from None
    except Exception as err:
        raise MediaError("image", "UnreadableImage",
                         f"{path}: cannot read as an image ({type(err).__name__}: {err})") from None
    rgb = resize_crop(img, *FORMATS["square"])[None]
    return [DecodedClip(window_index=0, num_frames=1, format="square", start_time_s=0.0, rgb=rgb, audio=None,
                        source_fps=0.0, source_frame_indices=[0], notes=[], source_width=img.shape[1],
                        source_height=img.shape[0], source_duration_s=None)]


def _is_image(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS or _sniff_image(path)
