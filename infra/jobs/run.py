"""Run a data job to the end on its configured engine: plan, skip committed units, run the rest, summarize."""

from __future__ import annotations

import importlib
import time
from typing import Any

from videopoet.jobs.progress import Progress
from videopoet.jobs.protocol import DataJob
from videopoet.tracking import Tracker

# engine -> "module:function"; the Beam and Ray modules import their library, so only the chosen one is imported
RUNNERS = {
    "local": "videopoet.jobs.local_runner:run_local",
    "beam": "videopoet.jobs.beam_runner:run_beam",
    "ray": "videopoet.jobs.ray_runner:run_ray",
}


def runner_for(engine: str):
    module, _, func = RUNNERS[engine].partition(":")
    return getattr(importlib.import_module(module), func)


def run_job(job: DataJob) -> dict[str, Any]:
    """The whole job with `job.cfg.engine`; returns the summary (the job also writes it to its output)."""
    units = job.units()
    job.out.mkdir(parents=True, exist_ok=True)
    job.check_plan(job.plan(units))
    cfg = job.cfg
    t0 = time.perf_counter()
    progress = Progress(job.progress_total(units), cfg.progress, desc=f"{job.name}[{cfg.engine}]",
                        rate_of=job.rate_of, unit=job.progress_unit)
    results = []
    try:
        todo = []
        for unit in units:
            if job.is_committed(unit.index):
                r = job.result_from_part(unit.index)
                results.append(r)
                n, counts = job.progress_counts(r)
                progress.update(n, skipped=True, **counts)
            else:
                todo.append(unit)
        if todo:
            results.extend(runner_for(cfg.engine)(job, todo, progress))
    finally:
        progress.close()
    results.sort(key=lambda r: r.index)
    summary = job.summarize(units, results, time.perf_counter() - t0)
    print(job.summary_line(summary), flush=True)
    if cfg.track:
        # Only the driver tracks: workers never import MLflow.
        with Tracker.start(job.name, cfg, tags={"engine": cfg.engine}) as tracker:
            job.track(tracker, summary)
    return summary
