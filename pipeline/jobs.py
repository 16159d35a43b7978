"""Generic pieces of the exactly-once batch jobs (ingest, tokenize): progress, part watching,
deterministic Parquet bytes, fixed model threads.

The commit protocol itself (work unit B is committed when `manifest/part-BBBBBB.parquet` exists;
it is written last, atomically; a rerun skips committed units and cleans the others' leftovers)
lives in videopoet.pipeline.manifest (`part_path`, `is_committed`, `committed_batches`,
`clean_batch`, `write_bytes_atomic`, `write_json_atomic`), and the engine plumbing (Beam options,
Ray start/join and actor-pool sizing) in videopoet.pipeline.engines; jobs import them from there.
What is here had no job-neutral home yet.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable


def parquet_bytes(table: Any) -> bytes:
    """Parquet bytes of a pyarrow Table with fixed writer settings (same rows -> same bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", use_dictionary=True, write_statistics=True)
    return sink.getvalue().to_pybytes()


class Progress:
    """tqdm over work units with named counters in the postfix and a rate of one of them.

    `update(units, **counts)` adds to the counters; `fresh` counts only work done in this run (a
    resumed job reports the rate of what it did, not of what it skipped).
    """

    def __init__(self, total_units: int, enabled: bool, desc: str, rate_of: str, unit: str = "shard"):
        self.t0 = time.perf_counter()
        self.counts: dict[str, int] = {}
        self.fresh: dict[str, int] = {}
        self.rate_of = rate_of
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total_units, unit=unit, desc=desc, dynamic_ncols=True, file=sys.stderr)

    def update(self, units: int = 1, *, skipped: bool = False, **counts: int) -> None:
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + int(v)
            if not skipped:
                self.fresh[k] = self.fresh.get(k, 0) + int(v)
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            rate = self.fresh.get(self.rate_of, 0) / elapsed
            self.bar.set_postfix(**self.counts, **{f"{self.rate_of}_s": f"{rate:.2f}"}, refresh=False)
            self.bar.update(units)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class PartWatcher:
    """Calls `on_commit(index)` once for each pending unit whose commit marker appears.

    For engines that report nowhere the driver can see while they run (a Beam pipeline): a
    thread polls `is_committed(index)` every `interval_s` and once more on exit.
    """

    def __init__(self, pending: Iterable[int], is_committed: Callable[[int], bool],
                 on_commit: Callable[[int], None], interval_s: float = 0.5):
        self.pending = set(pending)
        self.is_committed, self.on_commit, self.interval = is_committed, on_commit, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "PartWatcher":
        self._thread.start()
        return self

    def _poll(self) -> None:
        for index in sorted(self.pending):
            if self.is_committed(index):
                self.pending.discard(index)
                try:
                    self.on_commit(index)
                except Exception:  # a part being replaced under us: the final poll sees it whole
                    self.pending.add(index)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()


def set_torch_threads(n: int) -> None:
    """Pin torch's intra-op threads: float reductions (and so quantised codes near a decision
    boundary) may differ with the thread count, and every engine must give the same bytes."""
    if n > 0:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def relative_to(path: Path, root: Path) -> str:
    """`path` relative to `root` when under it (portable manifests), else absolute, POSIX style."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def add_engine_arguments(parser: Any, *, num_cpus_help: str, use_gpu_help: str) -> None:
    """The execution flags every pipeline job shares (engine, Beam/Ray placement, progress, tracking)."""
    parser.add_argument("--engine", choices=["beam", "ray", "local"], help="execution engine (default: beam)")
    parser.add_argument("--beam-options", help='extra Beam pipeline options, e.g. "--runner=DataflowRunner --project=p"')
    parser.add_argument("--ray-address", help="join a Ray cluster ('auto' or host:port) instead of starting one")
    parser.add_argument("--num-cpus", type=int, help=num_cpus_help)
    parser.add_argument("--use-gpu", action="store_true", help=use_gpu_help)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-track", action="store_true", help="do not log an MLflow run")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def as_override(key: str, value: Any) -> list[str]:
    """`key=value` for a flag that was given (strings JSON-quoted so they parse as strings); [] if not."""
    if value is None:
        return []
    import json

    return [f"{key}={json.dumps(value) if isinstance(value, str) else value}"]


def engine_overrides(args: Any, *, beam_processes_for_cpus: bool = False) -> list[str]:
    """Config overrides for the flags added by add_engine_arguments."""
    flags = as_override("engine", args.engine) + as_override("beam.options", args.beam_options)
    flags += as_override("ray.address", args.ray_address)
    if args.num_cpus is not None:
        flags += as_override("ray.num_cpus", args.num_cpus) + as_override("beam.num_workers", args.num_cpus)
        if beam_processes_for_cpus and args.num_cpus > 1:  # local Beam runners use several cores only in processes
            flags += as_override("beam.running_mode", "multi_processing")
    if args.use_gpu:
        flags += as_override("ray.use_gpu", True)
    if args.no_progress:
        flags += as_override("progress", False)
    if args.no_track:
        flags += as_override("track", False)
    return flags
