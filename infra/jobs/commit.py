"""The data jobs' commit protocol: atomic files, and a unit committed when its manifest part exists.

Output layout every data job shares (each job adds its own files):
    plan.json                      what must not change on a rerun (protocol.check_or_write_plan)
    shards/shard-BBBBBB-*          unit B's output shards
    manifest/part-BBBBBB.parquet   unit B's manifest part, written LAST: its existence commits unit B
    _timings/part-BBBBBB.json      per-unit timings (never in a manifest)
    manifest.parquet, summary.json the merged parts and the summary, written at the end of a run

Every file is written to `<name>.tmp`, fsynced and renamed (then the folder is fsynced), so a file
is either whole or absent. A rerun skips committed units and `clean_unit` removes what an
interrupted attempt at an uncommitted unit left.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SHARDS_DIR = "shards"
PARTS_DIR = "manifest"
TIMINGS_DIR = "_timings"
PLAN_FILE = "plan.json"
MERGED_FILE = "manifest.parquet"
SUMMARY_FILE = "summary.json"
TMP_SUFFIX = ".tmp"


def part_path(out: Path, unit: int) -> Path:
    return Path(out) / PARTS_DIR / f"part-{unit:06d}.parquet"


def timings_path(out: Path, unit: int) -> Path:
    return Path(out) / TIMINGS_DIR / f"part-{unit:06d}.json"


def is_committed(out: Path, unit: int) -> bool:
    return part_path(out, unit).is_file()


def committed_units(out: Path) -> list[int]:
    folder = Path(out) / PARTS_DIR
    if not folder.is_dir():
        return []
    return sorted(int(p.name[5:11]) for p in folder.glob("part-*.parquet"))


def clean_unit(out: Path, unit: int) -> list[Path]:
    """Remove what an interrupted attempt at `unit` left (shards, temporaries); returns them.

    Only called for units without a committed manifest part, so nothing here was ever committed.
    """
    out = Path(out)
    removed = []
    patterns = [
        (out / SHARDS_DIR, f"shard-{unit:06d}-*"),
        (out / PARTS_DIR, f"part-{unit:06d}.parquet{TMP_SUFFIX}*"),
        (out / TIMINGS_DIR, f"part-{unit:06d}.json*"),
    ]
    for folder, pattern in patterns:
        if folder.is_dir():
            for p in folder.glob(pattern):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


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


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(Path(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def parquet_bytes(table: pa.Table) -> bytes:
    """Parquet bytes of a pyarrow Table with fixed writer settings (same rows -> same bytes)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", use_dictionary=True, write_statistics=True)
    return sink.getvalue().to_pybytes()
