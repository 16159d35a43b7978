"""C3D as TGAN2's UCF-101 classifier (conv1a..conv5b, fc6..fc8, 101 classes) in PyTorch, with its input pipeline.

Network (pfnet-research/tgan2 `tgan2/models/c3d/c3d_ucf101.py`, the Sports-1M C3D fine-tuned on UCF-101, Caffe
`c3d_ucf101_finetune_whole_iter_20000`): 3x3x3 convolutions (padding 1) with ReLU, widths 64, 128, 256, 256, 512,
512, 512, 512; max pools pool1 (1,2,2) and pool2..pool5 (2,2,2), all with Chainer's cover_all, i.e. ceil_mode
(pool5 takes 7x7 to 4x4); fc6 (512*1*4*4 -> 4096), fc7 (4096), fc8 (101) with ReLU between; dropout is off at eval.
Input (TGAN2 / MAGVIT `inception_score.py`, eval.md §3): uint8 RGB videos [N, T, H, W, 3], the first 16 frames;
channels flipped to BGR; each frame resized to 112x112 with bilinear interpolation, align_corners=True (Chainer's
`resize_images`); the net sees pixel (0..255, as float) minus the mean clip, i.e. TGAN2's `mean2.npz` 'mean'
[3, 16, 128, 171] (BGR) cropped to [:, :, 8:120, 8:120]. MAGVIT's form is x * 255 + x_offset on [0, 1] input,
the same thing; TGAN2 itself scales [-1, 1] by 128, so uint8 u reaches it as u * 128 / 127.5 (0.4 % brighter):
we follow MAGVIT, which VideoPoet follows for UCF-101.

Weights, `load_c3d(path, device, mean_path)` (never downloads):
- `.pt` / `.pth` (torch.load weights_only=True) or `.safetensors`: our names `conv1a.weight`, `conv1a.bias`, ...,
  `conv5b.*`, `fc6.*`, `fc7.*`, `fc8.*`, Chainer shapes equal torch's (conv [out, in, 3, 3, 3], linear [out, in]);
  optionally `mean` (the clip to subtract, BGR, [3, 16, 112, 112] or uncropped [3, 16, >=120, >=120]).
- `.npz` (np.load allow_pickle=False), TGAN2's Chainer `save_npz` naming: `conv1a/W`, `conv1a/b`, ..., `fc8/W`,
  `fc8/b` (a leading `/` or `predictor/` is stripped); optionally `mean`.
- `.flax`, MAGVIT's `c3d_ucf101.flax` (flax.serialization msgpack, decoded here with msgpack and an extension hook
  that builds only numeric arrays): `params/conv1a/kernel` [3, 3, 3, in, out], `.../bias`, `params/fc6/kernel`
  [in, out] (in ordered C, T, H, W as ours), and `params/x_offset` [16, 112, 112, 3] (BGR) = minus the mean clip.
The mean clip comes from `mean_path` (an .npz with key `mean`, e.g. TGAN2's `datasets/models/mean2.npz`) or else a
`mean` entry (or MAGVIT's `x_offset`) in the weights file; with neither, loading fails with one line. Layer widths
and the class count are read from the tensors, so tests can save a narrow C3D with the real names.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from videopoet.eval.weights_errors import BadWeights, MissingWeights, load_state_dict_file, require_path, sha256_files

NUM_FRAMES = 16
SIZE = 112
CONVS = ("conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b")
FCS = ("fc6", "fc7", "fc8")
POOL_AFTER = {"conv1a": (1, 2, 2), "conv2a": (2, 2, 2), "conv3b": (2, 2, 2), "conv4b": (2, 2, 2), "conv5b": (2, 2, 2)}
CHAINER_LEAVES = {"W": "weight", "b": "bias"}
FLAX_NDARRAY = 1  # flax.serialization's msgpack extension code for an ndarray (shape, dtype name, raw buffer)
HINT = ("put TGAN2's C3D UCF-101 weights there (conv3d_deepnetA_ucf.npz, MAGVIT's c3d_ucf101.flax, or a .pt state "
        "dict with conv1a.weight ...)")
MEAN_HINT = "give mean_path= TGAN2's mean2.npz (key 'mean', [3, 16, 128, 171] BGR) or store 'mean' in the weights file"


class C3D(nn.Module):
    """TGAN2's C3D for UCF-101; forward takes the preprocessed clip [N, 3, 16, 112, 112] and returns fc8 logits."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 256, 512, 512, 512, 512), fc_width: int = 4096,
                 num_classes: int = 101):
        super().__init__()
        channels = (3, *widths)
        for name, c_in, c_out in zip(CONVS, channels[:-1], channels[1:]):
            self.add_module(name, nn.Conv3d(c_in, c_out, 3, padding=1))
        self.fc6 = nn.Linear(widths[-1] * 1 * 4 * 4, fc_width)  # pool5 leaves 1 x 4 x 4 from 16 x 112 x 112
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.fc8 = nn.Linear(fc_width, num_classes)
        self.register_buffer("mean", torch.zeros(3, NUM_FRAMES, SIZE, SIZE))  # BGR clip subtracted from 0..255 input
        self.weights_sha256 = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for name in CONVS:
            h = F.relu(getattr(self, name)(h))
            if name in POOL_AFTER:
                h = F.max_pool3d(h, POOL_AFTER[name], ceil_mode=True)  # Chainer max_pooling_nd: cover_all=True
        h = F.relu(self.fc6(h.flatten(1)))
        h = F.relu(self.fc7(h))
        return self.fc8(h)

    def preprocess(self, videos) -> torch.Tensor:
        """uint8 RGB [N, T>=16, H, W, 3] -> float32 [N, 3, 16, 112, 112]: BGR, 112x112 (align_corners), minus mean."""
        v = torch.as_tensor(np.asarray(videos)) if not isinstance(videos, torch.Tensor) else videos
        if v.dtype != torch.uint8 or v.ndim != 5 or v.shape[-1] != 3:
            raise ValueError(f"C3D: expected uint8 videos [N, T, H, W, 3], got {v.dtype} {tuple(v.shape)}")
        if v.shape[1] < NUM_FRAMES:
            raise ValueError(f"C3D: clips need {NUM_FRAMES} frames, got {v.shape[1]}")
        n = v.shape[0]
        x = v[:, :NUM_FRAMES].to(self.mean.device).flip(-1).float()  # RGB -> BGR
        x = x.reshape(n * NUM_FRAMES, *x.shape[2:]).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=True)
        x = x.reshape(n, NUM_FRAMES, 3, SIZE, SIZE).permute(0, 2, 1, 3, 4)
        return x - self.mean


