"""Token shards: the contract between `videopoet tokenize` and `videopoet train` (docs/formats.md).

One Parquet file per shard, one row per clip, holding the raw codes of every modality (no
vocabulary offsets: `videopoet.pipeline.tasks` applies those when it builds a layout) plus
`len_<task>` columns: the sequence length each task's layout would have for that clip (0 = the
clip cannot serve that task). The trainer groups clips by (task, length) from those columns alone,
reading no tokens (Alternating Gradient Descent, trainer/data.py).

The file metadata carries `videopoet.token_format_version` (a reader refuses versions it does not
know) and `videopoet.task_names` (the task list the `len_` columns were computed for). Writes are
atomic (`<name>.tmp` + rename): a file named `*.parquet` is always whole. Rows are stored in row
groups of `row_group_size` rows, the unit the trainer streams.

    write_token_shard(path, rows)          # rows: list of dicts (see COLUMNS), validated
    read_token_shard(path) -> pa.Table     # whole shard, version checked
    iter_token_rows(paths_or_dir)          # decoded rows (numpy arrays), streamed per row group
    synthetic_rows(n, seed)                # valid random rows for tests, benches, demos
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from videopoet.config import UsageError
from videopoet.paths import resolve_shards
from videopoet.pipeline.tasks import TASK_NAMES, sequence_lengths

# 2: task layouts version 2 (pipeline.tasks.LAYOUT_VERSION): the len_ columns of version-1 shards are
# the lengths of the old style/avcont layouts, so a version-1 shard is refused, not misread.
TOKEN_FORMAT_VERSION = 2
VERSION_KEY = b"videopoet.token_format_version"
TASKS_KEY = b"videopoet.task_names"
TEXT_SLOTS = 64
NUM_VISUAL_CODES = 262_144
AUDIO_CODES_PER_LEVEL = 1024
AUDIO_LEVELS = 4
AUDIO_FRAME_RATE = 50  # SoundStream frames per second at 16 kHz (hop 320)
DEFAULT_ROW_GROUP_SIZE = 128

# name -> (arrow type name, nullable). Order is the column order in the file; `len_<task>` follow.
COLUMNS: dict[str, tuple[str, bool]] = {
    "key": ("string", False),
    "source_uri": ("string", False),
    "caption": ("string", False),
    "video_format": ("string", False),
    "num_frames": ("int32", False),
    "latent_t": ("int32", False),
    "latent_h": ("int32", False),
    "latent_w": ("int32", False),
    "video_tokens": ("list_int32", False),
    "first_frame_tokens": ("list_int32", True),
    "fp1_tokens": ("list_int32", True),
    "fp5_tokens": ("list_int32", True),
    "inpaint_tokens": ("list_int32", True),
    "outpaint_tokens": ("list_int32", True),
    "style_tokens": ("list_int32", True),
    "audio_tokens": ("list_int32", True),
    "audio_frames": ("int32", False),
    "text_emb": ("binary", True),
    "text_dim": ("int32", False),
    "text_mask": ("list_bool", True),
    "text_truncated": ("bool", False),
    "video_tokenizer_hash": ("string", False),
    "audio_tokenizer_hash": ("string", False),
    "text_encoder_id": ("string", False),
    "text_encoder_hash": ("string", False),
}
VIDEO_COND_COLUMNS = ("fp1_tokens", "fp5_tokens", "inpaint_tokens", "outpaint_tokens", "style_tokens")
VIDEO_FORMATS = ("square", "portrait")


class TokenShardError(ValueError):
    """A token shard or row that does not follow docs/formats.md; the message names file/row and why."""


class TokenShardPathError(TokenShardError, UsageError):
    """A token-shard input that names no token shards (missing, wrong kind of directory); one line for the user."""


def default_task_names() -> tuple[str, ...]:
    return tuple(TASK_NAMES)


def len_column(task: str) -> str:
    return f"len_{task}"


def token_schema(task_names: Sequence[str] | None = None):
    """The pyarrow schema of a token shard for `task_names` (default: pipeline.tasks.TASK_NAMES)."""
    import pyarrow as pa

    names = tuple(task_names) if task_names is not None else default_task_names()
    types = {
        "string": pa.string(), "int32": pa.int32(), "bool": pa.bool_(), "binary": pa.binary(),
        "list_int32": pa.list_(pa.int32()), "list_bool": pa.list_(pa.bool_()),
    }
    fields = [pa.field(n, types[t], nullable=nullable) for n, (t, nullable) in COLUMNS.items()]
    fields += [pa.field(len_column(t), pa.int32(), nullable=False) for t in names]
    meta = {VERSION_KEY: str(TOKEN_FORMAT_VERSION).encode(), TASKS_KEY: json.dumps(list(names)).encode()}
    return pa.schema(fields, metadata=meta)


def latent_shape(num_frames: int, video_format: str) -> tuple[int, int, int]:
    """MAGVIT-v2 latent grid (t, h, w): 4x temporal (first frame alone), 8x spatial compression."""
    if video_format not in VIDEO_FORMATS:
        raise TokenShardError(f"video_format={video_format!r}: expected one of {VIDEO_FORMATS}")
    height = 224 if video_format == "portrait" else 128
    return 1 + (num_frames - 1) // 4, height // 8, 128 // 8


def audio_frames_for(num_frames: int, fps: int = 8) -> int:
    """SoundStream frames covering a clip of `num_frames` at `fps` (17 frames -> 106, i.e. 424 tokens)."""
    return int(num_frames / fps * AUDIO_FRAME_RATE) if num_frames > 1 else 0


# ---------------------------------------------------------------------------------------------
# validation and encoding of one row


def _as_int_array(value: Any, name: str, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TokenShardError(f"{where}: {name} must be a 1-D integer sequence, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int32, copy=False)


def _check_range(arr: np.ndarray, hi: int, name: str, where: str) -> None:
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= hi):
        raise TokenShardError(f"{where}: {name} values must lie in 0..{hi - 1}, got {arr.min()}..{arr.max()}")


def normalize_row(row: dict[str, Any], task_names: Sequence[str], where: str = "row") -> dict[str, Any]:
    """Check one row against the schema and return it in storage form (lists, bytes)."""
    where = f"{where} (key {row.get('key')!r})"
    out: dict[str, Any] = {}
    for name, (kind, nullable) in COLUMNS.items():
        value = row.get(name)
        if value is None:
            if not nullable:
                raise TokenShardError(f"{where}: column {name!r} is required and missing")
            out[name] = None
            continue
        if kind == "string":
            if not isinstance(value, str):
                raise TokenShardError(f"{where}: {name} must be a string, got {type(value).__name__}")
            out[name] = value
        elif kind == "int32":
            out[name] = int(value)
        elif kind == "bool":
            out[name] = bool(value)
        elif kind == "list_int32":
            out[name] = _as_int_array(value, name, where)
        elif kind == "list_bool":
            out[name] = np.asarray(value, dtype=bool)
        elif kind == "binary":
            if isinstance(value, np.ndarray):
                value = np.ascontiguousarray(value.astype("<f2", copy=False)).tobytes()
            if not isinstance(value, (bytes, bytearray)):
                raise TokenShardError(f"{where}: {name} must be bytes or a float array, got {type(value).__name__}")
            out[name] = bytes(value)

    if out["video_format"] not in VIDEO_FORMATS:
        raise TokenShardError(f"{where}: video_format={out['video_format']!r}, expected one of {VIDEO_FORMATS}")
    t, h, w = out["latent_t"], out["latent_h"], out["latent_w"]
    if min(t, h, w) < 1:
        raise TokenShardError(f"{where}: latent_t/h/w must be >= 1, got {t}x{h}x{w}")
    if out["video_tokens"].size != t * h * w:
        raise TokenShardError(f"{where}: video_tokens has {out['video_tokens'].size} codes, "
                              f"latent grid {t}x{h}x{w} needs {t * h * w}")
    _check_range(out["video_tokens"], NUM_VISUAL_CODES, "video_tokens", where)
    if out["first_frame_tokens"] is not None:
        if out["first_frame_tokens"].size != h * w:
            raise TokenShardError(f"{where}: first_frame_tokens has {out['first_frame_tokens'].size} codes, "
                                  f"expected {h * w}")
        _check_range(out["first_frame_tokens"], NUM_VISUAL_CODES, "first_frame_tokens", where)
    for name in VIDEO_COND_COLUMNS:
        if out[name] is not None:
            if out[name].size != t * h * w:
                raise TokenShardError(f"{where}: {name} has {out[name].size} codes, expected {t * h * w}")
            _check_range(out[name], NUM_VISUAL_CODES, name, where)
    frames = out["audio_frames"]
    if out["audio_tokens"] is None:
        if frames != 0:
            raise TokenShardError(f"{where}: audio_frames={frames} but audio_tokens is null")
    else:
        if frames < 1 or out["audio_tokens"].size != AUDIO_LEVELS * frames:
            raise TokenShardError(f"{where}: audio_tokens has {out['audio_tokens'].size} codes, "
                                  f"expected {AUDIO_LEVELS}*audio_frames={AUDIO_LEVELS * frames}")
        _check_range(out["audio_tokens"], AUDIO_CODES_PER_LEVEL, "audio_tokens", where)
    if (out["text_emb"] is None) != (out["text_mask"] is None):
        raise TokenShardError(f"{where}: text_emb and text_mask must both be set or both be null")
    if out["text_emb"] is not None:
        dim = out["text_dim"]
        if dim < 1 or len(out["text_emb"]) != TEXT_SLOTS * dim * 2:
            raise TokenShardError(f"{where}: text_emb has {len(out['text_emb'])} bytes, "
                                  f"expected float16 [{TEXT_SLOTS}, text_dim={dim}] = {TEXT_SLOTS * dim * 2}")
        if out["text_mask"].size != TEXT_SLOTS:
            raise TokenShardError(f"{where}: text_mask has {out['text_mask'].size} entries, expected {TEXT_SLOTS}")
    for task in task_names:
        col = len_column(task)
        if col not in row:
            raise TokenShardError(f"{where}: column {col!r} missing (fill it with pipeline.tasks.sequence_lengths)")
        out[col] = int(row[col])
        if out[col] < 0:
            raise TokenShardError(f"{where}: {col}={out[col]} must be >= 0")
    return out


def with_sequence_lengths(row: dict[str, Any]) -> dict[str, Any]:
    """`row` plus its len_<task> columns from pipeline.tasks.sequence_lengths (0 = task not servable)."""
    lengths = sequence_lengths(decode_row(dict(row)))
    return {**row, **{len_column(t): int(n) for t, n in lengths.items()}}


# ---------------------------------------------------------------------------------------------
# writing and reading


def write_token_shard(
    path: str | Path,
    rows: Iterable[dict[str, Any]],
    *,
    task_names: Sequence[str] | None = None,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    compute_lengths: bool = False,
) -> int:
    """Validate and write rows to one Parquet shard atomically; returns the number of rows.

    Every row needs its `len_<task>` columns; `compute_lengths=True` fills them with
    pipeline.tasks.sequence_lengths. Nothing is written unless every row is valid.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    names = tuple(task_names) if task_names is not None else default_task_names()
    schema = token_schema(names)
    columns: dict[str, list] = {f.name: [] for f in schema}
    count = 0
    for i, row in enumerate(rows):
        if compute_lengths:
            row = with_sequence_lengths(row)
        norm = normalize_row(row, names, where=f"{path.name} row {i}")
        for name in columns:
            columns[name].append(norm[name])
        count += 1
    arrays = []
    for f in schema:
        values = columns[f.name]
        if pa.types.is_list(f.type):
            arrays.append(_list_array(values, f.type))
        else:
            arrays.append(pa.array(values, type=f.type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=max(1, row_group_size), compression="zstd")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return count


def _list_array(values: list, list_type):
    """A list<int32|bool> column from numpy arrays (or None) without a per-element Python loop."""
    import pyarrow as pa

    value_type = list_type.value_type
    lengths = np.array([0 if v is None else v.size for v in values], dtype=np.int32)
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    present = [v for v in values if v is not None]
    flat = np.concatenate(present) if present else np.zeros(0)
    flat_arr = pa.array(flat.astype(bool if pa.types.is_boolean(value_type) else np.int32), type=value_type)
    mask = pa.array([v is None for v in values], type=pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), flat_arr, mask=mask)


