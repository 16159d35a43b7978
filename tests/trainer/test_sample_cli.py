"""`videopoet sample` end to end on tiny random-weight models saved by the test."""

import dataclasses

import av
import numpy as np
import pytest
import torch

from videopoet.checkpoint import save_checkpoint
from videopoet.cli import main
from videopoet.config import to_dict
from videopoet.trainer.model import MODEL_RECIPES, VideoPoetLM


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from videopoet.tokenizers.magvit2 import VideoTokenizer
    from videopoet.tokenizers.soundstream import AudioTokenizer

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    # tiny recipe narrowed to d=16: each decode step reads the 262,144-row visual head
    cfg = dataclasses.replace(MODEL_RECIPES.get("tiny"), d_model=16, n_heads=2, ffn_dim=48)
    lm = VideoPoetLM(cfg)
    # the export format of `videopoet train` (trainer.engine): config {"model": ModelConfig}
    save_checkpoint(root / "lm", lm.state_dict(), kind="videopoet-lm", config={"model": to_dict(cfg)})
    VideoTokenizer.from_recipe("tiny").save(root / "vt")
    AudioTokenizer.from_recipe("tiny").save(root / "at")
    return root


def probe(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        out = {"frames": len(frames), "size": (v.codec_context.width, v.codec_context.height)}
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            samples = sum(f.samples for f in c.decode(audio=0))
            out["audio_rate"], out["audio_s"] = a.codec_context.sample_rate, samples / a.codec_context.sample_rate
    return out


def test_image_to_video_with_caption_guidance_and_audio(models, tmp_path):
    from PIL import Image

    img = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "clip.mp4"
    code = main(["sample", "--task", "i2v", "--checkpoint", str(models / "lm"), "--video-tokenizer",
                 str(models / "vt"), "--audio-tokenizer", str(models / "at"), "--image", str(img),
                 "--caption", "a red ball bounces", "--cfg-scale", "3", "--top-k", "50", "--out", str(out)])
    assert code == 0
    info = probe(out)
    assert info["frames"] == 17 and info["size"] == (128, 128)
    assert info["audio_rate"] == 16_000 and 2.0 <= info["audio_s"] <= 2.3  # 2.125 s (+ AAC priming)


def test_text_to_image_png_and_bad_requests(models, tmp_path, capsys):
    out = tmp_path / "img.png"
    base = ["sample", "--checkpoint", str(models / "lm"), "--video-tokenizer", str(models / "vt")]
    assert main(base + ["--task", "t2i", "--caption", "a lighthouse", "--temperature", "0", "--out", str(out)]) == 0
    from PIL import Image

    assert Image.open(out).size == (128, 128)
    assert main(base + ["--task", "t2v"]) == 2
    assert "--task t2v needs --caption" in capsys.readouterr().err
    assert main(base + ["--task", "i2v", "--image", str(tmp_path / "missing.png")]) == 2
    assert "cannot read" in capsys.readouterr().err
    # a video tokenizer checkpoint given as the LM: refused by kind, naming the flag
    swapped = ["sample", "--checkpoint", str(models / "vt"), "--video-tokenizer", str(models / "vt")]
    assert main(swapped + ["--task", "t2i"]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "expected 'videopoet-lm'" in err
    assert main(base[:2] + [str(tmp_path / "nope")] + base[3:] + ["--task", "t2i"]) == 2
    assert "no such checkpoint directory" in capsys.readouterr().err


def test_frame_prediction_from_a_video_extended(models, tmp_path):
    # a 3 s 8 fps input made here (PyAV), continued from its first 5 frames
    src = tmp_path / "src.mp4"
    rgb = np.random.default_rng(1).integers(0, 255, (24, 96, 96, 3), dtype=np.uint8)
    from videopoet.pipeline.media.writer import write_mp4

    write_mp4(src, rgb)
    out = tmp_path / "fp.mp4"
    code = main(["sample", "--task", "fp", "--checkpoint", str(models / "lm"), "--video-tokenizer",
                 str(models / "vt"), "--video", str(src), "--temperature", "0", "--extend", "1",
                 "--out", str(out)])
    assert code == 0
    assert probe(out)["frames"] == 17 + 12  # one §7.2 continuation round


# ---------------------------------------------------------------------------------------------
# every task family, chains and the refusals (inputs made here with the media writer)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from PIL import Image

    from videopoet.pipeline.media.writer import write_mp4, write_wav

    root = tmp_path_factory.mktemp("inputs")
    g = np.random.default_rng(2)
    # a moving gradient (DIS finds flow in it), 3 s at 8 fps, with a 3 s tone
    y, x = np.mgrid[0:96, 0:112]
    rgb = np.stack([np.stack([(x * 2 + 6 * t) % 256, (y * 2) % 256, (x + y + 3 * t) % 256], -1)
                    for t in range(24)]).astype(np.uint8)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(48_000) / 16_000)).astype(np.float32)
    write_mp4(root / "av.mp4", rgb, tone)
    write_mp4(root / "short.mp4", rgb[:10])  # 1.25 s: shorter than a 17-frame clip
    write_wav(root / "tone.wav", tone)
    Image.fromarray(g.integers(0, 255, (90, 160, 3), dtype=np.uint8)).save(root / "img.png")
    return root


