"""Token shards (contract B): round trip, validation, versioning, streaming by row group."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from videopoet.pipeline import token_shards as ts

TASKS = ("t2v", "uncond")


def _rows(n=20, seed=0, **kw):
    rows = ts.synthetic_rows(n, seed, with_lengths=False, num_frames=(17, 41), formats=("square", "portrait"), **kw)
    for i, r in enumerate(rows):
        r["len_t2v"] = 0 if r["text_emb"] is None else 100 + i
        r["len_uncond"] = 50 + i
    return rows


def _same(a: dict, b: dict) -> None:
    for k, v in a.items():
        if isinstance(v, np.ndarray):
            assert b[k] is not None and np.array_equal(np.asarray(v), np.asarray(b[k])), k
        else:
            assert v == b[k], (k, v, b[k])


def test_round_trip_streams_by_row_group(tmp_path):
    rows = _rows(40)
    path = tmp_path / "shard-000.parquet"
    assert ts.write_token_shard(path, rows, task_names=TASKS, row_group_size=16) == 40
    assert not list(tmp_path.glob("*.tmp"))
    pf = pq.ParquetFile(path)
    assert pf.num_row_groups == 3  # 16 + 16 + 8: the streaming unit
    meta = pf.schema_arrow.metadata
    assert meta[ts.VERSION_KEY] == str(ts.TOKEN_FORMAT_VERSION).encode()
    assert ts.shard_tasks(path) == TASKS
    back = list(ts.iter_token_rows(tmp_path))
    assert len(back) == 40
    for a, b in zip(rows, back):
        _same(a, b)
    # text embeddings are float16 [64, text_dim]; images carry no first frame / conditions / audio
    some_text = next(b for b in back if b["text_emb"] is not None)
    assert some_text["text_emb"].dtype == np.float16 and some_text["text_emb"].shape == (64, 64)
    images = [b for b in back if b["num_frames"] == 1]
    assert images and all(b["first_frame_tokens"] is None and b["audio_tokens"] is None for b in images)
    assert {(b["latent_t"], b["latent_h"]) for b in back} >= {(1, 16), (5, 16)}
    assert ts.read_row_group(path, 2)[0]["key"] == rows[32]["key"]
    # the len_ columns alone (what the AGD index reads) come back without touching tokens
    lens = ts.read_token_shard(path, columns=["len_t2v", "len_uncond"])
    assert lens.column("len_uncond").to_pylist() == [r["len_uncond"] for r in rows]


def test_synthetic_rows_are_deterministic_and_shaped():
    a, b = ts.synthetic_rows(6, 3, with_lengths=False), ts.synthetic_rows(6, 3, with_lengths=False)
    for x, y in zip(a, b):
        _same(x, y)
    c = ts.synthetic_rows(6, 4, with_lengths=False)
    assert not all(np.array_equal(x["video_tokens"], y["video_tokens"]) for x, y in zip(a, c))
    for r in a:
        t, h, w = ts.latent_shape(r["num_frames"], r["video_format"])
        assert r["video_tokens"].size == t * h * w
        if r["audio_tokens"] is not None:
            assert r["audio_tokens"].size == 4 * r["audio_frames"] == 424  # 2.125 s of audio
    assert ts.latent_shape(17, "portrait") == (5, 28, 16)
    assert ts.latent_shape(41, "square") == (11, 16, 16)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda r: r.update(video_tokens=r["video_tokens"][:-1]), "latent grid"),
        (lambda r: r.update(video_tokens=r["video_tokens"] * 0 + 262_144), "0..262143"),
        (lambda r: r.pop("len_t2v"), "len_t2v"),
        (lambda r: r.update(audio_frames=3, audio_tokens=np.zeros(5, np.int32)), "audio_tokens"),
        (lambda r: r.update(text_emb=b"\x00" * 10, text_mask=np.ones(64, bool)), "text_emb"),
        (lambda r: r.update(video_format="wide"), "video_format"),
        (lambda r: r.pop("key"), "'key'"),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_written(tmp_path, mutate, reason):
    rows = _rows(3)
    mutate(rows[1])
    path = tmp_path / "bad.parquet"
    with pytest.raises(ts.TokenShardError, match="row 1") as err:
        ts.write_token_shard(path, rows, task_names=TASKS)
    assert reason in str(err.value)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_unknown_version_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "s.parquet"
    ts.write_token_shard(path, _rows(2), task_names=TASKS)
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[ts.VERSION_KEY] = b"99"
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "v99.parquet")
    with pytest.raises(ts.TokenShardError, match="version 99"):
        ts.read_token_shard(tmp_path / "v99.parquet")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(ts.TokenShardError, match="not a videopoet token shard"):
        list(ts.iter_token_rows(tmp_path / "foreign.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ts.TokenShardError, match="junk.parquet"):
        ts.shard_tasks(tmp_path / "junk.parquet")
    with pytest.raises(ts.TokenShardError, match="no such"):
        ts.list_token_shards(tmp_path / "missing")


def test_len_columns_come_from_the_task_layouts(tmp_path):
    from videopoet.pipeline import tasks as T

    rows = ts.synthetic_rows(12, 2, with_lengths=False, num_frames=(17, 41), formats=("square", "portrait"),
                             latent_hw=(2, 2))
    path = tmp_path / "s.parquet"
    ts.write_token_shard(path, rows, compute_lengths=True)  # default task list: pipeline.tasks.TASK_NAMES
    assert ts.shard_tasks(path) == T.TASK_NAMES
    for row, back in zip(rows, ts.iter_token_rows(path)):
        for task in T.TASK_NAMES:
            try:
                expected = len(T.build_layout(task, back))
            except T.TaskNotServable:
                expected = 0
            assert back[ts.len_column(task)] == expected, (task, row["key"])
    assert sum(r["len_t2i"] > 0 for r in ts.iter_token_rows(path)) == sum(r["num_frames"] == 1 for r in rows)
