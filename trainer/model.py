"""The VideoPoet prefix LM: a decoder-only transformer over the unified vocabulary (paper §3.2).

Plain PyTorch, no distribution inside (the engine wraps it from outside):
- pre-norm blocks, RMSNorm, SwiGLU MLP, rotary positions (Llama-style);
- text enters as embeddings: a linear projection of the (T5) text embeddings into the TEXT_SLOTS
  positions after `<bot_i>`; where the text mask is False the model uses a learned null-text
  embedding per slot, so padding and classifier-free-guidance dropout never change the layout;
- prefix-LM attention: bidirectional over the prefix, causal over the output;
- loss on output positions only, with a chunked cross-entropy that never materialises all
  B x T x 266,496 logits at once (each chunk is recomputed in backward instead of stored);
- a KV cache for decoding (trainer.sampling).

Attention implementations (ModelConfig.attention), all numerically equal (tests/trainer/test_model.py):
    "sdpa_split"  two SDPA calls, prefix rows non-causal over the prefix, output rows over everything
                  with a bottom-right causal bias: no mask tensor, exactly the prefix-LM FLOPs, and
                  SDPA may use its flash / memory-efficient kernels (trainer.md §5, option 2).
    "sdpa_mask"   one SDPA call with a boolean [L, L] mask (falls back to the efficient kernel on GPU).
    "dense"       explicit softmax(QK^T + mask) V: the readable reference the tests compare against.
FlexAttention is not offered: on this torch it has no CPU backward, so it could not be tested here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right
from torch.utils.checkpoint import checkpoint

from videopoet.config import RecipeRegistry
from videopoet.pipeline import vocab as V


@dataclass
class ModelConfig:
    vocab_size: int = V.VOCAB_SIZE
    d_model: int = 1024
    n_layers: int = 16
    n_heads: int = 16
    n_kv_heads: int = 0  # 0: same as n_heads (multi-head); fewer: grouped-query attention
    ffn_dim: int = 2816  # SwiGLU hidden width
    max_seq_len: int = 12_288  # longest layout: avcont 41-frame portrait, 10,917 (layouts v2)
    text_dim: int = 2048  # T5-XL; must equal the token shards' text_dim
    text_slots: int = V.TEXT_SLOTS
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-5
    qk_norm: bool = False  # RMSNorm on queries and keys (Chameleon's fix for multimodal instability)
    init_std: float = 0.02
    tie_embeddings: bool = False
    attention: Literal["sdpa_split", "sdpa_mask", "dense"] = "sdpa_split"
    loss_chunk: int = 1024  # positions per cross-entropy chunk (chunk x vocab fp32 logits live at once)
    z_loss: float = 0.0  # weight of log(Z)^2 (PaLM); 0 disables
    grad_checkpoint: bool = False  # recompute each block in backward

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not a multiple of n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"head dim {self.d_model // self.n_heads} must be even for rotary positions")
        if self.kv_heads < 1 or self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.loss_chunk < 1 or self.vocab_size < 1 or self.text_dim < 1 or self.ffn_dim < 1:
            raise ValueError("loss_chunk, vocab_size, text_dim and ffn_dim must be positive")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads


MODEL_RECIPES: RecipeRegistry[ModelConfig] = RecipeRegistry(ModelConfig)

# What a recipe's name counts. The paper gives sizes (300M for the Table 2 task ablations, 1B, 8B) without
# saying whether the vocabulary matrices are in them. At 266,496 ids the untied embedding and output
# head are 2 x 266,496 x d parameters: 0.55B at d=1,024, 2.2B at d=4,096. Counted in a total, a "300M"
# model would be 91% vocabulary lookup/projection and 27M of transformer, which cannot carry an
# ablation's capacity; so:
#   300m, 1b   name = non-embedding parameters (num_params(non_embedding=True): blocks, final norm,
#              text projection and null text); totals 0.86B and 2.12B.
#   8b         name = total parameters (8.67B; 6.48B non-embedding): trainer.md §3.4's shape, Llama-2-7B
#              blocks, whose ZeRO-3 memory plan is sized on the total. Counted like 300m/1b it is a 6.5B model.
#   tiny       CPU only, no claim (34M total, 0.14M non-embedding).


def _recipe(name: str):
    """Register a recipe under `name` ("300m" is not a Python identifier)."""

    def wrap(fn):
        fn.__name__ = name
        return MODEL_RECIPES.register(fn)

    return wrap


@_recipe("tiny")
def tiny() -> ModelConfig:
    """CPU tests and the demo (34M params, nearly all vocabulary): `videopoet train --config tiny`."""
    return ModelConfig(d_model=64, n_layers=2, n_heads=4, ffn_dim=192, text_dim=384, loss_chunk=512)


@_recipe("300m")
def _300m() -> ModelConfig:
    """Task ablations like the paper's Table 2: 310M non-embedding (0.86B total): `videopoet train --config 300m`."""
    return ModelConfig(d_model=1024, n_layers=24, n_heads=16, ffn_dim=2816)