def _flax_array(code: int, data: bytes):
    if code != FLAX_NDARRAY:
        raise BadWeights(f"C3D weights: msgpack extension type {code} is not a flax array")
    shape, dtype, buffer = msgpack.unpackb(data, raw=True)
    dtype = np.dtype(dtype.decode())
    if dtype.kind != "f":
        raise BadWeights(f"C3D weights: a {dtype} array where float weights were expected")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()  # frombuffer is read-only


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "/"))
        elif isinstance(value, np.ndarray):
            out[name] = value
        else:
            raise BadWeights(f"C3D weights: {name} is a {type(value).__name__}, not an array")
    return out


def _read_flax(path: Path) -> dict[str, np.ndarray]:
    """MAGVIT's Flax C3D (msgpack) -> our names: kernels transposed to torch's layout, x_offset -> mean."""
    try:
        tree = msgpack.unpackb(path.read_bytes(), ext_hook=_flax_array, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as err:
        raise BadWeights(f"C3D weights: {path} is not a flax msgpack file ({err})") from None
    if not isinstance(tree, dict):
        raise BadWeights(f"C3D weights: {path} holds a {type(tree).__name__}, not a parameter tree")
    flat = _flatten(tree.get("params", tree))
    state = {}
    for name, value in flat.items():
        if name == "x_offset":  # [T, H, W, C] added to x * 255, i.e. minus the mean clip
            state["mean"] = -value.transpose(3, 0, 1, 2)
        elif name.endswith("/kernel"):
            layer = name[:-len("/kernel")]
            state[f"{layer}.weight"] = value.transpose(4, 3, 0, 1, 2) if value.ndim == 5 else value.T
        elif name.endswith("/bias"):
            state[f"{name[:-len('/bias')]}.bias"] = value
        else:
            raise BadWeights(f"C3D weights: {path} has an unexpected entry {name}")
    return state


def _read_state(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".flax":
        return _read_flax(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    state = load_state_dict_file(path, "C3D weights")
    return {k: v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in state.items()}


def _torch_name(key: str) -> str:
    """Chainer `conv1a/W` / `/predictor/fc8/b` -> `conv1a.weight` / `fc8.bias`; our own names pass through."""
    key = key.strip("/")
    if key.startswith("predictor/"):
        key = key[len("predictor/"):]
    if "/" in key:
        layer, leaf = key.rsplit("/", 1)
        return f"{layer}.{CHAINER_LEAVES.get(leaf, leaf)}"
    return key


def _mean_clip(mean: np.ndarray, source) -> torch.Tensor:
    mean = np.asarray(mean, np.float32)
    if mean.ndim != 4 or mean.shape[:2] != (3, NUM_FRAMES):
        raise BadWeights(f"C3D mean: {source} 'mean' has shape {mean.shape}, expected [3, 16, H, W]")
    if mean.shape[2:] != (SIZE, SIZE):
        if mean.shape[2] < 8 + SIZE or mean.shape[3] < 8 + SIZE:
            raise BadWeights(f"C3D mean: {source} 'mean' {mean.shape} is neither 112x112 nor croppable at [8:120]")
        mean = mean[:, :, 8:8 + SIZE, 8:8 + SIZE]  # TGAN2's crop of the 128 x 171 mean clip
    return torch.from_numpy(np.ascontiguousarray(mean))


def load_c3d(path, device: str | torch.device = "cpu", mean_path=None) -> C3D:
    """TGAN2's C3D from a local state dict (.pt/.pth/.safetensors, or Chainer .npz) and mean clip; never downloads."""
    path = require_path(path, "C3D weights", HINT)
    raw = {_torch_name(k): v for k, v in _read_state(path).items()}
    missing = [f"{layer}.{p}" for layer in (*CONVS, *FCS) for p in ("weight", "bias") if f"{layer}.{p}" not in raw]
    if missing:
        raise BadWeights(f"C3D weights: {path} lacks {missing[0]} ({len(missing)} of the 22 tensors missing)")
    widths = tuple(int(raw[f"{c}.weight"].shape[0]) for c in CONVS)
    model = C3D(widths, int(raw["fc7.weight"].shape[0]), int(raw["fc8.weight"].shape[0]))
    hashed = [path]
    if mean_path is not None:
        mean_path = require_path(mean_path, "C3D mean clip", MEAN_HINT)
        with np.load(mean_path, allow_pickle=False) as z:
            if "mean" not in z.files:
                raise BadWeights(f"C3D mean: {mean_path} has no 'mean' array ({', '.join(z.files)})")
            mean = _mean_clip(z["mean"], mean_path)
        hashed.append(mean_path)
    elif "mean" in raw:
        mean = _mean_clip(raw["mean"], path)
    else:
        raise MissingWeights(f"C3D mean clip: {path} has no 'mean' and no mean_path was given; {MEAN_HINT}")
    state = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in raw.items() if k != "mean"}
    expected = set(model.state_dict()) - {"mean"}
    extra = sorted(set(state) - expected)
    if extra:
        raise BadWeights(f"C3D weights: {path} has an unexpected tensor {extra[0]}")
    state["mean"] = mean
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # a shape mismatch: report the first line only
        raise BadWeights(f"C3D weights: {path}: {str(err).splitlines()[-1].strip()}") from None
    model.weights_sha256 = sha256_files(hashed)
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def c3d_probs(videos, model: C3D, batch_size: int = 16) -> np.ndarray:
    """uint8 RGB videos [N, T>=16, H, W, 3] -> C3D softmax class probabilities [N, num_classes] float64."""
    out = []
    for i in range(0, len(videos), batch_size):
        logits = model(model.preprocess(videos[i:i + batch_size]))
        out.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.fc8.out_features))


C3DModel = C3D  # the name the eval job uses for the loaded module (it carries .weights_sha256)
