"""One-line errors for feature-model weights given as local paths (CLIP, C3D, VGGish), and their content hash.

`MissingWeights` is both the I3D loader's `WeightsError` (so one `except WeightsError` covers every feature model)
and a `videopoet.config.UsageError` (so the CLI prints it as one line, exit 2). Nothing here, nor in any loader
that uses it, downloads: a missing file is the user's to put in place, and the message says which file and what.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from videopoet.config import UsageError
from videopoet.eval.i3d_weights import WeightsError


class MissingWeights(WeightsError, UsageError):
    """A weights file (or directory) that a feature model needs is not where the user said it is."""


class BadWeights(WeightsError, UsageError):
    """A weights file exists but is not in a layout the loader accepts (the message names the first bad entry)."""


def require_path(path, what: str, hint: str, kind: str = "file") -> Path:
    """`path` as a Path if it is an existing file (kind="file") or directory (kind="dir"), else MissingWeights."""
    if path is None or str(path) == "":
        raise MissingWeights(f"{what}: no path given; {hint}")
    p = Path(path).expanduser()
    ok = p.is_file() if kind == "file" else p.is_dir()
    if not ok:
        found = "not found" if not p.exists() else f"not a {kind}"
        raise MissingWeights(f"{what}: {p} {found}; {hint}")
    return p


def sha256_files(paths: Iterable[Path]) -> str:
    """sha256 of the files' bytes, in sorted-name order (one file: its plain sha256, as `sha256sum` prints)."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in z.namelist())


def load_state_dict_file(path: Path, what: str) -> dict:
    """A state dict from .safetensors, or a torch file read with weights_only=True; one-line BadWeights otherwise.

    A TorchScript archive (StyleGAN-V's c3d_ucf101.pt / i3d_torchscript.pt, OpenAI's ViT-B-16.pt) is refused: loading
    it runs its code. A `state_dict` wrapper (as Lightning saves) is unwrapped.
    """
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except SafetensorError as err:
            raise BadWeights(f"{what}: {path} is not a readable safetensors file ({err})") from None
    if _is_torchscript(path):
        raise BadWeights(f"{what}: {path} is a TorchScript archive, which is not loaded (it would run code); save its "
                         f"state_dict() to a .pt where you trust the file, and give that")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError for a foreign file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadWeights(f"{what}: {path} is not a weights-only torch state dict ({first})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BadWeights(f"{what}: {path} holds a {type(state).__name__}, not a state dict")
    return state
