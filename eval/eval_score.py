"""`videopoet eval score|protocol`: the scores of `eval generate` runs (FVD, CLIPSIM, IS) and the protocol table.

    videopoet eval score --run evals/msrvtt_step10k --run evals/msrvtt_step20k [--cache-dir DIR] [--out DIR]
    videopoet eval protocol [msrvtt_t2v]

Scoring one run (its units must all be committed):
- generated I3D features: per unit, per metric group, FeatureStats (float64) merged in unit order (Chan et al.);
  group g = examples [g N, (g + 1) N) (eval_job.metric_group);
- real-set statistics: read from the cache, or merged from the run's real features (real units when the
  protocol has a separate real set, else each example's own real clip, grouped like the examples) and written
  to the cache. The cache key (`real_stats_key`) is sha256 of the protocol fields that define the real set
  (its record minus REAL_INDEPENDENT fields), the real clips' keys and the I3D weights hash: computed once, a
  changed field misses. Cache: <cache-dir>/real-<key[:32]>.npz (plain arrays, allow_pickle=False);
- FVD per group against its real group (one real set for all groups when the protocol has one), reported
  as mean ± std over the repeats (std with ddof 0, as MAGVIT's np.std); CLIPSIM: the mean over every ok
  sample; IS: eval/inception_score.py over the grouped samples' C3D probabilities with splits = repeats.
Writes <run>/scores.json (the protocol record, N, weights hashes, real-stats key and file hash) and logs one
MLflow run per scored run (metrics, the protocol as params, the real-stats hash as a tag, sample videos).
With several --run: comparison.csv / comparison.md (and score_vs_step.png when matplotlib is installed)
in --out (default: the first run), logged to an `eval-compare` MLflow run.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from videopoet.config import UsageError
from videopoet.eval.frechet import FeatureStats
from videopoet.jobs import commit

SCORES_FILE = "scores.json"
CACHE_FORMAT = "videopoet.real_stats.v1"
# Protocol fields that say how samples are generated, not which real clips are compared against.
REAL_INDEPENDENT = ("name", "task", "metrics", "condition_frames", "mask", "generate", "generate_size", "real_set")
# Paper numbers (VideoPoet 8B; Table 2 for K600/SSv2, Table 3 for MSR-VTT/UCF-101, Table 4 for DAVIS).
PAPER = {
    "msrvtt_t2v": "CLIPSIM 0.3049 (task-adapted 0.3123), FVD 213 (Table 3)",
    "ucf101_t2v": "FVD 355, IS 38.44 (Table 3)",
    "k600_fp": "FVD 687 (Table 2, 8B)",
    "ssv2_inpaint": "FVD 4.7 (Table 2, 8B)",
    "ssv2_outpaint": "FVD 13.76 (Table 2, 8B)",
    "davis_style": "CLIPSIM 0.3246 (Table 4)",
}


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def real_stats_key(protocol, i3d_sha256: str, real_refs: Sequence[Any]) -> str:
    """sha256 naming one real set's statistics: the fields that define it, its clips' keys, the I3D weights."""
    record = {k: v for k, v in protocol.record().items() if k not in REAL_INDEPENDENT}
    clips = [[r.key, r.start_frame] for r in real_refs]
    return sha256_json({"record": record, "clips": clips, "i3d_sha256": i3d_sha256})


def default_cache_dir() -> Path:
    from videopoet.eval.i3d_weights import cache_dir

    return cache_dir() / "real_stats"


def cache_path(cache_dir: str | Path | None, key: str) -> Path:
    """The cache file of real-set statistics `key` (cache_dir None: default_cache_dir())."""
    folder = Path(os.path.expanduser(str(cache_dir))) if cache_dir else default_cache_dir()
    return folder / f"real-{key[:32]}.npz"


def save_real_stats(path: Path, key: str, groups: list[FeatureStats]) -> None:
    buf = io.BytesIO()
    np.savez(buf, format=np.array(CACHE_FORMAT), key=np.array(key), count=np.array([g.count for g in groups], np.int64),
             mean=np.stack([g.mean for g in groups]), m2=np.stack([g.m2 for g in groups]))
    commit.write_bytes_atomic(path, buf.getvalue())


def load_real_stats(path: Path, key: str) -> list[FeatureStats]:
    with np.load(path, allow_pickle=False) as z:
        if str(z["format"]) != CACHE_FORMAT or str(z["key"]) != key:
            raise UsageError(f"{path}: not the real-set statistics of key {key[:16]}")
        groups = []
        for count, mean, m2 in zip(z["count"], z["mean"], z["m2"]):
            s = FeatureStats(mean.shape[0])
            s.count, s.mean, s.m2 = int(count), mean.astype(np.float64), m2.astype(np.float64)
            groups.append(s)
    return groups


# --- reading a run -------------------------------------------------------------------------------------


def read_plan(run: Path) -> dict[str, Any]:
    path = Path(run) / commit.PLAN_FILE
    if not path.is_file():
        raise UsageError(f"--run {run}: not an `eval generate` output (no {commit.PLAN_FILE})")
    plan = json.loads(path.read_text())
    if "eval_job_version" not in plan:
        raise UsageError(f"--run {run}: {commit.PLAN_FILE} is not an eval generate plan")
    missing = sorted(set(range(plan["units"])) - set(commit.committed_units(run)))
    if missing:
        raise UsageError(f"--run {run}: {len(missing)} of {plan['units']} units not committed (first {missing[0]}); "
                         "rerun the same `videopoet eval generate` command to finish it")
    return plan


def features_path(out: str | Path, unit: int) -> Path:
    """Unit `unit`'s feature file of an `eval generate` output (removed with the unit by commit.clean_unit)."""
    return Path(out) / commit.SHARDS_DIR / f"shard-{unit:06d}-features.npz"


