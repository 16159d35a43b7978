"""ConditionModel: the stylization condition (flow x, flow y, depth as uint8 [T, H, W, 3]) for a batch of clips.

Channel 0 = flow x, channel 1 = flow y, channel 2 = depth; [T, H, W, 3] uint8, T/H/W of the clip.
RAFT and MiDaS (torch) are imported only when the config asks for them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from videopoet.pipeline.conditions.dis import dis_flow
from videopoet.pipeline.conditions.quantize import _per_frame_flow, normalize_depth, quantize_flow

if TYPE_CHECKING:
    from videopoet.pipeline.media import DecodedClip, MediaConfig

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
            from videopoet.pipeline.conditions.raft import build_raft
            from videopoet.pipeline.conditions.weights import load_state_dict_file

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
                from videopoet.pipeline.conditions.depth import build_midas
                from videopoet.pipeline.conditions.weights import load_state_dict_file

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

        from videopoet.pipeline.conditions.depth import MIDAS_MODELS

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
