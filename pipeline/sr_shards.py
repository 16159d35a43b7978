"""SR token shards: the training data of `videopoet train-sr` (docs/formats.md "SR token shards").

One Parquet file per shard, one row per clip: the MAGVIT-v2 tokens of the high-resolution clip
(`hr_tokens`, the HR grid (t, h, w) flattened in t, h, w order), the tokens of its bicubic 2x
downsample (`lr_tokens`, grid (t, h/2, w/2)), the frozen text encoder's embeddings (`text_emb`,
float32 [64, text_dim], little-endian bytes) with their mask, and the clip `key`. Ids lie in
[0, 2^18). The file metadata carries `videopoet.sr_format_version` (a reader refuses any other),
`videopoet.sr_hr_grid` ([t, h, w]) and `videopoet.sr_text_dim`: every row of a shard has that
grid and width. Version 2 adds where the rows come from: `videopoet.sr_hr_format` (the ingest format
of the HR clips, e.g. "portrait_2x"; "" for synthetic rows), `videopoet.sr_stage` (the cascade stage,
1 or 2; 0 unknown) and `videopoet.sr_video_tokenizer_hash` (the tokenizer of both grids; "" unknown).
Writes are atomic (`<name>.tmp` + rename).

    write_sr_shard(path, rows, hr_grid=..., text_dim=..., hr_format=..., stage=..., video_tokenizer_hash=...)
    read_sr_shard(path) -> (rows, SRShardInfo)              # decoded rows (numpy), version checked
    sr_shard_info(path) -> SRShardInfo                       # footer only
    list_sr_shards(root)                                     # dir / shards folder / .parquet / glob
    synthetic_sr_rows(n, hr_grid, text_dim, seed)            # valid random rows for tests and demos
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from videopoet.config import UsageError
from videopoet.paths import resolve_shards

SR_FORMAT_VERSION = 2  # 2: hr_format, stage and video_tokenizer_hash in the file metadata
VERSION_KEY = b"videopoet.sr_format_version"
GRID_KEY = b"videopoet.sr_hr_grid"
TEXT_DIM_KEY = b"videopoet.sr_text_dim"
HR_FORMAT_KEY = b"videopoet.sr_hr_format"
STAGE_KEY = b"videopoet.sr_stage"
TOKENIZER_KEY = b"videopoet.sr_video_tokenizer_hash"
TEXT_SLOTS = 64
NUM_CODES = 1 << 18
COLUMNS = ("key", "hr_tokens", "lr_tokens", "text_emb", "text_mask")


class SRShardError(ValueError):
    """An SR shard or row that does not follow docs/formats.md; the message names file/row and why."""


class SRShardPathError(SRShardError, UsageError):
    """An SR-shard input that names no SR shards; one line for the user."""


@dataclass(frozen=True)
class SRShardInfo:
    path: Path
    hr_grid: tuple[int, int, int]
    text_dim: int
    num_rows: int
    hr_format: str = ""  # ingest format of the HR clips ("" = synthetic or unknown)
    stage: int = 0  # cascade stage (0 = unknown)
    video_tokenizer_hash: str = ""

    @property
    def lr_grid(self) -> tuple[int, int, int]:
        t, h, w = self.hr_grid
        return t, h // 2, w // 2


def _check_grid(hr_grid: Sequence[int], where: str) -> tuple[int, int, int]:
    grid = tuple(int(v) for v in hr_grid)
    if len(grid) != 3 or min(grid) < 1 or grid[1] % 2 or grid[2] % 2:
        raise SRShardError(f"{where}: hr_grid={list(grid)} must be 3 positive sizes (t, h, w) with even h and w")
    return grid  # type: ignore[return-value]


def sr_schema(hr_grid: Sequence[int], text_dim: int, hr_format: str = "", stage: int = 0,
              video_tokenizer_hash: str = ""):
    import pyarrow as pa

    meta = {VERSION_KEY: str(SR_FORMAT_VERSION).encode(), GRID_KEY: json.dumps(list(hr_grid)).encode(),
            TEXT_DIM_KEY: str(int(text_dim)).encode(), HR_FORMAT_KEY: str(hr_format).encode(),
            STAGE_KEY: str(int(stage)).encode(), TOKENIZER_KEY: str(video_tokenizer_hash).encode()}
    return pa.schema([
        pa.field("key", pa.string(), nullable=False),
        pa.field("hr_tokens", pa.list_(pa.int32()), nullable=False),
        pa.field("lr_tokens", pa.list_(pa.int32()), nullable=False),
        pa.field("text_emb", pa.binary(), nullable=False),
        pa.field("text_mask", pa.list_(pa.bool_()), nullable=False),
    ], metadata=meta)


def _tokens(value: Any, name: str, size: int, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise SRShardError(f"{where}: {name} must be a 1-D integer sequence, got {arr.dtype} {arr.shape}")
    if arr.size != size:
        raise SRShardError(f"{where}: {name} has {arr.size} ids, the grid needs {size}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= NUM_CODES):
        raise SRShardError(f"{where}: {name} ids must lie in 0..{NUM_CODES - 1}, got {arr.min()}..{arr.max()}")
    return arr.astype(np.int32)


def normalize_sr_row(row: dict[str, Any], hr_grid: tuple[int, int, int], text_dim: int,
                     where: str = "row") -> dict[str, Any]:
    """Check one row and return it in storage form (int32 arrays, float32 bytes, bool array)."""
    key = row.get("key")
    where = f"{where} (key {key!r})"
    for name in COLUMNS:
        if row.get(name) is None:
            raise SRShardError(f"{where}: column {name!r} is required and missing")
    if not isinstance(key, str) or not key:
        raise SRShardError(f"{where}: key must be a non-empty string")
    t, h, w = hr_grid
    emb = np.asarray(row["text_emb"])
    if emb.shape != (TEXT_SLOTS, text_dim) or not np.issubdtype(emb.dtype, np.floating):
        raise SRShardError(f"{where}: text_emb must be float [{TEXT_SLOTS}, {text_dim}], got {emb.dtype} {emb.shape}")
    mask = np.asarray(row["text_mask"])
    if mask.shape != (TEXT_SLOTS,) or mask.dtype != bool:
        raise SRShardError(f"{where}: text_mask must be bool [{TEXT_SLOTS}], got {mask.dtype} {mask.shape}")
    return {
        "key": key,
        "hr_tokens": _tokens(row["hr_tokens"], "hr_tokens", t * h * w, where),
        "lr_tokens": _tokens(row["lr_tokens"], "lr_tokens", t * (h // 2) * (w // 2), where),
        "text_emb": np.ascontiguousarray(emb.astype("<f4")).tobytes(),
        "text_mask": mask,
    }


def _list_array(values: list[np.ndarray], value_type):
    import pyarrow as pa

    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([v.size for v in values], out=offsets[1:])
    flat = np.concatenate(values) if values else np.zeros(0)
    flat = flat.astype(bool if pa.types.is_boolean(value_type) else np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), pa.array(flat, type=value_type))


def write_sr_shard(path: str | Path, rows: Iterable[dict[str, Any]], *, hr_grid: Sequence[int], text_dim: int,
                   hr_format: str = "", stage: int = 0, video_tokenizer_hash: str = "",
                   row_group_size: int = 64) -> int:
    """Validate and write rows to one Parquet shard atomically (nothing written unless all are valid).
    `hr_format`, `stage`, `video_tokenizer_hash`: where the rows come from (file metadata, version 2)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    grid = _check_grid(hr_grid, str(path))
    if int(text_dim) < 1:
        raise SRShardError(f"{path}: text_dim={text_dim} must be >= 1")
    norm = [normalize_sr_row(r, grid, int(text_dim), where=f"{path.name} row {i}") for i, r in enumerate(rows)]
    schema = sr_schema(grid, text_dim, hr_format, stage, video_tokenizer_hash)
    table = pa.Table.from_arrays([
        pa.array([r["key"] for r in norm], type=pa.string()),
        _list_array([r["hr_tokens"] for r in norm], pa.int32()),
        _list_array([r["lr_tokens"] for r in norm], pa.int32()),
        pa.array([r["text_emb"] for r in norm], type=pa.binary()),
        _list_array([r["text_mask"] for r in norm], pa.bool_()),
    ], schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=max(1, row_group_size), compression="zstd")
    os.replace(tmp, path)
    return len(norm)