def sample(models, *args, audio=False):
    # greedy: a Gumbel draw over 262,144 visual ids costs more than the tiny model's step (sampled
    # draws are covered by the i2v test above and tests/trainer/test_sampling.py)
    base = ["sample", "--checkpoint", str(models / "lm"), "--video-tokenizer", str(models / "vt"),
            "--temperature", "0"]
    return main(base + (["--audio-tokenizer", str(models / "at")] if audio else []) + [str(a) for a in args])


def test_inpaint_and_outpaint_from_a_video(models, inputs, tmp_path):
    from videopoet.tokenizers import commit
    from videopoet.trainer.sample_inputs import masked_video, parse_mask

    video = torch.rand(1, 3, 17, 128, 128) * 2 - 1
    # --mask centre is the trained COMMIT condition, bit for bit; a box keeps the same fill rules
    for task in ("inpaint", "outpaint"):
        assert torch.equal(masked_video(video, task, parse_mask("centre")), commit.condition_video(video, task))
    boxed = masked_video(video, "inpaint", parse_mask("8,16,72,64"))
    assert (boxed[..., 16:64, 8:72] == commit.INPAINT_FILL).all()
    assert torch.equal(boxed[..., :16, :], video[..., :16, :])
    kept = masked_video(video, "outpaint", parse_mask("8,16,72,64"))
    assert torch.equal(kept[..., 16:64, 8:72], video[..., 16:64, 8:72])
    assert torch.equal(kept[..., 0, 0], video[..., 16, 8])  # the box's corner replicated outward

    out = tmp_path / "inpaint.mp4"
    assert sample(models, "--task", "inpaint", "--video", inputs / "av.mp4", "--mask", "8,16,72,64",
                  "--caption", "a garden", "--out", out) == 0
    assert probe(out) == {"frames": 17, "size": (128, 128)}  # no audio stream: none generated
    out = tmp_path / "outpaint.mp4"
    assert sample(models, "--task", "outpaint", "--video", inputs / "av.mp4", "--out", out) == 0
    assert probe(out) == {"frames": 17, "size": (128, 128)}


def test_stylization_from_flow_and_depth_of_a_video(models, inputs, tmp_path):
    from videopoet.pipeline.tasks import build_layout
    from videopoet.trainer.sample_inputs import load_clip, style_condition
    from videopoet.trainer.sampling import request_row

    clip = load_clip(str(inputs / "av.mp4"), "square", 17)
    cond = style_condition(clip, "dis", "none")  # what ingest's tiny recipe computes: DIS flow, no depth
    assert cond.shape == (17, 128, 128, 3) and cond.dtype == np.uint8
    assert (cond[..., 2] == 0).all() and cond[1:, :, :, 0].std() > 0  # flow moves; depth channel empty

    # the CLI run of style is the chain test's second step; here: optionally the first frame too, where
    # the layout has a place for it (pipeline.tasks decides), else a one-line refusal before sampling
    row = request_row("style", text_emb=np.zeros((64, 384), np.float32), condition_tokens=np.zeros(1280, np.int64),
                      first_frame_tokens=np.zeros(256, np.int64))
    takes_first = any(s.name == "first_frame" for s in build_layout("style", row).segments)
    code = sample(models, "--task", "style", "--video", inputs / "av.mp4", "--caption", "an oil painting",
                  "--first-frame", "--cfg-scale", "2", "--out", tmp_path / "style_ff.mp4")
    assert code == (0 if takes_first else 2)
    if takes_first:
        assert probe(tmp_path / "style_ff.mp4") == {"frames": 17, "size": (128, 128)}


