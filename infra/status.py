"""`videopoet status OUT`: where a job's output directory stands (reads files only; starts nothing).

Data jobs (docs/formats.md "Ingest output", "Tokenize output"): plan.json (the units planned),
manifest/part-*.parquet (one per committed unit, written last), summary.json (throughput of the last
run). Manifest rows with status `failed` are grouped by error_class, with the first message of each
(ingest: input rows only). Training runs ("Training checkpoints (version 2)"):
checkpoints/step_<N>/meta.json, export/meta.json, STOP. Standard library and pyarrow only: the
formats are read generically, so this module needs no pipeline, tokenizer or trainer code.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from videopoet.config import UsageError
from videopoet.paths import SHARDS_DIR

PARTS_DIR, PLAN_FILE, SUMMARY_FILE = "manifest", "plan.json", "summary.json"
# manifest schema metadata key -> job
MANIFEST_KINDS = {b"videopoet.manifest_version": "ingest", b"videopoet.tokenize_manifest_version": "tokenize"}
EXPECTED = ("expected the output directory of `videopoet ingest` or `videopoet tokenize`, a train-tokenizer --out, "
            "or a training run directory (<checkpoint.dir>/<run name>)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def data_job_status(out: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    plan, summary = _read_json(out / PLAN_FILE), _read_json(out / SUMMARY_FILE)
    parts = sorted((out / PARTS_DIR).glob("part-*.parquet"))
    job, failures, rows_failed = "data job", {}, 0
    for part in parts:
        table = pq.read_table(part)
        meta = table.schema.metadata or {}
        job = next((name for key, name in MANIFEST_KINDS.items() if key in meta), job)
        cols = set(table.column_names)
        if "status" not in cols:
            continue
        for row in table.to_pylist():
            if row.get("status") != "failed" or row.get("kind", "input") != "input":
                continue
            rows_failed += 1
            cls = row.get("error_class") or "unknown"
            entry = failures.setdefault(cls, {"count": 0, "example": row.get("message") or ""})
            entry["count"] += 1
    total = plan.get("num_units", plan.get("num_batches"))
    committed = len(parts)
    left = None if total is None else max(0, int(total) - committed)
    if left is None:
        rerun = "unknown (no plan.json): a rerun writes a new plan"
    elif left:
        rerun = (f"runs the {left} uncommitted unit(s) and skips the {committed} committed; the same inputs and "
                 "settings are required (plan.json), others are refused")
    else:
        rerun = "nothing to compute: every unit is committed; it rewrites manifest.parquet and summary.json"
    throughput = {k: summary[k] for k in ("clips_per_s", "clips_per_s_per_core", "wall_seconds", "engine")
                  if k in summary}
    counts = {k: summary[k] for k in ("inputs", "inputs_ok", "inputs_failed", "clips", "clips_ok", "clips_failed",
                                      "hours_of_video") if k in summary}
    return {"out": str(out), "job": job, "units_planned": total, "units_committed": committed,
            "failed": rows_failed, "failures_by_class": dict(sorted(failures.items())), "counts": counts,
            "throughput": throughput, "shards": len([p for p in (out / SHARDS_DIR).glob("*") if p.is_file()
                                                     and not p.name.endswith(".tmp")]),
            "rerun": rerun}


def training_status(run_dir: Path) -> dict[str, Any]:
    steps = []
    for d in sorted((run_dir / "checkpoints").glob("step_*")):
        meta = _read_json(d / "meta.json")
        if d.is_dir() and meta:
            steps.append({"step": meta.get("step"), "kind": meta.get("kind"), "path": str(d)})
    partial = sorted(p.name for p in (run_dir / "checkpoints").glob(".step_*.partial"))
    export = next((str(p) for p in (run_dir / "export", run_dir / "tokenizer") if (p / "meta.json").is_file()), None)
    latest = steps[-1] if steps else None
    kind = latest["kind"] if latest else None
    stop = (run_dir / "STOP").exists()
    if latest:
        rerun = (f"the same command resumes from step {latest['step']} ({latest['path']}); a different config is "
                 "refused, naming the keys")
    else:
        rerun = "starts training from step 0"
    return {"out": str(run_dir), "job": f"training ({kind or 'no checkpoint yet'})", "checkpoints": steps,
            "latest_step": latest["step"] if latest else None, "partial_saves": partial, "export": export,
            "stop_requested": stop, "rerun": rerun}


def status(out: str | Path) -> dict[str, Any]:
    path = Path(out).expanduser()
    if not path.exists():
        raise UsageError(f"{out}: no such directory; {EXPECTED}")
    if not path.is_dir():
        raise UsageError(f"{out}: a file; {EXPECTED}")
    if (path / PARTS_DIR).is_dir() or (path / PLAN_FILE).is_file():
        return data_job_status(path)
    if (path / "checkpoints").is_dir() or (path / "tokenizer" / "meta.json").is_file():
        return training_status(path)
    runs = sorted(p for p in path.iterdir() if p.is_dir() and (p / "checkpoints").is_dir())
    if len(runs) == 1:  # a checkpoint.dir holding one run
        return training_status(runs[0])
    if runs:
        raise UsageError(f"{out}: holds {len(runs)} training runs ({', '.join(p.name for p in runs)}); "
                         "give one of them")
    raise UsageError(f"{out}: not a job output; {EXPECTED}")


def format_status(s: dict[str, Any]) -> list[str]:
    lines = [f"{s['out']}: {s['job']} output"]
    if "units_committed" in s:
        planned = "?" if s["units_planned"] is None else s["units_planned"]
        lines.append(f"  committed units: {s['units_committed']} of {planned}; shards: {s['shards']}")
        if s["counts"]:
            lines.append("  counts: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in s["counts"].items()))
        if s["failures_by_class"]:
            lines.append(f"  failures by class ({s['failed']}):")
            for cls, f in s["failures_by_class"].items():
                lines.append(f"    {cls}: {f['count']}, e.g. {f['example']}")
        else:
            lines.append("  failures: none")
        t = s["throughput"]
        if t:
            lines.append("  throughput (last run): " + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in t.items()))
    else:
        steps = [c["step"] for c in s["checkpoints"]]
        lines.append(f"  checkpoints: {', '.join(map(str, steps)) or 'none'}; latest step {s['latest_step']}")
        if s["partial_saves"]:
            lines.append(f"  interrupted saves (ignored, removed by the next save): {', '.join(s['partial_saves'])}")
        lines.append(f"  export: {s['export'] or 'none yet'}" + ("; STOP requested" if s["stop_requested"] else ""))
    lines.append(f"  a rerun: {s['rerun']}")
    return lines


def run(args: argparse.Namespace) -> int:
    s = status(args.out)
    if args.json:
        print(json.dumps(s, default=str))
    else:
        print("\n".join(format_status(s)))
    return 0
