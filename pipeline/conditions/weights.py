"""Loading a local state-dict file safely (weights_only=True) for the RAFT and MiDaS condition models."""

from __future__ import annotations

import torch


def load_state_dict_file(path: str) -> dict:
    """A state dict from a local file, never unpickling code (weights_only=True). Accepts the bare
    dict or {"state_dict"|"model": dict} and strips a DataParallel "module." prefix."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and not any(hasattr(v, "shape") for v in obj.values()):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict (got {type(obj).__name__})")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj
