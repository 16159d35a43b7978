"""The local engine: every unit in this process, one after the other (the reference engine)."""

from __future__ import annotations

from videopoet.jobs.progress import Progress
from videopoet.jobs.protocol import DataJob


def run_local(job: DataJob, units: list, progress: Progress) -> list:
    state = job.setup()
    results = []
    for unit in units:
        r = job.process(unit, state)
        n, counts = job.progress_counts(r)
        progress.update(n, skipped=r.skipped, **counts)
        results.append(r)
    return results
