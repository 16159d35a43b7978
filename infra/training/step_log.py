"""The per-step record every training job keeps: <run dir>/losses.jsonl plus the tracker, resume-safe.

One JSON line per step on the main rank; on open the file is cut back to the resumed step (a run
killed between a log line and its checkpoint would otherwise repeat steps). Due steps and the last
step also go to MLflow; evaluations go to MLflow and are kept as the run's latest held-out metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from videopoet.tracking import Tracker


class StepLog:
    def __init__(self, path: Path, tracker: Tracker, *, resumed_step: int, last_step: int, enabled: bool = True):
        self.tracker, self.last_step = tracker, last_step
        self.eval_metrics: dict[str, float] = {}
        self._file = None
        if enabled:
            if path.exists():
                kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resumed_step]
                path.write_text("".join(ln + "\n" for ln in kept))
            self._file = open(path, "a")

    def log(self, logs: dict[str, Any], step: int, due: bool) -> None:
        """The loop's `log` callback: every step to the file, due steps and the last one to the tracker."""
        if self._file is not None:
            self._file.write(json.dumps({"step": step, **logs}) + "\n")
        if due or step == self.last_step:
            self.tracker.log_metrics(logs, step)

    def on_eval(self, metrics: dict[str, float], step: int) -> None:
        """The loop's `on_eval` callback."""
        self.eval_metrics.update(metrics)
        self.tracker.log_metrics(metrics, step)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "StepLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
