"""`videopoet eval generate`: a protocol's samples from the LM and their metric features, as a resumable data job.

    videopoet eval generate --protocol msrvtt_t2v --data /data/msrvtt --checkpoint runs/lm/export \
        --video-tokenizer ckpt/magvit2 --clip /models/clip-vit-base-patch16 --out evals/msrvtt_step20k
    videopoet eval generate --protocol ucf101_t2v --data /data/ucf101 --generated my_mp4s/ --c3d c3d.npz --out ...

The job (videopoet.jobs protocol; local, Beam or Ray with GPU actors through --use-gpu) has two kinds of units:
- gen units: `unit_size` examples of videopoet.eval.protocols.list_examples in index order. Per unit the examples
  are decoded (one Ray task each: the condition clip, and the paired real clip when the protocol has no separate
  real set), then the actor generates them with the LM (trainer.sampling.generate, batched, every example seeded
  by (protocol.seed, example index) through `row_seeds`, so a sample never depends on the engine, the worker
  count or the batch it lands in), decodes them with MAGVIT-v2, resizes them to the protocol's size (bicubic)
  and extracts I3D logits (eval/fvd.py), CLIPSIM (--clip) and C3D class probabilities (--c3d). With
  --generated DIR the LM is skipped: sample i is DIR/<i:06d>.mp4 (or DIR/<example key>.mp4).
- real units: the FVD real set (protocols.list_real) when the protocol has one (MSR-VTT, UCF-101): I3D logits of
  `unit_size` real clips. Skipped (committed empty) when the real-set statistics are already cached
  (eval_score.real_stats_key: protocol fields that define the real set, the real clips' keys, the I3D hash).

Output (the data-job layout, videopoet.jobs.commit):
    plan.json                          protocol record, models and their hashes, sampling settings, units
    shards/shard-BBBBBB-features.npz   unit B's features (plain arrays, allow_pickle=False): index, group, ok,
                                       i3d [n, 400] float64, clipsim [n], c3d [n, 101]; real units: real_* arrays
    videos/sample-IIIIII.mp4           the first `preview` generated samples, for looking at
    manifest/part-BBBBBB.parquet       one row per example (ok or failed with the reason), LAST: commits unit B
    summary.json                       counts and timings; `videopoet eval score --run OUT` computes the scores
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch

from videopoet.checkpoint import read_meta
from videopoet.config import ConfigError, UsageError, apply_overrides
from videopoet.eval import eval_score
from videopoet.eval.eval_sampling import generate_samples
from videopoet.eval.eval_score import features_path
from videopoet.eval.protocols import (
    Example,
    ExampleRef,
    Protocol,
    decode_real,
    get_protocol,
    list_examples,
    list_real,
    load_example,
)
from videopoet.jobs import commit
from videopoet.jobs.cli_args import engine_overrides
from videopoet.jobs.config import EngineConfig
from videopoet.jobs.protocol import DataJob
from videopoet.jobs.run import run_job
from videopoet.paths import output_dir
from videopoet.tracking import Tracker

EVAL_JOB_VERSION = 1
VIDEOS_DIR = "videos"


@dataclass
class EvalGenerateConfig(EngineConfig):
    """`videopoet eval generate` settings (engine keys: videopoet.jobs.config.EngineConfig)."""

    protocol: str = ""
    data: str = ""  # the dataset's local copy, in its own layout (eval/datasets.py)
    out: str = ""
    checkpoint: str = ""  # consolidated LM export (videopoet-lm)
    generated: str = ""  # instead of the LM: a folder of generated .mp4 (<index:06d>.mp4 or <example key>.mp4)
    video_tokenizer: str = ""
    text_encoder: str = ""  # "" = the embedded MiniLM (must be the encoder the LM was trained with)
    clip: str = ""  # transformers CLIPModel directory (CLIPSIM)
    c3d: str = ""  # C3D weights file (IS)
    c3d_mean: str = ""  # TGAN2's mean2.npz when the weights file carries no mean clip
    cache_dir: str = ""  # real-set statistics cache; "" = $VIDEOPOET_CACHE or ~/.cache/videopoet, /real_stats
    num_samples: int = 0  # 0: the protocol's; else N per metric group (and N real clips when it has a real set)
    repeats: int = 0  # 0: the protocol's
    unit_size: int = 8  # examples per unit (a unit is the unit of commit and resume)
    batch_size: int = 8  # LM rows per generate() call
    feature_batch: int = 8  # clips per I3D / C3D forward
    preview: int = 4  # generated samples also written as videos/sample-IIIIII.mp4
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float | None = None
    device: str = "auto"  # auto: cuda when the worker has one
    torch_threads: int = 0  # intra-op threads on every worker; 0 = the driver's torch default (resolved once)
    overrides: list[str] = field(default_factory=list)  # protocol field overrides, field=value

    def validate(self) -> None:
        for name in ("unit_size", "batch_size", "feature_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.num_samples < 0 or self.repeats < 0 or self.preview < 0 or self.torch_threads < 0:
            raise ValueError("num_samples, repeats, preview and torch_threads must be >= 0")


# --- the protocol as run ------------------------------------------------------------------------------


def resolve_protocol(name: str, num_samples: int = 0, repeats: int = 0, overrides: Sequence[str] = ()) -> Protocol:
    """The named protocol with --num-samples / --repeats / field=value overrides applied.

    --num-samples N sets N per metric group, N real clips when the protocol has a separate real set (equal N on
    both sides, as the paper's protocols), and generates exactly N x repeats examples (MSR-VTT's all-captions
    CLIPSIM set is the protocol default only)."""
    protocol = get_protocol(name)
    kw: dict[str, Any] = {}
    if num_samples:
        kw.update(num_samples=num_samples, generate=0)
        if protocol.real_split:
            kw["real_samples"] = num_samples
    if repeats:
        kw.update(repeats=repeats, generate=0)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{item!r}: protocol overrides are field=value")
        kw[key] = json.loads(value) if value[:1] in "[{\"0123456789-" or value in ("true", "false") else value
    return protocol.with_overrides(**kw) if kw else protocol


def metric_group(protocol: Protocol, index: int) -> int:
    """The FVD / IS group of example `index` (groups of num_samples in index order); -1: outside every group."""
    return index // protocol.num_samples if index < protocol.num_samples * protocol.repeats else -1


def example_seed(protocol: Protocol, index: int) -> int:
    """The sampling seed of example `index`: a function of (protocol.seed, index) only."""
    return int(np.random.SeedSequence([protocol.seed, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


# --- units ------------------------------------------------------------------------------------------------


@dataclass
class EvalUnit:
    index: int
    kind: str  # "gen" | "real"
    refs: list[ExampleRef]
    groups: list[int]  # per ref: metric group (gen) or real group (real)


@dataclass
class Prepared:
    ref: ExampleRef
    example: Example | None = None  # gen: the decoded example
    real: np.ndarray | None = None  # real units: the real clip
    generated: np.ndarray | None = None  # --generated: the clip read from disk
    error: str = ""


@dataclass
class EvalUnitResult:
    index: int
    kind: str
    ok: int = 0
    failed: int = 0
    real_clips: int = 0
    skipped: bool = False
    seconds: float = 0.0


_MODELS: dict[tuple, "Models"] = {}


@dataclass
class Models:
    device: str
    lm: Any = None
    vt: Any = None
    text: Any = None
    i3d: Any = None
    clip: Any = None
    c3d: Any = None


def _read_mp4(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def to_protocol_clip(protocol: Protocol, rgb: np.ndarray) -> np.ndarray:
    """A generated clip as the metrics take it: its first `frames` frames at the protocol's size (bicubic)."""
    from videopoet.pipeline.media import resize_crop

    clip = rgb[: protocol.frames]
    w, h = protocol.size
    if clip.shape[1:3] != (h, w):
        clip = np.stack([resize_crop(img, w, h) for img in clip])
    return np.ascontiguousarray(clip)


