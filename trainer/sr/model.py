"""The SR transformer: a bidirectional video transformer over the HR MAGVIT-v2 token grid (paper §3.3, A.3).

Plain PyTorch, no distribution inside. Shapes: HR tokens [B, T, H, W] (ids < 2^18, or MASK_ID), LR tokens
[B, T, H/2, W/2], text embeddings [B, S, text_dim] with a boolean mask [B, S].
- Input: every id is factorised into two 9-bit halves (tokenizers.lfq.split_tokens); its embedding is
  E_lo[lo] + E_hi[hi], a learned [MASK] vector where the id is MASK_ID; plus learned per-axis positions.
  LR tokens get their own factorised embedding and positions; a dropped LR condition (lr_keep False) is a
  learned null vector at every LR position (plus positions), so the layout never changes.
- Text: a linear projection of the frozen text encoder's embeddings; where text_mask is False a learned
  per-slot null embedding (padding and CFG dropout alike), as in trainer.model, so no attention needs a mask.
- Blocks of three axis layers (spatial vertical, spatial horizontal, temporal; `SRConfig.windows`). A layer:
  pre-norm (RMSNorm) windowed self-attention, windowed cross-attention to the LR tokens in the isomorphic
  half-size window (windows.lr_window), SwiGLU MLP. Each block starts with a cross-attention to the text.
- Output: final norm and two 512-way heads (lo, hi): token factorisation into k = 2 groups (MAGVIT-v2).

Attention implementations (SRConfig.attention), numerically equal (tests/trainer/test_sr.py):
    "sdpa"   windows moved into the batch dimension (windows.partition), one SDPA call with no mask.
    "dense"  explicit softmax over the whole grid with a same-window boolean mask: the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from videopoet.config import RecipeRegistry
from videopoet.tokenizers.lfq import HALF_BITS, split_tokens
from videopoet.trainer.model import SwiGLU
from videopoet.trainer.sr.windows import Grid, Window, check_window, lr_grid, lr_window, merge, partition, window_mask

CODEBOOK_BITS = 18  # MAGVIT-v2 LFQ ids: 2^18
GROUP_SIZE = 1 << HALF_BITS  # 512 ids per factor (k = 2 groups)
MASK_ID = 1 << CODEBOOK_BITS  # the masked-token id in HR inputs (one past the last LFQ id)


@dataclass
class SRConfig:
    hr_grid: tuple[int, int, int] = (5, 56, 32)  # HR tokens (T, H, W); the LR grid is (T, H/2, W/2)
    # self-attention windows of the three layers of a block: spatial vertical, spatial horizontal, temporal
    windows: tuple[tuple[int, int, int], ...] = ((1, 56, 4), (1, 8, 32), (5, 8, 8))
    d_model: int = 1280
    n_blocks: int = 12  # blocks of len(windows) layers each
    n_heads: int = 10
    ffn_dim: int = 3456  # SwiGLU hidden width
    text_dim: int = 2048  # the frozen text encoder's width (the LM's text_dim)
    text_slots: int = 64
    norm_eps: float = 1e-5
    init_std: float = 0.02
    attention: Literal["sdpa", "dense"] = "sdpa"
    grad_checkpoint: bool = False  # recompute each layer in backward

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not a multiple of n_heads={self.n_heads}")
        if min(self.d_model, self.n_blocks, self.ffn_dim, self.text_dim, self.text_slots) < 1 or not self.windows:
            raise ValueError("d_model, n_blocks, ffn_dim, text_dim, text_slots and windows must be positive")
        lr = lr_grid(self.hr_grid)
        for window in self.windows:
            check_window(self.hr_grid, window)
            check_window(lr, lr_window(window))

    @property
    def lr_grid(self) -> Grid:
        return lr_grid(self.hr_grid)

    @property
    def n_layers(self) -> int:
        return self.n_blocks * len(self.windows)


SR_RECIPES: RecipeRegistry[SRConfig] = RecipeRegistry(SRConfig)


@SR_RECIPES.register
def tiny() -> SRConfig:
    """CPU tests and the demo: an (2, 8, 8) HR grid, 2 blocks of d=32 (the demo's 384-wide text encoder)."""
    return SRConfig(hr_grid=(2, 8, 8), windows=((1, 8, 2), (1, 2, 8), (2, 2, 2)), d_model=32, n_blocks=2,
                    n_heads=2, ffn_dim=64, text_dim=384)


@SR_RECIPES.register
def demo() -> SRConfig:
    """The demo's cascade stage: 17x256x256 pixels from the LM's 128x128 (HR tokens (5, 32, 32), LR (5, 16, 16)
    with the demo tokenizer's 8x spatial, 4x temporal compression); 2 blocks of d=48, trains on the CPU."""
    return SRConfig(hr_grid=(5, 32, 32), windows=((1, 32, 4), (1, 4, 32), (5, 8, 8)), d_model=48, n_blocks=2,
                    n_heads=4, ffn_dim=128, text_dim=384)


@SR_RECIPES.register
def stage1() -> SRConfig:
    """First 2x stage, 17x448x256 pixels (tokens (5, 56, 32)); about 1B parameters (A.3)."""
    return SRConfig(hr_grid=(5, 56, 32), windows=((1, 56, 4), (1, 8, 32), (5, 8, 8)), d_model=1280, n_blocks=12,
                    n_heads=10, ffn_dim=3456, grad_checkpoint=True)


@SR_RECIPES.register
def stage2() -> SRConfig:
    """Second 2x stage, 17x896x512 pixels (tokens (5, 112, 64), 35,840); about 500M parameters (A.3)."""
    return SRConfig(hr_grid=(5, 112, 64), windows=((1, 112, 2), (1, 4, 64), (5, 8, 8)), d_model=1024, n_blocks=9,
                    n_heads=8, ffn_dim=2816, grad_checkpoint=True)


# ---------------------------------------------------------------------------------------------
# modules


def dense_attention(q, k, v, mask=None):
    """Reference attention: softmax(q k^T / sqrt(d), masked) v in fp32; q [..., Lq, d], mask [Lq, Lk]."""
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.float()).to(q.dtype)


