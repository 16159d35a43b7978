"""SoundStream training job: runs on clip shards, resumes exactly, tracks in MLflow."""

import json

import numpy as np
import pytest
import torch

from videopoet import commands
from videopoet.config import ConfigError
from videopoet.pipeline.clip_shards import Clip, write_clip_shard
from videopoet.tokenizers import train_audio
from videopoet.tokenizers.soundstream import AudioTokenizer

# A few-second CPU configuration of the real job (same code paths as tiny: GAN, eval, saves).
FAST = [
    "model.channels=4", "model.latent_dim=16", "model.kmeans_iters=2",
    "disc.wave_channels=4", "disc.wave_max_channels=16", "disc.stft_channels=4",
    "data.segment_samples=4096", "data.batch_size=2", "data.eval_clips=2", "data.holdout_fraction=0.25",
    "loss.gan_start_step=2", "steps=4", "log_every=1", "eval_every=2", "save_every=2",
]


def _clip(key: str, level: float, n: int = 6000) -> Clip:
    t = np.arange(n) / 16000
    wave = level + 0.2 * np.sin(2 * np.pi * (200 + 1000 * level) * t)
    return Clip(key=key, rgb=np.zeros((1, 4, 4, 3), np.uint8), meta={"caption": key},
                audio=(wave * 32767).astype(np.int16))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio_shards")
    # the clip's DC level identifies it in a crop: level = index / 40
    write_clip_shard(d / "s0.tar", [_clip(f"a{i:02d}", i / 40) for i in range(8)])
    no_audio = Clip(key="silent_video", rgb=np.zeros((1, 4, 4, 3), np.uint8), meta={})
    write_clip_shard(d / "s1.tar", [no_audio] + [_clip(f"a{i:02d}", i / 40) for i in range(8, 16)])
    return d


@pytest.fixture(autouse=True)
def _mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def _parse(argv):
    """`videopoet train-tokenizer audio ARGV` parsed by the command's argument spec."""
    from videopoet.tokenizers import cli

    return commands.parse(commands.build_parser([cli]), ["train-tokenizer", "audio", *argv])


def _losses(out):
    return [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]


def test_stream_skips_held_out_clips_and_resumes_exactly(shards):
    keys = [f"a{i:02d}" for i in range(16)]
    held = {k for k in keys if train_audio.is_holdout(k, 0.25)}
    assert 0 < len(held) < len(keys)
    stream = train_audio.AudioCropStream(shards, 2048, 0.25, seed=0)
    it = stream.batches(3)
    first = [next(it) for _ in range(4)]
    seen = {f"a{round(float(crop.mean()) * 40):02d}" for batch, _ in first for crop in batch}
    assert seen and not (seen & held)
    # a second stream started from a recorded position continues identically
    resumed = train_audio.AudioCropStream(shards, 2048, 0.25, seed=0)
    resumed.load_state(first[1][1])
    it2 = resumed.batches(3)
    for expected, _ in first[2:]:
        got, _ = next(it2)
        assert torch.equal(got, expected)


def test_resume_equals_uninterrupted(shards, tmp_path):
    cfg = train_audio.RECIPES.get("tiny", FAST)
    full = train_audio.train(cfg, shards, tmp_path / "full", quiet=True)
    part = train_audio.train(cfg, shards, tmp_path / "part", stop_after=2, quiet=True)
    assert part["step"] == 2 and (tmp_path / "part" / "checkpoints" / "step_00000002").is_dir()
    resumed = train_audio.train(cfg, shards, tmp_path / "part", quiet=True)
    assert resumed["steps_this_run"] == 2 and resumed["step"] == 4
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "part")
    assert [r["step"] for r in a] == [1, 2, 3, 4] and "loss/d" in a[-1]  # GAN phase reached
    assert a == b
    assert full["content_hash"] == resumed["content_hash"]
    # the exported tokenizer is the trained model and loads through the public API
    tok = AudioTokenizer.load(tmp_path / "full" / "tokenizer")
    assert tok.content_hash == full["content_hash"]
    assert tok.encode(torch.zeros(1, 1, 34_000)).shape == (1, 4, 106)
    # a different config in the same --out is refused
    with pytest.raises(ConfigError, match="different config"):
        train_audio.train(train_audio.RECIPES.get("tiny", FAST + ["optim.lr=0.5"]), shards, tmp_path / "full",
                          quiet=True)


