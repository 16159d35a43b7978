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
    from videopoet.samples import make_samples

    out = tmp_path_factory.mktemp("sample_media")
    make_samples(out)
    return out
