"""One ingest batch: decode its inputs, run the ConditionModel, key, shard and commit it.

The engine-neutral work of the ingest job (videopoet.pipeline.ingest runs it on every engine):
  decode_input(spec, cfg)        hash the bytes, decode under the time limit -> DecodedInput
  finish_batch(...)              ConditionModel on the clips, content-addressed keys, shards, and
                                 the batch's manifest part LAST (the commit marker)
Keys, shard cuts and manifest rows depend only on the inputs and the config, so every engine and a
killed-and-rerun job write the same bytes (docs/architecture.md, "Ingest").
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from videopoet.config import config_hash, to_dict
from videopoet.pipeline import manifest as mf
from videopoet.pipeline import media
from videopoet.pipeline.clip_shards import Clip, clip_members, write_tar_atomic
from videopoet.pipeline.conditions import ConditionModel
from videopoet.pipeline.ingest_config import IngestConfig
from videopoet.pipeline.media import MediaConfig
from videopoet.pipeline.media.config import LM_FORMATS
from videopoet.pipeline.sources import InputSpec, open_local

# Bump when decoding/selection semantics change in a way that changes clip bytes.
# 2: libswscale area resize; 3: frame times by presentation order; 4: full-chroma planar RGB from libswscale,
# audio mixed to mono before resampling; 5: PyAV scales only each format's source box (decord's and the
# images' box, offsets on the chroma grid) (docs/formats.md)
PIPELINE_VERSION = 5
KEY_HEX_CHARS = 32  # 128 bits of sha256: collisions are not a practical concern
AUDIO_SAMPLE_RATE = 16_000
CLIP_FPS = 8
# Media settings that never change what a clip contains (they only decide whether it fails).
_NON_CONTENT_MEDIA_FIELDS = (
    "decode_timeout_s", "max_pixels", "min_side", "strict_duration", "duration_tolerance_s",
    "condition_batch", "decode_threads", "skip_unneeded_frames",
)



def media_config_hash(media: MediaConfig) -> str:
    plain = to_dict(media)
    for name in _NON_CONTENT_MEDIA_FIELDS:
        plain.pop(name, None)
    return config_hash(plain)


def clip_key(source_sha256: str, window_index: int, start_time_s: float, num_frames: int, fmt: str,
             media_hash: str) -> str:
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
    """The ConditionModel, or None when neither flow nor depth is wanted (then no torch import)."""
    if cfg.media.flow == "none" and cfg.media.depth == "none":
        return None
    return ConditionModel(cfg.media)


def apply_conditions(model: Any, decoded: list[DecodedInput], chunk: int) -> list[list[Any]]:
    """cond arrays (or None) per clip, per input. A model failure costs only the input(s) it hit."""
    conds: list[list[Any]] = [[None] * len(d.clips) for d in decoded]
    if model is None:
        return conds
    # Flow and depth condition the LM's stylization task only: the SR formats never get them.
    flat = [(i, j) for i, d in enumerate(decoded) if d.ok for j in range(len(d.clips))
            if d.clips[j].format in LM_FORMATS]
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

    @property
    def index(self) -> int:
        return self.batch


def _tar_size(members: list[tuple[str, bytes]]) -> int:
    """Exact size tarfile gives these members (ustar headers, 512 padding, end blocks, 10 KiB records)."""
    body = sum(512 + -(-len(data) // 512) * 512 for _, data in members) + 1024
    return -(-body // 10240) * 10240


def finish_batch(batch: Batch, decoded: list[DecodedInput], model: Any, out: str | Path,
                 cfg: IngestConfig) -> BatchResult:
    """Condition, key, shard and commit one batch (its manifest part is written last)."""
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
