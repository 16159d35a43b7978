"""The SR training objective: MAGVIT masked-token modelling with factorised tokens, LR noise and condition drops.

One training example is (HR tokens, LR tokens, text). The LR tokens are the MAGVIT-v2 tokens of the
bicubic-downsampled ground truth (computed by the data job, not here). `training_loss`:
1. noise augmentation (paper §3.3, after Imagen Video): each example draws a rate u ~ U(0, lr_noise_max)
   and every LR token is resampled uniformly over the 2^18 ids with probability u;
2. condition drops for classifier-free guidance: the LR condition and the text are each dropped
   independently with probability lr_drop / text_drop (0.1 each): a dropped LR condition is the model's
   null LR vector (lr_keep False), dropped text is an all-False text mask (the null text slots);
3. MAGVIT masking: r ~ U(0, 1) per example, ceil(cos(pi r / 2) * N) of the N HR positions (at least one)
   chosen uniformly are replaced by MASK_ID;
4. loss on the masked positions only: CE_512(lo) + CE_512(hi) per position (token factorisation into
   k = 2 groups, tokenizers.lfq.split_tokens), averaged over the masked positions. Only the masked
   positions go through the heads.
Randomness comes from one torch.Generator (on the tokens' device) when given, so a step is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from videopoet.tokenizers.lfq import split_tokens
from videopoet.trainer.sr.model import CODEBOOK_BITS, MASK_ID, SRTransformer


@dataclass
class ObjectiveConfig:
    lr_noise_max: float = 0.2  # per-example resampling rate ~ U(0, lr_noise_max); the paper gives no number
    lr_drop: float = 0.1  # probability of dropping the LR condition (paper: 10%)
    text_drop: float = 0.1  # probability of dropping the text (paper: 10%), independent of the LR drop

    def validate(self) -> None:
        for name in ("lr_noise_max", "lr_drop", "text_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must lie in [0, 1]")


def cosine_mask_ratio(r: torch.Tensor) -> torch.Tensor:
    """MaskGIT / MAGVIT schedule gamma(r) = cos(pi r / 2): the masked fraction at progress r in [0, 1]."""
    return torch.cos(0.5 * math.pi * r)


def _rand(shape, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def draw_mask(batch: int, n: int, generator=None, device=None) -> torch.Tensor:
    """BoolTensor [batch, n]: per example ceil(gamma(r) n) positions (at least 1), r ~ U(0, 1), uniformly placed."""
    ratio = cosine_mask_ratio(_rand(batch, generator, device))
    n_masked = torch.ceil(ratio * n).long().clamp(1, n)
    rank = _rand((batch, n), generator, device).argsort(-1).argsort(-1)
    return rank < n_masked[:, None]


def draw_keep(batch: int, drop: float, generator=None, device=None) -> torch.Tensor:
    """BoolTensor [batch]: False (dropped) with probability `drop`, independently per example."""
    return _rand(batch, generator, device) >= drop


def draw_noise_rates(batch: int, noise_max: float, generator=None, device=None) -> torch.Tensor:
    """Per-example LR resampling rates ~ U(0, noise_max), [batch]."""
    return _rand(batch, generator, device) * noise_max


def noise_augment(lr_tokens: torch.Tensor, rates: torch.Tensor, generator=None):
    """Resample each LR id uniformly over 2^18 with its example's rate -> (noisy ids, resampled BoolTensor)."""
    device = lr_tokens.device
    u = _rand(lr_tokens.shape, generator, device)
    resampled = u < rates.view(-1, *[1] * (lr_tokens.ndim - 1))
    random_ids = torch.randint(0, 1 << CODEBOOK_BITS, lr_tokens.shape, generator=generator, device=device)
    return torch.where(resampled, random_ids, lr_tokens), resampled


def factorized_loss(logits_lo, logits_hi, targets, mask=None) -> tuple[torch.Tensor, int]:
    """Mean over masked positions of CE_512(lo) + CE_512(hi) -> (loss, n_masked).

    logits [..., 512] (fp32 cross-entropy), targets [...] 18-bit ids, mask [...] bool (None: every position).
    """
    if mask is not None:
        logits_lo, logits_hi, targets = logits_lo[mask], logits_hi[mask], targets[mask]
    lo, hi = split_tokens(targets.reshape(-1))
    n = lo.numel()
    if n == 0:
        raise ValueError("factorized_loss: no masked positions")
    loss = (F.cross_entropy(logits_lo.reshape(n, -1).float(), lo, reduction="sum")
            + F.cross_entropy(logits_hi.reshape(n, -1).float(), hi, reduction="sum"))
    return loss / n, n


def prepare_conditions(lr_tokens, text_mask, cfg: ObjectiveConfig, generator=None):
    """Noise-augmented LR ids, lr_keep [B] and the text mask with dropped examples all False."""
    batch, device = lr_tokens.shape[0], lr_tokens.device
    noisy, _ = noise_augment(lr_tokens, draw_noise_rates(batch, cfg.lr_noise_max, generator, device), generator)
    lr_keep = draw_keep(batch, cfg.lr_drop, generator, device)
    text_keep = draw_keep(batch, cfg.text_drop, generator, device)
    if text_mask is not None:
        text_mask = text_mask & text_keep[:, None]
    return noisy, lr_keep, text_mask


def training_loss(model: SRTransformer, hr_tokens, lr_tokens, text_emb=None, text_mask=None,
                  cfg: ObjectiveConfig | None = None, generator=None) -> tuple[torch.Tensor, int]:
    """One step's loss: HR ids [B, T, H, W], LR ids [B, T, H/2, W/2], text [B, S, text_dim] -> (loss, n_masked)."""
    cfg = cfg or ObjectiveConfig()
    cfg.validate()
    if text_emb is not None and text_mask is None:
        text_mask = torch.ones(text_emb.shape[:2], dtype=torch.bool, device=text_emb.device)
    lr_tokens, lr_keep, text_mask = prepare_conditions(lr_tokens, text_mask, cfg, generator)
    batch = hr_tokens.shape[0]
    mask = draw_mask(batch, hr_tokens[0].numel(), generator, hr_tokens.device).view_as(hr_tokens)
    hidden = model(hr_tokens.masked_fill(mask, MASK_ID), lr_tokens, text_emb, text_mask, lr_keep)
    logits_lo, logits_hi = model.logits(hidden[mask])
    return factorized_loss(logits_lo, logits_hi, hr_tokens[mask])
