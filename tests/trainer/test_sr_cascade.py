"""The SR cascade: `videopoet sample --super-resolve`, `videopoet super-resolve`, grid checks, seeds, two stages."""

import dataclasses

import av
import numpy as np
import pytest
import torch

from videopoet.checkpoint import save_checkpoint
from videopoet.cli import main
from videopoet.config import UsageError, to_dict
from videopoet.trainer.model import MODEL_RECIPES, VideoPoetLM
from videopoet.trainer.sr import cascade
from videopoet.trainer.sr.model import SR_RECIPES, SRTransformer
from videopoet.trainer.sr.sampling import sample
from videopoet.trainer.sr.train import MODEL_KIND

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_sr(path, cfg, stage, seed=0):
    """An SR model at random init, saved as `videopoet train-sr` exports it (SRTrainer.export)."""
    torch.manual_seed(seed)
    model = SRTransformer(cfg)
    save_checkpoint(path, model.state_dict(), kind=MODEL_KIND, config=cfg, extra={"step": 0, "stage": stage})
    return path


def small(hr_grid, windows):
    return dataclasses.replace(SR_RECIPES.get("tiny"), hr_grid=hr_grid, windows=windows)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from videopoet.tokenizers.magvit2 import VideoTokenizer

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    cfg = dataclasses.replace(MODEL_RECIPES.get("tiny"), d_model=16, n_heads=2, ffn_dim=48)
    save_checkpoint(root / "lm", VideoPoetLM(cfg).state_dict(), kind="videopoet-lm", config={"model": to_dict(cfg)})
    VideoTokenizer.from_recipe("tiny").save(root / "vt")
    save_sr(root / "sr_demo" / "model", SR_RECIPES.get("demo"), stage=1)  # LR (5, 16, 16): the LM's 128x128
    save_sr(root / "sr_tiny", SR_RECIPES.get("tiny"), stage=1)  # LR (2, 4, 4): fits nothing here
    # a two-stage chain on small grids: (2, 2, 2) -> (2, 4, 4) -> (2, 8, 8)
    save_sr(root / "chain1", small((2, 4, 4), ((1, 4, 2), (1, 2, 4), (2, 2, 2))), stage=1, seed=1)
    save_sr(root / "chain2", SR_RECIPES.get("tiny"), stage=2, seed=2)
    return root


