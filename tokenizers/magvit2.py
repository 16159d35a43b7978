"""MAGVIT-v2 joint image-video tokenizer: causal 3D CNN encoder/decoder with LFQ (2^18 codes).

Shapes: video [B, 3, T, H, W] in [-1, 1] with T = 1 + 4k -> tokens LongTensor [B, 1 + k, H/8, W/8]
(17x128x128 -> 5x16x16; 17x224x128 -> 5x28x16; 41 frames -> 11 latent frames). An image is a
1-frame video: `encode_image(img) == encode(img[:, :, None])`.

Causality is exact, not approximate (tests/tokenizers/test_magvit2.py checks prefix equality):
  * every Conv3d pads k_t - 1 zero frames in front and none behind (CausalConv3d);
  * temporal downsampling is a stride-2 causal conv, so latent k sees frames <= 4k only;
  * every normalisation is per frame: statistics over (channels-in-group, H, W) of one frame, never
    over time (Open-MAGVIT2's clip-wide GroupNorm breaks the first-frame property);
  * the decoder's adaptive group norm takes its scale/shift from the statistics of the *same
    chunk's* quantised latent frame, and upsamples with conv + depth-to-space, dropping the first
    s_t - 1 frames (5 -> 10 -> 9 -> 18 -> 17), so decoded frames 4k-3..4k depend on latents <= k.
Architecture as MAGVIT-v2 (arXiv 2310.05737) §3.2 / Open-MAGVIT2's replication (docs/architecture.md,
"Video tokenizer"): strided-conv downsampling, spatial-only first level, temporal downsampling deferred to the
later levels, a parameter-free per-frame GroupNorm before LFQ.

Image pretraining uses the same network with temporal kernel 1 (`temporal_kernel=1`); `inflate_state_dict`
turns it into the causal video network by placing each 2D kernel on the *last* temporal tap (the
current frame) and zeroing the past taps, so the inflated model reproduces the image model exactly
on single frames and on static videos.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from videopoet.config import from_dict
from videopoet.tokenizers.lfq import LFQ, LFQOutput, entropy_weight_at
from videopoet.tokenizers.video_config import RECIPES, VideoTokenizerConfig  # noqa: F401  (re-exported)

CHECKPOINT_KIND = "video_tokenizer"


# ------------------------------------------------------------------------------------------------
# Building blocks


class CausalConv3d(nn.Module):
    """Conv3d that pads k_t - 1 zero frames in front (none behind) and 'same' in space."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, temporal_kernel: int = 3,
                 stride: tuple[int, int, int] = (1, 1, 1), bias: bool = True):
        super().__init__()
        self.time_pad = temporal_kernel - 1
        self.conv = nn.Conv3d(cin, cout, (temporal_kernel, kernel, kernel), stride=stride,
                              padding=(0, kernel // 2, kernel // 2), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            x = F.pad(x, (0, 0, 0, 0, self.time_pad, 0))
        return self.conv(x)


class FrameGroupNorm(nn.Module):
    """GroupNorm whose statistics are per frame: over (C/G, H, W) of each time step, never time."""

    def __init__(self, groups: int, channels: int, affine: bool = True, eps: float = 1e-6):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        xg = x.float().reshape(b, self.groups, c // self.groups, t, h * w)
        var, mean = torch.var_mean(xg, dim=(2, 4), keepdim=True, correction=0)
        x = ((xg - mean) * torch.rsqrt(var + self.eps)).reshape(b, c, t, h, w).to(x.dtype)
        if self.weight is not None:
            x = x * self.weight.view(1, c, 1, 1, 1) + self.bias.view(1, c, 1, 1, 1)
        return x


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, kt: int):
        super().__init__()
        self.norm1 = FrameGroupNorm(groups, cin)
        self.conv1 = CausalConv3d(cin, cout, 3, kt, bias=False)
        self.norm2 = FrameGroupNorm(groups, cout)
        self.conv2 = CausalConv3d(cout, cout, 3, kt, bias=False)
        self.shortcut = CausalConv3d(cin, cout, 1, 1, bias=False) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


def latent_frame_index(frames: int, latent_frames: int, device: torch.device) -> torch.Tensor:
    """For each of `frames` feature frames, the latent frame of its causal chunk (0, then r each)."""
    if latent_frames == 1:
        if frames != 1:
            raise ValueError(f"{frames} feature frames cannot come from 1 latent frame")
        return torch.zeros(1, dtype=torch.long, device=device)
    r, rem = divmod(frames - 1, latent_frames - 1)
    if rem:
        raise ValueError(f"{frames} feature frames do not split into chunks of {latent_frames} latent frames")
    f = torch.arange(frames, device=device)
    return torch.where(f == 0, 0, (f - 1) // r + 1)


class AdaptiveGroupNorm(nn.Module):
    """Per-frame GroupNorm whose scale/shift come from the quantised latent of the same chunk.

    scale = 1 + Linear(std_{h,w}(z_q[t])), shift = Linear(mean_{h,w}(z_q[t])) (StyleGAN-style; zero-
    initialised so it starts as plain GroupNorm). Statistics are per latent frame, so it is causal.
    """

    def __init__(self, groups: int, channels: int, latent_dim: int):
        super().__init__()
        self.norm = FrameGroupNorm(groups, channels, affine=False)
        self.to_scale = nn.Linear(latent_dim, channels)
        self.to_shift = nn.Linear(latent_dim, channels)
        for lin in (self.to_scale, self.to_shift):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        std, mean = torch.std_mean(zq.float(), dim=(3, 4), correction=0)  # [B, d, t]
        idx = latent_frame_index(x.shape[2], zq.shape[2], x.device)
        scale = 1 + self.to_scale(std.transpose(1, 2))[:, idx]  # [B, T, C]
        shift = self.to_shift(mean.transpose(1, 2))[:, idx]
        scale = rearrange(scale, "b t c -> b c t 1 1").to(x.dtype)
        shift = rearrange(shift, "b t c -> b c t 1 1").to(x.dtype)
        return self.norm(x) * scale + shift


class Downsample(nn.Module):
    """Strided causal conv: (1, 2, 2) or (2, 2, 2). Latent j of a temporal step sees frames <= 2j."""

    def __init__(self, channels: int, temporal: bool, kt: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, kt, stride=(2 if temporal else 1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Causal conv to C * s_t * 2 * 2 channels, depth-to-space, then drop the first s_t - 1 frames."""

    def __init__(self, channels: int, temporal: bool, kt: int):
        super().__init__()
        self.st = 2 if temporal else 1
        self.conv = CausalConv3d(channels, channels * self.st * 4, 3, kt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(self.conv(x), "b (c st sh sw) t h w -> b c (t st) (h sh) (w sw)",
                      st=self.st, sh=2, sw=2)
        return x[:, :, self.st - 1:]


def _run(block: nn.Module, x: torch.Tensor, ckpt: bool) -> torch.Tensor:
    if ckpt and torch.is_grad_enabled():
        return checkpoint(block, x, use_reentrant=False)
    return block(x)


class Encoder(nn.Module):
    def __init__(self, cfg: VideoTokenizerConfig):
        super().__init__()
        kt, g, ch = cfg.temporal_kernel, cfg.norm_groups, cfg.channels
        self.ckpt = cfg.checkpoint_activations
        self.conv_in = CausalConv3d(3, ch * cfg.channel_mult[0], 3, kt)
        self.levels = nn.ModuleList()
        cin = ch * cfg.channel_mult[0]
        for i, mult in enumerate(cfg.channel_mult):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(cin, ch * mult, g, kt))
                cin = ch * mult
            level = nn.Module()
            level.blocks = blocks
            level.down = Downsample(cin, cfg.temporal_down[i], kt) if i < len(cfg.channel_mult) - 1 else nn.Identity()
            self.levels.append(level)
        self.mid = nn.ModuleList([ResBlock(cin, cin, g, kt) for _ in range(cfg.num_res_blocks)])
        self.norm_out = FrameGroupNorm(g, cin)
        self.conv_out = CausalConv3d(cin, cfg.bits, 1, 1)
        # Parameter-free norm before LFQ (Lijun Yu, vector-quantize-pytorch PR #89): keeps the
        # latents centred so that every bit stays in use.
        self.norm_latent = FrameGroupNorm(1, cfg.bits, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.levels:
            for block in level.blocks:
                x = _run(block, x, self.ckpt)
            x = level.down(x)
        for block in self.mid:
            x = _run(block, x, self.ckpt)
        return self.norm_latent(self.conv_out(F.silu(self.norm_out(x))))


class Decoder(nn.Module):
    def __init__(self, cfg: VideoTokenizerConfig):
        super().__init__()
        kt, g, ch = cfg.temporal_kernel, cfg.norm_groups, cfg.channels
        self.ckpt = cfg.checkpoint_activations
        cin = ch * cfg.channel_mult[-1]
        self.conv_in = CausalConv3d(cfg.bits, cin, 3, kt)
        self.mid = nn.ModuleList([ResBlock(cin, cin, g, kt) for _ in range(cfg.num_res_blocks)])
        self.levels = nn.ModuleList()
        for i in reversed(range(len(cfg.channel_mult))):
            level = nn.Module()
            level.adanorm = AdaptiveGroupNorm(g, cin, cfg.bits)
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(cin, ch * cfg.channel_mult[i], g, kt))
                cin = ch * cfg.channel_mult[i]
            level.blocks = blocks
            level.up = Upsample(cin, cfg.temporal_down[i - 1], kt) if i > 0 else nn.Identity()
            self.levels.append(level)
        self.norm_out = FrameGroupNorm(g, cin)
        self.conv_out = CausalConv3d(cin, 3, 3, kt)

    def forward(self, zq: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(zq)
        for block in self.mid:
            x = _run(block, x, self.ckpt)
        for level in self.levels:
            x = level.adanorm(x, zq)
            for block in level.blocks:
                x = _run(block, x, self.ckpt)
            x = level.up(x)
        return self.conv_out(F.silu(self.norm_out(x)))


# ------------------------------------------------------------------------------------------------
# The public tokenizer


@dataclass
class TokenizerOutput:
    reconstruction: torch.Tensor  # [B, 3, T, H, W]
    quant: LFQOutput

    def aux_loss(self, cfg: VideoTokenizerConfig, step: int) -> torch.Tensor:
        """Commitment + (annealed) entropy penalty."""
        w = entropy_weight_at(step, cfg.entropy_weight, cfg.entropy_anneal_ratio, cfg.entropy_anneal_steps)
        return cfg.commit_weight * self.quant.commit_loss + w * self.quant.entropy_loss


class VideoTokenizer(nn.Module):
    """MAGVIT-v2 tokenizer. Token ids are 18-bit integers (bits little-endian, see lfq.py)."""

    def __init__(self, cfg: VideoTokenizerConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantizer = LFQ(cfg.bits, cfg.entropy_tau)
        self._content_hash: str | None = None

    # -- construction / persistence ---------------------------------------------------------------
    @classmethod
    def from_recipe(cls, name: str = "tiny", overrides: list[str] | tuple[str, ...] = ()) -> "VideoTokenizer":
        return cls(RECIPES.get(name, overrides))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> "VideoTokenizer":
        """Load a tokenizer checkpoint directory (videopoet.checkpoint format, kind 'video_tokenizer')."""
        from videopoet.checkpoint import load_checkpoint

        tensors, meta = load_checkpoint(path, kind=CHECKPOINT_KIND)
        model = cls(from_dict(VideoTokenizerConfig, meta["config"]))
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: weights do not fit the config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        model._content_hash = meta["content_hash"]
        model.eval()
        if device is not None:
            model.to(device)
        return model

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> str:
        """Write a checkpoint directory; returns (and remembers) its content hash."""
        from videopoet.checkpoint import save_checkpoint

        self._content_hash = save_checkpoint(path, self.state_dict(), kind=CHECKPOINT_KIND,
                                             config=self.cfg, extra=extra)
        return self._content_hash

    @property
    def content_hash(self) -> str:
        """SHA-256 of the weights file this tokenizer was loaded from / saved to (computed if neither)."""
        if self._content_hash is None:
            from videopoet.checkpoint import file_sha256

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "weights.pt"
                torch.save({k: v.detach().cpu() for k, v in self.state_dict().items()}, path)
                self._content_hash = file_sha256(path)
        return self._content_hash

    def load_state_dict(self, *args, **kwargs):  # new weights: the cached hash no longer holds
        self._content_hash = None
        return super().load_state_dict(*args, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- shapes -----------------------------------------------------------------------------------
    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        tf, sf = self.cfg.temporal_factor, self.cfg.spatial_factor
        return 1 + (frames - 1) // tf, height // sf, width // sf

    def _check_video(self, video: torch.Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be float [B, 3, T, H, W], got shape {tuple(video.shape)}")
        _, _, t, h, w = video.shape
        tf, sf = self.cfg.temporal_factor, self.cfg.spatial_factor
        if (t - 1) % tf:
            raise ValueError(f"video has {t} frames; the tokenizer needs 1 + {tf}k (1, {1 + tf}, {1 + 4 * tf}, ...)")
        if h % sf or w % sf:
            raise ValueError(f"video is {h}x{w}; height and width must be multiples of {sf}")
        if not video.is_floating_point():
            raise ValueError(f"video must be float in [-1, 1], got dtype {video.dtype}")

    # -- model ------------------------------------------------------------------------------------
    def forward(self, video: torch.Tensor, with_losses: bool = True) -> TokenizerOutput:
        self._check_video(video)
        quant = self.quantizer(self.encoder(video), with_losses=with_losses)
        return TokenizerOutput(self.decoder(quant.quantized.to(video.dtype)), quant)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """float video [B, 3, T, H, W] in [-1, 1] (T = 1 + 4k) -> LongTensor [B, 1 + k, H/8, W/8]."""
        self._check_video(video)
        if video.detach().abs().amax() > 1.001:
            raise ValueError("video values must lie in [-1, 1] (uint8 frames: x / 127.5 - 1)")
        z = self.encoder(video.to(self.device))
        return self.quantizer(z, with_losses=False).indices

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """float image [B, 3, H, W] in [-1, 1] -> LongTensor [B, 1, H/8, W/8] (a 1-frame video)."""
        if image.ndim != 4:
            raise ValueError(f"image must be float [B, 3, H, W], got shape {tuple(image.shape)}")
        return self.encode(image.unsqueeze(2))

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """LongTensor [B, t, h, w] -> float video [B, 3, 1 + 4(t-1), 8h, 8w], clamped to [-1, 1]."""
        if tokens.ndim != 4:
            raise ValueError(f"tokens must be LongTensor [B, t, h, w], got shape {tuple(tokens.shape)}")
        zq = self.quantizer.indices_to_latents(tokens.to(self.device).long())
        return self.decoder(zq).clamp(-1, 1)


def video_to_tensor(rgb: Any) -> torch.Tensor:
    """uint8 [T, H, W, 3] (numpy or torch) -> float [3, T, H, W] in [-1, 1]."""
    x = torch.as_tensor(rgb)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"rgb must be uint8 [T, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    return x.permute(3, 0, 1, 2).float() / 127.5 - 1.0


def tensor_to_video(x: torch.Tensor) -> torch.Tensor:
    """float [3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3]."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu()


def inflate_state_dict(image_state: dict[str, torch.Tensor], video_model: VideoTokenizer) -> dict[str, torch.Tensor]:
    """Image-network weights (temporal_kernel=1) -> causal video weights (temporal_kernel=3).

    Each [out, in, 1, k, k] kernel goes to the last temporal tap (the current frame) of an
    [out, in, 3, k, k] kernel; the past taps start at zero. Every other tensor is copied.
    """
    target = video_model.state_dict()
    out = {}
    for name, value in target.items():
        if name not in image_state:
            raise KeyError(f"inflate: image weights lack {name}")
        src = image_state[name]
        if src.shape == value.shape:
            out[name] = src.clone()
        elif (src.ndim == 5 and src.shape[2] == 1 and src.shape[:2] == value.shape[:2]
              and src.shape[3:] == value.shape[3:]):
            w = torch.zeros_like(value)
            w[:, :, -1] = src[:, :, 0]
            out[name] = w
        else:
            raise ValueError(f"inflate: {name} has shape {tuple(src.shape)} in the image network, "
                             f"{tuple(value.shape)} in the video one")
    return out


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """Cheap stable hash of a state dict's values (for tests and logs)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
