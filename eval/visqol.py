"""ViSQOL (MOS-LQO, 1..5) through the PyPI package `visqol-python` (pure Python, ships its models, passes
the C++ conformance tests). Both modes run on our 16 kHz audio: speech mode is defined at 16 kHz; audio
mode is defined at 48 kHz and the package scores 16 kHz input with a warning (suppressed here), so its
number is a 16 kHz audio-mode score, not the 48 kHz one. Speech mode uses the polynomial mapper
(`use_lattice_model=False`, C++ `--use_lattice_model=false`): the C++ default lattice mapper needs the
optional `ai-edge-litert` runtime, which is not in the stack.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings

import numpy as np

SAMPLE_RATE = 16_000
MODES = ("speech", "audio")
MIN_SECONDS = 1.0  # shorter signals fail inside the package's patch selection (0.5 s does, 0.75 s does not)
_APIS: dict[str, object] = {}


def unavailable_reason() -> str | None:
    """None when ViSQOL can run; else one line saying why not."""
    if importlib.util.find_spec("visqol") is None:
        return "ViSQOL unavailable: the package visqol-python is not installed (pip install visqol-python==3.8.0)"
    return None


def _api(mode: str):
    if mode not in MODES:
        raise ValueError(f"ViSQOL mode {mode!r}: expected one of {MODES}")
    if mode not in _APIS:
        from visqol import VisqolApi

        api = VisqolApi()
        if mode == "speech":
            api.create(mode="speech", use_lattice_model=False)
        else:
            api.create(mode="audio")
        _APIS[mode] = api
    return _APIS[mode]


def score(ref: np.ndarray, deg: np.ndarray, mode: str = "speech", sample_rate: int = SAMPLE_RATE) -> float:
    """MOS-LQO of `deg` against `ref` (mono float waves, same rate)."""
    ref = np.asarray(ref, np.float64).reshape(-1)
    deg = np.asarray(deg, np.float64).reshape(-1)
    n = min(ref.size, deg.size)
    api = _api(mode)
    quiet = logging.getLogger("visqol")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(api.measure_from_arrays(ref[:n], deg[:n], sample_rate=sample_rate).moslqo)
    finally:
        quiet.setLevel(level)