def check_sr_metadata(metadata: dict | None, where: str) -> tuple[tuple[int, int, int], int, str, int, str]:
    """Refuse a file that is not an SR shard of this version; its (hr_grid, text_dim, hr_format, stage,
    video_tokenizer_hash)."""
    metadata = metadata or {}
    version = metadata.get(VERSION_KEY)
    if version is None:
        raise SRShardError(f"{where}: not a videopoet SR token shard (no {VERSION_KEY.decode()} metadata)")
    if version.decode() != str(SR_FORMAT_VERSION):
        raise SRShardError(f"{where}: SR token shard format version {version.decode()}, this code reads "
                           f"{SR_FORMAT_VERSION} (docs/formats.md 'SR token shards'); write the shards again")
    try:
        grid = _check_grid(json.loads(metadata[GRID_KEY]), where)
        text_dim = int(metadata[TEXT_DIM_KEY])
        hr_format, stage = metadata[HR_FORMAT_KEY].decode(), int(metadata[STAGE_KEY])
        tokenizer = metadata[TOKENIZER_KEY].decode()
    except (KeyError, ValueError, TypeError) as err:
        raise SRShardError(f"{where}: SR shard metadata without a valid hr_grid/text_dim/hr_format/stage "
                           f"({err})") from None
    return grid, text_dim, hr_format, stage, tokenizer


