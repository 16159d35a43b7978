"""OpenCV DIS optical flow (PRESET_MEDIUM on grayscale frames): the CPU default flow, torch-free."""

from __future__ import annotations

import numpy as np


def dis_flow(frames: np.ndarray, preset: str = "medium") -> np.ndarray:
    """uint8 [T, H, W, 3] -> float32 [T-1, H, W, 2] forward flows (OpenCV DIS)."""
    import cv2

    presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
    dis = cv2.DISOpticalFlow_create(presets[preset])
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([dis.calc(gray[t], gray[t + 1], None) for t in range(len(gray) - 1)]).astype(np.float32)
