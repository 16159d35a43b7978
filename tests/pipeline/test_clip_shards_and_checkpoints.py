"""The clip-shard format and model checkpoints: round trips, determinism, refusal of bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest

from videopoet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from videopoet.pipeline.clip_shards import (
    Clip,
    ShardFormatError,
    iter_clip_shard,
    iter_clips,
    list_shards,
    write_clip_shard,
    write_tar_atomic,
)


def _clip(key: str, seed: int, audio: bool = True, cond: bool = True) -> Clip:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (17, 16, 16, 3), dtype=np.uint8)
    return Clip(
        key=key,
        rgb=rgb,
        audio=rng.integers(-3000, 3000, 34_000).astype(np.int16) if audio else None,
        cond=rng.integers(0, 256, rgb.shape, dtype=np.uint8) if cond else None,
        meta={"caption": f"clip {seed}", "has_audio": audio},
    )


def test_round_trip_and_bytes_are_deterministic(tmp_path):
    clips = [_clip("a1", 1), _clip("b2", 2, audio=False), _clip("c3", 3, cond=False)]
    write_clip_shard(tmp_path / "one" / "shard-000000.tar", clips)
    write_clip_shard(tmp_path / "two" / "shard-000000.tar", clips)
    one, two = (tmp_path / d / "shard-000000.tar" for d in ("one", "two"))
    assert one.read_bytes() == two.read_bytes()
    back = list(iter_clips(tmp_path / "one"))
    assert [c.key for c in back] == ["a1", "b2", "c3"]
    for orig, got in zip(clips, back):
        np.testing.assert_array_equal(orig.rgb, got.rgb)
        assert (got.audio is None) == (orig.audio is None) and (got.cond is None) == (orig.cond is None)
        if orig.audio is not None:
            np.testing.assert_array_equal(orig.audio, got.audio)
        assert got.meta["caption"] == orig.meta["caption"] and got.meta["clip_format_version"] == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_uncommitted_tmp_files_are_not_listed(tmp_path):
    write_clip_shard(tmp_path / "shard-000000.tar", [_clip("a1", 1)])
    (tmp_path / "shard-000001.tar.tmp").write_bytes(b"partial")
    assert [p.name for p in list_shards(tmp_path)] == ["shard-000000.tar"]


@pytest.mark.parametrize("bad_name", ["../evil.json", "a1.rgb.npy/x", "a.b.json", "a1.exe"])
def test_reader_rejects_unexpected_member_names(tmp_path, bad_name):
    path = tmp_path / "bad.tar"
    write_tar_atomic(path, [(bad_name, b"{}")])
    with pytest.raises(ShardFormatError, match="unexpected member"):
        list(iter_clip_shard(path))


def test_reader_refuses_pickled_arrays(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    path = tmp_path / "pickled.tar"
    write_tar_atomic(path, [("k.rgb.npy", buf.getvalue()), ("k.json", b"{}")])
    with pytest.raises(ShardFormatError, match="k.rgb.npy: not a plain .npy array"):
        list(iter_clip_shard(path))


def test_writer_validates_clips(tmp_path):
    bad = _clip("a1", 1)
    bad.rgb = bad.rgb.astype(np.float32)
    with pytest.raises(ShardFormatError, match="rgb must be uint8"):
        write_clip_shard(tmp_path / "x.tar", [bad])
    with pytest.raises(ShardFormatError, match="only letters"):
        write_clip_shard(tmp_path / "x.tar", [_clip("a.b", 1)])
    assert not (tmp_path / "x.tar").exists()


def test_checkpoint_round_trip_hash_and_refusals(tmp_path):
    import torch

    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}
    digest = save_checkpoint(tmp_path / "ckpt", tensors, kind="unit", config={"width": 3})
    back, meta = load_checkpoint(tmp_path / "ckpt", kind="unit")
    assert meta["content_hash"] == digest and meta["config"] == {"width": 3}
    assert torch.equal(back["w"], tensors["w"])
    # Same weights give the same hash; different weights a different one.
    assert save_checkpoint(tmp_path / "again", tensors, kind="unit", config={}) == digest
    assert save_checkpoint(tmp_path / "other", {"w": torch.zeros(2)}, kind="unit", config={}) != digest
    with pytest.raises(CheckpointError, match="expected 'video'"):
        load_checkpoint(tmp_path / "ckpt", kind="video")
    with open(tmp_path / "ckpt" / "weights.pt", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(CheckpointError, match="does not match its recorded content hash"):
        load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="no meta.json"):
        load_checkpoint(tmp_path / "missing")


def test_checkpoint_loading_never_unpickles_objects(tmp_path):
    import pickle

    import torch

    save_checkpoint(tmp_path / "ckpt", {"w": torch.zeros(1)}, kind="unit", config={})
    meta_hash_ok = tmp_path / "ckpt" / "weights.pt"

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"w": Evil()}, meta_hash_ok, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(Exception) as err:
        load_checkpoint(tmp_path / "ckpt", verify=False)
    assert "weights_only" in str(err.value) or "Unsupported" in str(err.value)
