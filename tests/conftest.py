"""Test-wide settings (everything local, offline, on the CPU) and the fixtures several test modules share."""

import hashlib
import os
import sys
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One `ninja` for every process of the suite: DeepSpeed JIT-builds its CPU shared-memory op into one cache
# directory with whichever ninja is first on PATH, and the venv's (1.13, what Ray nodes and jobs find) and
# the system's (1.11) log commands differently, so each switch rebuilt the op (about a minute of CPU).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


# --- sample media (helper "media"): generated once per test session --------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sample_media(tmp_path_factory):
    """Directory written by `videopoet.samples.make_samples` (truth.json, manifest.jsonl, media)."""
    from videopoet.pipeline.samples import make_samples

    out = tmp_path_factory.mktemp("sample_media")
    make_samples(out)
    return out

# --- helper "media": CPU threads on a shared machine ------------------------------------------
# With more runnable threads than cores (several test processes on 2 cores), libgomp's default
# spin-waiting makes every torch op wait for a time slice: a MiDaS-small forward took 14 s with 2
# intra-op threads vs 0.5 s with 1. PASSIVE makes idle OpenMP threads sleep instead (0.54 s with 2
# threads). Read by libgomp when torch loads, so it must be set before any test imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# --- shared fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a shared 2-core machine more threads per process
    oversubscribe (measured ~10x slower); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray of 2 CPUs for one test module (the data-job engine tests)."""
    import ray

    for attempt in (1, 2):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            break
        except Exception as err:  # Ray waits a fixed 30 s for its raylet: a loaded 2-core machine can miss it
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(err):
                raise
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def output_digests():
    """sha256 of every file a data job must reproduce exactly: shards, manifest parts, the merged
    manifest and the plan, plus `extra_dirs` (summary and timings excluded)."""
    from videopoet.pipeline import manifest as mf

    def digests(out, extra_dirs=()):
        out = Path(out)
        paths = [p for d in (mf.SHARDS_DIR, mf.PARTS_DIR, *extra_dirs) for p in (out / d).glob("*")]
        paths += [out / mf.MERGED_FILE, out / mf.PLAN_FILE]
        return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(paths)}

    return digests
