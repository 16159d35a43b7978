"""Progress of a data job: a tqdm bar with counters, and a watcher of commit markers for engines
that report nowhere the driver can see while they run (a Beam pipeline)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Iterable

from tqdm import tqdm


class Progress:
    """tqdm over work (`unit`: shard, input) with named counters in the postfix and a rate of one.

    `update(units, **counts)` adds to the counters; `fresh` counts only work done in this run (a
    resumed job reports the rate of what it did, not of what it skipped). Counts are kept when the
    bar is off.
    """

    def __init__(self, total: int, enabled: bool, desc: str, rate_of: str, unit: str = "shard"):
        self.t0 = time.perf_counter()
        self.counts: dict[str, int] = {}
        self.fresh: dict[str, int] = {}
        self.rate_of = rate_of
        self.bar = tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, file=sys.stderr) if enabled else None

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

    A thread polls `is_committed(index)` every `interval_s` and once more on exit. An `on_commit`
    that raises (a part being replaced under us) is retried at the next poll.
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