@_recipe("1b")
def _1b() -> ModelConfig:
    """1.03B non-embedding (2.12B total): `videopoet train --config 1b` (bench/train.py measures its MFU)."""
    return ModelConfig(d_model=2048, n_layers=20, n_heads=16, ffn_dim=5632)


@_recipe("8b")
def _8b() -> ModelConfig:
    """8.67B total, 6.48B non-embedding (trainer.md §3.4): `videopoet train --config 8b --num-workers 64 --use-gpu`."""
    return ModelConfig(d_model=4096, n_layers=32, n_heads=32, ffn_dim=11008, grad_checkpoint=True)


# ---------------------------------------------------------------------------------------------
# attention masks


def prefix_lm_mask(q_len: int, kv_len: int, prefix_len: int, q_start: int = 0, device=None) -> torch.Tensor:
    """Dense boolean mask [q_len, kv_len], True = may attend.

    Query at absolute position i (= q_start + row) sees key j when j < prefix_len (the whole
    prefix, bidirectionally) or j <= i (causal). A prefix query (i < prefix_len) therefore sees the
    whole prefix and no output.
    """
    i = torch.arange(q_start, q_start + q_len, device=device)[:, None]
    j = torch.arange(kv_len, device=device)[None, :]
    allowed = (j <= i) | (j < prefix_len)
    prefix_rows = i < prefix_len
    return torch.where(prefix_rows, j < prefix_len, allowed)


def dense_attention(q, k, v, mask):
    """Reference attention: softmax(q k^T / sqrt(d) masked) v, in fp32."""
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.float()).to(q.dtype)


# ---------------------------------------------------------------------------------------------
# modules


