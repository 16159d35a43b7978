"""Scale-to-cover and centre crop: the source region a format keeps (crop_box) and the resize (resize_crop)."""

from __future__ import annotations

import numpy as np


def crop_box(src_w: int, src_h: int, out_w: int, out_h: int) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) of the centred source region that scales to cover out_w x out_h."""
    scale = max(out_w / src_w, out_h / src_h)
    w = min(src_w, max(1, round(out_w / scale)))
    h = min(src_h, max(1, round(out_h / scale)))
    return (src_w - w) // 2, (src_h - h) // 2, w, h


def resize_crop(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Scale-to-cover + centre crop, antialiased (INTER_AREA shrinking, INTER_CUBIC enlarging)."""
    import cv2

    x0, y0, w, h = crop_box(img.shape[1], img.shape[0], out_w, out_h)
    region = img[y0:y0 + h, x0:x0 + w]
    interp = cv2.INTER_AREA if (w >= out_w and h >= out_h) else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(region, (out_w, out_h), interpolation=interp))
