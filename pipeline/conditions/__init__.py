"""Stylization conditions (paper §4.1): optical flow + depth, as a uint8 video shaped like the RGB; the public names.

Channel 0 = flow x, channel 1 = flow y, channel 2 = depth; [T, H, W, 3] uint8, T/H/W of the clip.
Modules: quantize (flow/depth -> uint8, torch-free), dis (OpenCV DIS flow, torch-free), raft
(torchvision RAFT), depth (MiDaS v2.1 small / DPT-Large networks, build_midas), weights (safe
state-dict loading), model (ConditionModel). Importing this package does not import torch: the
torch-backed names (build_raft, build_midas, MIDAS_MODELS, load_state_dict_file) load their module
on first use.
"""

from __future__ import annotations

import importlib

from videopoet.pipeline.conditions.dis import dis_flow
from videopoet.pipeline.conditions.model import ConditionModel
from videopoet.pipeline.conditions.quantize import dequantize_flow, normalize_depth, quantize_flow

_TORCH_NAMES = {  # name -> submodule (imports torch at its top)
    "build_raft": "raft",
    "build_midas": "depth",
    "MIDAS_MODELS": "depth",
    "load_state_dict_file": "weights",
}

__all__ = ["ConditionModel", "dequantize_flow", "dis_flow", "normalize_depth", "quantize_flow", *_TORCH_NAMES]


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_TORCH_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