def iter_units(run: Path, plan: dict[str, Any]):
    """(unit index, {name: array}) of every unit, in unit order."""
    for index in range(plan["units"]):
        with np.load(features_path(run, index), allow_pickle=False) as z:
            yield index, {k: z[k] for k in z.files}


def _group_stats(n_groups: int, per_unit) -> list[FeatureStats]:
    """FeatureStats per group, each unit's rows of a group folded in as one merge, in unit order."""
    groups = [FeatureStats() for _ in range(n_groups)]
    for feats, group in per_unit:
        for g in range(n_groups):
            rows = feats[group == g]
            if rows.shape[0]:
                groups[g].merge(FeatureStats.from_features(rows))
    return groups


def real_groups(plan: dict[str, Any]) -> int:
    p = plan["protocol"]
    return 1 if p["real_split"] else p["repeats"]


def ensure_real_stats(run: Path, cache_dir: str | Path | None) -> tuple[list[FeatureStats], str]:
    """The run's real-set statistics per real group and where they came from ('cache' or 'run'); cached on a miss."""
    plan = json.loads((Path(run) / commit.PLAN_FILE).read_text())
    if "fvd" not in plan["protocol"]["metrics"]:
        raise UsageError(f"protocol {plan['protocol']['name']} has no FVD (no real set)")
    key = plan["real_stats_key"]
    path = cache_path(cache_dir, key)
    if path.is_file():
        return load_real_stats(path, key), "cache"
    plan = read_plan(run)
    per_unit = []
    for index, z in iter_units(run, plan):
        if bool(z["real_cached"]) and ("real_i3d" not in z):
            if "index" in z or plan["protocol"]["real_split"] == "":
                raise UsageError(f"--run {run}: unit {index} skipped its real clips because the real-set statistics "
                                 f"were cached, but {path} is gone; give the --cache-dir generate used, or rerun "
                                 "generate into a new --out")
            raise UsageError(f"--run {run}: real unit {index} relied on the cache, but {path} is gone; give the "
                             "--cache-dir generate used, or rerun generate into a new --out")
        if "real_i3d" in z:
            per_unit.append((z["real_i3d"], z["real_group"]))
    groups = _group_stats(real_groups(plan), per_unit)
    if any(g.count < 2 for g in groups):
        raise UsageError(f"--run {run}: real-set groups hold {[g.count for g in groups]} clips; FVD needs >= 2 each")
    save_real_stats(path, key, groups)
    return groups, "run"


