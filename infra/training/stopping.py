"""Stop requests: SIGTERM/SIGINT write a STOP file in the run directory, rank 0 polls it at step boundaries.

One mechanism for both launch modes: in-process the handler runs in the training process itself,
under Ray it runs in the driver while the workers train. The loop checkpoints at the next step
boundary and returns; running the same command again resumes.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

STOP_FILE = "STOP"


class StopFile:
    """The STOP file of a run directory: `request()` creates it, `requested()` tests it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def request(self, reason: str = "") -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{reason} at {time.time()}\n")

    def requested(self) -> bool:
        return self.path.exists()


class SignalStop:
    """While installed, SIGTERM and SIGINT request a stop through the STOP file (a context manager)."""

    def __init__(self, stop_file: StopFile):
        self.stop_file = stop_file
        self.previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.stop_file.request(f"signal {signum}")

    def __enter__(self) -> "SignalStop":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: only the STOP file can stop the run
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()
