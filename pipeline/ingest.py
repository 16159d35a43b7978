"""`videopoet ingest`: videos and images -> clip shards + a Parquet manifest, on Beam, Ray or locally.

    videopoet ingest --engine beam --input /data/videos --output /data/clips
    videopoet ingest --engine ray --input manifest.parquet --output out --ray-address auto --use-gpu
    videopoet ingest --engine beam --input 'gs://b/v/*.mp4' --output /mnt/clips \
        --beam-options "--runner=DataflowRunner --project=p --region=r --temp_location=gs://b/tmp"

The ingest job on the data-job protocol (videopoet.jobs): its units are fixed batches of
`batch_size` inputs in sorted order; per worker the ConditionModel loads once; a batch's inputs are
decoded (`decode_input`, a Ray task each) and the batch is finished and committed (`finish_batch`,
videopoet.pipeline.ingest_batch), its manifest part last. A rerun into the same output skips
committed batches and redoes the others from scratch, and the outputs are byte-identical whatever
the engine (see docs/architecture.md, "Ingest").
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import pyarrow.compute as pc

from videopoet.config import ConfigError
from videopoet.jobs.cli_args import as_override, engine_overrides
from videopoet.jobs.config import engine_cores
from videopoet.jobs.protocol import DataJob
from videopoet.jobs.run import run_job
from videopoet.paths import output_dir
from videopoet.pipeline import manifest as mf
from videopoet.pipeline.ingest_batch import (
    PIPELINE_VERSION,
    Batch,
    BatchResult,
    DecodedInput,
    decode_input,
    finish_batch,
    load_condition_model,
    make_batches,
    media_config_hash,
    result_from_part,
)
from videopoet.pipeline.ingest_config import INGEST_RECIPES, IngestConfig
from videopoet.pipeline.sources import InputSpec, SourceError, list_inputs
from videopoet.tracking import Tracker

__all__ = ["INGEST_RECIPES", "IngestConfig", "IngestJob", "run_ingest", "run_from_args"]


class IngestJob(DataJob[Batch, BatchResult]):
    """Batches of inputs -> clip shards + manifest parts (videopoet.jobs.protocol)."""

    name = "ingest"
    progress_unit = "input"
    rate_of = "clips"
    driver_only = ("_specs", "_skipped")

    def __init__(self, cfg: IngestConfig, out: Path, specs: list[InputSpec],
                 skipped: list[tuple[str, str]] | None = None):
        super().__init__(cfg, out)
        self._specs = specs
        self._skipped = list(skipped or [])  # files below a directory input that are not inputs

    def units(self) -> list[Batch]:
        return make_batches(self._specs, self.cfg.batch_size)

    def plan(self, units: Sequence[Batch]) -> dict[str, Any]:
        return _plan(self.cfg, [s for b in units for s in b.inputs])

    def progress_total(self, units: Sequence[Batch]) -> int:
        return sum(len(b.inputs) for b in units)

    def progress_counts(self, r: BatchResult) -> tuple[int, dict[str, int]]:
        return r.inputs_ok + r.inputs_failed, {"clips": r.clips, "failed": r.inputs_failed}

    def counters(self, r: BatchResult) -> dict[str, int]:
        return {"inputs_ok": r.inputs_ok, "inputs_failed": r.inputs_failed, "clips": r.clips, "batches": 1,
                "video_milliseconds": int(r.seconds * 1000)}

    def distributions(self, r: BatchResult) -> dict[str, int]:
        return {"decode_ms_per_batch": int(r.decode_seconds * 1000)}

    def setup(self) -> Any:
        return load_condition_model(self.cfg)

    def items(self, unit: Batch) -> list[InputSpec]:
        return list(unit.inputs)

    def prepare(self, spec: InputSpec) -> DecodedInput:
        return decode_input(spec, self.cfg)

    def prepare_failed(self, spec: InputSpec, err: BaseException) -> DecodedInput:
        return DecodedInput(spec=spec).fail(
            "decode", "WorkerCrashed", f"{spec.uri}: the decode task failed after retries ({type(err).__name__})")

    def commit_unit(self, unit: Batch, decoded: list[DecodedInput], model: Any) -> BatchResult:
        return finish_batch(unit, decoded, model, self.out, self.cfg)

    def result_from_part(self, index: int) -> BatchResult:
        return result_from_part(self.out, index)

    def summarize(self, units: Sequence[Batch], results: list[BatchResult], wall_s: float) -> dict[str, Any]:
        return summarize(self.out, self.cfg, len(units), wall_s, results, self._skipped)

    def summary_line(self, summary: dict[str, Any]) -> str:
        return summary_line(summary)

    def track(self, tracker: Tracker, summary: dict[str, Any]) -> None:
        tracker.log_metrics({k: float(summary[k]) for k in (
            "inputs", "inputs_ok", "inputs_failed", "clips", "clips_this_run", "hours_of_video",
            "wall_seconds", "clips_per_s", "clips_per_s_per_core", "duplicate_keys")}, step=0)
        tracker.log_artifact(self.out / mf.SUMMARY_FILE)

    # Beam elements: plain tuples (index, [InputSpec fields])
    def to_element(self, unit: Batch) -> Any:
        return unit.index, [dataclasses.astuple(s) for s in unit.inputs]

    def from_element(self, element: Any) -> Batch:
        index, specs = element
        return Batch(index, [InputSpec(*s) for s in specs])


def _plan(cfg: IngestConfig, specs: list[InputSpec]) -> dict[str, Any]:
    listing = json.dumps([dataclasses.astuple(s) for s in specs], separators=(",", ":")).encode()
    return {
        "manifest_version": mf.MANIFEST_VERSION,
        "pipeline_version": PIPELINE_VERSION,
        "media_config_hash": media_config_hash(cfg.media),
        "batch_size": cfg.batch_size,
        "shard_max_bytes": cfg.shard_max_bytes,
        "images_require_caption": cfg.images_require_caption,
        "inputs_sha256": hashlib.sha256(listing).hexdigest(),
        "num_inputs": len(specs),
        "num_batches": -(-len(specs) // cfg.batch_size),
    }


def summarize(out: Path, cfg: IngestConfig, num_batches: int, wall_s: float,
              results: list[BatchResult], skipped: list[tuple[str, str]] = ()) -> dict[str, Any]:
    """Merge the manifest parts and write summary.json (timings live here, never in the manifest)."""
    new_clips = sum(r.clips for r in results if not r.skipped)
    _verify_shards(out, num_batches)
    merged = mf.merge_parts(out, range(num_batches))
    table = mf.read_manifest(merged)
    inputs = table.filter(pc.equal(table["kind"], "input"))
    clips = table.filter(pc.equal(table["kind"], "clip"))
    ok = inputs.filter(pc.equal(inputs["status"], "ok"))
    failed = inputs.filter(pc.equal(inputs["status"], "failed"))
    reasons: dict[str, int] = {}
    for cls in failed["error_class"].to_pylist():
        reasons[cls] = reasons.get(cls, 0) + 1
    keys = clips["key"].to_pylist()
    timings: dict[str, float] = {}
    for b in range(num_batches):
        p = mf.timings_path(out, b)
        if p.is_file():
            timings.update(json.loads(p.read_text())["decode_seconds"])
    slowest = sorted(timings.items(), key=lambda kv: -kv[1])[:10]
    cores = engine_cores(cfg)
    summary = {
        "inputs": inputs.num_rows, "inputs_ok": ok.num_rows, "inputs_failed": failed.num_rows,
        "failures_by_class": dict(sorted(reasons.items())),
        "clips": clips.num_rows, "duplicate_keys": len(keys) - len(set(keys)),
        "hours_of_video": float(sum(v or 0.0 for v in ok["seconds"].to_pylist())) / 3600.0,
        "batches": num_batches, "batches_this_run": sum(not r.skipped for r in results),
        "clips_this_run": new_clips, "wall_seconds": wall_s,
        "clips_per_s": new_clips / wall_s if wall_s > 0 else 0.0,
        "cores": cores, "clips_per_s_per_core": (new_clips / wall_s / cores) if wall_s > 0 else 0.0,
        "decode_seconds_total": float(sum(timings.values())),
        "slowest_inputs": [{"input_id": k, "decode_seconds": v} for k, v in slowest],
        "engine": cfg.engine, "manifest": str(merged),
        # files below a directory input that are not inputs (known non-media), with the reasons
        "skipped": len(skipped), "skipped_by_reason": _count_reasons(skipped),
        "skipped_files": [{"uri": u, "reason": r} for u, r in skipped[:1000]],
    }
    mf.write_json_atomic(out / mf.SUMMARY_FILE, summary)
    return summary


def _count_reasons(skipped) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, reason in skipped:
        out[reason] = out.get(reason, 0) + 1
    return dict(sorted(out.items()))


def _verify_shards(out: Path, num_batches: int) -> None:
    """Every shard a committed part names must exist. A batch whose shards vanished (e.g. two
    attempts of one batch racing on a runner that re-executes work) is uncommitted so that the
    next run redoes it; the run then fails loudly instead of publishing a manifest with holes."""
    broken = []
    for b in range(num_batches):
        if not mf.is_committed(out, b):
            continue
        table = mf.read_manifest(mf.part_path(out, b))
        names = {n for n in table["shard"].to_pylist() if n}
        if any(not (out / n).is_file() for n in names):
            mf.part_path(out, b).unlink()
            broken.append(b)
    if broken:
        raise RuntimeError(f"{out}: batches {broken[:10]} named shards that are missing; they were "
                           "uncommitted: rerun the same command to redo them")


def summary_line(s: dict[str, Any]) -> str:
    return (f"ingest: {s['inputs_ok']} inputs ok, {s['inputs_failed']} failed, {s['clips']} clips "
            f"({s['clips_this_run']} new), {s['hours_of_video']:.3f} h of video, "
            f"{s['clips_per_s']:.2f} clips/s ({s['clips_per_s_per_core']:.2f}/core) in {s['wall_seconds']:.1f} s")


def run_ingest(cfg: IngestConfig, *, specs: list[InputSpec] | None = None) -> dict[str, Any]:
    """Run the whole job with `cfg.engine`; returns the summary (also written to summary.json)."""
    if not cfg.output:
        raise ConfigError("output='': give --output DIR")
    skipped: list[tuple[str, str]] = []
    if specs is None:
        try:
            listing = list_inputs(cfg.input)
        except SourceError as err:
            raise ConfigError(str(err)) from None
        specs, skipped = listing.specs, listing.skipped
    out = output_dir(cfg.output, "--output").resolve()
    return run_job(IngestJob(cfg, out, specs, skipped))


def config_from_args(args: argparse.Namespace) -> IngestConfig:
    flags = (as_override("input", args.input) + as_override("output", args.output)
             + as_override("batch_size", args.batch_size) + as_override("media.flow", args.flow)
             + as_override("media.depth", args.depth) + engine_overrides(args, beam_processes_for_cpus=True))
    return INGEST_RECIPES.get(args.config, list(args.overrides) + flags)


def run_from_args(args: argparse.Namespace) -> int:
    """`videopoet ingest ARGS` (arguments: videopoet.pipeline.ingest_cli)."""
    cfg = config_from_args(args)
    if not cfg.input:
        raise ConfigError("input='': give --input (a directory, glob, URL or manifest)")
    run_ingest(cfg)
    return 0


if __name__ == "__main__":
    # Run through the imported module, not __main__: configs pickled to Beam/Ray workers must
    # name classes those workers can import.
    from videopoet import commands
    from videopoet.pipeline import ingest_cli

    sys.exit(commands.main_for(ingest_cli))
