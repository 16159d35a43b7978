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

from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from videopoet.jobs.commit import (
    MERGED_FILE,
    PARTS_DIR,
    PLAN_FILE,
    SHARDS_DIR,
    SUMMARY_FILE,
    TIMINGS_DIR,
    TMP_SUFFIX,
    is_committed,
    parquet_bytes,
    part_path,
    timings_path,
    write_bytes_atomic,
    write_json_atomic,
)
from videopoet.jobs.commit import clean_unit as clean_batch
from videopoet.jobs.commit import committed_units as committed_batches

# The commit protocol (paths, atomic writes, cleaning) is videopoet.jobs.commit's; re-exported here
# because the ingest manifest is where readers look for an output's layout.
__all__ = [
    "COLUMNS", "MANIFEST_VERSION", "MERGED_FILE", "PARTS_DIR", "PLAN_FILE", "SHARDS_DIR", "SUMMARY_FILE",
    "TIMINGS_DIR", "TMP_SUFFIX", "VERSION_KEY", "ManifestError", "clean_batch", "committed_batches", "is_committed",
    "merge_parts", "parquet_bytes", "part_path", "read_manifest", "schema", "shard_name", "table_bytes",
    "timings_path", "write_bytes_atomic", "write_json_atomic", "write_part",
]

MANIFEST_VERSION = 1
VERSION_KEY = b"videopoet.manifest_version"

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
    ("stage", "string",
     "failed input: where it failed (open, probe, decode, audio, too_short, image, timeout, condition, ...)"),
    ("error_class", "string",
     "failed input: short machine-readable reason (e.g. ZeroByteFile, NoVideoStream, DecodeTimeout)"),
    ("message", "string", "failed input: one human line naming the input and the reason"),
    ("clips", "int32", "input rows: clips written"),
    ("seconds", "float64", "input rows: duration of the source video in seconds (0 for images / failures)"),
    ("source_fps", "float64", "average frame rate of the source (both kinds)"),
    ("key", "string", "clip rows: content-addressed clip key"),
    ("shard", "string", "clip rows: shard file, relative to the output directory"),
    ("window", "int32", "clip rows: window index within the input"),
    ("num_frames", "int32", "clip rows: 17, 41 or 1"),
    ("format", "string", "clip rows: a media.FORMATS name ('square', 'portrait'; SR: 'square_2x', ...)"),
    ("start_time_s", "float64", "clip rows: window start in source seconds"),
    ("has_audio", "bool", "clip rows: audio member present"),
    ("has_cond", "bool", "clip rows: cond member present"),
    ("notes", "string", "'; '-joined decoder notes (e.g. skipped corrupt audio packets)"),
)


class ManifestError(ValueError):
    """A manifest file that cannot be used; the message names the file."""


def schema() -> pa.Schema:
    types = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(),
             "float64": pa.float64(), "bool": pa.bool_()}
    return pa.schema([(name, types[t]) for name, t, _ in COLUMNS],
                     metadata={VERSION_KEY: str(MANIFEST_VERSION).encode()})


def shard_name(batch: int, part: int) -> str:
    return f"{SHARDS_DIR}/shard-{batch:06d}-{part:02d}.tar"


def table_bytes(rows: list[dict[str, Any]]) -> bytes:
    """Parquet bytes of `rows` with the manifest schema (fixed writer settings: deterministic)."""
    sch = schema()
    table = pa.Table.from_pylist([{name: row.get(name) for name in sch.names} for row in rows], schema=sch)
    return parquet_bytes(table)


def write_part(out: Path, batch: int, rows: list[dict[str, Any]]) -> Path:
    """Commit batch `batch`: write its manifest part atomically (call after its shards exist)."""
    path = part_path(out, batch)
    write_bytes_atomic(path, table_bytes(rows))
    return path


def read_manifest(path: Path) -> pa.Table:
    """A manifest (part or merged) as a pyarrow Table; refuses unknown versions."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise ManifestError(f"{path}: not a readable Parquet manifest ({err})") from None
    version = (table.schema.metadata or {}).get(VERSION_KEY)
    if version != str(MANIFEST_VERSION).encode():
        raise ManifestError(f"{path}: manifest version {version!r}, this code reads {MANIFEST_VERSION}")
    return table


def merge_parts(out: Path, batches: Iterable[int]) -> Path:
    """Concatenate the committed parts of `batches` (in batch order) into manifest.parquet."""
    out = Path(out)
    tables = [read_manifest(part_path(out, b)) for b in sorted(batches)]
    table = pa.concat_tables(tables) if tables else schema().empty_table()
    table = table.replace_schema_metadata(schema().metadata)
    path = out / MERGED_FILE
    write_bytes_atomic(path, parquet_bytes(table))
    return path
