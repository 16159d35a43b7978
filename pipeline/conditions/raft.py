"""RAFT optical flow: torchvision raft_small / raft_large built without weights (load a local state dict).

The state dict is loaded from `media.raft_checkpoint` (torchvision's layout, i.e. the file
torchvision's own weights are, or any `model.state_dict()` of those classes) with
torch.load(weights_only=True) and strict=True (ConditionModel); pairs from all clips of a call are
batched; GPU when present.
"""

from __future__ import annotations

from torchvision.models.optical_flow import raft_large, raft_small


def build_raft(name: str):
    return {"raft_small": raft_small, "raft_large": raft_large}[name](weights=None, progress=False)
