"""PyAV vs decord behind `videopoet.pipeline.media.probe_and_decode`: speed and robustness.

    .venv/bin/python bench/decode.py [--repeats 3] [--samples DIR]

Speed: wall time of probe_and_decode (17-frame windows, square, all windows, audio on) per file,
best of N, for each backend; clips/s and source-seconds/s over the whole set. Robustness: every
input of the sample set (faults included) plus a file with corrupt audio packets: which backend
gives clips whose burned-in frame counter matches the pick, and which fails with which error.
Seek mode: a generated 120 s video, 4 kept windows, PyAV decoding everything vs seeking.
Writes bench/results/decode.json and prints a table and one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from videopoet.pipeline.media import MediaConfig, MediaError, probe_and_decode
from videopoet.pipeline.samples import make_samples
from videopoet.pipeline.samples_counter import counter_side_in_output, decode_counter


def _corrupt_audio_copy(src: Path, dst: Path) -> None:
    import av

    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.audio[0]) if p.size]
    rng = np.random.default_rng(0)
    for k in (20, 21, 60):
        pos, size = packets[k]
        data[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", default=None, help="existing make-samples dir (default: generate to a temp dir)")
    ap.add_argument("--out", default="bench/results/decode.json")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="vp-bench-decode-")
    d = Path(args.samples) if args.samples else Path(tmp.name) / "samples"
    if not args.samples:
        make_samples(d)
    truth = json.loads((d / "truth.json").read_text())["files"]
    extra = Path(tmp.name) / "corrupt_audio.mp4"
    _corrupt_audio_copy(d / "h264_24fps_320x240_square.mp4", extra)
    inputs = [(name, d / name, info) for name, info in truth.items() if info["kind"] != "image"]
    inputs.append(("corrupt_audio.mp4", extra, {**truth["h264_24fps_320x240_square.mp4"], "kind": "video"}))

    results: dict[str, dict] = {}
    totals = {}
    for backend in ("pyav", "decord"):
        cfg = MediaConfig(decoder=backend, clips_per_video=0, formats=("square",), clip_frames=(17,))
        per_file = {}
        t_sum = clips_sum = src_s = 0.0
        ok = failed = counter_ok = counter_bad = 0
        for name, path, info in inputs:
            best, outcome = float("inf"), None
            for _ in range(args.repeats if info["kind"] != "fault" else 1):
                t0 = time.perf_counter()
                try:
                    clips = probe_and_decode(str(path), cfg)
                    outcome = clips
                except MediaError as err:
                    outcome = err
                except Exception as err:  # a backend bug, counted as a failure
                    outcome = MediaError("decode", type(err).__name__, str(err)[:200])
                best = min(best, time.perf_counter() - t0)
            row = {"seconds": best}
            if isinstance(outcome, MediaError):
                failed += 1
                row.update(status="failed", stage=outcome.stage, error_class=outcome.error_class)
            else:
                ok += 1
                row.update(status="ok", clips=len(outcome), notes=outcome[0].notes)
                t_sum += best
                clips_sum += len(outcome)
                src_s += outcome[0].source_duration_s or 0.0
                if info["kind"] == "video":
                    good = True
                    for c in outcome:
                        side = counter_side_in_output(info["width"], info["height"], 128, 128)
                        good &= [decode_counter(f, side) for f in c.rgb] == c.source_frame_indices
                    counter_ok += good
                    counter_bad += not good
                    row["counter_matches_pick"] = bool(good)
            per_file[name] = row
        results[backend] = per_file
        totals[backend] = {"inputs_ok": ok, "inputs_failed": failed, "clips": int(clips_sum),
                           "decode_seconds": t_sum, "clips_per_s": clips_sum / t_sum if t_sum else 0.0,
                           "source_seconds_per_s": src_s / t_sum if t_sum else 0.0,
                           "counter_ok": counter_ok, "counter_bad": counter_bad}

    # seek mode on a long video: 4 kept 17-frame windows out of 120 s
    from fractions import Fraction

    from videopoet.pipeline.samples_content import SEED, VideoSpec
    from videopoet.pipeline.samples_write import _write_video

    long_path = Path(tmp.name) / "long_120s.mp4"
    _write_video(long_path, VideoSpec("long_120s.mp4", 320, 240, Fraction(30), 3600, "pan", 1,
                                      flashes=(100, 2000)), SEED)
    seek = {}
    for mode in ("never", "auto"):
        cfg = MediaConfig(seek=mode, clips_per_video=4)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            clips = probe_and_decode(str(long_path), cfg)
            best = min(best, time.perf_counter() - t0)
        seek[mode] = {"seconds": best, "clips": len(clips), "notes": clips[0].notes}
    seek["speedup"] = seek["never"]["seconds"] / seek["auto"]["seconds"]
    print(f"long 120 s 320x240 30 fps, 4 windows: decode all {seek['never']['seconds']:.2f} s, "
          f"seek {seek['auto']['seconds']:.2f} s ({seek['speedup']:.1f}x; {seek['auto']['notes'][0]})")

    print(f"{'input':40s} {'pyav':>22s} {'decord':>22s}")
    for name, _, _ in inputs:
        cells = []
        for b in ("pyav", "decord"):
            r = results[b][name]
            cells.append(f"{r['seconds'] * 1e3:8.1f} ms {r['status']}" if r["status"] == "ok"
                         else f"{r['error_class'][:20]}")
        print(f"{name[:40]:40s} {cells[0]:>22s} {cells[1]:>22s}")
    doc = {"bench": "decode", "host": platform.node(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
           "repeats": args.repeats, "totals": totals, "seek_long_video": seek, "per_file": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str))
    for b, t in totals.items():
        print(f"{b}: {t['inputs_ok']} ok / {t['inputs_failed']} failed, {t['clips']} clips in "
              f"{t['decode_seconds']:.2f} s = {t['clips_per_s']:.1f} clips/s, "
              f"{t['source_seconds_per_s']:.1f} s of video per s; counter ok {t['counter_ok']}, bad {t['counter_bad']} "
              f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