def test_audio_tasks_a2v_v2a_avcont(models, inputs, tmp_path):
    out = tmp_path / "a2v.mp4"
    assert sample(models, "--task", "a2v", "--audio", inputs / "tone.wav", "--out", out, audio=True) == 0
    info = probe(out)
    assert info["frames"] == 17 and info["size"] == (128, 128) and 2.0 <= info["audio_s"] <= 2.3  # input audio muxed
    out = tmp_path / "v2a.mp4"
    assert sample(models, "--task", "v2a", "--video", inputs / "av.mp4", "--out", out, audio=True) == 0
    info = probe(out)
    assert info["frames"] == 17 and info["audio_rate"] == 16_000 and 2.0 <= info["audio_s"] <= 2.3
    wav = tmp_path / "v2a.wav"
    assert sample(models, "--task", "v2a", "--video", inputs / "av.mp4", "--out", wav, audio=True) == 0
    import wave

    with wave.open(str(wav)) as w:
        assert w.getframerate() == 16_000 and w.getnframes() == 34_000
    out = tmp_path / "avcont.mp4"
    assert sample(models, "--task", "avcont", "--video", inputs / "av.mp4", "--out", out, audio=True) == 0
    info = probe(out)
    assert info["frames"] == 17 and 2.0 <= info["audio_s"] <= 2.3


def test_unconditional_video_and_image(models, tmp_path):
    out = tmp_path / "uncond.mp4"
    assert sample(models, "--task", "uncond", "--out", out) == 0
    assert probe(out) == {"frames": 17, "size": (128, 128)}
    from PIL import Image

    img = tmp_path / "uncond.png"
    assert sample(models, "--task", "uncond", "--frames", "1", "--out", img) == 0
    assert Image.open(img).size == (128, 128)


def test_chain_image_to_video_then_stylize(models, inputs, tmp_path):
    chain = tmp_path / "chain.yaml"
    chain.write_text(f"- {{task: i2v, image: {inputs / 'img.png'}, caption: a boat drifts}}\n"
                     "- {task: style, caption: a pencil sketch, seed: 3, cfg_scale: 2}\n")
    out = tmp_path / "chain.mp4"
    assert sample(models, "--chain", chain, "--out", out) == 0
    assert probe(tmp_path / "chain_step1.mp4") == {"frames": 17, "size": (128, 128)}
    assert probe(out) == {"frames": 17, "size": (128, 128)}


def test_refusals_are_one_line(models, inputs, tmp_path, capsys):
    from videopoet.checkpoint import load_checkpoint

    def err_of(*args, audio=False):
        assert sample(models, *args, "--out", tmp_path / "x.mp4", audio=audio) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        return err

    # a task the checkpoint was not trained on (its train config lists data.tasks)
    tensors, meta = load_checkpoint(models / "lm")
    save_checkpoint(tmp_path / "lm_t2v", tensors, kind="videopoet-lm", config=meta["config"],
                    extra={"train_config": {"data": {"tasks": ["t2v", "t2i"]}}})
    assert main(["sample", "--checkpoint", str(tmp_path / "lm_t2v"), "--video-tokenizer", str(models / "vt"),
                 "--task", "inpaint", "--video", str(inputs / "av.mp4"), "--out", str(tmp_path / "x.mp4")]) == 2
    assert "not trained on task 'inpaint'" in capsys.readouterr().err
    assert "too short for 17 frames" in err_of("--task", "v2a", "--video", inputs / "short.mp4", audio=True)
    assert "needs --audio-tokenizer" in err_of("--task", "v2a", "--video", inputs / "av.mp4")
    assert "takes no --caption" in err_of("--task", "a2v", "--audio", inputs / "tone.wav", "--caption", "x")
    assert "outside the 128x128 frame" in err_of("--task", "inpaint", "--video", inputs / "av.mp4",
                                                 "--mask", "0,0,200,64")
    assert "--task style needs --caption" in err_of("--task", "style", "--video", inputs / "av.mp4")
    assert "no audio stream" in err_of("--task", "a2v", "--audio", inputs / "img.png", audio=True)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {task: i2v, colour: red}\n")
    assert "unknown key(s) colour" in err_of("--chain", bad)
    # a caption for an LM trained on another text width
    cfg = dataclasses.replace(MODEL_RECIPES.get("tiny"), d_model=16, n_heads=2, ffn_dim=48, text_dim=32)
    save_checkpoint(tmp_path / "lm32", VideoPoetLM(cfg).state_dict(), kind="videopoet-lm",
                    config={"model": to_dict(cfg)})
    assert main(["sample", "--checkpoint", str(tmp_path / "lm32"), "--video-tokenizer", str(models / "vt"),
                 "--task", "t2v", "--caption", "a cat", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "wide, the LM was trained on 32-wide embeddings" in capsys.readouterr().err
