"""The Beam engine: `Create(units) | Reshuffle | ParDo(JobFn)`; imported only when engine=beam.

The DoFn runs `setup` once per worker (the models, RunInference-style sharing) and prepares and
commits each unit where it lands, so a unit's intermediate data (decoded frames) never crosses a
shuffle: the unit is both the unit of work and the unit of commit. Locally a PartWatcher turns
commit markers into progress. The runner defaults to FnApiRunner, named explicitly (the bare
DirectRunner first tries to download Prism); `beam.options` passes any other runner and options.
"""

from __future__ import annotations

import dataclasses
import shlex

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from videopoet.jobs.config import EngineConfig
from videopoet.jobs.progress import PartWatcher, Progress
from videopoet.jobs.protocol import DataJob

_LOCAL_BEAM_RUNNERS = ("fnapirunner", "bundlebaseddirectrunner", "directrunner", "switchingdirectrunner")


def beam_pipeline_options(cfg: EngineConfig) -> PipelineOptions:
    """PipelineOptions from cfg.beam: `options` wins; the runner defaults to cfg.beam.runner."""
    argv = shlex.split(cfg.beam.options)
    if not any(a == "--runner" or a.startswith("--runner=") for a in argv):
        argv.append(f"--runner={cfg.beam.runner}")
    runner = next(a.split("=", 1)[1] for a in argv if a.startswith("--runner=")) if any(
        a.startswith("--runner=") for a in argv) else cfg.beam.runner
    if runner.lower() in _LOCAL_BEAM_RUNNERS:
        if not any(a.startswith("--direct_num_workers") for a in argv):
            argv.append(f"--direct_num_workers={cfg.beam.num_workers}")
        if not any(a.startswith("--direct_running_mode") for a in argv):
            argv.append(f"--direct_running_mode={cfg.beam.running_mode}")
    return PipelineOptions(argv)


class JobFn(beam.DoFn):
    """One unit per element; `job.setup()` once per worker; counters videopoet.<job name>:*."""

    def __init__(self, job: DataJob):
        self.job = job
        self.namespace = f"videopoet.{job.name}"

    def setup(self):
        self.state = self.job.setup()

    def process(self, element):
        r = self.job.process(self.job.from_element(element), self.state)
        if not r.skipped:
            for name, value in self.job.counters(r).items():
                Metrics.counter(self.namespace, name).inc(value)
            for name, value in self.job.distributions(r).items():
                Metrics.distribution(self.namespace, name).update(value)
        yield r.index


def run_beam(job: DataJob, units: list, progress: Progress) -> list:
    def on_commit(index: int) -> None:
        n, counts = job.progress_counts(job.result_from_part(index))
        progress.update(n, **counts)

    with PartWatcher([u.index for u in units], job.is_committed, on_commit):
        pipeline = beam.Pipeline(options=beam_pipeline_options(job.cfg))
        _ = (
            pipeline
            | "Units" >> beam.Create([job.to_element(u) for u in units], reshuffle=False)
            | "Distribute" >> beam.Reshuffle()
            | "PrepareCommit" >> beam.ParDo(JobFn(job))
        )
        result = pipeline.run()
        result.wait_until_finish()
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(f"videopoet.{job.name}"))["counters"]
        figures = {c.key.metric.name: c.committed for c in counters}
        if figures:
            print("beam metrics: " + ", ".join(f"{k}={v}" for k, v in sorted(figures.items())), flush=True)
    except Exception:  # some runners do not report metrics back to the driver
        pass
    missing = [u.index for u in units if not job.is_committed(u.index)]
    if missing:
        raise RuntimeError(f"beam pipeline finished but units {missing[:10]} are not committed")
    return [dataclasses.replace(job.result_from_part(u.index), skipped=False) for u in units]
