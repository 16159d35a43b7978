"""Test-wide settings: everything local, offline and on the CPU."""

import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
