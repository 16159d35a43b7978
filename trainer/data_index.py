"""The AGD index of a set of token shards, kept on disk: O(groups) in RAM per rank.

`ShardIndex.build(shards, tasks)` groups clips by (task, sequence length, image|video) from the
`num_frames` and `len_<task>` columns. The members of every group, (file, row group, row) int32
triples sorted in file order, and each group's row-group boundaries are written once per dataset to
`<cache dir>/<key>/` (`members.npy` int32 [n, 3], `blocks.npy` int64 group-relative start of every
row-group run, `groups.json`) and opened with `np.load(mmap_mode="r")`: the ranks of a node share
the page cache and hold no per-sample array in their own heap. The build reads one file at a time
in two passes (count, then fill the memory-mapped output), so it is bounded by one file's length
columns plus O(groups x files) counts. Writes are atomic (a temporary folder renamed into place),
so ranks racing to build the same index are harmless.

The cache key hashes the absolute shard paths, their sizes and mtimes and the task list: a shard
rewritten in place gets a new index. Cache dir: `cache_dir` argument, else $VIDEOPOET_INDEX_DIR,
else ~/.cache/videopoet/agd_index.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from videopoet.pipeline import token_shards as ts

INDEX_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get("VIDEOPOET_INDEX_DIR")
    return Path(env) if env else Path.home() / ".cache" / "videopoet" / "agd_index"


@dataclass
class Group:
    """All (shard, row group, row) positions whose layout for `task` has exactly `length` tokens.

    `members` and `block_starts` are read-only views of the memory-mapped index files."""

    task: str
    length: int
    kind: str  # "image" | "video"
    members: np.ndarray  # int32 [n, 3] (file, row group, row), sorted; memory-mapped
    block_starts: np.ndarray  # int64 [blocks]: member index where each (file, row group) run starts

    @property
    def name(self) -> str:
        return f"{self.task}_L{self.length}" + ("_img" if self.kind == "image" and self.task != "t2i" else "")

    @property
    def size(self) -> int:
        return int(self.members.shape[0])

    @property
    def key(self) -> int:
        return zlib.crc32(self.name.encode())

    @property
    def file_id(self) -> np.ndarray:
        return self.members[:, 0]

    @property
    def row_group(self) -> np.ndarray:
        return self.members[:, 1]

    @property
    def row(self) -> np.ndarray:
        return self.members[:, 2]

    def position(self, i: int) -> tuple[int, int, int]:
        f, g, r = self.members[i]
        return int(f), int(g), int(r)


def _file_columns(path: Path, use: list[str]):
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        table = pf.read(columns=["num_frames"] + [ts.len_column(t) for t in use])
        rg_sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    rg = np.repeat(np.arange(len(rg_sizes), dtype=np.int32), rg_sizes)
    row = (np.concatenate([np.arange(s, dtype=np.int32) for s in rg_sizes]) if rg_sizes else np.zeros(0, np.int32))
    is_image = table.column("num_frames").to_numpy() == 1
    lengths = {t: table.column(ts.len_column(t)).to_numpy() for t in use}
    return rg_sizes, rg, row, is_image, lengths


def _selections(use, is_image, lengths):
    """(task, length, kind) -> row indices of one file, in row order."""
    for task in use:
        lens = lengths[task]
        for kind, sel_kind in (("image", is_image), ("video", ~is_image)):
            for length in np.unique(lens[sel_kind & (lens > 0)]):
                yield (task, int(length), kind), np.flatnonzero(sel_kind & (lens == length))


@dataclass
class ShardIndex:
    """The AGD groups of a set of token shards (members memory-mapped from the index cache)."""

    files: list[Path]
    groups: list[Group]
    fingerprint: str
    path: Path | None = None  # the index folder

    @classmethod
    def build(cls, shards: Sequence[str | Path], tasks: Sequence[str] = (),
              cache_dir: str | Path | None = None) -> "ShardIndex":
        import pyarrow.parquet as pq

        files = ts.list_token_shards(list(shards))
        if not files:
            raise ts.TokenShardError(f"no token shards (*.parquet) under {list(shards)}")
        wanted = list(tasks)
        uses, digest, key = [], hashlib.sha256(), hashlib.sha256(f"agd-index-{INDEX_VERSION}".encode())
        for path in files:
            shard_tasks = ts.shard_tasks(path)
            missing = [t for t in wanted if t not in shard_tasks]
            if missing:
                raise ts.TokenShardError(f"{path}: no len_ column for task(s) {missing}; it has {list(shard_tasks)}")
            use = [t for t in (wanted or shard_tasks) if t in shard_tasks]
            meta = pq.read_metadata(path)
            rg_sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            digest.update(f"{path.name}:{meta.num_rows}:{rg_sizes}:{use}".encode())
            st = path.stat()
            key.update(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{use}".encode())
            uses.append(use)
        fingerprint = digest.hexdigest()[:16]
        folder = Path(cache_dir) if cache_dir else default_cache_dir()
        where = folder / f"{fingerprint}-{key.hexdigest()[:16]}"
        if not (where / "groups.json").exists():
            _write_index(where, files, uses)
        meta_groups = json.loads((where / "groups.json").read_text())
        if not meta_groups:
            raise ts.TokenShardError(f"token shards under {list(shards)} serve none of the tasks "
                                     f"{wanted or 'in their len_ columns'}")
        members = np.load(where / "members.npy", mmap_mode="r", allow_pickle=False)
        blocks = np.load(where / "blocks.npy", mmap_mode="r", allow_pickle=False)
        groups = [Group(g["task"], g["length"], g["kind"], members[g["offset"]:g["offset"] + g["size"]],
                        blocks[g["block_offset"]:g["block_offset"] + g["blocks"]]) for g in meta_groups]
        return cls(files, groups, fingerprint, where)

    def summary(self) -> dict[str, int]:
        return {g.name: g.size for g in self.groups}

    def ram_bytes(self) -> int:
        """Bytes this index holds in the process heap (the memory-mapped members are not counted:
        they live in the shared page cache): O(groups + files), independent of the sample count."""
        own = sum(len(str(p)) + 64 for p in self.files)
        for g in self.groups:
            own += 200 + len(g.task)  # the Group object, its name and two array views
            own += sum(0 if isinstance(a, np.memmap) else a.nbytes for a in (g.members, g.block_starts))
        return own

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir()) if self.path else 0


def _write_index(where: Path, files: list[Path], uses: list[list[str]]) -> None:
    """Two passes over the files' length columns: count per (group, file), then fill memory-mapped arrays."""
    counts: dict[tuple[str, int, str], dict[int, tuple[int, int]]] = {}
    for file_id, path in enumerate(files):
        _, rg, _, is_image, lengths = _file_columns(path, uses[file_id])
        for gkey, sel in _selections(uses[file_id], is_image, lengths):
            counts.setdefault(gkey, {})[file_id] = (sel.size, int(np.unique(rg[sel]).size))
    order = sorted(counts)
    meta, offset, block_offset, member_at = [], 0, 0, {}
    for gkey in order:
        per_file = counts[gkey]
        size = sum(n for n, _ in per_file.values())
        nblocks = sum(b for _, b in per_file.values())
        m, b = offset, block_offset
        for file_id in sorted(per_file):  # members of a group are sorted by file, then row group, row
            member_at[gkey, file_id] = (m, m - offset, b)
            m += per_file[file_id][0]
            b += per_file[file_id][1]
        meta.append({"task": gkey[0], "length": gkey[1], "kind": gkey[2], "offset": offset, "size": size,
                     "block_offset": block_offset, "blocks": nblocks})
        offset, block_offset = offset + size, block_offset + nblocks
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=where.name + ".", dir=where.parent))
    try:
        # no group at all: one dummy row keeps the files mappable; build() refuses the empty index by name
        offset, block_offset = max(offset, 1), max(block_offset, 1)
        members = np.lib.format.open_memmap(tmp / "members.npy", mode="w+", dtype=np.int32, shape=(offset, 3))
        blocks = np.lib.format.open_memmap(tmp / "blocks.npy", mode="w+", dtype=np.int64, shape=(block_offset,))
        for file_id, path in enumerate(files):
            _, rg, row, is_image, lengths = _file_columns(path, uses[file_id])
            for gkey, sel in _selections(uses[file_id], is_image, lengths):
                m, rel, b = member_at[gkey, file_id]
                members[m:m + sel.size, 0] = file_id
                members[m:m + sel.size, 1] = rg[sel]
                members[m:m + sel.size, 2] = row[sel]
                run = np.flatnonzero(np.r_[True, rg[sel][1:] != rg[sel][:-1]])
                blocks[b:b + run.size] = rel + run
        members.flush()
        blocks.flush()
        del members, blocks
        (tmp / "groups.json").write_text(json.dumps(meta))
        try:
            os.rename(tmp, where)
        except OSError:  # another rank renamed its copy first
            if not (where / "groups.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
