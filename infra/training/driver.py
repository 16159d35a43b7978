"""The driver side every training job shares: refuse a changed config, open the MLflow run, launch, read the summary.

A job's `train()` checks its own arguments, then calls `run_training`: the checkpoint manager's
resume policy runs first (a changed config is refused in one line before MLflow or Ray start), the
job's MLflow run wraps the launch, and the summary is what the in-process worker returned or, on
Ray, what rank 0 wrote with `write_summary` into the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from videopoet.config import to_dict
from videopoet.tracking import Tracker
from videopoet.training.checkpoints import CheckpointManager
from videopoet.training.launch import launch

SUMMARY_FILE = "last_summary.json"


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Rank 0's summary of this invocation, for a driver whose workers ran on Ray."""
    (Path(run_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))


def run_training(worker: Callable[[dict[str, Any]], Any], cfg: Any, *, job: str, kind: str, run_dir: Path,
                 num_workers: int, loop_config: dict[str, Any], run_name: str | None = None,
                 tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `worker` for config `cfg` under the job's MLflow run; returns rank 0's summary.

    `loop_config` gains `config` (the config as a dict), `out` (the run directory) and `run_id`."""
    run_dir = Path(run_dir)
    CheckpointManager.for_config(run_dir, kind=kind, cfg=cfg).resume_point()  # refuse early, before MLflow
    (run_dir / SUMMARY_FILE).unlink(missing_ok=True)
    with Tracker.start(job, cfg, run_name=run_name, tags={"num_workers": str(num_workers), **(tags or {})}) as tracker:
        loop_config = {**loop_config, "config": to_dict(cfg), "out": str(run_dir), "run_id": tracker.run_id}
        summary = launch(worker, loop_config, num_workers=num_workers, run_dir=run_dir,
                         use_gpu=torch.cuda.is_available(), name=job)
    if summary is None:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    return summary