def probe(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        out = {"frames": len(frames), "size": (v.codec_context.width, v.codec_context.height)}
    with av.open(str(path)) as c:
        out["audio"] = bool(c.streams.audio)
    return out


def base_args(models):
    return ["sample", "--checkpoint", str(models / "lm"), "--video-tokenizer", str(models / "vt"),
            "--temperature", "0", "--device", "cpu"]


def test_sample_super_resolve_writes_the_hr_video_and_the_base(models, tmp_path, capsys):
    out = tmp_path / "uncond.mp4"
    # the train-sr run directory is accepted for its model/ export
    code = main(base_args(models) + ["--task", "uncond", "--super-resolve", str(models / "sr_demo"),
                                     "--sr-steps", "2", "--out", str(out)])
    assert code == 0
    assert probe(out) == {"frames": 17, "size": (256, 256), "audio": False}
    assert probe(tmp_path / "uncond_base.mp4") == {"frames": 17, "size": (128, 128), "audio": False}
    printed = capsys.readouterr().out
    assert "super-resolve stage 1/1" in printed and "(5, 16, 16) -> (5, 32, 32), 2 steps" in printed


def test_grid_mismatch_is_one_line_and_exit_2(models, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    code = main(base_args(models) + ["--task", "uncond", "--super-resolve", str(models / "sr_tiny"),
                                     "--out", str(out)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert str(models / "sr_tiny") in err and "grid (2, 4, 4)" in err and "given (5, 16, 16)" in err
    # stage 2's LR grid must be stage 1's HR grid: demo then demo is (5, 16, 16) vs (5, 32, 32)
    with pytest.raises(UsageError, match=r"stage 2 expects LR tokens of grid \(5, 16, 16\).*HR tokens of grid "
                                         r"\(5, 32, 32\)"):
        cascade.load_cascade([models / "sr_demo", models / "sr_demo"])
    # bad requests, before any model runs
    assert main(base_args(models) + ["--task", "t2i", "--caption", "x", "--super-resolve",
                                     str(models / "sr_demo"), "--out", str(tmp_path / "a.png")]) == 2
    assert "--super-resolve takes the 17-frame video" in capsys.readouterr().err
    assert main(base_args(models) + ["--task", "uncond", "--sr-steps", "3", "--out", str(out)]) == 2
    assert "--sr-steps applies with --super-resolve" in capsys.readouterr().err
    assert main(base_args(models) + ["--task", "uncond", "--super-resolve", str(tmp_path / "nope"),
                                     "--out", str(out)]) == 2
    assert "no such checkpoint directory" in capsys.readouterr().err
    assert main(base_args(models) + ["--task", "uncond", "--super-resolve", str(models / "vt"),
                                     "--out", str(out)]) == 2
    assert "expected 'sr-transformer'" in capsys.readouterr().err


def test_super_resolve_a_user_clip_with_caption_keeps_its_sound(models, tmp_path, capsys):
    from videopoet.pipeline.media.writer import write_mp4

    src = tmp_path / "src.mp4"
    y, x = np.mgrid[0:96, 0:112]
    rgb = np.stack([np.stack([(x * 2 + 6 * t) % 256, (y * 2) % 256, (x + y + 3 * t) % 256], -1)
                    for t in range(24)]).astype(np.uint8)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(48_000) / 16_000)).astype(np.float32)
    write_mp4(src, rgb, tone)
    out = tmp_path / "hr.mp4"
    code = main(["super-resolve", "--video", str(src), "--sr", str(models / "sr_demo" / "model"), "--video-tokenizer",
                 str(models / "vt"), "--caption", "a moving gradient", "--sr-steps", "2", "--device", "cpu",
                 "--out", str(out)])
    assert code == 0
    assert probe(out) == {"frames": 17, "size": (256, 256), "audio": True}
    assert "guidance text 4 / LR 1" in capsys.readouterr().out  # the stage-1 checkpoint's paper scales
    # a stage 1 whose input size is no media format: one line
    code = main(["super-resolve", "--video", str(src), "--sr", str(models / "sr_tiny"), "--video-tokenizer",
                 str(models / "vt"), "--out", str(tmp_path / "y.mp4")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stage 1 takes 32x32 video" in err


def test_a_seed_gives_the_same_tokens(models):
    stages = cascade.load_cascade([models / "sr_demo"], steps=3, seed=5)
    lr = torch.randint(0, 1 << 18, (2, 5, 16, 16), generator=torch.Generator().manual_seed(0))
    text = torch.randn(64, 384)
    mask = torch.arange(64) < 7
    a = cascade.run_cascade(stages, lr, text, mask, progress=False)[-1]
    b = cascade.run_cascade(stages, lr, text, mask, progress=False)[-1]
    assert a.shape == (2, 5, 32, 32) and torch.equal(a, b)
    assert (a < (1 << 18)).all()  # every position decoded
    other = cascade.run_cascade(cascade.load_cascade([models / "sr_demo"], steps=3, seed=6), lr, text, mask,
                                progress=False)[-1]
    assert not torch.equal(a, other)


def test_two_stages_chain_with_each_stages_guidance(models):
    stages = cascade.load_cascade([models / "chain1", models / "chain2"], steps=4, seed=3)
    assert [s.stage for s in stages] == [1, 2]
    assert stages[1].lr_grid == stages[0].hr_grid == (2, 4, 4)
    # the checkpoint's stage sets the paper's scales (A.3): text 4 / LR 1, then 8 / 2; seeds seed + k
    assert [(s.sampling.text_scale, s.sampling.lr_scale, s.sampling.seed) for s in stages] == [(4, 1, 3), (8, 2, 4)]
    lr = torch.randint(0, 1 << 18, (1, 2, 2, 2), generator=torch.Generator().manual_seed(1))
    text, mask = torch.randn(1, 64, 384), torch.ones(1, 64, dtype=torch.bool)
    first, second = cascade.run_cascade(stages, lr, text, mask, progress=False)
    assert first.shape == (1, 2, 4, 4) and second.shape == (1, 2, 8, 8)
    # stage 2 took stage 1's output as its LR condition, and stage 1 the given tokens
    assert torch.equal(first, sample(stages[0].model, lr, text, mask, stages[0].sampling))
    assert torch.equal(second, sample(stages[1].model, first, text, mask, stages[1].sampling))
    # overrides: one value for every stage, or one per stage
    over = cascade.load_cascade([models / "chain1", models / "chain2"], text_scales=[1.0], lr_scales=[1.5, 2.5])
    assert [(s.sampling.text_scale, s.sampling.lr_scale, s.sampling.steps) for s in over] == [(1, 1.5, 24),
                                                                                              (1, 2.5, 24)]
    with pytest.raises(UsageError, match="--sr-lr-scale: 3 values for 2 stage"):
        cascade.load_cascade([models / "chain1", models / "chain2"], lr_scales=[1, 2, 3])
    # the given tokens must be stage 1's LR grid
    with pytest.raises(UsageError, match=r"stage 1 expects LR tokens of grid \(2, 2, 2\), given \(2, 4, 4\)"):
        cascade.run_cascade(stages, first, progress=False)
