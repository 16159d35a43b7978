"""The ingest manifest: one Parquet row per input and one per clip (docs/formats.md, "Ingest manifest").

Layout of an ingest output directory:
    plan.json                       the batches (input ids per batch) + what must not change on rerun
    shards/shard-BBBBBB-PP.tar      clip shards of batch B, part P (videopoet.pipeline.clip_shards)
    manifest/part-BBBBBB.parquet    batch B's rows; written LAST: its presence commits batch B
    _timings/part-BBBBBB.json       per-input decode seconds (timings never enter the manifest)
    manifest.parquet                all parts merged (written at the end of a run)
    summary.json                    counts, hours, rates, slowest inputs

Every file is written to a temporary name and renamed. Manifest columns hold nothing that depends
on time, engine or worker order, so two engines produce byte-identical manifests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

MANIFEST_VERSION = 1
VERSION_KEY = b"videopoet.manifest_version"

SHARDS_DIR = "shards"
PARTS_DIR = "manifest"
TIMINGS_DIR = "_timings"
PLAN_FILE = "plan.json"
MERGED_FILE = "manifest.parquet"
SUMMARY_FILE = "summary.json"
TMP_SUFFIX = ".tmp"

# (name, arrow type name, meaning); kind "input" rows fill the input columns, "clip" rows the clip ones.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("kind", "string", "'input' or 'clip'"),
    ("batch", "int32", "work unit the row belongs to"),
    ("input_id", "string", "the input's id (both kinds)"),
    ("uri", "string", "input uri (both kinds)"),
    ("caption", "string", "input caption, '' when none"),
    ("sha256", "string", "sha256 of the input's bytes; null when it could not be read"),
    ("bytes", "int64", "input size in bytes"),
    ("status", "string", "input rows: 'ok' or 'failed'"),
    ("stage", "string", "failed input: where it failed (open, probe, decode, audio, too_short, image, timeout, condition, ...)"),
    ("error_class", "string", "failed input: short machine-readable reason (e.g. ZeroByteFile, NoVideoStream, DecodeTimeout)"),
    ("message", "string", "failed input: one human line naming the input and the reason"),
    ("clips", "int32", "input rows: clips written"),
    ("seconds", "float64", "input rows: duration of the source video in seconds (0 for images / failures)"),
    ("source_fps", "float64", "average frame rate of the source (both kinds)"),
    ("key", "string", "clip rows: content-addressed clip key"),
    ("shard", "string", "clip rows: shard file, relative to the output directory"),
    ("window", "int32", "clip rows: window index within the input"),
    ("num_frames", "int32", "clip rows: 17, 41 or 1"),
    ("format", "string", "clip rows: 'square' or 'portrait'"),
    ("start_time_s", "float64", "clip rows: window start in source seconds"),
    ("has_audio", "bool", "clip rows: audio member present"),
    ("has_cond", "bool", "clip rows: cond member present"),
    ("notes", "string", "'; '-joined decoder notes (e.g. skipped corrupt audio packets)"),
)


def schema():
    import pyarrow as pa

    types = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(),
             "float64": pa.float64(), "bool": pa.bool_()}
    return pa.schema([(name, types[t]) for name, t, _ in COLUMNS],
                     metadata={VERSION_KEY: str(MANIFEST_VERSION).encode()})


class ManifestError(ValueError):
    """A manifest file that cannot be used; the message names the file."""


# --- paths -----------------------------------------------------------------------------------

def part_path(out: Path, batch: int) -> Path:
    return Path(out) / PARTS_DIR / f"part-{batch:06d}.parquet"


def timings_path(out: Path, batch: int) -> Path:
    return Path(out) / TIMINGS_DIR / f"part-{batch:06d}.json"


def shard_name(batch: int, part: int) -> str:
    return f"{SHARDS_DIR}/shard-{batch:06d}-{part:02d}.tar"


def is_committed(out: Path, batch: int) -> bool:
    return part_path(out, batch).is_file()


def clean_batch(out: Path, batch: int) -> list[Path]:
    """Remove what an interrupted attempt at `batch` left (shard parts, temporaries); returns them.

    Only called for batches without a committed manifest part, so nothing here was ever committed.
    """
    out = Path(out)
    removed = []
    patterns = [
        (out / SHARDS_DIR, f"shard-{batch:06d}-*"),
        (out / PARTS_DIR, f"part-{batch:06d}.parquet{TMP_SUFFIX}*"),
        (out / TIMINGS_DIR, f"part-{batch:06d}.json*"),
    ]
    for folder, pattern in patterns:
        if folder.is_dir():
            for p in folder.glob(pattern):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


# --- atomic writes -----------------------------------------------------------------------------

def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def table_bytes(rows: list[dict[str, Any]]) -> bytes:
    """Parquet bytes of `rows` with the manifest schema (fixed writer settings: deterministic)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sch = schema()
    table = pa.Table.from_pylist([{name: row.get(name) for name in sch.names} for row in rows], schema=sch)
    return _parquet_bytes(table)


def _parquet_bytes(table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", use_dictionary=True, write_statistics=True)
    return sink.getvalue().to_pybytes()


def write_part(out: Path, batch: int, rows: list[dict[str, Any]]) -> Path:
    """Commit batch `batch`: write its manifest part atomically (call after its shards exist)."""
    path = part_path(out, batch)
    write_bytes_atomic(path, table_bytes(rows))
    return path


def read_manifest(path: Path):
    """A manifest (part or merged) as a pyarrow Table; refuses unknown versions."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise ManifestError(f"{path}: not a readable Parquet manifest ({err})") from None
    version = (table.schema.metadata or {}).get(VERSION_KEY)
    if version != str(MANIFEST_VERSION).encode():
        raise ManifestError(f"{path}: manifest version {version!r}, this code reads {MANIFEST_VERSION}")
    return table


def committed_batches(out: Path) -> list[int]:
    folder = Path(out) / PARTS_DIR
    if not folder.is_dir():
        return []
    return sorted(int(p.name[5:11]) for p in folder.glob("part-*.parquet"))


def merge_parts(out: Path, batches: Iterable[int]) -> Path:
    """Concatenate the committed parts of `batches` (in batch order) into manifest.parquet."""
    import pyarrow as pa

    out = Path(out)
    tables = [read_manifest(part_path(out, b)) for b in sorted(batches)]
    table = pa.concat_tables(tables) if tables else schema().empty_table()
    table = table.replace_schema_metadata(schema().metadata)
    path = out / MERGED_FILE
    write_bytes_atomic(path, _parquet_bytes(table))
    return path


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(Path(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
