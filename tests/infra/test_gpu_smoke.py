"""bench/gpu_smoke.py keeps working on the CPU: CPU mode runs in seconds and writes every section's figures
or a skip reason, with float32 RoPE tables and no import of what the GPU machine lacks (ray, mlflow, av, beam)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_smoke.py"
SECTIONS = ("magvit2", "lm", "zero3", "ingest", "rope")
FIGURES = {"magvit2": ("encode_clips_per_s", "decode_clips_per_s"), "lm": ("tokens_per_s", "flops_per_token"),
           "zero3": ("tokens_per_s", "backend"), "ingest": ("clips_per_s",), "rope": ("dtype",),
           "i3d": ("clips_per_s", "preprocess_clips_per_s")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_smoke_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_gpu_smoke_cpu_mode(tmp_path):
    out = tmp_path / "gpu_smoke.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-P", str(SCRIPT), "--cpu-smoke", "--out", str(out),
                           "--port", str(_free_port())],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "cpu-smoke" and result["complete"] is True
    for name in SECTIONS:
        sec = result["sections"][name]
        assert isinstance(sec["seconds"], (int, float)), (name, sec)
        if sec["status"] == "skipped":
            assert sec["reason"], (name, sec)
        else:
            assert sec["status"] == "ok", (name, sec)
            for key in FIGURES[name]:
                assert sec.get(key) not in (None, 0, ""), (name, key, sec)
    # everything but DeepSpeed is in the CPU venv, so only zero3 may be skipped (and only for deepspeed)
    for name in ("magvit2", "lm", "ingest", "rope", "i3d"):
        assert result["sections"][name]["status"] == "ok", result["sections"][name]
    if result["sections"]["zero3"]["status"] == "skipped":
        assert "deepspeed" in result["sections"]["zero3"]["reason"]
    else:
        assert result["sections"]["zero3"]["backend"] == "gloo"
    assert result["rope_tables_dtype"] == "float32"
    assert result["sections"]["rope"]["ok"] is True
    assert result["sections"]["lm"]["mfu"] is None  # no peak FLOP/s for a CPU
    assert result["imports_blocked"]["by_project_modules"] == {}
    assert proc.stdout.strip().splitlines()[-1].startswith("gpu_smoke (cpu-smoke, cpu")


def test_peak_flops_table():
    mod = _load_script()
    assert mod.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert mod.peak_bf16_flops("NVIDIA H200") == 989e12
    assert mod.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert mod.peak_bf16_flops("NVIDIA H100 PCIe") is None
    assert mod.peak_bf16_flops("NVIDIA GeForce RTX 4090") is None
