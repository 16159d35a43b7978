"""Model checkpoints that carry their config and a content hash, and never need unpickling.

Layout of a checkpoint directory:
    weights.pt      torch.save of a flat {name: tensor} dict (loaded with weights_only=True)
    meta.json       {"kind", "config", "content_hash", "format_version", "extra"}
`content_hash` is the SHA-256 of weights.pt: it identifies the exact weights that made a shard.
Writes go to a temporary directory renamed into place, so a killed job never leaves half a
checkpoint under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the path and the reason."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    path: str | Path, tensors: dict[str, Any], *, kind: str, config: Any, extra: dict | None = None
) -> str:
    """Save {name: tensor} plus metadata atomically at directory `path`; returns the content hash."""
    from videopoet.config import to_dict

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent))
    try:
        torch.save({k: v.detach().cpu() if hasattr(v, "detach") else v for k, v in tensors.items()},
                   tmp / "weights.pt")
        content_hash = file_sha256(tmp / "weights.pt")
        meta = {
            "kind": kind,
            "config": to_dict(config),
            "content_hash": content_hash,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "extra": extra or {},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return content_hash


def read_meta(path: str | Path) -> dict[str, Any]:
    meta_path = Path(path) / "meta.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{path}: not a videopoet checkpoint (no meta.json)")
    return json.loads(meta_path.read_text())


def load_checkpoint(path: str | Path, *, kind: str | None = None, verify: bool = True) -> tuple[dict, dict]:
    """Return (tensors, meta). Checks kind and, when `verify`, that the weights match their hash."""
    path = Path(path)
    meta = read_meta(path)
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{path}: a {meta.get('kind')!r} checkpoint, expected {kind!r}")
    weights = path / "weights.pt"
    if verify and file_sha256(weights) != meta["content_hash"]:
        raise CheckpointError(f"{path}: weights.pt does not match its recorded content hash")
    tensors = torch.load(weights, map_location="cpu", weights_only=True)
    return tensors, meta