class Attention(nn.Module):
    """Multi-head attention of queries x [N, Lq, D] over a context [N, Lk, D]; mask only for the reference."""

    def __init__(self, cfg: SRConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x, context, mask=None, dense: bool = False):
        q = rearrange(self.q(x), "n l (h d) -> n h l d", h=self.n_heads)
        k, v = rearrange(self.kv(context), "n l (two h d) -> two n h l d", two=2, h=self.n_heads)
        y = dense_attention(q, k, v, mask) if dense else F.scaled_dot_product_attention(q, k, v)
        return self.out(rearrange(y, "n h l d -> n l (h d)"))


class AxisLayer(nn.Module):
    """One axis layer: windowed self-attention, windowed LR cross-attention, MLP (all pre-norm, residual)."""

    def __init__(self, cfg: SRConfig, window: Window):
        super().__init__()
        self.cfg, self.window, self.lr_window = cfg, tuple(window), lr_window(window)
        self.self_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.lr_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.lr_attn = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_dim)

    def forward(self, x_bthwd, lr_bthwd):
        x_bthwd = x_bthwd + self._windowed(self.self_attn, self.self_norm(x_bthwd), None)
        x_bthwd = x_bthwd + self._windowed(self.lr_attn, self.lr_norm(x_bthwd), lr_bthwd)
        return x_bthwd + self.mlp(self.mlp_norm(x_bthwd))

    def _windowed(self, attn: Attention, x_bthwd, lr_bthwd):
        """Attention inside this layer's windows: self (lr None) or over the LR grid's half-size windows."""
        grid = tuple(x_bthwd.shape[1:4])
        if self.cfg.attention == "dense":
            x_bld = rearrange(x_bthwd, "b t h w d -> b (t h w) d")
            if lr_bthwd is None:
                ctx_bld, mask = x_bld, window_mask(grid, self.window, device=x_bthwd.device)
            else:
                ctx_bld = rearrange(lr_bthwd, "b t h w d -> b (t h w) d")
                mask = window_mask(grid, self.window, tuple(lr_bthwd.shape[1:4]), self.lr_window, x_bthwd.device)
            y = attn(x_bld, ctx_bld, mask, dense=True)
            return rearrange(y, "b (t h w) d -> b t h w d", t=grid[0], h=grid[1], w=grid[2])
        x_win = partition(x_bthwd, self.window)
        ctx_win = x_win if lr_bthwd is None else partition(lr_bthwd, self.lr_window)
        if ctx_win.shape[0] != x_win.shape[0]:
            raise ValueError(f"LR grid {tuple(lr_bthwd.shape[1:4])} does not pair with HR grid {grid}")
        return merge(attn(x_win, ctx_win), self.window, grid)


class Block(nn.Module):
    """Cross-attention to the text, then one layer per window (spatial vertical, spatial horizontal, temporal)."""

    def __init__(self, cfg: SRConfig):
        super().__init__()
        self.text_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.text_attn = Attention(cfg)
        self.layers = nn.ModuleList(AxisLayer(cfg, window) for window in cfg.windows)

    def text_step(self, x_bthwd, text_bsd):
        x_bld = rearrange(self.text_norm(x_bthwd), "b t h w d -> b (t h w) d")
        return x_bthwd + self.text_attn(x_bld, text_bsd).view_as(x_bthwd)


class AxisPositions(nn.Module):
    """Learned absolute positions, one table per axis, summed: [T, H, W, D]."""

    def __init__(self, grid: Grid, d_model: int):
        super().__init__()
        self.t, self.h, self.w = (nn.Parameter(torch.zeros(n, d_model)) for n in grid)

    def forward(self):
        return self.t[:, None, None] + self.h[None, :, None] + self.w[None, None, :]