def check_version(metadata: dict | None, where: str) -> tuple[str, ...]:
    """Refuse a shard of an unknown version; return the task names its len_ columns were made for."""
    metadata = metadata or {}
    version = metadata.get(VERSION_KEY)
    if version is None:
        raise TokenShardError(f"{where}: not a videopoet token shard (no {VERSION_KEY.decode()} metadata)")
    if version.decode() != str(TOKEN_FORMAT_VERSION):
        raise TokenShardError(f"{where}: token format version {version.decode()}, "
                              f"this code reads {TOKEN_FORMAT_VERSION} (its len_ columns follow other task "
                              "layouts, docs/formats.md); run `videopoet tokenize` again with this code")
    return tuple(json.loads(metadata.get(TASKS_KEY, b"[]")))


def shard_tasks(path: str | Path) -> tuple[str, ...]:
    """Version-check a shard from its footer alone and return its task names."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata
    except (OSError, Exception) as err:  # pyarrow raises ArrowInvalid for non-Parquet files
        raise TokenShardError(f"{path}: not a readable Parquet file ({err})") from None
    return check_version(meta, str(path))


def read_token_shard(path: str | Path, columns: Sequence[str] | None = None):
    """The whole shard (or `columns` of it) as a pyarrow Table, after the version check."""
    import pyarrow.parquet as pq

    shard_tasks(path)
    return pq.read_table(path, columns=list(columns) if columns else None)


def list_token_shards(root: str | Path | Sequence[str | Path]) -> list[Path]:
    """Committed token shards, sorted: `root` is a tokenize output directory, a shards folder (recursive),
    one .parquet, a glob or a list of these (videopoet.paths.resolve_shards); anything else, or no shard at
    all, raises TokenShardPathError naming the path and what was expected."""
    return resolve_shards(root, ".parquet", error=TokenShardPathError)


_ARRAY_DTYPES = {"list_int32": np.int32, "list_bool": bool}


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """Storage form -> numpy form: token lists become int32 arrays, text_emb float16 [64, text_dim]."""
    for name, (kind, _) in COLUMNS.items():
        value = row.get(name)
        if value is None:
            continue
        if kind in _ARRAY_DTYPES and not isinstance(value, np.ndarray):
            row[name] = np.asarray(value, dtype=_ARRAY_DTYPES[kind])
        elif kind == "binary" and isinstance(value, (bytes, bytearray)):
            row[name] = np.frombuffer(value, dtype="<f2").reshape(TEXT_SLOTS, -1)
    return row


def table_rows(table) -> list[dict[str, Any]]:
    """Decoded rows of a pyarrow Table/RecordBatch of token-shard columns."""
    cols = {}
    for name in table.column_names:
        col = table.column(name)
        kind = COLUMNS.get(name, ("", False))[0]
        if kind in _ARRAY_DTYPES:
            cols[name] = [None if v is None else np.asarray(v, dtype=_ARRAY_DTYPES[kind]) for v in col.to_pylist()]
        else:
            cols[name] = col.to_pylist()
    rows = [dict(zip(cols, vals)) for vals in zip(*cols.values())]
    return [decode_row(r) for r in rows]


def read_row_group(path: str | Path, index: int, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Decoded rows of one row group (the trainer's streaming unit)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        check_version(pf.schema_arrow.metadata, str(path))
        return table_rows(pf.read_row_group(index, columns=list(columns) if columns else None))


def iter_token_rows(
    root: str | Path | Sequence[str | Path], columns: Sequence[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Every row under `root` in shard and row order, decoded, reading one row group at a time."""
    import pyarrow.parquet as pq

    for path in list_token_shards(root):
        with pq.ParquetFile(path) as pf:
            check_version(pf.schema_arrow.metadata, str(path))
            for i in range(pf.num_row_groups):
                yield from table_rows(pf.read_row_group(i, columns=list(columns) if columns else None))


