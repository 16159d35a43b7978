"""The ingest job's engines: local (one process), Apache Beam and Ray.

Each runs the same engine-neutral functions of videopoet.pipeline.ingest over the uncommitted
batches: `decode_input` per input, then `finish_batch` per batch (ConditionModel, keys, shards,
manifest part last). They differ only in where those run:
- local: sequentially in this process (the reference; what bench/ingest.py times per core).
- Beam: one element per batch; a DoFn loads the ConditionModel once per worker in `setup`
  (RunInference-style model sharing) and processes the batch where it lands. Decoded frames never
  cross a shuffle: the batch is both the unit of work and the unit of commit.
- Ray: decode is a Ray task per input; the ConditionModel lives in an actor pool (GPU actors with
  --use-gpu) that also writes the batch. The pool never takes every CPU: on a 2-CPU node an actor
  pool holding all CPUs would starve the decode tasks forever (docs/architecture.md, "Ingest").
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from pathlib import Path
from typing import Any

from videopoet.config import ConfigError
from videopoet.pipeline import manifest as mf
from videopoet.pipeline.ingest import (
    Batch, BatchResult, DecodedInput, IngestConfig, Progress, decode_input, finish_batch, load_condition_model,
    process_batch, result_from_part,
)


# --- local -------------------------------------------------------------------------------------

def run_local(batches: list[Batch], cfg: IngestConfig, out: Path, progress: Progress) -> list[BatchResult]:
    if not batches:
        return []
    model = load_condition_model(cfg)
    results = []
    for batch in batches:
        r = process_batch(batch, cfg, model, out)
        progress.update(r)
        results.append(r)
    return results


# --- Beam --------------------------------------------------------------------------------------

_LOCAL_BEAM_RUNNERS = ("fnapirunner", "bundlebaseddirectrunner", "directrunner", "switchingdirectrunner")


def beam_pipeline_options(cfg: IngestConfig):
    """PipelineOptions from cfg.beam: `options` wins; the runner defaults to cfg.beam.runner."""
    from apache_beam.options.pipeline_options import PipelineOptions

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


def _make_beam_dofn(cfg: IngestConfig, out: str):
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    class IngestBatchFn(beam.DoFn):
        """One batch per element; the ConditionModel is loaded once per worker (setup)."""

        def __init__(self, cfg: IngestConfig, out: str):
            self.cfg = cfg
            self.out = out
            self.inputs_ok = Metrics.counter("videopoet.ingest", "inputs_ok")
            self.inputs_failed = Metrics.counter("videopoet.ingest", "inputs_failed")
            self.clips = Metrics.counter("videopoet.ingest", "clips")
            self.batches = Metrics.counter("videopoet.ingest", "batches")
            self.video_ms = Metrics.counter("videopoet.ingest", "video_milliseconds")
            self.decode_ms = Metrics.distribution("videopoet.ingest", "decode_ms_per_batch")

        def setup(self):
            self.model = load_condition_model(self.cfg)

        def process(self, element):
            index, specs = element
            from videopoet.pipeline.sources import InputSpec

            batch = Batch(index, [InputSpec(*s) for s in specs])
            r = process_batch(batch, self.cfg, self.model, self.out)
            if not r.skipped:
                self.inputs_ok.inc(r.inputs_ok)
                self.inputs_failed.inc(r.inputs_failed)
                self.clips.inc(r.clips)
                self.batches.inc()
                self.video_ms.inc(int(r.seconds * 1000))
                self.decode_ms.update(int(r.decode_seconds * 1000))
            yield index

    return IngestBatchFn(cfg, out)


class _PartWatcher:
    """Progress for engines that report nowhere we can see: poll for newly committed parts."""

    def __init__(self, out: Path, batches: list[Batch], progress: Progress, interval_s: float = 0.5):
        self.out, self.pending, self.progress, self.interval = out, {b.index for b in batches}, progress, interval_s
        self.results: dict[int, BatchResult] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def _poll(self) -> None:
        for b in sorted(self.pending):
            if mf.is_committed(self.out, b):
                try:
                    r = result_from_part(self.out, b)
                except mf.ManifestError:
                    continue
                r.skipped = False
                self.pending.discard(b)
                self.results[b] = r
                self.progress.update(r)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._poll()


def run_beam(batches: list[Batch], cfg: IngestConfig, out: Path, progress: Progress) -> list[BatchResult]:
    if not batches:
        return []
    import dataclasses

    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    options = beam_pipeline_options(cfg)
    elements = [(b.index, [dataclasses.astuple(s) for s in b.inputs]) for b in batches]
    with _PartWatcher(out, batches, progress) as watcher:
        pipeline = beam.Pipeline(options=options)
        _ = (
            pipeline
            | "Batches" >> beam.Create(elements, reshuffle=False)
            | "Distribute" >> beam.Reshuffle()
            | "DecodeConditionCommit" >> beam.ParDo(_make_beam_dofn(cfg, str(out)))
        )
        result = pipeline.run()
        result.wait_until_finish()
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace("videopoet.ingest"))["counters"]
        figures = {c.key.metric.name: c.committed for c in counters}
        if figures:
            print("beam metrics: " + ", ".join(f"{k}={v}" for k, v in sorted(figures.items())), flush=True)
    except Exception:  # some runners do not report metrics back to the driver
        pass
    missing = [b.index for b in batches if not mf.is_committed(out, b.index)]
    if missing:
        raise RuntimeError(f"beam pipeline finished but batches {missing[:10]} are not committed")
    return [watcher.results.get(b.index) or result_from_part(out, b.index) for b in batches]


# --- Ray ---------------------------------------------------------------------------------------

class ConditionActor:
    """Holds the ConditionModel (loaded once) and finishes batches (conditions, shards, commit)."""

    def __init__(self, cfg: IngestConfig, out: str):
        self.cfg, self.out = cfg, out
        self.model = load_condition_model(cfg)

    def finish(self, index: int, specs: list, refs: list) -> BatchResult:
        import ray

        decoded = []
        for spec, ref in zip(specs, refs):
            # refs arrive unresolved (nested in a list) so that a decode task that died for good
            # (e.g. its worker was OOM-killed on every retry) costs its input, not the batch.
            try:
                decoded.append(ray.get(ref))
            except Exception as err:
                decoded.append(DecodedInput(spec=spec).fail(
                    "decode", "WorkerCrashed", f"{spec.uri}: the decode task failed after retries ({type(err).__name__})"))
        return finish_batch(Batch(index, list(specs)), decoded, self.model, self.out, self.cfg)


def _ray_init(cfg: IngestConfig) -> bool:
    """Start or join Ray unless it is already initialised here; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, log_to_driver=False)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    return True


