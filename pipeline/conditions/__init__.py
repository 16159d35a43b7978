"""Stylization conditions (paper §4.1): optical flow + depth, as a uint8 video shaped like the RGB; the public names.

Channel 0 = flow x, channel 1 = flow y, channel 2 = depth; [T, H, W, 3] uint8, T/H/W of the clip.
Modules: quantize (flow/depth -> uint8, torch-free), dis (OpenCV DIS flow, torch-free), raft
(torchvision RAFT), depth (MiDaS v2.1 small / DPT-Large networks, build_midas), weights (safe
state-dict loading), model (ConditionModel). Importing this package does not import torch (a
DIS-only ingest worker never loads it); the torch-backed names are imported from their modules
(conditions.raft.build_raft, conditions.depth.build_midas, conditions.weights.load_state_dict_file).
"""

from __future__ import annotations

from videopoet.pipeline.conditions.dis import dis_flow
from videopoet.pipeline.conditions.model import ConditionModel
from videopoet.pipeline.conditions.quantize import dequantize_flow, normalize_depth, quantize_flow

__all__ = ["ConditionModel", "dequantize_flow", "dis_flow", "normalize_depth", "quantize_flow"]
