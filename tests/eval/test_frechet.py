"""Fréchet distance and streamed statistics: closed forms (docs eval.md §1.8), exact merges, safe files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videopoet.eval.frechet import FeatureStats, frechet_distance, frechet_distance_from_moments


def _exact_samples(rng, n: int, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """n samples whose sample mean is exactly mu and unbiased sample covariance exactly sigma."""
    d = mu.shape[0]
    z = rng.standard_normal((n, d))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / (n - 1))).T  # identity covariance
    return z @ np.linalg.cholesky(sigma).T + mu


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_identical_sets_give_zero():
    x = np.random.default_rng(0).standard_normal((600, 400)) * 3 + 1
    a, b = FeatureStats.from_features(x), FeatureStats.from_features(x[::-1])
    assert abs(frechet_distance(a, b)) < 1e-8 * np.trace(a.cov())


@pytest.mark.parametrize(
    "mu1,s1,mu2,s2,expected",
    [
        (np.zeros(400), np.eye(400), np.full(400, 0.5), np.eye(400), 100.0),  # mean shift: ||mu||^2
        (np.zeros(400), 4 * np.eye(400), np.zeros(400), np.eye(400), 400.0),  # isotropic: d (sqrt a - sqrt b)^2
        (np.array([1.0, 0]), np.array([[2.0, 1], [1, 2]]), np.array([0.0, 2]), np.diag([1.0, 3]),
         5.516685226452117),  # non-commuting 2x2: 5 + 4 + 4 - 2 sqrt(14)
    ],
)
def test_closed_forms(mu1, s1, mu2, s2, expected):
    assert frechet_distance_from_moments(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12, abs=1e-9)


def test_diagonal_covariances_closed_form():
    rng = np.random.default_rng(1)
    v1, v2 = rng.uniform(0.5, 3, 50), rng.uniform(0.5, 3, 50)
    m1, m2 = rng.standard_normal(50), rng.standard_normal(50)
    expected = np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2) + np.sum((m1 - m2) ** 2)
    assert frechet_distance_from_moments(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_feature_sets_with_known_shift_match_closed_form():
    """Sets built to have exactly the §1.8 moments give the closed-form distance through FeatureStats."""
    rng = np.random.default_rng(2)
    d = 64
    x = _exact_samples(rng, 500, np.zeros(d), np.eye(d))
    y = _exact_samples(rng, 700, np.full(d, 0.5), np.eye(d))
    assert frechet_distance(FeatureStats.from_features(x), FeatureStats.from_features(y)) == pytest.approx(
        0.25 * d, rel=1e-9)
    y = _exact_samples(rng, 700, np.zeros(d), 4 * np.eye(d))
    assert frechet_distance(FeatureStats.from_features(x), FeatureStats.from_features(y)) == pytest.approx(
        float(d), rel=1e-9)
    x = _exact_samples(rng, 300, np.array([1.0, 0]), np.array([[2.0, 1], [1, 2]]))
    y = _exact_samples(rng, 300, np.array([0.0, 2]), np.diag([1.0, 3]))
    assert frechet_distance(FeatureStats.from_features(x), FeatureStats.from_features(y)) == pytest.approx(
        5.516685226452117, rel=1e-9)


def test_streaming_matches_numpy_and_population_flag():
    x = np.random.default_rng(3).standard_normal((5000, 64)) * 2 + 5
    stats = FeatureStats()
    for i in range(0, 5000, 333):
        stats.update(torch.from_numpy(x[i:i + 333]).float() if i == 0 else x[i:i + 333])
    ref = FeatureStats.from_features(x)
    assert _rel(stats.cov(), np.cov(x, rowvar=False)) < 1e-6  # the first batch went through float32
    assert _rel(ref.cov(), np.cov(x, rowvar=False)) < 1e-12
    np.testing.assert_allclose(ref.cov(unbiased=False), ref.cov() * (4999 / 5000), rtol=1e-14)


def test_merge_of_any_split_equals_one_pass():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1000, 32)) * rng.uniform(0.1, 10, 32) + rng.uniform(-100, 100, 32)
    one = FeatureStats.from_features(x)
    for trial in range(5):
        perm = rng.permutation(len(x))
        cuts = np.sort(rng.choice(np.arange(1, len(x)), size=rng.integers(1, 8), replace=False))
        shards = [FeatureStats.from_features(part) for part in np.split(x[perm], cuts)]
        shards.append(FeatureStats())  # an empty worker merges as a no-op
        rng.shuffle(shards)
        merged = FeatureStats()
        if trial % 2:  # pairwise tree, as an all-reduce would do
            while len(shards) > 1:
                shards = [shards[i].merge(shards[i + 1]) if i + 1 < len(shards) else shards[i]
                          for i in range(0, len(shards), 2)]
            merged = shards[0]
        else:
            for s in shards:
                merged.merge(s)
        assert merged.count == one.count
        assert _rel(merged.mean, one.mean) < 1e-10
        assert _rel(merged.m2, one.m2) < 1e-10


def test_save_load_roundtrip_without_pickle(tmp_path):
    stats = FeatureStats.from_features(np.random.default_rng(5).standard_normal((50, 8)))
    path = stats.save(tmp_path / "stats.npz")
    back = FeatureStats.load(path)
    assert back.count == 50
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.m2, stats.m2)
    np.savez(tmp_path / "other.npz", mean=np.zeros(3))
    with pytest.raises(ValueError, match="not a FeatureStats file"):
        FeatureStats.load(tmp_path / "other.npz")
    np.savez(tmp_path / "obj.npz", format=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        FeatureStats.load(tmp_path / "obj.npz")


def test_rank_deficient_covariances_stay_finite():
    """Fewer items than dimensions (e.g. < 400 clips for I3D logits): a real, finite, non-negative value."""
    rng = np.random.default_rng(6)
    a = FeatureStats.from_features(rng.standard_normal((20, 100)))
    b = FeatureStats.from_features(rng.standard_normal((20, 100)) + 0.1)
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0
    assert abs(frechet_distance(a, a)) < 1e-5 * np.trace(a.cov())


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="feature size"):
        FeatureStats.from_features(np.zeros((3, 4))).update(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats.from_features(np.zeros((1, 4))).cov()