class EvalJob(DataJob[EvalUnit, EvalUnitResult]):
    """Generate (or read) a protocol's samples and extract their metric features, unit by unit."""

    name = "eval-generate"
    progress_unit = "unit"
    rate_of = "ok"
    driver_only = ("_examples", "_real")

    def __init__(self, cfg: EvalGenerateConfig, out: Path, protocol: Protocol, examples: list[ExampleRef],
                 real: list[ExampleRef], ident: dict[str, Any], real_key: str, real_cached: bool):
        super().__init__(cfg, out)
        self.protocol = protocol
        self.ident = ident
        self.real_key = real_key
        self.real_cached = real_cached
        self._examples = examples
        self._real = real

    # --- driver ---
    def units(self) -> list[EvalUnit]:
        size = self.cfg.unit_size
        units: list[EvalUnit] = []
        for s in range(0, len(self._examples), size):
            refs = self._examples[s:s + size]
            units.append(EvalUnit(len(units), "gen", refs, [metric_group(self.protocol, r.index) for r in refs]))
        for s in range(0, len(self._real), size):
            refs = self._real[s:s + size]
            units.append(EvalUnit(len(units), "real", refs, [0] * len(refs)))
        return units

    def plan(self, units: Sequence[EvalUnit]) -> dict[str, Any]:
        listing = [[u.kind, [[r.index, r.key, r.start_frame] for r in u.refs]] for u in units]
        return {
            "eval_job_version": EVAL_JOB_VERSION, "protocol": self.protocol.record(),
            "units": len(units), "gen_units": sum(u.kind == "gen" for u in units),
            "examples": len(self._examples), "real_clips": len(self._real),
            "units_sha256": eval_score.sha256_json(listing), "real_stats_key": self.real_key,
            "sampling": {"temperature": self.cfg.temperature, "top_k": self.cfg.top_k, "top_p": self.cfg.top_p,
                         "cfg_scale": self.cfg.cfg_scale},
            **self.ident,
        }

    def progress_counts(self, r: EvalUnitResult) -> tuple[int, dict[str, int]]:
        return 1, {"ok": r.ok, "failed": r.failed, "real": r.real_clips}

    # --- workers ---
    def setup(self) -> Models:
        """The models, once per process (Beam may build several DoFns in one worker; in-process reruns share them)."""
        cfg = self.cfg
        if cfg.torch_threads and torch.get_num_threads() != cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda":  # the same features on every run and worker: no autotuned kernels
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        if not cfg.generated and read_meta(cfg.checkpoint).get("content_hash", "") != self.ident.get("lm_sha256"):
            raise ConfigError(f"--checkpoint {cfg.checkpoint}: replaced since the job was planned (other weights hash)")
        key = (device, json.dumps(self.ident, sort_keys=True), cfg.checkpoint, cfg.video_tokenizer, cfg.text_encoder,
               cfg.clip, cfg.c3d, cfg.c3d_mean, self.protocol.task, tuple(self.protocol.metrics))
        if key not in _MODELS:
            _MODELS.clear()  # one set at a time: a process that evaluates another checkpoint frees the last
            _MODELS[key] = self._load(device)
        return _MODELS[key]

    def _load(self, device: str) -> Models:
        cfg = self.cfg
        from videopoet.eval.fvd import load_i3d

        m = Models(device=device, i3d=load_i3d(device))
        if not cfg.generated:
            from videopoet.tokenizers.magvit2 import VideoTokenizer
            from videopoet.trainer.sampling import load_lm

            m.lm = load_lm(cfg.checkpoint, device=device)
            m.vt = VideoTokenizer.load(cfg.video_tokenizer, device=device).eval()
            from videopoet.pipeline.tasks import TASKS

            if TASKS[self.protocol.task].text != "none":
                from videopoet.tokenizers.text_encoder import TextEncoder

                m.text = TextEncoder(cfg.text_encoder or None, device=device)
        if cfg.clip and "clipsim" in self.protocol.metrics:
            from videopoet.eval.clip_score import load_clip

            m.clip = load_clip(cfg.clip, device)
        if cfg.c3d and "is" in self.protocol.metrics:
            from videopoet.eval.c3d import load_c3d

            m.c3d = load_c3d(cfg.c3d, device, cfg.c3d_mean or None)
        return m

    def items(self, unit: EvalUnit) -> list[tuple[str, ExampleRef]]:
        if unit.kind == "real" and self.real_cached:
            return []
        return [(unit.kind, r) for r in unit.refs]

    def prepare(self, item: tuple[str, ExampleRef]) -> Prepared:
        kind, ref = item
        try:
            if kind == "real":
                return Prepared(ref, real=decode_real(self.protocol, ref))
            p = Prepared(ref, example=load_example(self.protocol, ref))
            if self.cfg.generated:
                folder = Path(self.cfg.generated)
                path = next((q for q in (folder / f"{ref.index:06d}.mp4", folder / f"{ref.key}.mp4") if q.is_file()),
                            None)
                if path is None:
                    raise FileNotFoundError(f"--generated {folder}: no {ref.index:06d}.mp4 or {ref.key}.mp4")
                p.generated = _read_mp4(path)
                if p.generated.shape[0] < self.protocol.frames:
                    raise ValueError(f"{path}: {p.generated.shape[0]} frames, the protocol needs "
                                     f"{self.protocol.frames}")
            return p
        except Exception as err:  # bad data is a failed row, never a failed unit
            return Prepared(ref, error=f"{type(err).__name__}: {' '.join(str(err).split())}")

    def prepare_failed(self, item: tuple[str, ExampleRef], err: BaseException) -> Prepared:
        return Prepared(item[1], error=f"prepare task died: {type(err).__name__}: {err}")

    def commit_unit(self, unit: EvalUnit, prepared: list[Prepared], m: Models) -> EvalUnitResult:
        t0 = time.perf_counter()
        commit.clean_unit(self.out, unit.index)
        if unit.kind == "real":
            return self._commit_real(unit, prepared, m, t0)
        return self._commit_gen(unit, prepared, m, t0)

    def _i3d(self, clips: list[np.ndarray], m: Models) -> np.ndarray:
        from videopoet.eval.fvd import i3d_features

        if not clips:
            return np.zeros((0, 400), np.float64)
        return i3d_features(np.stack(clips), m.i3d, batch_size=self.cfg.feature_batch, device=m.device)

    def _commit_real(self, unit: EvalUnit, prepared: list[Prepared], m: Models, t0: float) -> EvalUnitResult:
        arrays: dict[str, np.ndarray] = {"real_cached": np.array(self.real_cached)}
        rows = []
        if not self.real_cached:
            good = [p for p in prepared if not p.error]
            arrays.update(real_index=np.array([p.ref.index for p in good], np.int64),
                          real_group=np.zeros(len(good), np.int64),
                          real_i3d=self._i3d([p.real for p in good], m))
            rows = [self._row(unit, p.ref, 0, p.error) for p in prepared]
        self._write(unit, arrays, rows)
        failed = sum(bool(r["error"]) for r in rows)
        return EvalUnitResult(unit.index, "real", real_clips=len(rows) - failed, failed=failed,
                              seconds=time.perf_counter() - t0)

    def _commit_gen(self, unit: EvalUnit, prepared: list[Prepared], m: Models, t0: float) -> EvalUnitResult:
        protocol = self.protocol
        good = [p for p in prepared if not p.error]
        clips = self._generate(good, m) if not self.cfg.generated else [p.generated for p in good]
        clips = [to_protocol_clip(protocol, c) for c in clips]
        group_of = dict(zip((r.index for r in unit.refs), unit.groups))
        arrays: dict[str, np.ndarray] = {
            "index": np.array([p.ref.index for p in good], np.int64),
            "group": np.array([group_of[p.ref.index] for p in good], np.int64),
            "real_cached": np.array(self.real_cached),
        }
        if "fvd" in protocol.metrics:
            arrays["i3d"] = self._i3d(clips, m)
        if not protocol.real_split and "fvd" in protocol.metrics and not self.real_cached:
            paired = [p for p in good if p.example is not None and p.example.real is not None]
            arrays.update(real_index=np.array([p.ref.index for p in paired], np.int64),
                          real_group=np.array([group_of[p.ref.index] for p in paired], np.int64),
                          real_i3d=self._i3d([p.example.real for p in paired], m))
        if m.clip is not None:
            arrays["clipsim"] = np.asarray(m.clip.clipsim(np.stack(clips), [p.ref.caption for p in good])
                                           if clips else np.zeros(0), np.float64)
        if m.c3d is not None:
            from videopoet.eval.c3d import c3d_probs

            arrays["c3d"] = (np.asarray(c3d_probs(np.stack(clips), m.c3d, self.cfg.feature_batch), np.float64)
                             if clips else np.zeros((0, 101)))
        for p, clip in zip(good, clips):
            if p.ref.index < self.cfg.preview:
                self._write_video(p.ref.index, clip)
        rows = [self._row(unit, p.ref, group_of[p.ref.index], p.error) for p in prepared]
        self._write(unit, arrays, rows)
        failed = len(prepared) - len(good)
        return EvalUnitResult(unit.index, "gen", ok=len(good), failed=failed,
                              real_clips=int(arrays.get("real_index", np.zeros(0)).size),
                              seconds=time.perf_counter() - t0)

    def _generate(self, good: list[Prepared], m: Models) -> list[np.ndarray]:
        """LM samples (uint8 [17, H, W, 3]) of the examples (videopoet.eval.eval_sampling)."""
        requests = [(p.ref, p.example.condition if p.example is not None else None) for p in good]
        return generate_samples(self.protocol, self.cfg, requests, [example_seed(self.protocol, p.ref.index)
                                                                    for p in good], m)

    def _row(self, unit: EvalUnit, ref: ExampleRef, group: int, error: str) -> dict[str, Any]:
        return {"unit": unit.index, "kind": unit.kind, "index": ref.index, "key": ref.key, "caption": ref.caption,
                "label": ref.label, "group": group, "status": "failed" if error else "ok", "error": error}

    def _write_video(self, index: int, clip: np.ndarray) -> None:
        from videopoet.pipeline.media.writer import write_mp4

        path = self.out / VIDEOS_DIR / f"sample-{index:06d}.mp4"
        tmp = path.with_name(f"sample-{index:06d}.tmp.mp4")
        write_mp4(tmp, clip, fps=self.protocol.fps)
        os.replace(tmp, path)

    def _write(self, unit: EvalUnit, arrays: dict[str, np.ndarray], rows: list[dict[str, Any]]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        commit.write_bytes_atomic(features_path(self.out, unit.index), buf.getvalue())
        schema = pa.schema([("unit", pa.int64()), ("kind", pa.string()), ("index", pa.int64()), ("key", pa.string()),
                            ("caption", pa.string()), ("label", pa.int64()), ("group", pa.int64()),
                            ("status", pa.string()), ("error", pa.string())])
        table = pa.Table.from_pylist(rows, schema=schema)
        commit.write_bytes_atomic(commit.part_path(self.out, unit.index), commit.parquet_bytes(table))

    def result_from_part(self, index: int) -> EvalUnitResult:
        import pyarrow.parquet as pq

        rows = pq.read_table(commit.part_path(self.out, index)).to_pylist()
        with np.load(features_path(self.out, index), allow_pickle=False) as z:
            kind = "real" if "index" not in z.files else "gen"
            real = int(z["real_index"].size) if "real_index" in z.files else 0
        failed = sum(r["status"] == "failed" for r in rows)
        ok = len(rows) - failed if kind == "gen" else 0
        return EvalUnitResult(index, kind, ok=ok, failed=failed, real_clips=real, skipped=True)

    def summarize(self, units: Sequence[EvalUnit], results: list[EvalUnitResult], wall_s: float) -> dict[str, Any]:
        fresh = [r for r in results if not r.skipped]
        summary = {
            "protocol": self.protocol.name, "units": len(units), "units_this_run": len(fresh),
            "examples": len(self._examples), "ok": sum(r.ok for r in results),
            "failed": sum(r.failed for r in results), "real_clips": sum(r.real_clips for r in results),
            "real_stats_cached": self.real_cached, "wall_seconds": wall_s,
            "samples_per_s": sum(r.ok for r in fresh) / max(wall_s, 1e-9),
        }
        # the real-set statistics once every unit holds its real features: later runs read the cache
        try:
            source = eval_score.ensure_real_stats(self.out, self.cfg.cache_dir or None)[1]
            summary["real_stats"] = source
        except UsageError as err:
            summary["real_stats"] = f"unavailable: {err}"
        commit.write_json_atomic(self.out / commit.SUMMARY_FILE, summary)
        return summary

    def summary_line(self, s: dict[str, Any]) -> str:
        return (f"eval generate {s['protocol']}: {s['ok']} samples ok, {s['failed']} failed, {s['real_clips']} real "
                f"clips ({s['units_this_run']}/{s['units']} units this run) in {s['wall_seconds']:.1f} s; "
                f"real-set statistics: {s['real_stats']}; score with `videopoet eval score --run {self.out}`")

    def track(self, tracker: Tracker, summary: dict[str, Any]) -> None:
        tracker.log_metrics({k: float(summary[k]) for k in ("ok", "failed", "real_clips", "wall_seconds",
                                                            "samples_per_s")}, step=0)
        tracker.log_artifact(self.out / commit.PLAN_FILE)
        tracker.log_artifact(self.out / commit.SUMMARY_FILE)


# --- building and running ---------------------------------------------------------------------------------


def _need_dir(path: str, flag: str) -> str:
    if not path:
        raise UsageError(f"{flag}: missing")
    if not Path(path).is_dir():
        raise UsageError(f"{flag} {path}: no such directory")
    return str(Path(path).resolve())


def model_identity(cfg: EvalGenerateConfig, protocol: Protocol) -> dict[str, Any]:
    """What made the samples and features (recorded in plan.json, so a rerun never mixes models)."""
    from videopoet.eval.i3d_weights import CKPT_SHA256

    ident: dict[str, Any] = {"i3d_sha256": CKPT_SHA256, "clip_sha256": "", "c3d_sha256": ""}
    if cfg.generated:
        ident.update(generated=str(Path(cfg.generated).resolve()))
    else:
        from videopoet.trainer.sampling import trained_tasks

        meta = read_meta(cfg.checkpoint)
        if meta.get("kind") != "videopoet-lm":
            raise UsageError(f"--checkpoint {cfg.checkpoint}: a {meta.get('kind')!r} checkpoint, expected a "
                             "videopoet-lm export")
        tasks = trained_tasks(cfg.checkpoint)
        if tasks is not None and protocol.task not in tasks:
            raise UsageError(f"--checkpoint {cfg.checkpoint}: not trained on task {protocol.task!r} (protocol "
                             f"{protocol.name}; its tasks: {', '.join(tasks)})")
        # hashes, not paths: the same checkpoints copied elsewhere resume the same job
        ident.update(lm_sha256=meta.get("content_hash", ""),
                     lm_step=(meta.get("extra") or {}).get("step"),
                     video_tokenizer_sha256=read_meta(cfg.video_tokenizer).get("content_hash", ""),
                     text_encoder_sha256="")
        from videopoet.pipeline.tasks import TASKS

        if TASKS[protocol.task].text != "none":
            from videopoet.tokenizers.text_encoder import embedded_model_dir, weights_hash

            ident["text_encoder_sha256"] = weights_hash(Path(cfg.text_encoder) if cfg.text_encoder
                                                        else embedded_model_dir())
    if cfg.clip and "clipsim" in protocol.metrics:
        from videopoet.eval.clip_score import _weight_files
        from videopoet.eval.weights_errors import sha256_files

        clip = Path(cfg.clip)
        ident["clip_sha256"] = sha256_files([clip] if clip.is_file() else _weight_files(clip))
    if cfg.c3d and "is" in protocol.metrics:
        from videopoet.checkpoint import file_sha256

        ident["c3d_sha256"] = file_sha256(Path(cfg.c3d))
    return ident


def build_job(cfg: EvalGenerateConfig) -> EvalJob:
    cfg.validate()
    protocol = resolve_protocol(cfg.protocol, cfg.num_samples, cfg.repeats, cfg.overrides)
    if not cfg.data:
        raise UsageError("--data: missing; give the dataset's local copy")
    if not Path(cfg.data).exists():
        raise UsageError(f"--data {cfg.data}: no such file or directory")
    if cfg.generated:
        cfg.generated = _need_dir(cfg.generated, "--generated")
    else:
        cfg.checkpoint = _need_dir(cfg.checkpoint, "--checkpoint")
        cfg.video_tokenizer = _need_dir(cfg.video_tokenizer, "--video-tokenizer")
    if cfg.clip:
        if not Path(cfg.clip).exists():
            raise UsageError(f"--clip {cfg.clip}: no such directory or file")
        cfg.clip = str(Path(cfg.clip).resolve())
    if cfg.c3d and not Path(cfg.c3d).is_file():
        raise UsageError(f"--c3d {cfg.c3d}: no such file")
    if cfg.torch_threads == 0:
        # resolved once here so that every worker of every engine computes with the same thread count
        cfg = dataclasses.replace(cfg, torch_threads=torch.get_num_threads())
    out = output_dir(cfg.out, "--out").resolve()
    examples = list_examples(protocol, cfg.data)
    real = list_real(protocol, cfg.data) if protocol.real_split and "fvd" in protocol.metrics else []
    ident = model_identity(cfg, protocol)
    key = eval_score.real_stats_key(protocol, ident["i3d_sha256"], real if protocol.real_split else examples)
    cached = "fvd" in protocol.metrics and eval_score.cache_path(cfg.cache_dir or None, key).is_file()
    return EvalJob(cfg, out, protocol, examples, real, ident, key, cached)


def run_generate(cfg: EvalGenerateConfig) -> dict[str, Any]:
    return run_job(build_job(cfg))


def config_from_args(args: argparse.Namespace) -> EvalGenerateConfig:
    cfg = EvalGenerateConfig(
        protocol=args.protocol, data=args.data, out=args.out, checkpoint=args.checkpoint or "",
        generated=args.generated or "", video_tokenizer=args.video_tokenizer or "",
        text_encoder=args.text_encoder or "", clip=args.clip or "", c3d=args.c3d or "",
        c3d_mean=args.c3d_mean or "", cache_dir=args.cache_dir or "", num_samples=args.num_samples or 0,
        repeats=args.repeats or 0, engine="local")
    if args.temperature is not None:
        cfg.temperature = args.temperature
    if args.top_k is not None:
        cfg.top_k = args.top_k
    if args.top_p is not None:
        cfg.top_p = args.top_p
    cfg.cfg_scale = args.cfg_scale
    if args.generated and args.checkpoint:
        raise UsageError("--generated and --checkpoint: give one (score videos made elsewhere, or generate them)")
    if not args.generated and not args.checkpoint:
        raise UsageError("give --checkpoint LM_EXPORT (with --video-tokenizer) or --generated DIR_OF_MP4")
    if args.checkpoint and not args.video_tokenizer:
        raise UsageError("--checkpoint needs --video-tokenizer (the MAGVIT-v2 the LM's tokens come from)")
    overrides = list(args.overrides or []) + engine_overrides(args)
    protocol_overrides = [o[len("protocol."):] for o in overrides if o.startswith("protocol.")]
    cfg = apply_overrides(cfg, [o for o in overrides if not o.startswith("protocol.")])
    cfg.overrides = protocol_overrides
    try:
        cfg.validate()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return cfg


def run_from_args(args: argparse.Namespace) -> int:
    """`videopoet eval generate ARGS` (arguments: videopoet.eval.eval_cli)."""
    run_generate(config_from_args(args))
    return 0
