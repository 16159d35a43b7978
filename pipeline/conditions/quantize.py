"""Flow and depth to uint8: flow quantization around 128, per-clip depth min-max, per-frame flows (torch-free).

Frame t gets the forward flow t -> t+1; the last frame repeats the previous flow (T-1 flows for T
frames); a 1-frame clip (an image) gets zero flow. Normalisation: q = clip(round(128 + f * 128 /
max_flow_px), 0, 255) per component, so 128 = no motion, one level = max_flow_px/128 px (1/8 px
at the default 16 px); motion beyond +-max_flow_px saturates.
"""

from __future__ import annotations

import numpy as np


def quantize_flow(flow: np.ndarray, max_flow_px: float) -> np.ndarray:
    """float flow [..., 2] in px -> uint8 [..., 2]; 128 = zero motion."""
    q = np.rint(128.0 + flow * (128.0 / max_flow_px))
    return np.clip(q, 0, 255).astype(np.uint8)


def dequantize_flow(q: np.ndarray, max_flow_px: float) -> np.ndarray:
    return (q.astype(np.float32) - 128.0) * (max_flow_px / 128.0)


def normalize_depth(depth: np.ndarray) -> np.ndarray:
    """float [T, H, W] -> uint8 min-max over the whole clip (0 when the clip's depth is constant)."""
    lo, hi = float(depth.min()), float(depth.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-8:
        return np.zeros(depth.shape, np.uint8)
    return np.clip(np.rint((depth - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _per_frame_flow(pair_flows: np.ndarray, frames: int) -> np.ndarray:
    """[T-1, H, W, 2] forward flows -> [T, H, W, 2]: the last frame repeats the previous flow."""
    if frames == 1:
        raise ValueError("one frame has no pairs")
    return np.concatenate([pair_flows, pair_flows[-1:]], axis=0)