def ray_pool_size(cfg: IngestConfig, total_cpus: float, total_gpus: float) -> int:
    if cfg.ray.pool_size:
        size = cfg.ray.pool_size
    elif cfg.ray.use_gpu:
        size = max(1, int(total_gpus / cfg.ray.gpus_per_actor))
    else:
        size = max(1, int(total_cpus) // 4)
    if size * cfg.ray.actor_cpus + cfg.ray.decode_cpus > total_cpus:
        raise ConfigError(
            f"ray.pool_size={size}: {size} actors x {cfg.ray.actor_cpus} CPU leave no CPU for decode "
            f"tasks on a {total_cpus:g}-CPU cluster (Ray would deadlock); lower ray.pool_size or "
            "ray.actor_cpus, or start Ray with more logical CPUs (--num-cpus)"
        )
    return size


def run_ray(batches: list[Batch], cfg: IngestConfig, out: Path, progress: Progress) -> list[BatchResult]:
    if not batches:
        return []
    import ray
    from ray.util import ActorPool

    started = _ray_init(cfg)
    try:
        res = ray.cluster_resources()
        pool_size = ray_pool_size(cfg, res.get("CPU", 1.0), res.get("GPU", 0.0))
        if cfg.ray.use_gpu and res.get("GPU", 0.0) <= 0:
            raise ConfigError("ray.use_gpu=true: the Ray cluster has no GPU")
        actor_cls = ray.remote(
            num_cpus=cfg.ray.actor_cpus, num_gpus=cfg.ray.gpus_per_actor if cfg.ray.use_gpu else 0,
            max_restarts=2, max_task_retries=2,
        )(ConditionActor)
        decode = ray.remote(num_cpus=cfg.ray.decode_cpus, max_retries=2)(decode_input)
        pool = ActorPool([actor_cls.remote(cfg, str(out)) for _ in range(pool_size)])
        inflight_limit = cfg.ray.max_inflight_batches or 2 * pool_size + 2
        cfg_ref = ray.put(cfg)
        queue = list(batches)
        results: list[BatchResult] = []
        inflight = 0

        def submit(batch: Batch) -> None:
            refs = [decode.remote(spec, cfg_ref) for spec in batch.inputs]
            pool.submit(lambda actor, v: actor.finish.remote(*v), (batch.index, batch.inputs, refs))

        while queue or inflight:
            while queue and inflight < inflight_limit:
                submit(queue.pop(0))
                inflight += 1
            r = pool.get_next_unordered()
            inflight -= 1
            progress.update(r)
            results.append(r)
        return sorted(results, key=lambda r: r.batch)
    finally:
        if started:
            ray.shutdown()