# ---------------------------------------------------------------------------------------------
# synthetic rows


def synthetic_rows(
    n: int,
    seed: int = 0,
    *,
    num_frames: Sequence[int] = (17,),
    formats: Sequence[str] = ("square",),
    image_fraction: float = 0.25,
    audio_fraction: float = 0.5,
    caption_fraction: float = 0.8,
    cond_fraction: float = 1.0,
    text_dim: int = 64,
    visual_codes: int = NUM_VISUAL_CODES,
    audio_codes: int = AUDIO_CODES_PER_LEVEL,
    latent_hw: tuple[int, int] | None = None,
    with_lengths: bool = True,
) -> list[dict[str, Any]]:
    """`n` valid token-shard rows with random codes, deterministic in `seed`.

    A share `image_fraction` are 1-frame square images (text, no audio, no conditions); videos draw
    their length from `num_frames` and their format from `formats`. `visual_codes`/`audio_codes`
    restrict the code range (small ranges make data a tiny model can memorise). `len_<task>` columns
    are filled by pipeline.tasks.sequence_lengths when `with_lengths`. `latent_hw` replaces the
    latent grid's (h, w) (e.g. (2, 2)) to make short sequences for fast CPU tests of the trainer.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        is_image = rng.random() < image_fraction
        frames = 1 if is_image else int(rng.choice(num_frames))
        fmt = "square" if is_image else str(rng.choice(formats))
        t, h, w = latent_shape(frames, fmt)
        if latent_hw is not None:
            h, w = latent_hw
        codes = lambda size: rng.integers(0, visual_codes, size, dtype=np.int32)  # noqa: E731
        has_text = is_image or rng.random() < caption_fraction
        has_audio = (not is_image) and rng.random() < audio_fraction
        has_cond = (not is_image) and rng.random() < cond_fraction
        row: dict[str, Any] = {
            "key": f"syn{seed}_{i:06d}", "source_uri": f"synthetic://{seed}/{i}",
            "caption": f"synthetic clip {i}" if has_text else "",
            "video_format": fmt, "num_frames": frames, "latent_t": t, "latent_h": h, "latent_w": w,
            "video_tokens": codes(t * h * w),
            "first_frame_tokens": None if is_image else codes(h * w),
            "audio_tokens": None, "audio_frames": 0,
            "text_emb": None, "text_dim": text_dim, "text_mask": None, "text_truncated": False,
            "video_tokenizer_hash": "synthetic", "audio_tokenizer_hash": "synthetic",
            "text_encoder_id": "synthetic", "text_encoder_hash": "synthetic",
        }
        for name in VIDEO_COND_COLUMNS:
            row[name] = codes(t * h * w) if has_cond else None
        if has_audio:
            frames_a = audio_frames_for(frames)
            row["audio_tokens"] = rng.integers(0, audio_codes, AUDIO_LEVELS * frames_a, dtype=np.int32)
            row["audio_frames"] = frames_a
        if has_text:
            n_text = int(rng.integers(4, TEXT_SLOTS + 1))
            emb = np.zeros((TEXT_SLOTS, text_dim), dtype=np.float16)
            emb[:n_text] = rng.standard_normal((n_text, text_dim)).astype(np.float16)
            row["text_emb"] = emb
            row["text_mask"] = np.arange(TEXT_SLOTS) < n_text
        if with_lengths:
            row = with_sequence_lengths(row)
        rows.append(row)
    return rows
