"""`videopoet ingest`: videos and images -> clip shards + a Parquet manifest, on Beam, Ray or locally.

    videopoet ingest --engine beam --input /data/videos --output /data/clips
    videopoet ingest --engine ray --input manifest.parquet --output out --ray-address auto --use-gpu
    videopoet ingest --engine beam --input 'gs://b/v/*.mp4' --output /mnt/clips \
        --beam-options "--runner=DataflowRunner --project=p --region=r --temp_location=gs://b/tmp"

The job is a list of fixed work units (batches of `batch_size` inputs in sorted order). Every engine
calls the same engine-neutral functions defined here for each uncommitted batch:
  decode_input(spec, cfg)        hash the bytes, decode under the time limit -> DecodedInput
  finish_batch(...)              ConditionModel on the clips, content-addressed keys, shards, and
                                 the batch's manifest part LAST (the commit marker)
so a rerun into the same output skips committed batches and redoes the others from scratch, and
the outputs are byte-identical whatever the engine (see docs/architecture.md, "Ingest").
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from videopoet.pipeline.jobs import add_engine_arguments, as_override, engine_overrides
from videopoet.config import ConfigError, RecipeRegistry, config_hash, to_dict
from videopoet.pipeline import manifest as mf
from videopoet.pipeline.media import MediaConfig
from videopoet.pipeline.sources import InputSpec, SourceError, discover_inputs

# Bump when decoding/selection semantics change in a way that changes clip bytes.
PIPELINE_VERSION = 2  # 2: PyAV frames resized by libswscale area at the cover size (pixels differ from 1)
KEY_HEX_CHARS = 32  # 128 bits of sha256: collisions are not a practical concern
AUDIO_SAMPLE_RATE = 16_000
CLIP_FPS = 8
# Media settings that never change what a clip contains (they only decide whether it fails).
_NON_CONTENT_MEDIA_FIELDS = (
    "decode_timeout_s", "max_pixels", "min_side", "strict_duration", "duration_tolerance_s",
    "condition_batch", "decode_threads", "skip_unneeded_frames",
)


@dataclass
class BeamConfig:
    runner: str = "FnApiRunner"  # never the bare DirectRunner: it first tries to download Prism
    options: str = ""  # extra Beam pipeline options, e.g. "--runner=DataflowRunner --project=p"
    num_workers: int = 1  # --direct_num_workers for the local runners
    running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = "in_memory"


@dataclass
class RayConfig:
    address: str | None = None  # None: start a local Ray; "auto" or host:port: join a cluster
    num_cpus: int | None = None  # logical CPUs of a local Ray (None: this machine's cores)
    decode_cpus: float = 1.0  # CPUs reserved per decode task
    pool_size: int = 0  # ConditionModel actors; 0 = auto (GPUs when --use-gpu, else CPUs // 4, >= 1)
    actor_cpus: float = 1.0
    use_gpu: bool = False
    gpus_per_actor: float = 1.0
    max_inflight_batches: int = 0  # batches decoded ahead; 0 = auto (2 per actor + 2)


@dataclass
class IngestConfig:
    """Ingest job settings. Recipes: `default` (`videopoet ingest --config default --input ...`),
    `tiny` (the demo's and the tests' small settings)."""

    input: str = ""
    output: str = ""
    engine: Literal["beam", "ray", "local"] = "beam"
    media: MediaConfig = field(default_factory=MediaConfig)
    batch_size: int = 16  # inputs per work unit (the unit of commit and of resume)
    shard_max_bytes: int = 256 * 2**20  # shards are cut below this (a single larger clip gets its own)
    images_require_caption: bool = True  # an image without caption is useless for text-to-image
    progress: bool = True
    track: bool = True  # log the run in MLflow
    beam: BeamConfig = field(default_factory=BeamConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be >= 1")
        if self.shard_max_bytes < 2**16:
            raise ValueError(f"shard_max_bytes={self.shard_max_bytes}: must be >= 65536")


INGEST_RECIPES: RecipeRegistry[IngestConfig] = RecipeRegistry(IngestConfig)


@INGEST_RECIPES.register
def default() -> IngestConfig:
    """videopoet ingest --config default --engine beam --input DIR --output OUT"""
    return IngestConfig()


@INGEST_RECIPES.register
def tiny() -> IngestConfig:
    """videopoet ingest --config tiny --engine beam --input DIR --output OUT  (few clips per input, small units)"""
    cfg = IngestConfig(batch_size=4, shard_max_bytes=16 * 2**20)
    cfg.media = dataclasses.replace(cfg.media, clips_per_video=2)
    return cfg


# --- engine-neutral pieces -------------------------------------------------------------------

def media_config_hash(media: MediaConfig) -> str:
    plain = to_dict(media)
    for name in _NON_CONTENT_MEDIA_FIELDS:
        plain.pop(name, None)
    return config_hash(plain)


def clip_key(source_sha256: str, window_index: int, start_time_s: float, num_frames: int, fmt: str, media_hash: str) -> str:
    """Content-addressed clip key: same source bytes + window + format + media settings -> same key."""
    text = f"{source_sha256}|w{window_index}|t{start_time_s:.6f}|n{num_frames}|{fmt}|{media_hash}"
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_HEX_CHARS]


@dataclass
class Batch:
    index: int
    inputs: list[InputSpec]


def make_batches(specs: Sequence[InputSpec], batch_size: int) -> list[Batch]:
    return [Batch(i // batch_size, list(specs[i:i + batch_size])) for i in range(0, len(specs), batch_size)]


@dataclass
class DecodedInput:
    """What decoding one input gave: its clips (media.DecodedClip) or the reason it failed."""

    spec: InputSpec
    sha256: str | None = None
    size: int = 0
    clips: list[Any] = field(default_factory=list)
    seconds: float = 0.0  # source duration
    source_fps: float | None = None
    stage: str | None = None  # set when failed
    error_class: str | None = None
    message: str | None = None
    decode_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.stage is None

    def fail(self, stage: str, error_class: str, message: str) -> "DecodedInput":
        self.stage, self.error_class, self.message = stage, error_class, message
        self.clips = []
        return self


def decode_input(spec: InputSpec, cfg: IngestConfig) -> DecodedInput:
    """Hash one input's bytes and decode its clips under the time limit; never raises for bad input."""
    from videopoet.pipeline import media
    from videopoet.pipeline.sources import open_local

    result = DecodedInput(spec=spec)
    t0 = time.perf_counter()
    try:
        if spec.is_image and cfg.images_require_caption and not spec.caption.strip():
            return result.fail("image", "MissingCaption",
                               f"{spec.uri}: an image needs a caption (images_require_caption=true)")
        try:
            with open_local(spec.uri) as (local, result.sha256, result.size):
                try:
                    clips = media.decode_with_timeout(local, cfg.media, spec.is_image)
                except media.MediaError as err:
                    return result.fail(err.stage, err.error_class, str(err.message).replace(local, spec.uri))
                except Exception as err:  # a decoder bug must cost one input, never the job
                    return result.fail("decode", type(err).__name__, f"{spec.uri}: unexpected decoder error ({err})")
        except (OSError, ValueError) as err:  # only open_local's own errors reach here
            return result.fail("open", type(err).__name__, f"{spec.uri}: cannot read ({err})")
        result.clips = list(clips)
        if result.clips:
            result.source_fps = float(result.clips[0].source_fps)
        result.seconds = _source_seconds(result.clips, spec.is_image)
        return result
    finally:
        result.decode_seconds = time.perf_counter() - t0


