"""Fréchet distance between feature sets from streamed float64 statistics that merge exactly across shards.

`FeatureStats` keeps (count, mean, M2) in float64, where M2 = sum over items of (x - mean)(x - mean)^T.
`update(batch)` folds a batch in and `merge(other)` folds in another worker's statistics, both with the
pairwise formula of Chan, Golub and LeVeque (1979):

    n = na + nb,  delta = mean_b - mean_a,
    mean = mean_a + delta * nb / n,
    M2 = M2_a + M2_b + outer(delta, delta) * na * nb / n.

So any split of a feature set into shards, in any order, gives the same statistics as one pass (up to
float64 round-off; tests/eval/test_frechet.py checks 1e-10 relative). Covariance: unbiased (M2 / (n-1)) by
default, as TF-GAN, MAGVIT and hence VideoPoet compute FVD (docs/architecture.md "Evaluation");
`unbiased=False` gives the population covariance (M2 / n) of StyleGAN-V and cd-fvd.

Files: `save(path)` writes an .npz of three plain arrays (count, mean, m2) plus a format tag; `load(path)`
reads it with allow_pickle=False, so a statistics file can never run code.

`frechet_distance(a, b)` = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr sqrt(S_a S_b), with
scipy.linalg.sqrtm, guarded as pytorch-fid / the FAD reference code do: if sqrtm of S_a S_b is not finite
(near-singular covariances, e.g. fewer items than dimensions), retry on (S_a + eps I)(S_b + eps I) with
eps = 1e-6; a complex result whose diagonal has an imaginary part above 1e-3 (absolute) raises, a smaller
one is round-off and is dropped (real part kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.linalg

FORMAT = "videopoet.feature_stats.v1"
SQRTM_EPS = 1e-6
IMAG_TOL = 1e-3


def _as_2d_float64(batch) -> np.ndarray:
    if hasattr(batch, "detach"):  # a torch tensor, without importing torch here
        batch = batch.detach().cpu().double().numpy()
    x = np.asarray(batch, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"FeatureStats: expected features [N, D], got shape {x.shape}")
    return x


class FeatureStats:
    """Count, mean and centred second moment (M2) of D-dim features, float64, mergeable."""

    def __init__(self, dim: int | None = None):
        self.count = 0
        self.dim = dim
        self.mean = None if dim is None else np.zeros(dim, np.float64)
        self.m2 = None if dim is None else np.zeros((dim, dim), np.float64)

    @classmethod
    def from_features(cls, features) -> FeatureStats:
        return cls().update(features)

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> FeatureStats:
        if n_b == 0:
            return self
        if self.dim is None:
            self.dim = mean_b.shape[0]
            self.mean = np.zeros(self.dim, np.float64)
            self.m2 = np.zeros((self.dim, self.dim), np.float64)
        if mean_b.shape[0] != self.dim:
            raise ValueError(f"FeatureStats: feature size {mean_b.shape[0]} does not match {self.dim}")
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n
        return self

    def update(self, batch) -> FeatureStats:
        """Fold a batch of features [N, D] (numpy or torch, any float dtype) in; returns self."""
        x = _as_2d_float64(batch)
        if x.shape[0] == 0:
            return self
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        return self._combine(x.shape[0], mean_b, centred.T @ centred)

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Fold another worker's / shard's statistics in (Chan et al.); returns self."""
        if other.count == 0:
            return self
        return self._combine(other.count, other.mean, other.m2)

    def cov(self, unbiased: bool = True) -> np.ndarray:
        denom = self.count - 1 if unbiased else self.count
        if denom <= 0:
            need = 2 if unbiased else 1
            raise ValueError(f"FeatureStats: a covariance needs at least {need} items, have {self.count}")
        return self.m2 / denom

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if self.count == 0:
            raise ValueError("FeatureStats: nothing to save (no items)")
        with open(path, "wb") as fh:  # a file object: np.savez would append .npz to a str path
            np.savez(fh, format=np.array(FORMAT), count=np.array(self.count, np.int64), mean=self.mean, m2=self.m2)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        with np.load(Path(path), allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != FORMAT:
                raise ValueError(f"{path}: not a FeatureStats file ({FORMAT})")
            stats = cls(int(z["mean"].shape[0]))
            stats.count = int(z["count"])
            stats.mean = z["mean"].astype(np.float64)
            stats.m2 = z["m2"].astype(np.float64)
        if stats.m2.shape != (stats.dim, stats.dim):
            raise ValueError(f"{path}: m2 has shape {stats.m2.shape}, expected {(stats.dim, stats.dim)}")
        return stats


def frechet_distance_from_moments(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), float64, scipy.linalg.sqrtm."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"frechet_distance: shapes differ: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * SQRTM_EPS
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        worst = np.max(np.abs(np.diagonal(covmean).imag))
        if worst > IMAG_TOL:
            raise ValueError(f"frechet_distance: sqrtm has imaginary part {worst:.3g} on its diagonal (> {IMAG_TOL})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def frechet_distance(stats_a: FeatureStats, stats_b: FeatureStats, unbiased: bool = True) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (FVD when the features are I3D logits)."""
    return frechet_distance_from_moments(stats_a.mean, stats_a.cov(unbiased), stats_b.mean, stats_b.cov(unbiased))
