"""Tokenizing one unit (an input clip shard): read, check, encode batched per clip shape, commit.

Per clip: video tokens, first-frame tokens, COMMIT condition tokens, style tokens (the cond video),
audio tokens, text embeddings, the models' hashes and len_<task>; the unit's token shard and stats
part are written first (atomically), its manifest part LAST (the commit marker).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videopoet.pipeline import manifest as mf
from videopoet.pipeline import token_shards as ts
from videopoet.pipeline.clip_shards import ClipItem, read_clip_shard
from videopoet.pipeline.media.config import SR_INPUT_FORMATS
from videopoet.pipeline.tokenize_checks import check_clip, video_format
from videopoet.pipeline.tokenize_config import TokenizeConfig
from videopoet.pipeline.tokenize_models import Models
from videopoet.pipeline.tokenize_stats import manifest_table, read_manifest, stats_path, stats_table
from videopoet.tokenizers import commit
from videopoet.tokenizers.magvit2 import video_to_tensor
from videopoet.tokenizers.soundstream import int16_to_float


@dataclass
class ShardUnit:
    """A work unit: one input clip shard (`index` in sorted order, `name` relative to --input)."""

    index: int
    path: str
    name: str


@dataclass
class ReadUnit:
    index: int
    shard: str  # input shard, relative to the input root
    items: list[ClipItem]
    read_seconds: float = 0.0


def read_unit(index: int, path: str, name: str) -> ReadUnit:
    """Read one input shard tolerantly (clip_shards.read_clip_shard), timed."""
    t0 = time.perf_counter()
    items = read_clip_shard(path, name)
    return ReadUnit(index=index, shard=name, items=items, read_seconds=time.perf_counter() - t0)


@dataclass
class UnitResult:
    index: int
    clips_ok: int = 0
    clips_failed: int = 0
    clips_skipped: int = 0  # manifest rows of status "skipped": clips this mode does not tokenize
    skipped: bool = False
    seconds: float = 0.0


def _encode_videos(models: Models, clips: list[Any], encode_batch: int) -> list[dict[str, np.ndarray]]:
    """Every video-tokenizer output of clips of one shape, in forwards of `encode_batch` videos.

    Per clip: video_tokens, and for videos first_frame_tokens, COMMIT condition tokens, and
    style_tokens when the clip has a cond video. All flattened in t, h, w order, int32.
    """
    vt = models.video
    dev = vt.device
    videos = torch.stack([video_to_tensor(c.rgb) for c in clips]).to(dev)  # [B, 3, T, H, W]
    frames = videos.shape[2]
    jobs: list[tuple[int, str, Any]] = [(i, "video_tokens", videos[i]) for i in range(len(clips))]
    if frames > 1:
        for task in commit.tasks_for(frames):
            cond = commit.condition_video(videos, task)
            jobs += [(i, f"{task}_tokens", cond[i]) for i in range(len(clips))]
        for i, c in enumerate(clips):
            if c.cond is not None:
                jobs.append((i, "style_tokens", video_to_tensor(c.cond).to(dev)))
    out: list[dict[str, np.ndarray]] = [{} for _ in clips]
    for start in range(0, len(jobs), encode_batch):
        part = jobs[start:start + encode_batch]
        tokens = vt.encode(torch.stack([x for _, _, x in part])).cpu().numpy()
        for (i, name, _), tok in zip(part, tokens):
            out[i][name] = tok.reshape(-1).astype(np.int32)
    if frames > 1:
        first = vt.encode_image(videos[:, :, 0]).cpu().numpy()  # [B, 1, h, w]
        for i in range(len(clips)):
            out[i]["first_frame_tokens"] = first[i].reshape(-1).astype(np.int32)
    return out


def _encode_audio(models: Models, clips: list[Any], audio_batch: int) -> list[np.ndarray]:
    """Level-major audio codes [4 * F] (int32) of clips with equally long audio."""
    out = []
    for start in range(0, len(clips), audio_batch):
        part = clips[start:start + audio_batch]
        wave = torch.stack([int16_to_float(c.audio) for c in part])  # [B, 1, S]
        codes = models.audio.encode(wave).cpu().numpy()  # [B, 4, F]
        out += [c.reshape(-1).astype(np.int32) for c in codes]
    return out


def _grouped(items: list[ClipItem], key) -> dict[Any, list[ClipItem]]:
    groups: dict[Any, list[ClipItem]] = {}
    for it in items:
        groups.setdefault(key(it), []).append(it)
    return groups


class StageError(RuntimeError):
    """A model stage failed in a way that says nothing about the clips (out of memory, every clip
    failing alike): the unit is not committed, so a retry or a rerun redoes it."""


def _is_resource_error(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"


def _run_stage(stage: str, groups: dict[Any, list[ClipItem]], fn, shard: str) -> dict[str, Any]:
    """fn(list of clips) -> list of results per group; a failing batch is retried clip by clip so
    one bad clip fails alone (as a row), never the unit. Clips reach the models only after
    `check_clip`, so a stage where every clip of several fails, or one out of memory, is a fault
    of the worker, not of the data: that raises StageError instead of committing failure rows."""
    results: dict[str, Any] = {}
    errors: list[BaseException] = []
    total = sum(len(m) for m in groups.values())
    for _, members in groups.items():
        try:
            for it, r in zip(members, fn([m.clip for m in members])):
                results[it.key] = r
        except Exception:
            for it in members:
                try:
                    results[it.key] = fn([it.clip])[0]
                except Exception as err:
                    if _is_resource_error(err):
                        raise StageError(f"{shard}: {stage} ran out of memory on clip {it.key} even alone "
                                         f"(lower encode_batch/audio_batch or use a larger device): {err}") from err
                    errors.append(err)
                    reason = str(err).splitlines()[0] if str(err) else repr(err)
                    it.fail(stage, type(err).__name__, f"{shard}: clip {it.key}: {stage} failed ({reason})")
    if total >= 2 and len(errors) == total:
        raise StageError(f"{shard}: {stage} failed on all {total} clips ({type(errors[0]).__name__}: {errors[0]}); "
                         "not committing the unit: a model or device fault, not bad input") from errors[0]
    return results


def encode_captions(models: Models, items: list[ClipItem], shard: str) -> dict[str, Any]:
    """The frozen text encoder on the items' captions, one batch: key -> (embedding, mask, truncated)."""

    def encode_text(clips):
        emb, mask, trunc = models.text.encode([c.meta["caption"] for c in clips])
        return list(zip(emb.numpy(), mask.numpy(), trunc.numpy()))

    return _run_stage("text_encoder", {0: items} if items else {}, encode_text, shard)