def score_run(run: str | Path, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Scores of one committed `eval generate` output (also written to <run>/scores.json)."""
    from videopoet.eval.fvd import fvd

    run = Path(run)
    plan = read_plan(run)
    p = plan["protocol"]
    repeats, metrics = p["repeats"], p["metrics"]
    gen_i3d, clipsim, probs, ok = [], [], [], 0
    for _, z in iter_units(run, plan):
        if "index" not in z:
            continue
        ok += int(z["index"].size)
        if "i3d" in z:
            gen_i3d.append((z["i3d"], z["group"]))
        if "clipsim" in z:
            clipsim.append(z["clipsim"])
        if "c3d" in z:
            grouped = z["group"] >= 0
            probs.append((z["index"][grouped], z["c3d"][grouped]))
    scores: dict[str, Any] = {"run": str(run.resolve()), "protocol": p, "samples_ok": ok,
                              "lm_step": plan.get("lm_step"), "paper": PAPER.get(p["name"], ""),
                              "weights": {k: plan.get(k) for k in ("i3d_sha256", "clip_sha256", "c3d_sha256",
                                                                   "lm_sha256", "video_tokenizer_sha256")},
                              "sampling": plan.get("sampling"), "notes": []}
    if "fvd" in metrics:
        gen = _group_stats(repeats, gen_i3d)
        real, source = ensure_real_stats(run, cache_dir)
        path = cache_path(cache_dir, plan["real_stats_key"])
        per = []
        for g in range(repeats):
            r = real[0] if len(real) == 1 else real[g]
            if gen[g].count < 2:
                raise UsageError(f"--run {run}: metric group {g} holds {gen[g].count} samples; FVD needs >= 2")
            per.append(fvd(r, gen[g]))
        scores["fvd"] = {"mean": float(np.mean(per)), "std": float(np.std(per)), "per_repeat": per,
                         "n_generated": [g.count for g in gen], "n_real": [g.count for g in real]}
        scores["real_stats"] = {"key": plan["real_stats_key"], "source": source,
                                "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    if "clipsim" in metrics:
        if clipsim:
            values = np.concatenate(clipsim)
            scores["clipsim"] = {"mean": float(values.mean()), "n": int(values.size)}
        else:
            scores["notes"].append("CLIPSIM not computed: generate ran without --clip")
    if "is" in metrics:
        if probs:
            from videopoet.eval.inception_score import inception_score

            order = np.concatenate([i for i, _ in probs]).argsort(kind="stable")
            all_probs = np.concatenate([q for _, q in probs])[order]
            mean, std = inception_score(all_probs, splits=repeats)
            scores["is"] = {"mean": float(mean), "std": float(std), "n": int(all_probs.shape[0]), "splits": repeats}
        else:
            scores["notes"].append("IS not computed: generate ran without --c3d")
    commit.write_json_atomic(run / SCORES_FILE, scores)
    return scores


def score_line(s: dict[str, Any]) -> str:
    parts = []
    if "fvd" in s:
        f = s["fvd"]
        parts.append(f"FVD {f['mean']:.2f} ± {f['std']:.2f} ({len(f['per_repeat'])} x {f['n_generated'][0]} vs "
                     f"{f['n_real'][0]} real, real stats from {s['real_stats']['source']})")
    if "clipsim" in s:
        parts.append(f"CLIPSIM {s['clipsim']['mean']:.4f} (n={s['clipsim']['n']})")
    if "is" in s:
        parts.append(f"IS {s['is']['mean']:.2f} ± {s['is']['std']:.2f}")
    parts += s["notes"]
    return f"eval score {s['protocol']['name']} [{s['run']}]: " + "; ".join(parts)


# --- comparison, tracking ----------------------------------------------------------------------------------

COLUMNS = ("run", "lm_step", "protocol", "samples_ok", "fvd_mean", "fvd_std", "clipsim", "is_mean", "is_std",
           "comparable")


def comparison_rows(all_scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first = all_scores[0]["protocol"]
    rows = []
    for s in all_scores:
        rows.append({"run": s["run"], "lm_step": s.get("lm_step"), "protocol": s["protocol"]["name"],
                     "samples_ok": s["samples_ok"], "fvd_mean": s.get("fvd", {}).get("mean"),
                     "fvd_std": s.get("fvd", {}).get("std"), "clipsim": s.get("clipsim", {}).get("mean"),
                     "is_mean": s.get("is", {}).get("mean"), "is_std": s.get("is", {}).get("std"),
                     "comparable": s["protocol"] == first})
    return rows


def write_comparison(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """comparison.csv, comparison.md and (matplotlib installed) score_vs_step.png in `out`; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    commit.write_bytes_atomic(out / "comparison.csv", buf.getvalue().encode())

    def cell(v):
        return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    commit.write_bytes_atomic(out / "comparison.md", ("\n".join(md) + "\n").encode())
    files = [out / "comparison.csv", out / "comparison.md"]
    plot = _plot(rows, out / "score_vs_step.png")
    return files + ([plot] if plot else [])


def _plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed: no score_vs_step.png")
        return None
    steps = [r["lm_step"] if r["lm_step"] is not None else i for i, r in enumerate(rows)]
    metrics = [m for m in ("fvd_mean", "clipsim", "is_mean") if any(r[m] is not None for r in rows)]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        pts = sorted((s, r[m]) for s, r in zip(steps, rows) if r[m] is not None)
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o")
        ax.set_xlabel("training step" if all(r["lm_step"] is not None for r in rows) else "run")
        ax.set_title(m)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def track_scores(s: dict[str, Any], run: Path) -> str | None:
    from videopoet.tracking import Tracker

    tags = {"protocol": s["protocol"]["name"]}
    if "real_stats" in s:
        tags["real_stats.key"] = s["real_stats"]["key"]
        tags["real_stats.file_sha256"] = s["real_stats"]["file_sha256"]
    with Tracker.start("eval", s["protocol"], run_name=f"eval-{s['protocol']['name']}", tags=tags) as tracker:
        metrics = {"samples_ok": s["samples_ok"]}
        for name in ("fvd", "is"):
            if name in s:
                metrics.update({f"{name}_mean": s[name]["mean"], f"{name}_std": s[name]["std"]})
        if "clipsim" in s:
            metrics["clipsim"] = s["clipsim"]["mean"]
        tracker.log_metrics(metrics, step=int(s["lm_step"] or 0))
        tracker.log_artifact(run / SCORES_FILE)
        for video in sorted((run / "videos").glob("sample-*.mp4"))[:8]:
            tracker.log_artifact(video, artifact_path="samples")
        return tracker.run_id


def run_score(args: argparse.Namespace) -> int:
    """`videopoet eval score --run DIR [--run DIR ...]`."""
    runs = [Path(r) for r in args.runs]
    all_scores = []
    for run in runs:
        s = score_run(run, args.cache_dir)
        if not args.no_tracking:
            s["mlflow_run_id"] = track_scores(s, run)
            commit.write_json_atomic(run / SCORES_FILE, s)
        print(score_line(s), flush=True)
        all_scores.append(s)
    if len(runs) > 1:
        rows = comparison_rows(all_scores)
        out = Path(args.out) if args.out else runs[0]
        files = write_comparison(rows, out)
        if not all(r["comparable"] for r in rows):
            print("note: the runs' protocol records differ: their scores are not comparable")
        if not args.no_tracking:
            from videopoet.tracking import Tracker

            with Tracker.start("eval-compare", {"runs": [str(r) for r in runs]}, run_name="eval-compare") as tracker:
                for f in files:
                    tracker.log_artifact(f)
        print(f"eval score: compared {len(runs)} runs: {', '.join(str(f) for f in files)}")
    return 0


def protocol_table(names: Sequence[str]) -> str:
    from videopoet.eval.protocols import get_protocol

    header = ("protocol", "task", "dataset/split", "N x repeats", "frames@fps", "size", "metrics", "paper (VideoPoet)")
    rows = []
    for name in names:
        p = get_protocol(name)
        rows.append((p.name, p.task, f"{p.dataset}/{p.split}", f"{p.num_samples} x {p.repeats}",
                     f"{p.frames}@{p.fps}", f"{p.size[0]}x{p.size[1]}", ",".join(p.metrics), PAPER.get(p.name, "")))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_protocol(args: argparse.Namespace) -> int:
    """`videopoet eval protocol [NAME]`: the protocol table (one protocol: also its full record)."""
    from videopoet.eval.protocols import PROTOCOLS, get_protocol

    names = [args.name] if args.name else list(PROTOCOLS)
    print(protocol_table(names))
    if args.name:
        print(json.dumps(get_protocol(args.name).record(), indent=1))
    return 0
