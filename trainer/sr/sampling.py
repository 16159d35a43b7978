"""MaskGIT sampling for the SR transformer, with classifier-free guidance on the text and on the LR condition.

Decoding (MaskGIT / MAGVIT-v2, paper A.3: 24 steps per stage). All unknown HR positions start as MASK_ID
(positions given in `init_tokens` are fixed: never masked, never changed). At step s = 0..S-1 the model
predicts every position; each masked position draws (lo, hi) from the guided logits (Gumbel-max at
`temperature`), and its confidence is log p(lo) + log p(hi) plus Gumbel noise scaled by
choice_temperature * (1 - (s+1)/S). Of the positions still masked, the n_s least confident stay masked,
    n_s = min(n_{s-1} - 1, floor(N cos(pi/2 (s+1)/S)))   (N unknown positions, n_{-1} = N; n_{S-1} = 0),
and the rest take their draws for good: a position once unmasked is never re-masked.

Guidance with two conditions (InstructPix2Pix's form, paper ref. [7]; per factor, on the 512-way logits):
    l = l(0, 0) + s_lr (l(lr, 0) - l(0, 0)) + s_text (l(lr, text) - l(lr, 0))
      = s_text l(lr, text) + (s_lr - s_text) l(lr, 0) + (1 - s_lr) l(0, 0)
l(lr, text) is the conditional pass, l(lr, 0) has the text dropped, l(0, 0) both conditions dropped (the
two drops the objective trains, 10% each). Why this form: the text guidance is measured with the LR
condition present (the text refines details of an LR video that is always given at inference), the LR
guidance against the fully unconditional pass, and each scale acts alone: s_lr = 1 removes l(0, 0)
(paper stage 1: 4.0 / 1.0, two passes), s_text = s_lr = 1 is exactly the conditional pass. Passes with
weight 0 are not run; the others run as one batch.
Randomness: one torch.Generator seeded with `seed` on the model's device, so a seed gives the same video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from videopoet.tokenizers.lfq import join_tokens
from videopoet.trainer.sr.model import MASK_ID, SRTransformer


@dataclass
class SRSamplingConfig:
    steps: int = 24
    text_scale: float = 1.0
    lr_scale: float = 1.0
    temperature: float = 1.0  # token draws; 0 = argmax
    choice_temperature: float = 4.5  # Gumbel noise on the confidences (MaskGIT), annealed linearly to 0
    seed: int = 0


# Appendix A.3: guidance scales (text, LR) per stage
STAGE_GUIDANCE = {"stage1": (4.0, 1.0), "stage2": (8.0, 2.0)}


def stage_sampling(stage: str, **changes) -> SRSamplingConfig:
    """The paper's sampling settings for "stage1" / "stage2" (24 steps, its guidance scales)."""
    text_scale, lr_scale = STAGE_GUIDANCE[stage]
    return SRSamplingConfig(**{"text_scale": text_scale, "lr_scale": lr_scale, **changes})


def guidance_weights(text_scale: float, lr_scale: float) -> dict[tuple[bool, bool], float]:
    """{(lr on, text on): weight} of each pass in the guided logits (weights sum to 1)."""
    return {(True, True): text_scale, (True, False): lr_scale - text_scale, (False, False): 1.0 - lr_scale}


def guided_logits(model: SRTransformer, tokens, lr_tokens, text_emb=None, text_mask=None,
                  text_scale: float = 1.0, lr_scale: float = 1.0):
    """(lo, hi) guided logits [B, T, H, W, 512]; the passes with a non-zero weight run as one batch."""
    B = tokens.shape[0]
    passes = [(key, w) for key, w in guidance_weights(text_scale, lr_scale).items() if w != 0.0]
    if text_mask is None and text_emb is not None:
        text_mask = torch.ones(text_emb.shape[:2], dtype=torch.bool, device=tokens.device)
    lr_keep = torch.cat([torch.full((B,), lr_on, device=tokens.device) for (lr_on, _), _ in passes])
    masks = None if text_emb is None else torch.cat([text_mask & text_on for (_, text_on), _ in passes])
    k = len(passes)
    hidden = model(tokens.repeat(k, 1, 1, 1), lr_tokens.repeat(k, 1, 1, 1),
                   None if text_emb is None else text_emb.repeat(k, 1, 1), masks, lr_keep)
    lo_all, hi_all = model.logits(hidden)
    lo = sum(w * part for (_, w), part in zip(passes, lo_all.float().chunk(k)))
    hi = sum(w * part for (_, w), part in zip(passes, hi_all.float().chunk(k)))
    return lo, hi


def masked_counts(n_unknown: torch.Tensor, steps: int) -> torch.Tensor:
    """LongTensor [steps, B]: how many positions are still masked after each step (cosine schedule)."""
    counts, prev = [], n_unknown.long()
    for s in range(steps):
        target = torch.floor(n_unknown.double() * math.cos(0.5 * math.pi * (s + 1) / steps)).long()
        prev = torch.minimum(target, (prev - 1).clamp_min(0))
        counts.append(prev)
    return torch.stack(counts)


def _gumbel(shape, generator, device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp(1e-20, 1.0)
    return -torch.log((-torch.log(u)).clamp_min(1e-20))


def _draw(logits, temperature: float, generator):
    """Gumbel-max draws and their log-probabilities from logits [..., V]."""
    if temperature == 0:
        ids = logits.argmax(-1)
        return ids, logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0]
    logp = (logits / temperature).log_softmax(-1)
    ids = (logp + _gumbel(logp.shape, generator, logp.device)).argmax(-1)
    return ids, logp.gather(-1, ids[..., None])[..., 0]


@torch.no_grad()
def sample(model: SRTransformer, lr_tokens, text_emb=None, text_mask=None, cfg: SRSamplingConfig | None = None,
           init_tokens=None, trace: list | None = None) -> torch.Tensor:
    """HR ids [B, T, H, W] for LR ids [B, T, H/2, W/2] (+ text [B, S, text_dim], mask [B, S]).

    `init_tokens` (MASK_ID where unknown) fixes the other positions. `trace`, when a list, receives a copy
    of the tokens after every step (MASK_ID where still masked).
    """
    cfg = cfg or SRSamplingConfig()
    if cfg.steps < 1:
        raise ValueError(f"steps={cfg.steps} must be at least 1")
    B, device = lr_tokens.shape[0], lr_tokens.device
    tokens = (torch.full((B, *model.cfg.hr_grid), MASK_ID, dtype=torch.long, device=device)
              if init_tokens is None else init_tokens.clone())
    counts = masked_counts((tokens == MASK_ID).flatten(1).sum(1), cfg.steps)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    for s in range(cfg.steps):
        masked = tokens == MASK_ID
        if masked.any():
            lo_logits, hi_logits = guided_logits(model, tokens, lr_tokens, text_emb, text_mask,
                                                 cfg.text_scale, cfg.lr_scale)
            lo, logp_lo = _draw(lo_logits, cfg.temperature, generator)
            hi, logp_hi = _draw(hi_logits, cfg.temperature, generator)
            noise = _gumbel(masked.shape, generator, device) * cfg.choice_temperature * (1 - (s + 1) / cfg.steps)
            confidence = torch.where(masked, logp_lo + logp_hi + noise, torch.inf)
            rank = confidence.flatten(1).argsort(-1).argsort(-1).view_as(masked)
            stay = rank < counts[s].view(-1, 1, 1, 1)  # the least confident masked positions
            tokens = torch.where(masked & ~stay, join_tokens(lo, hi), tokens)
        if trace is not None:
            trace.append(tokens.clone())
    return tokens
