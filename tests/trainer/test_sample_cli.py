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
