"""LPIPS between videos (per frame, mean over frames) from the `lpips` package with a local ImageNet backbone file.

`lpips` 0.1.4 ships its calibrated linear layers (v0.1 alex/vgg/squeeze, a few kB) inside the wheel but builds its
trunk through torchvision with pretrained weights, which would download at run time (eval.md §6). So the trunk is
built random (`pnet_rand=True`) and filled from a file the user gives: torchvision's ImageNet state dict for the
net (AlexNet `alexnet-owt-7be5be79.pth`, VGG-16 `vgg16-397923af.pth`, SqueezeNet 1.1 `squeezenet1_1-b8a52dc0.pth`),
of which only `features.*` is used (a file holding just those is enough). Torch files are read with
weights_only=True (lpips reads its linear layers with torch.load's default, weights_only=True since torch 2.6);
nothing downloads. Input: uint8 RGB, mapped to [-1, 1] as LPIPS expects; version 0.1; the
distance of two frames is the spatial average (lpips' default); a video's score is the mean over its frames.
"""

from __future__ import annotations

import warnings
from importlib.resources import files

import lpips
import numpy as np
import torch

from videopoet.eval.weights_errors import BadWeights, load_state_dict_file, require_path, sha256_files

BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
                  "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def load_lpips(backbone_path, device: str | torch.device = "cpu", net: str = "alex") -> lpips.LPIPS:
    """LPIPS v0.1 (`net` = alex, vgg or squeeze) with its trunk read from a local torchvision state dict."""
    if net not in BACKBONE_FILES:
        raise ValueError(f"LPIPS: net must be one of {', '.join(BACKBONE_FILES)}, got {net!r}")
    hint = f"put torchvision's ImageNet {net} weights there ({BACKBONE_FILES[net]}; only features.* is read)"
    path = require_path(backbone_path, "LPIPS backbone", hint)
    state = load_state_dict_file(path, "LPIPS backbone")
    with warnings.catch_warnings():  # torchvision's deprecation notice for lpips' pretrained=False call
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    trunk = {}
    for name in model.net.state_dict():  # lpips names slices' modules by the torchvision `features` index
        source = "features." + name.split(".", 1)[1]
        if source not in state:
            raise BadWeights(f"LPIPS backbone: {path} lacks {source} (is it torchvision's {net}?)")
        trunk[name] = state[source].float()
    try:
        model.net.load_state_dict(trunk)
    except RuntimeError as err:
        raise BadWeights(f"LPIPS backbone: {path}: {str(err).splitlines()[-1].strip()}") from None
    linear = files("lpips") / "weights" / "v0.1" / f"{net}.pth"
    model.weights_sha256 = sha256_files([path, linear])
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def lpips_videos(videos_a, videos_b, model: lpips.LPIPS, batch_size: int = 32) -> np.ndarray:
    """Per-video LPIPS (mean over frames) of two uint8 RGB video sets [N, T, H, W, 3] of equal shape -> [N]."""
    a, b = np.asarray(videos_a), np.asarray(videos_b)
    if a.shape != b.shape or a.dtype != np.uint8 or b.dtype != np.uint8 or a.ndim != 5 or a.shape[-1] != 3:
        raise ValueError(f"LPIPS: expected two uint8 [N, T, H, W, 3] sets of one shape, got {a.shape}, {b.shape}")
    n, t = a.shape[:2]
    device = next(model.parameters()).device
    frames_a, frames_b = a.reshape(n * t, *a.shape[2:]), b.reshape(n * t, *b.shape[2:])
    out = []
    for i in range(0, n * t, batch_size):
        x, y = (torch.from_numpy(f[i:i + batch_size]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
                for f in (frames_a, frames_b))
        out.append(model(x, y).flatten().double().cpu().numpy())
    return np.concatenate(out).reshape(n, t).mean(axis=1) if out else np.zeros(0)