def sr_shard_info(path: str | Path) -> SRShardInfo:
    """Version-checked grid, text width and row count from the footer alone."""
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as pf:
            grid, text_dim, hr_format, stage, tokenizer = check_sr_metadata(pf.schema_arrow.metadata, str(path))
            return SRShardInfo(Path(path), grid, text_dim, pf.metadata.num_rows, hr_format, stage, tokenizer)
    except SRShardError:
        raise
    except Exception as err:  # pyarrow raises ArrowInvalid for non-Parquet files
        raise SRShardError(f"{path}: not a readable Parquet file ({err})") from None


def read_sr_shard(path: str | Path) -> tuple[list[dict[str, Any]], SRShardInfo]:
    """Decoded rows (hr/lr_tokens int64 arrays, text_emb float32 [64, D], text_mask bool [64]) and the info."""
    import pyarrow.parquet as pq

    info = sr_shard_info(path)
    table = pq.read_table(path)
    cols = {name: table.column(name).to_pylist() for name in COLUMNS}
    rows = []
    for i in range(table.num_rows):
        rows.append({
            "key": cols["key"][i],
            "hr_tokens": np.asarray(cols["hr_tokens"][i], dtype=np.int64),
            "lr_tokens": np.asarray(cols["lr_tokens"][i], dtype=np.int64),
            "text_emb": np.frombuffer(cols["text_emb"][i], dtype="<f4").reshape(TEXT_SLOTS, info.text_dim),
            "text_mask": np.asarray(cols["text_mask"][i], dtype=bool),
        })
    return rows, info


def list_sr_shards(root: str | Path | Sequence[str | Path]) -> list[Path]:
    """SR shards, sorted: a directory (its shards/ folder, recursive), one .parquet, a glob or a list."""
    return resolve_shards(root, ".parquet", error=SRShardPathError)


def synthetic_sr_rows(n: int, hr_grid: Sequence[int], text_dim: int, seed: int = 0, *,
                      codes: int = NUM_CODES) -> list[dict[str, Any]]:
    """`n` valid rows with random ids below `codes`, deterministic in `seed`. The LR ids are a function of
    the HR ids (the top-left id of each 2x2 block), so a model can learn something from the condition."""
    t, h, w = _check_grid(hr_grid, "synthetic_sr_rows")
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        hr = rng.integers(0, codes, (t, h, w), dtype=np.int64)
        n_text = int(rng.integers(1, TEXT_SLOTS + 1))
        rows.append({
            "key": f"sr{seed}_{i:06d}",
            "hr_tokens": hr.reshape(-1),
            "lr_tokens": hr[:, ::2, ::2].reshape(-1).copy(),
            "text_emb": rng.standard_normal((TEXT_SLOTS, text_dim)).astype(np.float32),
            "text_mask": np.arange(TEXT_SLOTS) < n_text,
        })
    return rows