class FactorizedEmbedding(nn.Module):
    """An 18-bit id as E_lo[id & 511] + E_hi[id >> 9] (token factorisation, k = 2)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.lo = nn.Embedding(GROUP_SIZE, d_model)
        self.hi = nn.Embedding(GROUP_SIZE, d_model)

    def forward(self, ids):
        lo, hi = split_tokens(ids)
        return self.lo(lo) + self.hi(hi)


class SRTransformer(nn.Module):
    def __init__(self, cfg: SRConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.hr_emb = FactorizedEmbedding(cfg.d_model)
        self.mask_emb = nn.Parameter(torch.zeros(cfg.d_model))
        self.hr_pos = AxisPositions(cfg.hr_grid, cfg.d_model)
        self.lr_emb = FactorizedEmbedding(cfg.d_model)
        self.null_lr = nn.Parameter(torch.zeros(cfg.d_model))
        self.lr_pos = AxisPositions(cfg.lr_grid, cfg.d_model)
        self.lr_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.text_proj = nn.Linear(cfg.text_dim, cfg.d_model)
        self.null_text = nn.Parameter(torch.zeros(cfg.text_slots, cfg.d_model))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_blocks))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head_lo = nn.Linear(cfg.d_model, GROUP_SIZE, bias=False)
        self.head_hi = nn.Linear(cfg.d_model, GROUP_SIZE, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.ndim < 2 and name.endswith("bias"):
                p.zero_()
                continue
            if p.ndim < 2 and not name.endswith(("mask_emb", "null_lr")):
                p.fill_(1.0)  # norm gains
                continue
            # residual-branch outputs scaled down with depth (GPT-2), keeping the stream's variance flat
            residual = name.endswith(("attn.out.weight", "mlp.down.weight"))
            nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * self.cfg.n_layers) if residual else std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- conditions --------------------------------------------------------------------------

    def embed_lr(self, lr_tokens, lr_keep=None):
        """LR ids [B, T, H/2, W/2] -> [B, T, H/2, W/2, D]; lr_keep [B] False = the null condition."""
        if tuple(lr_tokens.shape[1:]) != self.cfg.lr_grid:
            raise ValueError(f"LR tokens of grid {tuple(lr_tokens.shape[1:])}, expected {self.cfg.lr_grid}")
        emb = self.lr_emb(lr_tokens)
        if lr_keep is not None:
            emb = torch.where(lr_keep[:, None, None, None, None], emb, self.null_lr.to(emb.dtype))
        return self.lr_norm(emb + self.lr_pos())

    def embed_text(self, text_emb, text_mask, batch: int):
        """[B, S, text_dim] + mask [B, S] -> [B, text_slots, D]; None or masked slots: the null text."""
        null = self.null_text.unsqueeze(0).expand(batch, -1, -1)
        if text_emb is None:
            return null
        if text_emb.shape[1] != self.cfg.text_slots:
            raise ValueError(f"text of {text_emb.shape[1]} slots, expected text_slots={self.cfg.text_slots}")
        proj = self.text_proj(text_emb.to(self.text_proj.weight.dtype))
        keep = text_mask if text_mask is not None else torch.ones(proj.shape[:2], dtype=torch.bool,
                                                                  device=proj.device)
        return torch.where(keep[..., None], proj, null.to(proj.dtype))

    # -- forward -------------------------------------------------------------------------------

    def forward(self, tokens, lr_tokens, text_emb=None, text_mask=None, lr_keep=None):
        """HR ids [B, T, H, W] (MASK_ID where masked) -> final-norm hidden states [B, T, H, W, D]."""
        if tuple(tokens.shape[1:]) != self.cfg.hr_grid:
            raise ValueError(f"HR tokens of grid {tuple(tokens.shape[1:])}, expected {self.cfg.hr_grid}")
        masked = tokens == MASK_ID
        x = self.hr_emb(tokens.masked_fill(masked, 0))
        x = torch.where(masked[..., None], self.mask_emb.to(x.dtype), x) + self.hr_pos()
        lr = self.embed_lr(lr_tokens, lr_keep)
        text = self.embed_text(text_emb, text_mask, tokens.shape[0])
        remat = self.cfg.grad_checkpoint and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block.text_step, x, text, use_reentrant=False) if remat else block.text_step(x, text)
            for layer in block.layers:
                x = checkpoint(layer, x, lr, use_reentrant=False) if remat else layer(x, lr)
        return self.norm(x)

    def logits(self, hidden):
        """Hidden [..., D] -> (lo logits [..., 512], hi logits [..., 512])."""
        return self.head_lo(hidden), self.head_hi(hidden)


def build_sr_model(cfg: SRConfig | str, overrides: tuple[str, ...] = ()) -> SRTransformer:
    if isinstance(cfg, str):
        cfg = SR_RECIPES.get(cfg, overrides)
    return SRTransformer(cfg)
