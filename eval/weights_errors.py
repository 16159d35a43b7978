"""One-line errors for feature-model weights given as local paths (CLIP, C3D, VGGish), and their content hash.

`MissingWeights` is both the I3D loader's `WeightsError` (so one `except WeightsError` covers every feature model)
and a `videopoet.config.UsageError` (so the CLI prints it as one line, exit 2). Nothing here, nor in any loader
that uses it, downloads: a missing file is the user's to put in place, and the message says which file and what.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

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
