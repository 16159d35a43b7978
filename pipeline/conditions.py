"""Stylization conditions (paper §4.1): optical flow + depth, as a uint8 video shaped like the RGB.

Channel 0 = flow x, channel 1 = flow y, channel 2 = depth; [T, H, W, 3] uint8, T/H/W of the clip.

Flow (at the clip's own resolution, 128x128 or 224x128, between consecutive 8 fps frames):
- "dis": OpenCV DIS (PRESET_MEDIUM) on grayscale frames; the CPU default (~1 ms per pair).
- "raft": torchvision raft_small / raft_large built with weights=None, the state dict loaded from
  `raft_checkpoint` (torchvision's layout, i.e. the file torchvision's own weights are, or any
  `model.state_dict()` of those classes) with torch.load(weights_only=True) and strict=True;
  pairs from all clips of a call are batched; GPU when present.
Frame t gets the forward flow t -> t+1; the last frame repeats the previous flow (T-1 flows for T
frames); a 1-frame clip (an image) gets zero flow. Normalisation: q = clip(round(128 + f * 128 /
max_flow_px), 0, 255) per component, so 128 = no motion, one level = max_flow_px/128 px (1/8 px
at the default 16 px); motion beyond +-max_flow_px saturates.

Depth: MiDaS v2.1 small (`midas_v21_small`: EfficientNet-Lite3 from timm, created with
pretrained=False, + the MiDaS RefineNet decoder) as plain nn.Modules whose parameter names are
those of the official isl-org/MiDaS checkpoint `midas_v21_small_256.pt` (pretrained.layer1..4 =
the EfficientNet stem+blocks, scratch.layer*_rn / scratch.refinenet1..4 / scratch.output_conv),
loaded with strict=True. The network predicts relative inverse depth (larger = nearer) at twice
the clip size (256 for 128, multiples of 32); it is area-resized to the clip size and min-max
normalised per clip (over all its frames, so brightness is comparable across time within a clip)
to 0..255. `dpt_large_384` is MiDaS v3 DPT-Large in the official layout (timm ViT-L/16 as
pretrained.model, act_postprocess1..4, scratch.*), input 3x the clip size. With no
`midas_checkpoint`, depth is "none" (channel 2 is 0) and `method` says so.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from videopoet.pipeline.media import DecodedClip, MediaConfig

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- normalisation


def quantize_flow(flow: np.ndarray, max_flow_px: float) -> np.ndarray:
    """float flow [..., 2] in px -> uint8 [..., 2]; 128 = zero motion."""
    q = np.rint(128.0 + flow * (128.0 / max_flow_px))
    return np.clip(q, 0, 255).astype(np.uint8)


def dequantize_flow(q: np.ndarray, max_flow_px: float) -> np.ndarray:
    return (q.astype(np.float32) - 128.0) * (max_flow_px / 128.0)


def normalize_depth(depth: np.ndarray) -> np.ndarray:
    """float [T, H, W] -> uint8 min-max over the whole clip (0 when the clip's depth is constant)."""
    lo, hi = float(depth.min()), float(depth.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-8:
        return np.zeros(depth.shape, np.uint8)
    return np.clip(np.rint((depth - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _per_frame_flow(pair_flows: np.ndarray, frames: int) -> np.ndarray:
    """[T-1, H, W, 2] forward flows -> [T, H, W, 2]: the last frame repeats the previous flow."""
    if frames == 1:
        raise ValueError("one frame has no pairs")
    return np.concatenate([pair_flows, pair_flows[-1:]], axis=0)


# ----------------------------------------------------------------------------- DIS


def dis_flow(frames: np.ndarray, preset: str = "medium") -> np.ndarray:
    """uint8 [T, H, W, 3] -> float32 [T-1, H, W, 2] forward flows (OpenCV DIS)."""
    import cv2

    presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
    dis = cv2.DISOpticalFlow_create(presets[preset])
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([dis.calc(gray[t], gray[t + 1], None) for t in range(len(gray) - 1)]).astype(np.float32)


# ----------------------------------------------------------------------------- RAFT


def build_raft(name: str):
    from torchvision.models.optical_flow import raft_large, raft_small

    return {"raft_small": raft_small, "raft_large": raft_large}[name](weights=None, progress=False)


def load_state_dict_file(path: str) -> dict:
    """A state dict from a local file, never unpickling code (weights_only=True). Accepts the bare
    dict or {"state_dict"|"model": dict} and strips a DataParallel "module." prefix."""
    import torch

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


# ----------------------------------------------------------------------------- MiDaS v2.1 small


def _torch_modules():
    import math

    import torch
    from torch import nn
    import torch.nn.functional as F

    class ResidualConvUnit(nn.Module):
        """MiDaS ResidualConvUnit_custom (bn=False): x + conv2(relu(conv1(relu(x))))."""

        def __init__(self, features: int):
            super().__init__()
            self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
            self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

        def forward(self, x):
            out = self.conv1(F.relu(x))
            out = self.conv2(F.relu(out))
            return out + x

    class FeatureFusionBlock(nn.Module):
        """MiDaS FeatureFusionBlock_custom: fuse skip, refine, upsample x2 (align_corners), 1x1 out."""

        def __init__(self, features: int, expand: bool):
            super().__init__()
            self.out_conv = nn.Conv2d(features, features // 2 if expand else features, 1, bias=True)
            self.resConfUnit1 = ResidualConvUnit(features)
            self.resConfUnit2 = ResidualConvUnit(features)

        def forward(self, x, skip=None, size=None):
            if skip is not None:
                x = x + self.resConfUnit1(skip)
            x = self.resConfUnit2(x)
            if size is None:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            else:  # DPT (v3.1): upsample to the next skip's exact size (non-square inputs)
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
            return self.out_conv(x)

    class Interpolate(nn.Module):
        def __init__(self, scale_factor: float, align_corners: bool = False):
            super().__init__()
            self.scale_factor, self.align_corners = scale_factor, align_corners

        def forward(self, x):
            return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=self.align_corners)

    class ProjectReadout(nn.Module):
        """MiDaS readout "project": each patch token concatenated with the class token, Linear+GELU."""

        def __init__(self, dim: int):
            super().__init__()
            self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

        def forward(self, x):  # [B, 1 + N, C] -> [B, N, C]
            readout = x[:, :1].expand_as(x[:, 1:])
            return self.project(torch.cat((x[:, 1:], readout), -1))

    class DPTViT(nn.Module):
        """MiDaS v3 DPT over a timm ViT (pretrained=False) with the official key layout:
        pretrained.model = the timm VisionTransformer (all of it, head included, as MiDaS saves it),
        pretrained.act_postprocess1..4 = [readout, transpose, unflatten, 1x1 conv, resample]
        (indices 1-2 have no parameters; their work is done in forward), scratch.layer*_rn,
        scratch.refinenet1..4 (fusion blocks, 256 features), scratch.output_conv (the depth head).
        Position embeddings are resized bilinearly to the input's patch grid (MiDaS forward_flex)."""

        def __init__(self, vit_name: str, hooks: tuple[int, ...], features: tuple[int, ...], fusion: int = 256):
            super().__init__()
            import timm

            vit = timm.create_model(vit_name, pretrained=False)
            dim = vit.embed_dim
            self.hooks = tuple(hooks)
            self.pretrained = nn.Module()
            self.pretrained.model = vit
            for k in range(4):
                layers = [ProjectReadout(dim), nn.Identity(), nn.Identity(), nn.Conv2d(dim, features[k], 1)]
                if k == 0:
                    layers.append(nn.ConvTranspose2d(features[0], features[0], 4, stride=4))
                elif k == 1:
                    layers.append(nn.ConvTranspose2d(features[1], features[1], 2, stride=2))
                elif k == 3:
                    layers.append(nn.Conv2d(features[3], features[3], 3, stride=2, padding=1))
                setattr(self.pretrained, f"act_postprocess{k + 1}", nn.Sequential(*layers))
            s = self.scratch = nn.Module()
            for k in range(4):
                setattr(s, f"layer{k + 1}_rn", nn.Conv2d(features[k], fusion, 3, padding=1, bias=False))
            for k in range(4):
                setattr(s, f"refinenet{k + 1}", FeatureFusionBlock(fusion, expand=False))
            s.output_conv = nn.Sequential(
                nn.Conv2d(fusion, fusion // 2, 3, padding=1),
                Interpolate(2.0, align_corners=True),
                nn.Conv2d(fusion // 2, 32, 3, padding=1),
                nn.ReLU(True),
                nn.Conv2d(32, 1, 1),
                nn.ReLU(True),  # non_negative
                nn.Identity(),
            )

        def _pos_embed(self, gh: int, gw: int):
            pos = self.pretrained.model.pos_embed
            tok, grid = pos[:, :1], pos[0, 1:]
            old = int(math.sqrt(grid.shape[0]))
            grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(gh, gw), mode="bilinear")
            return torch.cat([tok, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)

        def forward(self, x):  # x: [B, 3, H, W] normalised to [-1, 1], H and W multiples of 32
            m = self.pretrained.model
            b, _, h, w = x.shape
            gh, gw = h // 16, w // 16
            t = m.patch_embed.proj(x).flatten(2).transpose(1, 2)
            t = torch.cat([m.cls_token.expand(b, -1, -1), t], dim=1) + self._pos_embed(gh, gw)
            t = m.pos_drop(t)
            taps = []
            for i, blk in enumerate(m.blocks):
                t = blk(t)
                if i in self.hooks:
                    taps.append(t)
                if len(taps) == 4:
                    break
            layers = []
            for k, tap in enumerate(taps):
                post = getattr(self.pretrained, f"act_postprocess{k + 1}")
                y = post[0](tap).transpose(1, 2).reshape(b, -1, gh, gw)
                layers.append(post[3:](y))
            s = self.scratch
            rn = [getattr(s, f"layer{k + 1}_rn")(layers[k]) for k in range(4)]
            path = s.refinenet4(rn[3], size=rn[2].shape[2:])
            path = s.refinenet3(path, rn[2], size=rn[1].shape[2:])
            path = s.refinenet2(path, rn[1], size=rn[0].shape[2:])
            path = s.refinenet1(path, rn[0])
            return s.output_conv(path).squeeze(1)

    class MidasV21Small(nn.Module):
        """MiDaS v2.1 small (MidasNet_small, features=64, expand=True) with the official key layout.

        pretrained.layer1 = stem conv, stem BN(+act), [act slot], blocks 0-1; layer2 = block 2;
        layer3 = blocks 3-4; layer4 = blocks 5-6 of tf_efficientnet_lite3 (timm, pretrained=False).
        timm folds the stem activation into its BatchNormAct2d, so the official act slot
        (layer1.2, no parameters) is an Identity here: same keys, same function."""

        def __init__(self, features: int = 64):
            super().__init__()
            import timm

            eff = timm.create_model("tf_efficientnet_lite3", pretrained=False)
            self.pretrained = nn.Module()
            self.pretrained.layer1 = nn.Sequential(eff.conv_stem, eff.bn1, nn.Identity(), *eff.blocks[0:2])
            self.pretrained.layer2 = nn.Sequential(*eff.blocks[2:3])
            self.pretrained.layer3 = nn.Sequential(*eff.blocks[3:5])
            self.pretrained.layer4 = nn.Sequential(*eff.blocks[5:9])
            in_ch = (32, 48, 136, 384)
            out_ch = (features, features * 2, features * 4, features * 8)
            s = self.scratch = nn.Module()
            for k, (ci, co) in enumerate(zip(in_ch, out_ch), start=1):
                setattr(s, f"layer{k}_rn", nn.Conv2d(ci, co, 3, padding=1, bias=False))
            s.refinenet4 = FeatureFusionBlock(features * 8, expand=True)
            s.refinenet3 = FeatureFusionBlock(features * 4, expand=True)
            s.refinenet2 = FeatureFusionBlock(features * 2, expand=True)
            s.refinenet1 = FeatureFusionBlock(features, expand=False)
            s.output_conv = nn.Sequential(
                nn.Conv2d(features, features // 2, 3, padding=1),
                Interpolate(2.0),
                nn.Conv2d(features // 2, 32, 3, padding=1),
                nn.ReLU(False),
                nn.Conv2d(32, 1, 1),
                nn.ReLU(True),  # non_negative
                nn.Identity(),
            )

        def forward(self, x):  # x: [B, 3, H, W] ImageNet-normalised, H and W multiples of 32
            p, s = self.pretrained, self.scratch
            l1 = p.layer1(x)
            l2 = p.layer2(l1)
            l3 = p.layer3(l2)
            l4 = p.layer4(l3)
            path = s.refinenet4(s.layer4_rn(l4))
            path = s.refinenet3(path, s.layer3_rn(l3))
            path = s.refinenet2(path, s.layer2_rn(l2))
            path = s.refinenet1(path, s.layer1_rn(l1))
            return s.output_conv(path).squeeze(1)  # [B, H, W] relative inverse depth

    return torch, MidasV21Small, DPTViT


# name -> (official checkpoint, input size as a multiple of the clip size, input normalisation)
MIDAS_MODELS = {
    "midas_v21_small": ("midas_v21_small_256.pt", 2, "imagenet"),
    "dpt_large_384": ("dpt_large_384.pt (v3.0: dpt_large-midas-2f21e586.pt)", 3, "half"),
}


def build_midas(name: str = "midas_v21_small", *, vit_name: str | None = None):
    """A MiDaS network with the official parameter names (random weights; load a checkpoint).
    `vit_name` swaps the DPT backbone for a smaller timm ViT (tests only: same key layout)."""
    _, small, dpt = _torch_modules()
    if name == "midas_v21_small":
        return small()
    if name == "dpt_large_384":
        if vit_name is None:
            return dpt("vit_large_patch16_384", hooks=(5, 11, 17, 23), features=(256, 512, 1024, 1024))
        return dpt(vit_name, hooks=(2, 5, 8, 11), features=(96, 192, 384, 768))
    raise ValueError(f"midas_model={name!r}: built are {sorted(MIDAS_MODELS)}")


# ----------------------------------------------------------------------------- the model stage


class ConditionModel:
    """Computes the stylization condition for clips; models are loaded once, batched, on the GPU
    when there is one. `method` records what was actually used."""

    def __init__(self, cfg: "MediaConfig", device: str | None = None):
        self.cfg = cfg
        self.notes: list[str] = []
        self.flow = cfg.flow
        self.depth = cfg.depth
        self.raft = self.midas = None
        self.device = device
        if self.flow == "raft" or self.depth == "midas":
            import torch

            self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.flow == "raft":
            if not cfg.raft_checkpoint:
                raise ValueError("media.flow=raft needs media.raft_checkpoint (a local torchvision RAFT state dict); "
                                 "use media.flow=dis for the CPU default")
            self.raft = build_raft(cfg.raft_model)
            self.raft.load_state_dict(load_state_dict_file(cfg.raft_checkpoint), strict=True)
            self.raft.eval().to(self.device)
        if self.depth == "midas":
            if not cfg.midas_checkpoint:
                self.depth = "none"
                self.notes.append("depth=none: no media.midas_checkpoint given")
                log.warning("MiDaS depth requested but no midas_checkpoint given: depth is 'none'")
            else:
                self.midas = build_midas(cfg.midas_model)
                self.midas.load_state_dict(load_state_dict_file(cfg.midas_checkpoint), strict=True)
                self.midas.eval().to(self.device)
        self.method: dict[str, Any] = {"flow": self.flow, "depth": self.depth}
        if self.flow == "raft":
            self.method["flow_model"] = cfg.raft_model
        if self.depth == "midas":
            self.method["depth_model"] = cfg.midas_model
        if self.notes:
            self.method["notes"] = list(self.notes)

    # -- flow
    def _flows(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """float32 [T, H, W, 2] per clip (zeros for 1-frame clips)."""
        out: list[np.ndarray | None] = [None] * len(clips)
        multi = [i for i, c in enumerate(clips) if c.shape[0] > 1]
        if self.flow == "dis":
            for i in multi:
                out[i] = _per_frame_flow(dis_flow(clips[i]), clips[i].shape[0])
        elif self.flow == "raft":
            pair_flows = self._raft_pairs([clips[i] for i in multi])
            for i, pf in zip(multi, pair_flows):
                out[i] = _per_frame_flow(pf, clips[i].shape[0])
        for i, c in enumerate(clips):
            if out[i] is None:
                out[i] = np.zeros(c.shape[:3] + (2,), np.float32)
        return out  # type: ignore[return-value]

    def _raft_pairs(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        pairs: list[tuple[int, int]] = [(ci, t) for ci, c in enumerate(clips) for t in range(c.shape[0] - 1)]
        results: dict[tuple[int, int], np.ndarray] = {}
        by_shape: dict[tuple, list[tuple[int, int]]] = {}
        for ci, t in pairs:
            by_shape.setdefault(clips[ci].shape[1:3], []).append((ci, t))
        bs = max(1, self.cfg.condition_batch)
        with torch.inference_mode():
            for _, group in sorted(by_shape.items()):
                for start in range(0, len(group), bs):
                    part = group[start:start + bs]
                    a = np.stack([clips[ci][t] for ci, t in part])
                    b = np.stack([clips[ci][t + 1] for ci, t in part])
                    ta = self._to_raft(a)
                    tb = self._to_raft(b)
                    flow = self.raft(ta, tb, num_flow_updates=self.cfg.raft_updates)[-1]  # [B, 2, H, W]
                    flow = flow.permute(0, 2, 3, 1).float().cpu().numpy()
                    for (ci, t), f in zip(part, flow):
                        results[(ci, t)] = f
        return [np.stack([results[(ci, t)] for t in range(c.shape[0] - 1)]) for ci, c in enumerate(clips)]

    def _to_raft(self, frames: np.ndarray):
        import torch

        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1.0  # RAFT expects [-1, 1]

    # -- depth
    def _depths(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """uint8 [T, H, W] per clip (per-clip min-max)."""
        import torch
        import torch.nn.functional as F

        frames = [(ci, t) for ci, c in enumerate(clips) for t in range(c.shape[0])]
        by_shape: dict[tuple, list[tuple[int, int]]] = {}
        for ci, t in frames:
            by_shape.setdefault(clips[ci].shape[1:3], []).append((ci, t))
        raw: dict[tuple[int, int], np.ndarray] = {}
        _, scale, norm = MIDAS_MODELS[self.cfg.midas_model]
        if norm == "imagenet":
            mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        else:  # DPT: (x - 0.5) / 0.5
            mean = torch.full((1, 3, 1, 1), 0.5, device=self.device)
            std = torch.full((1, 3, 1, 1), 0.5, device=self.device)
        bs = max(1, self.cfg.condition_batch)
        with torch.inference_mode():
            for (h, w), group in sorted(by_shape.items()):
                size = (_mult32(scale * h), _mult32(scale * w))
                for start in range(0, len(group), bs):
                    part = group[start:start + bs]
                    x = torch.from_numpy(np.stack([clips[ci][t] for ci, t in part])).to(self.device)
                    x = x.permute(0, 3, 1, 2).float() / 255.0
                    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
                    d = self.midas((x - mean) / std).unsqueeze(1)  # [B, 1, 2h, 2w]
                    d = F.interpolate(d, size=(h, w), mode="area").squeeze(1).float().cpu().numpy()
                    for key, di in zip(part, d):
                        raw[key] = di
        return [normalize_depth(np.stack([raw[(ci, t)] for t in range(c.shape[0])])) for ci, c in enumerate(clips)]

    def __call__(self, clips: list["DecodedClip"]) -> list[np.ndarray | None]:
        if self.flow == "none" and self.depth == "none":
            return [None] * len(clips)
        rgbs = [np.ascontiguousarray(c.rgb) for c in clips]
        for c, r in zip(clips, rgbs):
            if r.dtype != np.uint8 or r.ndim != 4 or r.shape[-1] != 3:
                raise ValueError(f"clip window {c.window_index}: rgb must be uint8 [T,H,W,3], got {r.dtype} {r.shape}")
        out: list[np.ndarray] = [np.zeros(r.shape, np.uint8) for r in rgbs]
        if self.flow != "none":
            for o, f in zip(out, self._flows(rgbs)):
                o[..., :2] = quantize_flow(f, self.cfg.max_flow_px)
        else:
            for o in out:
                o[..., :2] = 128
        if self.depth == "midas":
            for o, d in zip(out, self._depths(rgbs)):
                o[..., 2] = d
        return out


def _mult32(n: int) -> int:
    return max(32, int(round(n / 32)) * 32)
