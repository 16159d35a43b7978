"""Tokenizing one unit in SR mode: the clips of one HR format -> an SR token shard (HR, LR, text), committed.

Per clip of `cfg.sr_format` with `cfg.sr_frames` frames and a caption: the video tokenizer's tokens of
the HR clip, of its bicubic antialiased 2x downsample (pipeline.sr_downsample: the stage's input as a
user would give it), and the frozen text encoder's embeddings (the LM mode's encoder). Every kept clip
of a unit has the same shape, so its rows share one HR grid (the shard's). Other clips are manifest
rows with status "skipped" and a reason (OtherFormat, OtherLength, NoCaption); clips that cannot be
read or tokenized are "failed" as in the LM mode. The SR shard and stats part are written first
(atomically), the manifest part LAST (the commit marker).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from videopoet.pipeline import manifest as mf
from videopoet.pipeline.clip_shards import ClipItem, ShardFormatError
from videopoet.pipeline.media.config import FORMATS, sr_stage
from videopoet.pipeline.sr_downsample import downsample_2x
from videopoet.pipeline.sr_shards import write_sr_shard
from videopoet.pipeline.tokenize_config import TokenizeConfig
from videopoet.pipeline.tokenize_encode import (
    ReadUnit,
    UnitResult,
    _run_stage,
    encode_captions,
    failed_row,
    skipped_row,
)
from videopoet.pipeline.tokenize_models import Models
from videopoet.pipeline.tokenize_stats import manifest_table, stats_path
from videopoet.tokenizers.magvit2 import video_to_tensor


def sr_skip_or_fail(it: ClipItem, shard: str, cfg: TokenizeConfig, skipped: dict[str, tuple[str, str]]) -> None:
    """Record why `it` gives no SR row: skipped (not this format, length or no caption) or failed (bad arrays)."""
    clip = it.clip
    where = f"{shard}: clip {it.key}"
    try:
        clip.validate()
    except ShardFormatError as err:
        it.fail("check", "BadArray", f"{shard}: {err}")
        return
    fmt = clip.meta.get("format")
    if fmt != cfg.sr_format:
        skipped[it.key] = ("OtherFormat", f"{where}: format {fmt!r}, this job tokenizes {cfg.sr_format!r}")
        return
    t, h, w, _ = clip.rgb.shape
    width, height = FORMATS[cfg.sr_format]
    if (h, w) != (height, width):
        it.fail("check", "BadSize", f"{where}: {h}x{w} frames; format {fmt!r} is {height}x{width} (height x width)")
        return
    if t != cfg.sr_frames:
        skipped[it.key] = ("OtherLength", f"{where}: {t} frames, this job keeps {cfg.sr_frames}-frame clips")
        return
    caption = clip.meta.get("caption", "")
    if not isinstance(caption, str) or not caption.strip():
        skipped[it.key] = ("NoCaption", f"{where}: no caption (the SR model is conditioned on the text)")


def _encode_hr_lr(models: Models, clips: list[Any], encode_batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(HR tokens, LR tokens) per clip, flattened in t, h, w order, int32; `encode_batch` videos per forward."""
    vt = models.video
    out = []
    for start in range(0, len(clips), encode_batch):
        part = clips[start:start + encode_batch]
        hr = torch.stack([video_to_tensor(c.rgb) for c in part]).to(vt.device)
        lr = torch.stack([video_to_tensor(downsample_2x(c.rgb)) for c in part]).to(vt.device)
        hr_tok, lr_tok = vt.encode(hr).cpu().numpy(), vt.encode(lr).cpu().numpy()
        out += [(a.reshape(-1).astype(np.int32), b.reshape(-1).astype(np.int32)) for a, b in zip(hr_tok, lr_tok)]
    return out


def code_counts_table(levels: dict[str, list[np.ndarray]], size: int) -> pa.Table:
    """A stats part (tokenize_stats.stats_table's layout, (level, code, count) rows) of token code counts."""
    names, codes, counts = [], [], []
    for level, values in levels.items():
        if values:
            c = np.bincount(np.concatenate(values), minlength=size)
            nz = np.flatnonzero(c)
            names += [level] * nz.size
            codes.append(nz.astype(np.int32))
            counts.append(c[nz].astype(np.int64))
    return pa.table({
        "level": pa.array(names, pa.string()),
        "code": pa.array(np.concatenate(codes) if codes else np.zeros(0, np.int32), pa.int32()),
        "count": pa.array(np.concatenate(counts) if counts else np.zeros(0, np.int64), pa.int64()),
    })


def tokenize_sr_unit(unit: ReadUnit, models: Models, out: str | Path, cfg: TokenizeConfig) -> UnitResult:
    """Tokenize one input shard in SR mode and commit it: SR shard, stats, then the manifest part (last)."""
    t0 = time.perf_counter()
    out = Path(out)
    mf.clean_batch(out, unit.index)
    items = list(unit.items)
    skipped: dict[str, tuple[str, str]] = {}
    for it in items:
        if it.ok:
            sr_skip_or_fail(it, unit.shard, cfg, skipped)
    kept = [it for it in items if it.ok and it.key not in skipped]
    # one group: every kept clip has the format's size and sr_frames frames
    tokens = _run_stage("video_tokenizer", {0: kept} if kept else {},
                        lambda clips: _encode_hr_lr(models, clips, cfg.encode_batch), unit.shard)

    text = encode_captions(models, kept, unit.shard)

    width, height = FORMATS[cfg.sr_format]
    grid = tuple(int(g) for g in models.video.latent_shape(cfg.sr_frames, height, width))
    sr_rows: list[dict[str, Any]] = []
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
        hr, lr = tokens[it.key]
        emb, mask, trunc = text[it.key]
        sr_rows.append({"key": it.key, "hr_tokens": hr, "lr_tokens": lr, "text_emb": emb, "text_mask": mask})
        manifest_rows.append(dict(
            row, status="ok", token_shard=shard_rel, num_frames=cfg.sr_frames, video_format=cfg.sr_format,
            latent_t=grid[0], latent_h=grid[1], latent_w=grid[2], audio_frames=0, has_cond=False, has_text=True,
            text_truncated=bool(trunc)))
    if sr_rows:
        write_sr_shard(out / shard_rel, sr_rows, hr_grid=grid, text_dim=models.text.width, hr_format=cfg.sr_format,
                       stage=sr_stage(cfg.sr_format), video_tokenizer_hash=models.video.content_hash)
    counts = code_counts_table({"video": [r["hr_tokens"] for r in sr_rows]}, 2 ** models.video.cfg.bits)
    mf.write_bytes_atomic(stats_path(out, unit.index), mf.parquet_bytes(counts))
    # the commit marker: last
    mf.write_bytes_atomic(mf.part_path(out, unit.index), mf.parquet_bytes(manifest_table(manifest_rows)))
    n_skipped = sum(1 for r in manifest_rows if r["status"] == "skipped")
    return UnitResult(index=unit.index, clips_ok=len(sr_rows), clips_skipped=n_skipped,
                      clips_failed=len(items) - len(sr_rows) - n_skipped,
                      seconds=time.perf_counter() - t0 + unit.read_seconds)