class Rotary(nn.Module):
    """fp32 cos/sin tables of the rotary angles, built on first use per device; never a buffer.

    Why not buffers built in __init__: under deepspeed.zero.Init with a bf16 config every float
    tensor created inside the context (torch.arange included) comes out in bf16, and a bf16 engine
    casts buffers to bf16; either way positions 0..12,287 keep only 961 distinct angles (cos error
    0.21 at position 1,000), and training would see other positions than sampling, which rebuilds
    the tables. Built lazily, outside any such context, the tables are fp32 on every path.
    """

    def __init__(self, head_dim: int, max_seq_len: int, theta: float):
        super().__init__()
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._tables:
            inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
            angles = torch.outer(torch.arange(self.max_seq_len, dtype=torch.float32), inv_freq)
            self._tables[device] = (angles.cos().to(device), angles.sin().to(device))
        return self._tables[device]

    def forward(self, start: int, length: int, device: torch.device | str = "cpu"):
        if start + length > self.max_seq_len:
            raise ValueError(f"sequence of {start + length} positions exceeds max_seq_len={self.max_seq_len}")
        cos, sin = self.tables(torch.device(device))
        return cos[start: start + length], sin[start: start + length]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, Dh]; rotate (even, odd) pairs, in fp32 for accuracy in bf16 training."""
    xf = x.float().unflatten(-1, (-1, 2))
    x1, x2 = xf[..., 0], xf[..., 1]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


class KVCache:
    """Keys and values of every layer for positions [0, length): prefix, then generated tokens."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, device=None, dtype=torch.float32):
        shape = (batch, cfg.kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.length = 0
        self.max_len = max_len

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor):
        end = start + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache of {self.max_len} positions cannot hold position {end - 1}")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, (cfg.n_heads + 2 * cfg.kv_heads) * cfg.head_dim, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.q_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(cfg.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else nn.Identity()

    def forward(self, x, cos, sin, prefix_len: int, cache: KVCache | None = None, start: int = 0):
        B, L, _ = x.shape
        q, k, v = self.qkv(x).split([self.n_heads * self.head_dim, self.n_kv * self.head_dim,
                                     self.n_kv * self.head_dim], dim=-1)
        q = self.q_norm(q.view(B, L, self.n_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(k.view(B, L, self.n_kv, self.head_dim)).transpose(1, 2)
        v = v.view(B, L, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, start, k, v)
        if self.n_kv != self.n_heads:
            k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        y = self._attend(q, k, v, prefix_len, start)
        return self.out(y.transpose(1, 2).reshape(B, L, -1))

    def _attend(self, q, k, v, prefix_len: int, start: int):
        L, S = q.shape[2], k.shape[2]
        impl = self.cfg.attention
        if start > 0 or S != L:  # decoding with a cache: queries [start, start+L) over keys [0, S)
            if start >= prefix_len and L == 1:
                return F.scaled_dot_product_attention(q, k, v)  # one new output token sees everything
            mask = prefix_lm_mask(L, S, prefix_len, q_start=start, device=q.device)
            return (dense_attention(q, k, v, mask) if impl == "dense"
                    else F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        if impl == "dense":
            return dense_attention(q, k, v, prefix_lm_mask(L, L, prefix_len, device=q.device))
        if impl == "sdpa_mask":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=prefix_lm_mask(L, L, prefix_len, device=q.device))
        P = min(prefix_len, L)
        pre = F.scaled_dot_product_attention(q[:, :, :P], k[:, :, :P], v[:, :, :P])
        if P == L:
            return pre
        out = F.scaled_dot_product_attention(q[:, :, P:], k, v, attn_mask=causal_lower_right(L - P, L))
        return torch.cat([pre, out], dim=2)


class SwiGLU(nn.Module):
    """The gated MLP of the LM's and the SR transformer's blocks: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, ffn_dim: int):
        super().__init__()
        self.gate = nn.Linear(d_model, ffn_dim, bias=False)
        self.up = nn.Linear(d_model, ffn_dim, bias=False)
        self.down = nn.Linear(ffn_dim, d_model, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_dim)

    def forward(self, x, cos, sin, prefix_len: int, cache: KVCache | None = None, start: int = 0):
        x = x + self.attn(self.attn_norm(x), cos, sin, prefix_len, cache, start)
        return x + self.mlp(self.mlp_norm(x))


class VideoPoetLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.text_proj = nn.Linear(cfg.text_dim, cfg.d_model)
        self.null_text = nn.Parameter(torch.zeros(cfg.text_slots, cfg.d_model))
        self.rotary = Rotary(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.reset_parameters()
        if cfg.tie_embeddings:
            self.head.weight = self.tok_emb.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.ndim < 2:
                if name.endswith("bias"):
                    p.zero_()
                else:
                    p.fill_(1.0)  # norm weights
                continue
            # residual-branch outputs scaled down with depth (GPT-2), keeping the stream's variance flat
            scale = (1.0 / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("attn.out.weight", "mlp.down.weight"))
                     else 1.0)
            nn.init.normal_(p, mean=0.0, std=std * scale)

    # -- accounting --------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if not self.cfg.tie_embeddings:
                n -= self.head.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward) for MFU: 6N + 12 * layers * d * seq_len.

        N counts every matmul weight (blocks, text projection, output head) but not the input
        embedding, a lookup. The attention term is the usual full-matrix count (PaLM, nanoGPT),
        not halved for causality.
        """
        cfg = self.cfg
        n = self.num_params() - self.null_text.numel()
        if not cfg.tie_embeddings:
            n -= self.tok_emb.weight.numel()
        return 6.0 * n + 12.0 * cfg.n_layers * cfg.d_model * seq_len

    def new_kv_cache(self, batch: int, max_len: int, device=None, dtype=None) -> KVCache:
        w = self.head.weight
        return KVCache(self.cfg, batch, max_len, device=device or w.device, dtype=dtype or w.dtype)

    # -- forward -----------------------------------------------------------------------------

    def embed(self, tokens, text_emb=None, text_mask=None, text_start: int | None = None, start: int = 0):
        x = self.tok_emb(tokens)
        B, L, _ = x.shape
        slots = self.cfg.text_slots
        if text_start is not None and start <= text_start < start + L:
            s = text_start - start
            if s + slots > L:
                raise ValueError(f"text slots [{text_start}, {text_start + slots}) cross the end of this chunk")
            null = self.null_text.to(x.dtype).expand(B, slots, -1)
            if text_emb is None:
                text = null
            else:
                if text_emb.shape[-2:] != (slots, self.cfg.text_dim):
                    raise ValueError(f"text_emb shape {tuple(text_emb.shape)}, "
                                     f"expected [B, {slots}, {self.cfg.text_dim}]")
                text = self.text_proj(text_emb.to(x.dtype))
                if text_mask is not None:
                    text = torch.where(text_mask.to(torch.bool)[..., None], text, null)
            x = torch.cat([x[:, :s], text, x[:, s + slots:]], dim=1)
        elif torch.is_grad_enabled():
            # Keep every parameter in the graph on text-free tasks (zero contribution): DDP needs no
            # unused-parameter search and ZeRO-3 sees the same module order every step (trainer.md §1.3).
            dummy = self.text_proj(x.new_zeros(1, self.cfg.text_dim)).sum() + self.null_text.sum()
            x = x + 0.0 * dummy.to(x.dtype)
        return x

    def forward(self, tokens, prefix_len: int, text_emb=None, text_mask=None, text_start: int | None = None,
                kv_cache: KVCache | None = None):
        """tokens [B, L] -> final-norm hidden states [B, L, D].

        Without a cache the whole sequence is processed with prefix-LM attention. With `kv_cache`,
        `tokens` are the next positions [cache.length, cache.length + L) and attend to everything
        cached before them (the prefix must be in the first call: prefix rows are bidirectional).
        """
        start = kv_cache.length if kv_cache is not None else 0
        L = tokens.shape[1]
        if kv_cache is not None and (0 < start < prefix_len or (start == 0 and L < prefix_len)):
            # prefix rows attend bidirectionally, so a prefix split over calls would miss later keys
            raise ValueError(f"the first cached call must hold the whole prefix ({prefix_len} positions)")
        x = self.embed(tokens, text_emb, text_mask, text_start, start)
        cos, sin = self.rotary(start, L, tokens.device)
        for block in self.blocks:
            if self.cfg.grad_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, cos, sin, prefix_len, use_reentrant=False)
            else:
                x = block(x, cos, sin, prefix_len, kv_cache, start)
        if kv_cache is not None:
            kv_cache.length = start + L
        return self.norm(x)

    def logits(self, hidden, lo: int = 0, hi: int | None = None):
        """Logits over ids [lo, hi) only (sampling restricts to the output modality's range)."""
        if lo == 0 and hi in (None, self.cfg.vocab_size):
            return self.head(hidden)
        return F.linear(hidden, self.head.weight[lo:hi])

    def _chunk_loss(self, hidden, targets):
        logits = self.head(hidden).float()
        loss = F.cross_entropy(logits, targets, reduction="sum")
        if self.cfg.z_loss:
            loss = loss + self.cfg.z_loss * torch.logsumexp(logits, dim=-1).square().sum()
        return loss

    def loss(self, tokens, prefix_len: int, text_emb=None, text_mask=None, text_start: int | None = None,
             reduction: Literal["mean", "sum"] = "mean"):
        """Next-token cross-entropy over the output targets tokens[:, prefix_len:] only.

        Returns (loss, n_targets); "mean" divides the summed loss by n_targets = B * (L - prefix_len).
        Chunks of `loss_chunk` positions go through the head one at a time under activation
        checkpointing, so at most one chunk of fp32 logits exists at once, in forward and backward.
        """
        B, L = tokens.shape
        if not 0 < prefix_len < L:
            raise ValueError(f"prefix_len={prefix_len} must lie in 1..{L - 1} (at least one output target)")
        hidden = self.forward(tokens, prefix_len, text_emb, text_mask, text_start)
        h = hidden[:, prefix_len - 1: L - 1].reshape(-1, hidden.shape[-1])
        targets = tokens[:, prefix_len:].reshape(-1)
        total = hidden.new_zeros((), dtype=torch.float32)
        for s in range(0, targets.numel(), self.cfg.loss_chunk):
            hc, tc = h[s: s + self.cfg.loss_chunk], targets[s: s + self.cfg.loss_chunk]
            if torch.is_grad_enabled():
                total = total + checkpoint(self._chunk_loss, hc, tc, use_reentrant=False)
            else:
                total = total + self._chunk_loss(hc, tc)
        n = targets.numel()
        return (total / n if reduction == "mean" else total), n


def build_model(cfg: ModelConfig | str, overrides: tuple[str, ...] = ()) -> VideoPoetLM:
    if isinstance(cfg, str):
        cfg = MODEL_RECIPES.get(cfg, overrides)
    return VideoPoetLM(cfg)