def test_cli_run_logs_mlflow(shards, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    args = _parse(["--data", str(shards), "--out", str(tmp_path / "out"), "--run-name", "audio-test", *FAST])
    assert commands.resolve(args.run)(args) == 0
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["videopoet"],
                              filter_string="tags.`videopoet.job` = 'train-tokenizer-audio'",
                              output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "audio-test" and run.data.tags["eval_set"] == "held-out"
    for key in ("loss/rec_mel", "loss/d", "eval/mel_distance", "eval/si_snr_db",
                "usage/level0_eval_used_fraction", "usage/level3_alive_fraction"):
        assert key in run.data.metrics, key
    client = MlflowClient()
    wavs = [a.path for a in client.list_artifacts(run.info.run_id, "audio")]
    assert any(p.endswith("_original.wav") for p in wavs) and any(p.endswith("_reconstructed.wav") for p in wavs)
    assert run.data.tags["tokenizer.content_hash"] == AudioTokenizer.load(tmp_path / "out" / "tokenizer").content_hash


def test_bad_arguments(shards, tmp_path):
    with pytest.raises(ConfigError, match="data.batch_size"):
        train_audio.run(_parse(["--data", str(shards), "data.batch_size=two"]))
    # a missing --data is a one-line user error: exit 2 through the command protocol (the job raises UsageError)
    assert commands.run_args(_parse(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])) == 2


def test_audio_metrics_closed_forms():
    from videopoet.eval.audio_metrics import codebook_usage, mel_distance, mel_filterbank, si_snr

    torch.manual_seed(0)
    ref = 0.1 * torch.randn(2, 1, 16_000)
    assert torch.allclose(mel_distance(ref, ref), torch.zeros(2))
    # halving the amplitude moves every log10 mel magnitude by log10(2)
    assert torch.allclose(mel_distance(ref, 0.5 * ref), torch.full((2,), np.log10(2.0)), atol=1e-4)
    # SI-SNR: noise orthogonal to the zero-mean reference at 1/10 of its energy -> 10 dB, at any scale
    r = ref - ref.mean(-1, keepdim=True)
    n = torch.randn_like(r)
    n = n - n.mean(-1, keepdim=True)
    n = n - (n * r).sum(-1, keepdim=True) / (r * r).sum(-1, keepdim=True) * r
    n = n * torch.sqrt(0.1 * (r * r).sum(-1, keepdim=True) / (n * n).sum(-1, keepdim=True))
    assert torch.allclose(si_snr(r, r + n), torch.full((2,), 10.0), atol=1e-3)
    for gain in (3.0, -0.25):  # scale-invariant (the sign too: the projection absorbs it)
        assert torch.allclose(si_snr(r, gain * (r + n)), torch.full((2,), 10.0), atol=1e-3)
    assert torch.allclose(si_snr(r, torch.zeros_like(r)), torch.zeros(2))
    fb = mel_filterbank(1024, 64, 16_000)
    assert fb.shape == (513, 64) and (fb.sum(0) > 0).all() and float(fb.max()) <= 1.0
    usage = codebook_usage(torch.arange(8).view(1, 1, 8).repeat(1, 2, 1) % torch.tensor([8, 2]).view(1, 2, 1), 8)
    assert usage[0] == {"used_fraction": 1.0, "perplexity": pytest.approx(8.0)}
    assert usage[1]["used_fraction"] == 0.25 and usage[1]["perplexity"] == pytest.approx(2.0)


def test_eval_reports_visqol_beside_opus_once_per_clip():
    """The quality bar of a 2 kbps codec: ViSQOL speech (MOS 1..5) of the reconstruction beside Opus at 6 kbps
    on the same held-out clip; the Opus figure is computed once; a clip under visqol.MIN_SECONDS gets none."""
    from videopoet.eval import visqol

    torch.manual_seed(0)
    model = AudioTokenizer(train_audio.RECIPES.get("tiny", FAST).model).eval()
    t = torch.arange(20_000) / 16_000
    wave = (0.3 * torch.sin(2 * torch.pi * 440 * t) * (1 + 0.5 * torch.sin(2 * torch.pi * 3 * t))).reshape(1, -1)
    cache: dict[str, float] = {}
    with torch.no_grad():
        first = train_audio.evaluate(model, [("tone", wave)], cache)
        assert set(cache) == {"tone"} and 1.0 <= cache["tone"] <= 5.0
        assert 1.0 <= first["eval/visqol_speech"] <= 5.0
        assert first["eval/visqol_speech_opus_6kbps"] == cache["tone"]
        # Opus is not run again: a planted value comes back
        cache["tone"] = 4.25
        assert train_audio.evaluate(model, [("tone", wave)], cache)["eval/visqol_speech_opus_6kbps"] == 4.25
        short = wave[:, : int(visqol.MIN_SECONDS * 16_000) - 1]
        assert "eval/visqol_speech" not in train_audio.evaluate(model, [("short", short)], {})
        assert "eval/visqol_speech" not in train_audio.evaluate(model, [("tone", wave)], None)
