"""Reading AGD rows from token shards: only the columns a task needs, a bounded row-group cache.

`task_columns(task)` is the set of token-shard columns `pipeline.tasks.build_layout` and `collate`
read for that task: the latent grid, `video_tokens`, `text_dim`/`text_mask`, plus `text_emb` (the
large one: 64 x text_dim float16, ~262 KB per row for T5-XL) only when the task has text slots,
its condition column, `first_frame_tokens` for i2v/style, and the audio columns for a2v/v2a/avcont.

`RowReader` reads whole row groups (pyarrow 25 has no row-level Parquet read: no row ranges or
page-index selection in its Python API), projected to those columns, and keeps the last
`capacity` of them as Arrow tables (memory: capacity x rows per row group x the task's bytes per
row). How many rows a rank needs per row group it reads is the sampler's business: with
`data.lanes` a rank's examples come from its own sequential streams (trainer.data). The reader
counts `rows_read` (rows of the row groups it decoded) and `rows_used` (rows it returned).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

from videopoet.pipeline import token_shards as ts
from videopoet.pipeline.tasks import TASKS

_BASE_COLUMNS = ("key", "num_frames", "video_format", "latent_t", "latent_h", "latent_w", "video_tokens",
                 "text_dim", "text_mask")
_AUDIO_TASKS = ("a2v", "v2a", "avcont")


def task_columns(task: str) -> tuple[str, ...] | None:
    """The columns a batch of `task` reads; None (= every column) for a task this module does not know."""
    spec = TASKS.get(task)
    if spec is None:
        return None
    cols = list(_BASE_COLUMNS)
    if spec.text != "none":
        cols.append("text_emb")
    if spec.condition:
        cols.append(spec.condition)
    if task in ("i2v", "style"):
        cols.append("first_frame_tokens")
    if task in _AUDIO_TASKS:
        cols += ["audio_tokens", "audio_frames"]
    return tuple(dict.fromkeys(cols))


class RowReader:
    """Rows by (file, row group, row), reading projected row groups and keeping the last `capacity`."""

    def __init__(self, files: Sequence[Path], capacity: int = 32):
        self.files, self.capacity = list(files), max(1, capacity)
        self._cache: OrderedDict[tuple[int, int, tuple[str, ...] | None], Any] = OrderedDict()
        self._checked: set[int] = set()
        self.reads = 0  # row groups decoded
        self.rows_read = 0
        self.rows_used = 0

    def _table(self, file_id: int, rg: int, columns: tuple[str, ...] | None):
        import pyarrow.parquet as pq

        key = (file_id, rg, columns)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        path = self.files[file_id]
        with pq.ParquetFile(path) as pf:
            if file_id not in self._checked:
                ts.check_version(pf.schema_arrow.metadata, str(path))
                self._checked.add(file_id)
            table = pf.read_row_group(rg, columns=list(columns) if columns is not None else None)
        self.reads += 1
        self.rows_read += table.num_rows
        self._cache[key] = table
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return table

    def rows(self, positions: Sequence[tuple[int, int, int]], columns: Sequence[str] | None = None
             ) -> list[dict[str, Any]]:
        """Decoded rows at `positions` (in that order) with only `columns` (None: all)."""
        import pyarrow as pa

        cols = tuple(columns) if columns is not None else None
        out: list[dict[str, Any] | None] = [None] * len(positions)
        by_block: dict[tuple[int, int], list[int]] = {}
        for i, (f, g, _) in enumerate(positions):
            by_block.setdefault((f, g), []).append(i)
        for (f, g), idx in by_block.items():  # in first-use order: each row group is read once
            table = self._table(f, g, cols)
            taken = ts.table_rows(table.take(pa.array([positions[i][2] for i in idx], type=pa.int64())))
            for i, row in zip(idx, taken):
                out[i] = row
        self.rows_used += len(positions)
        return out  # type: ignore[return-value]

    def get(self, file_id: int, rg: int, row: int, columns: Sequence[str] | None = None) -> dict[str, Any]:
        return self.rows([(file_id, rg, row)], columns)[0]

    def stats(self) -> dict[str, float]:
        return {"row_groups_read": self.reads, "rows_read": self.rows_read, "rows_used": self.rows_used,
                "rows_read_per_row_used": self.rows_read / max(1, self.rows_used)}
