"""The tokenize job's tables and summary: manifest schema, per-unit stats parts, summary.json and its plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from videopoet.pipeline import manifest as mf
from videopoet.pipeline.token_shards import AUDIO_CODES_PER_LEVEL, AUDIO_LEVELS, default_task_names, len_column
from videopoet.pipeline.tokenize_config import (
    HASH_KEYS,
    MANIFEST_VERSION,
    MANIFEST_VERSION_KEY,
    STATS_DIR,
    SUMMARY_DIR,
    TokenizeConfig,
)

matplotlib.use("Agg")  # files only, no display: before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

# (name, arrow type, meaning)
MANIFEST_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("batch", "int32", "work unit (= index of the input shard in sorted order)"),
    ("input_shard", "string", "input clip shard, relative to --input"),
    ("key", "string", "clip key ('' when a damaged shard gave no key)"),
    ("status", "string", "'ok', 'failed' or 'skipped' (a clip this mode does not tokenize)"),
    ("stage", "string", "failed: read, check, video_tokenizer, audio_tokenizer, text_encoder, row"),
    ("error_class", "string", "failed: short reason (BadMember, DamagedShard, BadArray, BadSize, AudioLength, ...); "
                              "skipped: SRFormat (LM mode), OtherFormat, OtherLength, NoCaption (SR mode)"),
    ("message", "string", "failed: one line naming the shard, the clip and the reason"),
    ("token_shard", "string", "ok: token shard holding the row, relative to --output"),
    ("num_frames", "int32", "ok: 1, 17 or 41"),
    ("video_format", "string", "ok: square or portrait (SR mode: the HR format)"),
    ("latent_t", "int32", "ok: latent grid"),
    ("latent_h", "int32", ""),
    ("latent_w", "int32", ""),
    ("audio_frames", "int32", "ok: SoundStream frames (0 without audio)"),
    ("has_cond", "bool", "ok: style tokens present"),
    ("has_text", "bool", "ok: text embedding present"),
    ("text_truncated", "bool", "ok: the caption had more than 64 text tokens"),
)


def manifest_schema() -> pa.Schema:
    types = {"string": pa.string(), "int32": pa.int32(), "bool": pa.bool_()}
    return pa.schema([(n, types[t]) for n, t, _ in MANIFEST_COLUMNS],
                     metadata={MANIFEST_VERSION_KEY: str(MANIFEST_VERSION).encode()})


def manifest_table(rows: list[dict[str, Any]]) -> pa.Table:
    sch = manifest_schema()
    return pa.Table.from_pylist([{n: r.get(n) for n in sch.names} for r in rows], schema=sch)


def read_manifest(path: str | Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise mf.ManifestError(f"{path}: not a readable Parquet manifest ({err})") from None
    if (table.schema.metadata or {}).get(MANIFEST_VERSION_KEY) != str(MANIFEST_VERSION).encode():
        raise mf.ManifestError(f"{path}: not a tokenize manifest of version {MANIFEST_VERSION}")
    return table


def stats_path(out: Path, index: int) -> Path:
    return Path(out) / STATS_DIR / f"part-{index:06d}.parquet"


def stats_table(rows: list[dict[str, Any]], video_bits: int) -> pa.Table:
    """One unit's sparse counts as (level, code, count) rows: code counts for `video` and
    `audio0`..`audio3`, and samples per sequence length for `len_<task>` (code = the length).
    The summary sums these parts, so it never rereads the token shards."""
    levels, codes, counts = [], [], []

    def add(level: str, values: list[np.ndarray], size: int | None = None) -> None:
        if not values:
            return
        c = np.bincount(np.concatenate(values), minlength=size or 0)
        nz = np.flatnonzero(c)
        levels.extend([level] * nz.size)
        codes.append(nz.astype(np.int32))
        counts.append(c[nz].astype(np.int64))

    add("video", [r["video_tokens"] for r in rows], 2 ** video_bits)
    audio = [r["audio_tokens"].reshape(AUDIO_LEVELS, -1) for r in rows if r["audio_tokens"] is not None]
    for level in range(AUDIO_LEVELS):
        add(f"audio{level}", [a[level] for a in audio], AUDIO_CODES_PER_LEVEL)
    for task in default_task_names():
        lengths = [r[len_column(task)] for r in rows if r[len_column(task)] > 0]
        add(len_column(task), [np.asarray(lengths, dtype=np.int64)] if lengths else [])
    return pa.table({
        "level": pa.array(levels, pa.string()),
        "code": pa.array(np.concatenate(codes) if codes else np.zeros(0, np.int32), pa.int32()),
        "count": pa.array(np.concatenate(counts) if counts else np.zeros(0, np.int64), pa.int64()),
    })


def merge_manifest(out: Path, num_units: int) -> Path:
    tables = [read_manifest(mf.part_path(out, i)) for i in range(num_units)]
    table = pa.concat_tables(tables) if tables else manifest_schema().empty_table()
    path = out / mf.MERGED_FILE
    mf.write_bytes_atomic(path, mf.parquet_bytes(table.replace_schema_metadata(manifest_schema().metadata)))
    return path


def read_stats(out: Path, num_units: int, video_bits: int) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]]]:
    """Summed unit stats: code counts per level, and {task: {sequence length: samples}}."""
    sizes = {"video": 2 ** video_bits, **{f"audio{i}": AUDIO_CODES_PER_LEVEL for i in range(AUDIO_LEVELS)}}
    usage = {k: np.zeros(n, np.int64) for k, n in sizes.items()}
    groups: dict[str, dict[int, int]] = {t: {} for t in default_task_names()}
    by_level = {len_column(t): t for t in groups}
    for i in range(num_units):
        table = pq.read_table(stats_path(out, i))
        for level in pc.unique(table["level"]).to_pylist():
            part = table.filter(pc.equal(table["level"], level))
            code, count = part["code"].to_numpy(), part["count"].to_numpy()
            if level in usage:
                np.add.at(usage[level], code, count)
            elif level in by_level:
                g = groups[by_level[level]]
                for length, n in zip(code.tolist(), count.tolist()):
                    g[length] = g.get(length, 0) + n
    return usage, {t: {str(k): v for k, v in sorted(g.items())} for t, g in groups.items()}


def _usage_figures(c: np.ndarray) -> dict[str, Any]:
    total = int(c.sum())
    p = c[c > 0] / max(total, 1)
    return {"codes": int(c.size), "tokens": total, "used": int((c > 0).sum()),
            "used_fraction": float((c > 0).mean()),
            "perplexity": float(np.exp(-(p * np.log(p)).sum())) if total else 0.0}


def write_plots(out: Path, usage: dict[str, np.ndarray], groups: dict[str, dict[str, int]]) -> list[Path]:
    folder = out / SUMMARY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, len(usage), figsize=(4 * len(usage), 3.2))
    for ax, (level, c) in zip(np.atleast_1d(axes), usage.items()):
        bins = min(c.size, 512)
        if c.size % bins == 0:
            binned = c.reshape(bins, -1).sum(1)
        else:
            binned = np.histogram(np.arange(c.size), bins, weights=c)[0]
        ax.bar(np.arange(bins) * (c.size / bins), binned, width=c.size / bins, color="tab:blue")
        f = _usage_figures(c)
        ax.set_title(f"{level}: {f['used']}/{f['codes']} used, ppl {f['perplexity']:.0f}", fontsize=9)
        ax.set_xlabel("code id")
        ax.set_ylabel("count")
    fig.tight_layout()
    paths.append(folder / "codebook_usage.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)

    tasks = [t for t, g in groups.items() if g]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(groups)), 3.5))
    labels, heights = [], []
    for t in groups:
        for length, n in groups[t].items():
            labels.append(f"{t}\n{length}")
            heights.append(n)
    ax.bar(range(len(heights)), heights, color="tab:green")
    ax.set_xticks(range(len(heights)), labels, fontsize=6)
    ax.set_ylabel("samples")
    ax.set_title(f"samples per (task, sequence length); {len(tasks)} tasks servable")
    fig.tight_layout()
    paths.append(folder / "task_lengths.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)
    return paths


def summarize(out: Path, cfg: TokenizeConfig, num_units: int, video_bits: int, wall_s: float,
              results: list[Any], plan: dict[str, Any]) -> dict[str, Any]:
    """manifest.parquet + summary.json (+ plots): counts, failures, task/length groups, codebook use."""
    merged = merge_manifest(out, num_units)
    table = read_manifest(merged)
    status, reasons, skips, counts = _status_counts(table)
    ok_keys = [k for k, st in zip(table.column("key").to_pylist(), status) if st == "ok"]
    usage, groups = read_stats(out, num_units, video_bits)
    fresh = [r for r in results if not r.skipped]
    new_clips = sum(r.clips_ok + r.clips_failed + r.clips_skipped for r in fresh)
    summary = {
        **counts, "failures_by_class": reasons, "skips_by_reason": skips,
        "duplicate_keys": len(ok_keys) - len(set(ok_keys)),  # same clip in two input shards
        "units": num_units, "units_this_run": len(fresh), "clips_this_run": new_clips,
        "wall_seconds": wall_s, "clips_per_s": new_clips / wall_s if wall_s > 0 else 0.0,
        "samples_per_task": {t: sum(g.values()) for t, g in groups.items()},
        "samples_per_task_and_length": groups,
        "codebook_usage": {k: _usage_figures(c) for k, c in usage.items()},
        "engine": cfg.engine, "device": cfg.device, "manifest": str(merged),
        **{k: plan[k] for k in HASH_KEYS},
    }
    if cfg.plots:
        summary["plots"] = [str(p) for p in write_plots(out, usage, groups)]
    mf.write_json_atomic(out / mf.SUMMARY_FILE, summary)
    return summary


def _status_counts(table: pa.Table) -> tuple[list[str], dict[str, int], dict[str, int], dict[str, int]]:
    """statuses, failures by class, skips by reason, and the clip counts of a merged manifest."""
    status = table.column("status").to_pylist()
    by: dict[str, dict[str, int]] = {"failed": {}, "skipped": {}}
    for s, cls in zip(status, table.column("error_class").to_pylist()):
        if s in by:
            by[s][cls] = by[s].get(cls, 0) + 1
    counts = {"clips": len(status), "clips_ok": status.count("ok"), "clips_failed": status.count("failed"),
              "clips_skipped": status.count("skipped")}
    return status, dict(sorted(by["failed"].items())), dict(sorted(by["skipped"].items())), counts


def summarize_sr(out: Path, cfg: TokenizeConfig, num_units: int, video_bits: int, wall_s: float,
                 results: list[Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The SR mode's manifest.parquet + summary.json: counts, failures, skips, grids, HR codebook use."""
    merged = merge_manifest(out, num_units)
    table = read_manifest(merged)
    status, reasons, skips, counts = _status_counts(table)
    ok_keys = [k for k, st in zip(table.column("key").to_pylist(), status) if st == "ok"]
    usage, _ = read_stats(out, num_units, video_bits)
    grids = {(t, h, w) for st, t, h, w in zip(status, *(table.column(f"latent_{a}").to_pylist() for a in "thw"))
             if st == "ok"}
    fresh = [r for r in results if not r.skipped]
    new_clips = sum(r.clips_ok + r.clips_failed + r.clips_skipped for r in fresh)
    summary = {
        "mode": "sr", "sr_format": cfg.sr_format, "sr_frames": cfg.sr_frames, **counts,
        "failures_by_class": reasons, "skips_by_reason": skips, "duplicate_keys": len(ok_keys) - len(set(ok_keys)),
        "hr_grids": sorted(list(g) for g in grids),
        "units": num_units, "units_this_run": len(fresh), "clips_this_run": new_clips,
        "wall_seconds": wall_s, "clips_per_s": new_clips / wall_s if wall_s > 0 else 0.0,
        "codebook_usage": {"video": _usage_figures(usage["video"])},
        "engine": cfg.engine, "device": cfg.device, "manifest": str(merged),
        **{k: plan[k] for k in HASH_KEYS},
    }
    mf.write_json_atomic(out / mf.SUMMARY_FILE, summary)
    return summary


def sr_summary_line(s: dict[str, Any]) -> str:
    skips = ", ".join(f"{k} {n}" for k, n in s["skips_by_reason"].items()) or "none"
    return (f"tokenize --mode sr ({s['sr_format']}): {s['clips_ok']} clips ok, {s['clips_failed']} failed, "
            f"{s['clips_skipped']} skipped ({skips}) in {s['units']} shards; HR grid "
            f"{' '.join('x'.join(map(str, g)) for g in s['hr_grids']) or '-'}; HR codes used "
            f"{s['codebook_usage']['video']['used']}; {s['clips_per_s']:.2f} clips/s in {s['wall_seconds']:.1f} s")


def summary_line(s: dict[str, Any]) -> str:
    servable = sum(1 for n in s["samples_per_task"].values() if n)
    skipped = f", {s['clips_skipped']} skipped (SR formats)" if s.get("clips_skipped") else ""
    return (f"tokenize: {s['clips_ok']} clips ok, {s['clips_failed']} failed{skipped} ({s['clips_this_run']} this run) "
            f"in {s['units']} shards; {servable} tasks servable; video codes used "
            f"{s['codebook_usage']['video']['used']}; {s['clips_per_s']:.2f} clips/s in {s['wall_seconds']:.1f} s")