def _source_seconds(clips: list[Any], is_image: bool) -> float:
    if is_image or not clips:
        return 0.0
    duration = getattr(clips[0], "source_duration_s", None)
    if duration is not None:
        return float(duration)
    # Without a probed duration, count the span the clips cover.
    return max(c.start_time_s + c.num_frames / CLIP_FPS for c in clips)


def load_condition_model(cfg: IngestConfig) -> Any:
    """The media ConditionModel, or None when neither flow nor depth is wanted (no torch import)."""
    if cfg.media.flow == "none" and cfg.media.depth == "none":
        return None
    from videopoet.pipeline.conditions import ConditionModel

    return ConditionModel(cfg.media)


def apply_conditions(model: Any, decoded: list[DecodedInput], chunk: int) -> list[list[Any]]:
    """cond arrays (or None) per clip, per input. A model failure costs only the input(s) it hit."""
    conds: list[list[Any]] = [[None] * len(d.clips) for d in decoded]
    if model is None:
        return conds
    flat = [(i, j) for i, d in enumerate(decoded) if d.ok for j in range(len(d.clips))]
    for start in range(0, len(flat), chunk):
        part = flat[start:start + chunk]
        try:
            out = model([decoded[i].clips[j] for i, j in part])
            for (i, j), c in zip(part, out):
                conds[i][j] = c
        except Exception:
            # Retry input by input so that one bad input does not fail its neighbours.
            for i in sorted({i for i, _ in part}):
                js = [j for ii, j in part if ii == i]
                try:
                    out = model([decoded[i].clips[j] for j in js])
                    for j, c in zip(js, out):
                        conds[i][j] = c
                except Exception as err:
                    d = decoded[i]
                    d.fail("condition", type(err).__name__, f"{d.spec.uri}: condition model failed ({err})")
    return conds


