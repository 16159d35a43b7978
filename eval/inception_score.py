"""Inception Score from class probabilities, as TGAN2 / improved-GAN compute it (eps 1e-20), with per-split mean/std.

IS = exp(E_x KL(p(y|x) || p(y))), p(y) the mean of p(y|x) over the split. TGAN2's `inception_score`: probabilities
are split into `splits` contiguous parts (part i = rows [i*n//splits, (i+1)*n//splits)), eps = 1e-20 is added to
every probability, the score of a part is exp(mean over rows of sum_y p (log p - log mean_part p)), and the result
is (mean, std) over the parts (numpy's population std). Protocols (eval.md §3): TGAN2 reports mean/std over 10 draws
of 2048 clips with splits=1 each; StyleGAN-V uses 2048 clips with splits=10; MAGVIT (hence VideoPoet) 4 repeats of
10k clips with splits=1 each: call this once per repeat and aggregate the repeats yourself.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-20


def inception_score(probs, splits: int = 1, eps: float = EPS) -> tuple[float, float]:
    """(mean, std) over `splits` contiguous parts of the Inception Score of probabilities [N, C] (rows sum to 1)."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"inception_score: expected probabilities [N>0, C], got shape {p.shape}")
    if not 1 <= splits <= p.shape[0]:
        raise ValueError(f"inception_score: splits must be in 1..{p.shape[0]} (the number of rows), got {splits}")
    n = p.shape[0]
    scores = np.empty(splits, np.float64)
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits] + eps
        kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        scores[i] = np.exp(kl.sum(axis=1).mean())
    return float(scores.mean()), float(scores.std())