def tokenize_unit(unit: ReadUnit, models: Models, out: str | Path, cfg: TokenizeConfig) -> UnitResult:
    """Tokenize one input shard and commit it: token shard, stats, then the manifest part (last)."""
    t0 = time.perf_counter()
    out = Path(out)
    mf.clean_batch(out, unit.index)
    vcfg = models.video.cfg
    items = list(unit.items)
    skipped: dict[str, tuple[str, str]] = {}
    for it in items:  # keys are unique within a unit: the reader groups members by key
        fmt = it.clip.meta.get("format") if it.ok else None
        if isinstance(fmt, str) and fmt in SR_INPUT_FORMATS:  # a super-resolution target: no LM task takes it
            skipped[it.key] = ("SRFormat", f"{unit.shard}: clip {it.key}: format {fmt!r} is a super-resolution "
                                           f"format (tokenize it with --mode sr --sr-format {fmt})")
        elif it.ok:
            check_clip(it, unit.shard, cfg, vcfg.spatial_factor, vcfg.temporal_factor)

    ok = [it for it in items if it.ok and it.key not in skipped]
    video = _run_stage("video_tokenizer", _grouped(ok, lambda it: it.clip.rgb.shape),
                       lambda clips: _encode_videos(models, clips, cfg.encode_batch), unit.shard)
    with_audio = [it for it in ok if it.clip.audio is not None and it.clip.rgb.shape[0] > 1]
    audio = _run_stage("audio_tokenizer", _grouped(with_audio, lambda it: it.clip.audio.shape),
                       lambda clips: _encode_audio(models, clips, cfg.audio_batch), unit.shard)
    captioned = [it for it in ok if it.clip.meta.get("caption", "").strip()]

    text = encode_captions(models, captioned, unit.shard)

    ident = models.identity()
    token_rows: list[dict[str, Any]] = []
    manifest_rows: list[dict[str, Any]] = []
    shard_rel = f"{mf.SHARDS_DIR}/shard-{unit.index:06d}-00.parquet"
    for it in items:
        row = {"batch": unit.index, "input_shard": unit.shard, "key": it.key}
        if it.key in skipped:
            manifest_rows.append(skipped_row(row, *skipped[it.key]))
            continue
        if not it.ok:
            manifest_rows.append(failed_row(row, it))
            continue
        clip = it.clip
        frames, h, w = (int(x) for x in clip.rgb.shape[:3])
        lat = models.video.latent_shape(frames, h, w)
        v = video[it.key]
        trow: dict[str, Any] = {
            "key": it.key, "source_uri": str(clip.meta.get("source_uri", "")),
            "caption": str(clip.meta.get("caption", "")), "video_format": video_format(clip),
            "num_frames": frames, "latent_t": lat[0], "latent_h": lat[1], "latent_w": lat[2],
            "video_tokens": v["video_tokens"], "first_frame_tokens": v.get("first_frame_tokens"),
            "audio_tokens": audio.get(it.key), "audio_frames": 0,
            "text_emb": None, "text_dim": models.text.width, "text_mask": None, "text_truncated": False,
            **ident,
        }
        for name in ts.VIDEO_COND_COLUMNS:
            trow[name] = v.get(name)
        if trow["audio_tokens"] is not None:
            trow["audio_frames"] = trow["audio_tokens"].size // ts.AUDIO_LEVELS
        if it.key in text:
            emb, mask, trunc = text[it.key]
            trow.update(text_emb=emb, text_mask=mask, text_truncated=bool(trunc))
        try:
            trow = ts.with_sequence_lengths(trow)
            ts.normalize_row(trow, ts.default_task_names(), where=unit.shard)
        except Exception as err:  # a row the trainer could not use is a failed clip, not a crash
            it.fail("row", type(err).__name__, f"{unit.shard}: clip {it.key}: {err}")
            manifest_rows.append(failed_row(row, it))
            continue
        token_rows.append(trow)
        manifest_rows.append(dict(
            row, status="ok", token_shard=shard_rel, num_frames=frames, video_format=trow["video_format"],
            latent_t=lat[0], latent_h=lat[1], latent_w=lat[2], audio_frames=trow["audio_frames"],
            has_cond=trow["style_tokens"] is not None, has_text=trow["text_emb"] is not None,
            text_truncated=trow["text_truncated"],
        ))
    if token_rows:
        ts.write_token_shard(out / shard_rel, token_rows)
    mf.write_bytes_atomic(stats_path(out, unit.index), mf.parquet_bytes(stats_table(token_rows, vcfg.bits)))
    # the commit marker: last
    mf.write_bytes_atomic(mf.part_path(out, unit.index), mf.parquet_bytes(manifest_table(manifest_rows)))
    return UnitResult(index=unit.index, clips_ok=len(token_rows), clips_skipped=len(skipped),
                      clips_failed=len(items) - len(token_rows) - len(skipped),
                      seconds=time.perf_counter() - t0 + unit.read_seconds)


def result_from_part(out: str | Path, index: int) -> UnitResult:
    status = read_manifest(mf.part_path(Path(out), index)).column("status").to_pylist()
    return UnitResult(index=index, skipped=True, clips_ok=status.count("ok"), clips_failed=status.count("failed"),
                      clips_skipped=status.count("skipped"))


def failed_row(row: dict[str, Any], it: ClipItem) -> dict[str, Any]:
    return dict(row, status="failed", stage=it.stage, error_class=it.error_class, message=it.message)


def skipped_row(row: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    """A clip this mode does not tokenize (not an error): status "skipped", the reason as error_class."""
    return dict(row, status="skipped", stage="skip", error_class=reason, message=message)