@dataclass
class BatchResult:
    batch: int
    inputs_ok: int = 0
    inputs_failed: int = 0
    clips: int = 0
    seconds: float = 0.0
    shard_bytes: int = 0
    skipped: bool = False  # already committed before this run
    decode_seconds: float = 0.0
    finish_seconds: float = 0.0


def _tar_size(members: list[tuple[str, bytes]]) -> int:
    """Exact size tarfile gives these members (ustar headers, 512 padding, end blocks, 10 KiB records)."""
    body = sum(512 + -(-len(data) // 512) * 512 for _, data in members) + 1024
    return -(-body // 10240) * 10240


def finish_batch(batch: Batch, decoded: list[DecodedInput], model: Any, out: str | Path, cfg: IngestConfig) -> BatchResult:
    """Condition, key, shard and commit one batch (its manifest part is written last)."""
    from videopoet.pipeline.clip_shards import Clip, clip_members, write_tar_atomic

    t0 = time.perf_counter()
    out = Path(out)
    by_id = {d.spec.id: d for d in decoded}
    decoded = [by_id[s.id] for s in batch.inputs]  # engines may hand results back in any order
    mf.clean_batch(out, batch.index)
    conds = apply_conditions(model, decoded, max(1, cfg.media.condition_batch))
    method = dict(getattr(model, "method", {}) or {})
    mhash = media_config_hash(cfg.media)

    input_rows, clip_rows = [], []
    current: list[tuple[str, bytes]] = []
    parts_written = 0
    seen_keys: set[str] = set()
    result = BatchResult(batch=batch.index)

    def flush() -> None:
        # A full part is written at once (atomically) so that a batch never holds more than one
        # shard's bytes; nothing is visible as committed until the manifest part below.
        nonlocal parts_written
        if current:
            result.shard_bytes += write_tar_atomic(out / mf.shard_name(batch.index, parts_written), current)
            parts_written += 1
            current.clear()

    for d, cond_list in zip(decoded, conds):
        s = d.spec
        row = {"kind": "input", "batch": batch.index, "input_id": s.id, "uri": s.uri, "caption": s.caption,
               "sha256": d.sha256, "bytes": d.size, "source_fps": d.source_fps}
        if not d.ok:
            row.update(status="failed", stage=d.stage, error_class=d.error_class, message=d.message,
                       clips=0, seconds=0.0)
            input_rows.append(row)
            result.inputs_failed += 1
            continue
        n_written = 0
        notes_all: list[str] = []
        for dc, cond in zip(d.clips, cond_list):
            key = clip_key(d.sha256, dc.window_index, dc.start_time_s, dc.num_frames, dc.format, mhash)
            if key in seen_keys:  # the same bytes listed twice in one batch
                continue
            seen_keys.add(key)
            has_audio = dc.audio is not None
            notes = list(getattr(dc, "notes", []) or [])
            notes_all.extend(notes)
            meta = {
                "caption": s.caption, "source_id": s.id, "source_uri": s.uri, "source_sha256": d.sha256,
                "source_fps": float(dc.source_fps), "source_frame_indices": [int(i) for i in dc.source_frame_indices],
                "start_time_s": float(dc.start_time_s), "window_index": int(dc.window_index),
                "num_frames": int(dc.num_frames), "fps": CLIP_FPS, "format": dc.format,
                "height": int(dc.rgb.shape[1]), "width": int(dc.rgb.shape[2]),
                "is_image": bool(s.is_image), "has_audio": has_audio,
                "audio_sample_rate": AUDIO_SAMPLE_RATE if has_audio else None,
                "flow": method.get("flow", "none") if cond is not None else "none",
                "depth": method.get("depth", "none") if cond is not None else "none",
                "notes": notes, "pipeline_version": PIPELINE_VERSION, "media_config_hash": mhash,
            }
            if cond is not None:
                meta.update({k: method[k] for k in ("flow_model", "depth_model") if k in method})
            clip = Clip(key=key, rgb=dc.rgb, audio=dc.audio, cond=cond, meta=meta)
            members = clip_members(clip)
            if current and _tar_size(current + members) > cfg.shard_max_bytes:
                flush()
            current.extend(members)
            clip_rows.append({
                "kind": "clip", "batch": batch.index, "input_id": s.id, "uri": s.uri,
                "sha256": d.sha256, "source_fps": float(dc.source_fps), "key": key,
                "shard": mf.shard_name(batch.index, parts_written), "window": int(dc.window_index),
                "num_frames": int(dc.num_frames), "format": dc.format, "start_time_s": float(dc.start_time_s),
                "has_audio": has_audio, "has_cond": cond is not None, "notes": "; ".join(notes),
            })
            n_written += 1
        row.update(status="ok", clips=n_written, seconds=float(d.seconds), notes="; ".join(dict.fromkeys(notes_all)))
        input_rows.append(row)
        result.inputs_ok += 1
        result.clips += n_written
        result.seconds += float(d.seconds)
    flush()
    result.decode_seconds = sum(d.decode_seconds for d in decoded)
    result.finish_seconds = time.perf_counter() - t0
    mf.write_json_atomic(mf.timings_path(out, batch.index), {
        "batch": batch.index, "finish_seconds": result.finish_seconds,
        "decode_seconds": {d.spec.id: d.decode_seconds for d in decoded},
    })
    mf.write_part(out, batch.index, input_rows + clip_rows)  # the commit marker: always last
    return result


def process_batch(batch: Batch, cfg: IngestConfig, model: Any, out: str | Path) -> BatchResult:
    """Decode every input of `batch` in this process, then finish it (the local and Beam path)."""
    if mf.is_committed(Path(out), batch.index):
        return result_from_part(out, batch.index)
    decoded = [decode_input(spec, cfg) for spec in batch.inputs]
    return finish_batch(batch, decoded, model, out, cfg)


def result_from_part(out: str | Path, batch: int) -> BatchResult:
    """Counts of a committed batch, read back from its manifest part."""
    rows = mf.read_manifest(mf.part_path(Path(out), batch)).to_pylist()
    inputs = [r for r in rows if r["kind"] == "input"]
    return BatchResult(
        batch=batch, skipped=True,
        inputs_ok=sum(r["status"] == "ok" for r in inputs),
        inputs_failed=sum(r["status"] == "failed" for r in inputs),
        clips=sum(r["kind"] == "clip" for r in rows),
        seconds=sum(r["seconds"] or 0.0 for r in inputs if r["status"] == "ok"),
    )


# --- plan, progress, summary -----------------------------------------------------------------

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


def check_or_write_plan(out: Path, plan: dict[str, Any]) -> None:
    """A rerun must see the same inputs and content settings, or resuming would mix two jobs."""
    path = out / mf.PLAN_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in plan if old.get(k) != plan[k])
        if diff:
            raise ConfigError(
                f"output={out}: already holds a job with other {', '.join(diff)}; "
                "rerun with the same inputs and settings, or use a new --output"
            )
        return
    mf.write_json_atomic(path, plan)


class Progress:
    """tqdm over inputs with clips, failures and rates; always keeps the counts."""

    def __init__(self, total_inputs: int, enabled: bool, desc: str = "ingest"):
        self.t0 = time.perf_counter()
        self.ok = self.failed = self.clips = self.new_clips = 0
        self.seconds = 0.0
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total_inputs, unit="input", desc=desc, dynamic_ncols=True, file=sys.stderr)

    def update(self, r: BatchResult) -> None:
        self.ok += r.inputs_ok
        self.failed += r.inputs_failed
        self.clips += r.clips
        self.seconds += r.seconds
        if not r.skipped:
            self.new_clips += r.clips
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix(clips=self.clips, failed=self.failed, clips_s=f"{self.new_clips / elapsed:.1f}", refresh=False)
            self.bar.update(r.inputs_ok + r.inputs_failed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summarize(out: Path, cfg: IngestConfig, num_batches: int, wall_s: float, new_clips: int, results: list[BatchResult]) -> dict[str, Any]:
    """Merge the manifest parts and write summary.json (timings live here, never in the manifest)."""
    import pyarrow.compute as pc

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
    cores = _cores(cfg)
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
    }
    mf.write_json_atomic(out / mf.SUMMARY_FILE, summary)
    return summary


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


def _cores(cfg: IngestConfig) -> int:
    import os

    if cfg.engine == "ray" and cfg.ray.num_cpus:
        return cfg.ray.num_cpus
    if cfg.engine == "beam" and cfg.beam.running_mode != "in_memory":
        return max(1, cfg.beam.num_workers)
    if cfg.engine in ("local",) or (cfg.engine == "beam" and cfg.beam.running_mode == "in_memory"):
        return 1
    return os.cpu_count() or 1


def summary_line(s: dict[str, Any]) -> str:
    return (f"ingest: {s['inputs_ok']} inputs ok, {s['inputs_failed']} failed, {s['clips']} clips "
            f"({s['clips_this_run']} new), {s['hours_of_video']:.3f} h of video, "
            f"{s['clips_per_s']:.2f} clips/s ({s['clips_per_s_per_core']:.2f}/core) in {s['wall_seconds']:.1f} s")


def run_ingest(cfg: IngestConfig, *, specs: list[InputSpec] | None = None) -> dict[str, Any]:
    """Run the whole job with `cfg.engine`; returns the summary (also written to summary.json)."""
    from videopoet.pipeline import engines

    if not cfg.output:
        raise ConfigError("output='': give --output DIR")
    out = Path(cfg.output).resolve()
    if specs is None:
        try:
            specs = discover_inputs(cfg.input)
        except SourceError as err:
            raise ConfigError(str(err)) from None
    out.mkdir(parents=True, exist_ok=True)
    check_or_write_plan(out, _plan(cfg, specs))
    batches = make_batches(specs, cfg.batch_size)
    t0 = time.perf_counter()
    progress = Progress(len(specs), cfg.progress, desc=f"ingest[{cfg.engine}]")
    results: list[BatchResult] = []
    try:
        todo = []
        for b in batches:
            if mf.is_committed(out, b.index):
                r = result_from_part(out, b.index)
                results.append(r)
                progress.update(r)
            else:
                todo.append(b)
        runner: Callable[..., list[BatchResult]] = {
            "local": engines.run_local, "beam": engines.run_beam, "ray": engines.run_ray,
        }[cfg.engine]
        results.extend(runner(todo, cfg, out, progress))
    finally:
        progress.close()
    wall = time.perf_counter() - t0
    summary = summarize(out, cfg, len(batches), wall, progress.new_clips, results)
    print(summary_line(summary), flush=True)
    if cfg.track:
        _track(cfg, summary, out)
    return summary


def _track(cfg: IngestConfig, summary: dict[str, Any], out: Path) -> None:
    import mlflow

    from videopoet.tracking import start_run

    with start_run("ingest", cfg, tags={"engine": cfg.engine}):
        mlflow.log_metrics({k: float(summary[k]) for k in (
            "inputs", "inputs_ok", "inputs_failed", "clips", "clips_this_run", "hours_of_video",
            "wall_seconds", "clips_per_s", "clips_per_s_per_core", "duplicate_keys")})
        mlflow.log_artifact(str(out / mf.SUMMARY_FILE))


# --- CLI ---------------------------------------------------------------------------------------

def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="videos/images -> clip shards + Parquet manifest (Beam, Ray or local; exactly once)",
        description="Decode videos and captioned images into 8 fps clip shards with audio and "
        "flow/depth conditions, on Beam or Ray. Rerunning into the same --output resumes. "
        "Trailing key=value arguments override the config (e.g. media.flow=none batch_size=32).",
    )
    p.add_argument("--config", default="default", help=f"recipe ({', '.join(INGEST_RECIPES.names())}) or YAML file")
    p.add_argument("--input", help="directory, glob, fsspec URL, or manifest CSV/JSONL/Parquet (path[,caption][,id])")
    p.add_argument("--output", help="output directory (shards/, manifest/, manifest.parquet, summary.json)")
    p.add_argument("--batch-size", type=int, help="inputs per work unit (unit of commit/resume)")
    p.add_argument("--flow", choices=["dis", "raft", "none"], help="optical flow for the condition video")
    p.add_argument("--depth", choices=["midas", "none"], help="depth for the condition video")
    add_engine_arguments(p, num_cpus_help="logical CPUs of a local Ray; worker processes of a local Beam runner",
                         use_gpu_help="run the condition models on GPU actors (Ray)")
    p.set_defaults(func=_main)


def config_from_args(args: argparse.Namespace) -> IngestConfig:
    flags = (as_override("input", args.input) + as_override("output", args.output)
             + as_override("batch_size", args.batch_size) + as_override("media.flow", args.flow)
             + as_override("media.depth", args.depth) + engine_overrides(args, beam_processes_for_cpus=True))
    return INGEST_RECIPES.get(args.config, list(args.overrides) + flags)


def _main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if not cfg.input:
        raise ConfigError("input='': give --input (a directory, glob, URL or manifest)")
    run_ingest(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m videopoet.pipeline.ingest ARGS` == `videopoet ingest ARGS` (this job's parser only)."""
    parser = argparse.ArgumentParser(prog="videopoet")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ingest", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"videopoet ingest: config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run through the imported module, not __main__: configs pickled to Beam/Ray workers must
    # name classes those workers can import.
    from videopoet.pipeline.ingest import main as _main

    sys.exit(_main())
