"""CLIPSIM, C3D Inception Score, VGGish FAD: closed forms, and loaders on tiny random weights saved in each layout."""

from __future__ import annotations

import gzip
import hashlib
import json
from importlib.resources import files

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from tiny_clip import tiny_clip_dir

from videopoet.config import UsageError
from videopoet.eval.c3d import C3D, c3d_probs, load_c3d
from videopoet.eval.clip_score import clipsim_from_embeddings, load_clip
from videopoet.eval.frechet import FeatureStats
from videopoet.eval.i3d_weights import WeightsError
from videopoet.eval.inception_score import inception_score
from videopoet.eval.lpips_score import load_lpips, lpips_videos
from videopoet.eval.vggish import (
    MEL_BANDS,
    SAMPLE_RATE,
    VGGish,
    fad,
    hertz_to_mel,
    load_vggish,
    log_mel,
    vggish_embeddings,
    vggish_examples,
    vggish_stats,
)
from videopoet.eval.weights_errors import BadWeights, MissingWeights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OPENAI_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
OPENAI_STD = np.array([0.26862954, 0.26130258, 0.27577711])


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, UsageError) and isinstance(err.value, WeightsError)
    return msg


# ----------------------------------------------------------------------------------------------- CLIPSIM


def test_clipsim_closed_forms():
    e = np.array([[1.0, 0, 0]])
    assert clipsim_from_embeddings([3 * e], e)[0] == pytest.approx(1.0)  # identical direction, any norm
    assert clipsim_from_embeddings([np.array([[0.0, 2, 0]])], e)[0] == pytest.approx(0.0, abs=1e-15)  # orthogonal
    theta = 0.7
    frame = np.array([[np.cos(theta), np.sin(theta), 0.0]]) * 5
    assert clipsim_from_embeddings([frame], e)[0] == pytest.approx(np.cos(theta), rel=1e-12)
    assert clipsim_from_embeddings([frame], e, scale=100)[0] == pytest.approx(100 * np.cos(theta), rel=1e-12)


def test_clipsim_averages_frames_then_videos():
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((t, 8)) for t in (1, 5, 2)]  # unequal lengths: frame-mean != pooled mean
    text = rng.standard_normal((3, 8))
    brute = []
    for f, c in zip(frames, text):
        brute.append(np.mean([fi @ c / np.linalg.norm(fi) / np.linalg.norm(c) for fi in f]))
    got = clipsim_from_embeddings(frames, text)
    np.testing.assert_allclose(got, brute, rtol=1e-12)
    pooled = np.mean([fi @ c / np.linalg.norm(fi) / np.linalg.norm(c) for f, c in zip(frames, text) for fi in f])
    assert abs(got.mean() - pooled) > 1e-3  # the order of averaging matters here, so the test can tell them apart
    same_t = rng.standard_normal((3, 4, 8))
    np.testing.assert_allclose(clipsim_from_embeddings(same_t, text), clipsim_from_embeddings(list(same_t), text))


def _openai_preprocess(frame: np.ndarray, size: int) -> torch.Tensor:
    """OpenAI CLIP's preprocessing written out: PIL bicubic short side -> size, centre crop, mean/std."""
    h, w = frame.shape[:2]
    new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    image = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.BICUBIC), np.float64) / 255.0
    top, left = (new_h - size) // 2, (new_w - size) // 2
    image = (image[top:top + size, left:left + size] - OPENAI_MEAN) / OPENAI_STD
    return torch.from_numpy(image).permute(2, 0, 1).float()


def test_tiny_clip_directory_scores_as_brute_force(tmp_path):
    directory, model, tokenizer = tiny_clip_dir(tmp_path)
    scorer = load_clip(directory)
    rng = np.random.default_rng(1)
    videos = [rng.integers(0, 256, (t, 40, 56, 3), dtype=np.uint8) for t in (3, 2)]
    captions = ["a cat runs", "dog"]
    got = scorer.clipsim(videos, captions)
    assert got.shape == (2,) and np.isfinite(got).all()
    with torch.no_grad():
        brute = []
        for video, caption in zip(videos, captions):
            pixels = torch.stack([_openai_preprocess(f, 32) for f in video])
            image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
            ids = torch.tensor([tokenizer(caption)["input_ids"]])
            text = model.text_projection(model.text_model(input_ids=ids).pooler_output)
            brute.append(torch.nn.functional.cosine_similarity(image, text).mean().item())
    np.testing.assert_allclose(got, brute, atol=1e-5)
    assert scorer.weights_sha256 == hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    assert scorer.name.startswith("clip-clip")
    hundred = load_clip(directory, scale=100).clipsim(np.stack([videos[1], videos[1]]), ["dog", "dog"])
    np.testing.assert_allclose(hundred, 100 * got[1], rtol=1e-5)


def test_clip_directory_processor_config_is_used(tmp_path):
    directory, _, _ = tiny_clip_dir(tmp_path, with_processor=True)
    config = json.loads((directory / "preprocessor_config.json").read_text())
    config["image_mean"] = [0.0, 0.0, 0.0]  # a different normalisation must change the score
    (directory / "preprocessor_config.json").write_text(json.dumps(config))
    videos = np.random.default_rng(2).integers(0, 256, (1, 2, 32, 32, 3), dtype=np.uint8)
    changed = load_clip(directory).clipsim(videos, ["cat"])
    (directory / "preprocessor_config.json").unlink()
    default = load_clip(directory).clipsim(videos, ["cat"])
    assert abs(changed[0] - default[0]) > 1e-4


def test_clip_missing_files_are_one_line(tmp_path):
    with pytest.raises(MissingWeights) as err:
        load_clip(tmp_path / "nowhere")
    assert "nowhere not found" in _one_line(err)
    directory, _, _ = tiny_clip_dir(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (directory / name).unlink()
    with pytest.raises(MissingWeights) as err:
        load_clip(directory)
    assert "no tokenizer" in _one_line(err)
    (directory / "model.safetensors").unlink()
    with pytest.raises(MissingWeights) as err:
        load_clip(directory)
    assert "no model.safetensors" in _one_line(err)


# ----------------------------------------------------------------------------------------------- IS with C3D


def test_inception_score_closed_forms():
    assert inception_score(np.full((50, 101), 1 / 101))[0] == pytest.approx(1.0, abs=1e-12)
    one_hot = np.eye(101)[np.arange(303) % 101]
    assert inception_score(one_hot)[0] == pytest.approx(101.0, rel=1e-12)
    two = np.array([[0.9, 0.1], [0.1, 0.9]] * 10)
    h = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    assert inception_score(two)[0] == pytest.approx(np.exp(np.log(2) - h), rel=1e-12)
    assert inception_score(two)[0] == pytest.approx(1.44493, abs=1e-5)


def test_inception_score_splits_are_contiguous_parts():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(7, 0.3), size=103)
    mean, std = inception_score(probs, splits=10)
    parts = [inception_score(probs[i * 103 // 10:(i + 1) * 103 // 10])[0] for i in range(10)]
    assert mean == pytest.approx(np.mean(parts), rel=1e-12) and std == pytest.approx(np.std(parts), rel=1e-12)
    assert std > 0
    with pytest.raises(ValueError, match="splits"):
        inception_score(probs, splits=0)


TINY_C3D = dict(widths=(4, 4, 6, 6, 8, 8, 8, 8), fc_width=16, num_classes=101)


def _tiny_c3d_files(tmp_path):
    torch.manual_seed(0)
    model = C3D(**TINY_C3D)
    state = {k: v for k, v in model.state_dict().items() if k != "mean"}
    pt = tmp_path / "c3d.pt"
    torch.save(state, pt)
    chainer = {f"{k.split('.')[0]}/{'W' if k.endswith('weight') else 'b'}": v.numpy() for k, v in state.items()}
    npz = tmp_path / "conv3d_deepnetA_ucf.npz"
    np.savez(npz, **chainer)
    mean = np.random.default_rng(0).uniform(80, 110, (3, 16, 128, 171)).astype(np.float32)
    mean_path = tmp_path / "mean2.npz"
    np.savez(mean_path, mean=mean)
    return pt, npz, mean_path, mean


def test_tiny_c3d_loads_from_torch_and_chainer_layouts(tmp_path):
    pt, npz, mean_path, _ = _tiny_c3d_files(tmp_path)
    from_pt, from_npz = load_c3d(pt, mean_path=mean_path), load_c3d(npz, "cpu", mean_path)
    assert from_pt.fc6.in_features == 8 * 4 * 4  # pool5 with ceil_mode: 7x7 -> 4x4, as Chainer's cover_all
    videos = np.random.default_rng(1).integers(0, 256, (3, 17, 40, 50, 3), dtype=np.uint8)
    probs = c3d_probs(videos, from_pt, batch_size=2)
    assert probs.shape == (3, 101) and probs.dtype == np.float64 and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(c3d_probs(videos, from_npz), probs, rtol=1e-6)
    expected = hashlib.sha256()
    for path in sorted([pt, mean_path]):
        expected.update(path.read_bytes())
    assert from_pt.weights_sha256 == expected.hexdigest()


def test_c3d_preprocess_bgr_align_corners_and_mean_crop(tmp_path):
    pt, _, mean_path, mean = _tiny_c3d_files(tmp_path)
    model = load_c3d(pt, mean_path=mean_path)
    ramp = np.zeros((1, 16, 4, 256, 3), np.uint8)
    ramp[..., 0] = np.arange(256, dtype=np.uint8)  # red rises along x; green constant 7, blue 200
    ramp[..., 1], ramp[..., 2] = 7, 200
    x = model.preprocess(ramp).numpy() + mean[:, :, 8:120, 8:120]
    np.testing.assert_allclose(x[0, 2], np.broadcast_to(np.arange(112) * 255 / 111, (16, 112, 112)), atol=1e-3)
    np.testing.assert_allclose(x[0, 1], 7, atol=1e-4)  # BGR: channel 0 is blue
    np.testing.assert_allclose(x[0, 0], 200, atol=1e-4)
    with pytest.raises(ValueError, match="16 frames"):
        model.preprocess(ramp[:, :15])


def test_c3d_errors_are_one_line(tmp_path):
    pt, _, mean_path, _ = _tiny_c3d_files(tmp_path)
    with pytest.raises(MissingWeights) as err:
        load_c3d(tmp_path / "c3d_ucf101.pt")
    assert "c3d_ucf101.pt not found" in _one_line(err)
    with pytest.raises(MissingWeights) as err:
        load_c3d(pt)
    assert "mean2.npz" in _one_line(err)
    with pytest.raises(MissingWeights) as err:
        load_c3d(pt, mean_path=tmp_path / "nomean.npz")
    assert "nomean.npz not found" in _one_line(err)
    state = torch.load(pt, weights_only=True)
    del state["fc7.bias"]
    state["mean"] = torch.zeros(3, 16, 112, 112)
    torch.save(state, pt)
    with pytest.raises(BadWeights) as err:
        load_c3d(pt)
    assert "lacks fc7.bias" in _one_line(err)


# ----------------------------------------------------------------------------------------------- FAD with VGGish


@pytest.mark.parametrize("chunking", ["fad", "vggish"])
def test_vggish_framing_ten_seconds_give_ten_examples(chunking):
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 10 * SAMPLE_RATE)
    assert vggish_examples(audio, chunking).shape == (10, 96, 64)
    assert vggish_examples(audio[:int(9.5 * SAMPLE_RATE)], chunking).shape[0] == 9
    assert vggish_examples(audio[:SAMPLE_RATE // 2], chunking).shape[0] == 0


def test_log_mel_of_a_tone_peaks_in_its_band():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    edges = np.linspace(hertz_to_mel(125.0), hertz_to_mel(7500.0), MEL_BANDS + 2)
    for hz in (300.0, 1000.0, 4000.0):
        spectrum = log_mel(0.5 * np.sin(2 * np.pi * hz * t))
        assert spectrum.shape == (98, 64)  # 1 + (16000 - 400) // 160 frames
        band = int(np.argmax(spectrum.mean(0)))
        assert abs(edges[band + 1] - hertz_to_mel(hz)) <= (edges[1] - edges[0])  # the band centred nearest f
    np.testing.assert_allclose(log_mel(np.zeros(SAMPLE_RATE)), np.log(0.01))


TINY_VGGISH = dict(widths=(4, 4, 8, 8, 8, 8), fc_width=16, embed_dim=128)


def test_tiny_vggish_state_dict_gives_embeddings(tmp_path):
    torch.manual_seed(0)
    state = VGGish(**TINY_VGGISH).state_dict()
    state["pca_eigen_vectors"] = torch.eye(128)  # torchvggish files may carry the PCA too: ignored
    path = tmp_path / "vggish-10086976.pth"
    torch.save(state, path)
    model = load_vggish(path)
    audio = 0.3 * np.sin(2 * np.pi * 440 * np.arange(10 * SAMPLE_RATE) / SAMPLE_RATE)
    emb = vggish_embeddings(audio, model, batch_size=4)
    assert emb.shape == (10, 128) and np.isfinite(emb).all()
    assert model.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    relu = vggish_embeddings(audio, load_vggish(path, post_relu=True))
    np.testing.assert_allclose(relu, np.maximum(emb, 0), atol=1e-6)
    assert (emb < 0).any()
    # torchvggish flattens with transpose(1, 3) then transpose(1, 2): the same (H, W, C) order as ours
    x = torch.from_numpy(vggish_examples(audio)[:2]).float()[:, None]
    with torch.no_grad():
        h = model.features(x).transpose(1, 3).transpose(1, 2).contiguous().view(2, -1)
        np.testing.assert_allclose(model.embeddings(h).numpy(), emb[:2], atol=1e-5)


def test_vggish_stats_pool_every_second_of_every_clip():
    torch.manual_seed(1)
    model = VGGish(**TINY_VGGISH).eval()
    rng = np.random.default_rng(7)
    clips = [rng.uniform(-0.3, 0.3, seconds * SAMPLE_RATE) for seconds in (3, 2, 4)]
    pooled = np.concatenate([vggish_embeddings(c, model) for c in clips])
    assert pooled.shape == (9, 128)
    stats = vggish_stats(clips[:1], model).merge(vggish_stats(clips[1:], model))
    assert stats.count == 9
    np.testing.assert_allclose(stats.mean, pooled.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(stats.cov(), np.cov(pooled, rowvar=False), rtol=1e-8, atol=1e-12)


def test_vggish_errors_are_one_line(tmp_path):
    with pytest.raises(MissingWeights) as err:
        load_vggish(tmp_path / "vggish.pth")
    assert "vggish.pth not found" in _one_line(err)
    state = VGGish(**TINY_VGGISH).state_dict()
    del state["embeddings.2.weight"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(BadWeights) as err:
        load_vggish(tmp_path / "bad.pth")
    assert "lacks embeddings.2.weight" in _one_line(err)


def test_fad_identical_zero_and_mean_shift():
    x = np.random.default_rng(4).standard_normal((500, 128))
    assert abs(fad(FeatureStats.from_features(x), FeatureStats.from_features(x[::-1]))) < 1e-8
    shift = np.linspace(-0.5, 0.5, 128)
    got = fad(FeatureStats.from_features(x), FeatureStats.from_features(x + shift))
    assert got == pytest.approx(float(shift @ shift), rel=1e-7)


# ----------------------------------------------------------------------------------------------- LPIPS


def _alexnet_features_file(tmp_path):
    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path, features.eval()


def test_lpips_with_a_local_alexnet_matches_the_formula(tmp_path):
    path, features = _alexnet_features_file(tmp_path)
    model = load_lpips(path)
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    got = lpips_videos(a, b, model, batch_size=4)
    assert got.shape == (2,) and (got > 0).all()
    np.testing.assert_allclose(lpips_videos(a, a, model), 0.0, atol=1e-12)
    linear = torch.load(files("lpips") / "weights" / "v0.1" / "alex.pth", map_location="cpu", weights_only=True)
    shift = torch.tensor([-0.030, -0.088, -0.188])[:, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[:, None, None]

    def taps(frame):  # relu1..relu5 of AlexNet's features, on LPIPS's scaled input
        h, out = (torch.from_numpy(frame).permute(2, 0, 1).float() / 127.5 - 1 - shift) / scale, []
        for i, layer in enumerate(features):
            h = layer(h[None])[0]
            if i in (1, 4, 7, 9, 11):
                out.append(h / (h.pow(2).sum(0, keepdim=True).sqrt() + 1e-10))
        return out

    with torch.no_grad():
        brute = [np.mean([sum((linear[f"lin{k}.model.1.weight"][0, :, 0, 0][:, None, None] * (fa - fb) ** 2)
                              .sum(0).mean().item() for k, (fa, fb) in enumerate(zip(taps(x), taps(y))))
                          for x, y in zip(va, vb)]) for va, vb in zip(a, b)]
    np.testing.assert_allclose(got, brute, rtol=1e-4)


def test_lpips_missing_backbone_is_one_line(tmp_path):
    with pytest.raises(MissingWeights) as err:
        load_lpips(tmp_path / "alexnet-owt-7be5be79.pth")
    assert "alexnet-owt-7be5be79.pth not found" in _one_line(err)
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, tmp_path / "partial.pth")
    with pytest.raises(BadWeights) as err:
        load_lpips(tmp_path / "partial.pth")
    assert "lacks features.0.bias" in _one_line(err)


# ----------------------------------------------------------------------------------------------- OpenAI-layout CLIP


def _openai_state(width: int = 64, layers: int = 2, patch: int = 8, grid: int = 4, context: int = 16,
                  vocab: int = 516, embed: int = 24) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def r(*shape, std=0.2):
        return torch.randn(*shape, generator=g) * std

    state = {"visual.conv1.weight": r(width, 3, patch, patch), "visual.class_embedding": r(width),
             "visual.positional_embedding": r(grid * grid + 1, width), "visual.proj": r(width, embed),
             "token_embedding.weight": r(vocab, width), "positional_embedding": r(context, width),
             "text_projection": r(width, embed), "logit_scale": torch.tensor(4.6)}
    for prefix in ("visual.", ""):
        for name in ("ln_pre", "ln_post") if prefix else ("ln_final",):
            state[f"{prefix}{name}.weight"], state[f"{prefix}{name}.bias"] = 1 + r(width), r(width)
        for i in range(layers):
            b = f"{prefix}transformer.resblocks.{i}."
            state.update({b + "attn.in_proj_weight": r(3 * width, width), b + "attn.in_proj_bias": r(3 * width),
                          b + "attn.out_proj.weight": r(width, width), b + "attn.out_proj.bias": r(width),
                          b + "mlp.c_fc.weight": r(4 * width, width), b + "mlp.c_fc.bias": r(4 * width),
                          b + "mlp.c_proj.weight": r(width, 4 * width), b + "mlp.c_proj.bias": r(width)})
            for ln in ("ln_1", "ln_2"):
                state[b + ln + ".weight"], state[b + ln + ".bias"] = 1 + r(width), r(width)
    return state


def _openai_blocks(x, state, prefix, causal):
    """OpenAI CLIP's ResidualAttentionBlocks (QuickGELU), written from its model.py structure."""
    width = x.shape[-1]
    mask = torch.full((x.shape[1],) * 2, float("-inf")).triu(1) if causal else None
    for i in range(_count_blocks(state, prefix)):
        b = f"{prefix}transformer.resblocks.{i}."
        attn = torch.nn.MultiheadAttention(width, width // 64, batch_first=True)
        attn.load_state_dict({k: state[b + "attn." + k] for k in
                              ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")})
        h = torch.nn.functional.layer_norm(x, (width,), state[b + "ln_1.weight"], state[b + "ln_1.bias"])
        x = x + attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        h = torch.nn.functional.layer_norm(x, (width,), state[b + "ln_2.weight"], state[b + "ln_2.bias"])
        h = torch.nn.functional.linear(h, state[b + "mlp.c_fc.weight"], state[b + "mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)
        x = x + torch.nn.functional.linear(h, state[b + "mlp.c_proj.weight"], state[b + "mlp.c_proj.bias"])
    return x


def _count_blocks(state, prefix):
    return len({k[len(prefix):].split(".")[2] for k in state if k.startswith(prefix + "transformer.resblocks.")})


def _openai_encode_image(pixels, state):
    ln = torch.nn.functional.layer_norm
    x = torch.nn.functional.conv2d(pixels, state["visual.conv1.weight"], stride=state["visual.conv1.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)
    cls = state["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + state["visual.positional_embedding"]
    w = x.shape[-1]
    x = _openai_blocks(ln(x, (w,), state["visual.ln_pre.weight"], state["visual.ln_pre.bias"]), state, "visual.", False)
    return ln(x[:, 0], (w,), state["visual.ln_post.weight"], state["visual.ln_post.bias"]) @ state["visual.proj"]


def _openai_encode_text(ids, state):
    x = state["token_embedding.weight"][ids] + state["positional_embedding"][:ids.shape[1]]
    x = _openai_blocks(x, state, "", True)
    x = torch.nn.functional.layer_norm(x, (x.shape[-1],), state["ln_final.weight"], state["ln_final.bias"])
    return x[torch.arange(ids.shape[0]), ids.argmax(-1)] @ state["text_projection"]  # eot has the largest id


def test_openai_layout_clip_converts_and_matches_a_reference_forward(tmp_path):
    with gzip.open(tmp_path / "bpe_simple_vocab_16e6.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("#version: 0.2\nc a\nca t</w>\n")  # 512 byte symbols + 2 merges + 2 specials = 516 ids
    state = _openai_state()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ViT-tiny.pt")
    scorer = load_clip(tmp_path / "ViT-tiny.pt")
    assert scorer.model.config.vision_config.hidden_act == "quick_gelu" and "quick_gelu" in scorer.name
    ids = scorer.tokenizer(["a cat"])["input_ids"][0]
    assert ids == [514, 256 + ord("a") - ord("!"), 513, 515]  # <sot> a</w> cat</w> <eot>, OpenAI's vocab order
    frames = np.random.default_rng(6).integers(0, 256, (3, 40, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        image = _openai_encode_image(torch.stack([_openai_preprocess(f, 32) for f in frames]), state).numpy()
        text = _openai_encode_text(torch.tensor([ids, ids[:1] + [513, 515, 515]]), state).numpy()
    np.testing.assert_allclose(scorer.image_embeddings(frames), image, atol=1e-4)
    np.testing.assert_allclose(scorer.text_embeddings(["a cat", "cat"]), text, atol=1e-4)
    assert scorer.weights_sha256 == hashlib.sha256((tmp_path / "ViT-tiny.pt").read_bytes()).hexdigest()
    gelu = load_clip(tmp_path / "ViT-tiny.pt", quick_gelu=False)
    assert np.abs(gelu.image_embeddings(frames) - image).max() > 1e-3  # the QuickGELU caveat is observable
    (tmp_path / "bpe_simple_vocab_16e6.txt.gz").unlink()
    with pytest.raises(MissingWeights) as err:
        load_clip(tmp_path / "ViT-tiny.pt")
    assert "no tokenizer" in _one_line(err)


class _NotWeights:
    """A pickled object that weights_only loading must refuse to build."""


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit's deprecation notices: we only make an archive
def test_torchscript_and_foreign_pickles_are_refused_in_one_line(tmp_path):
    scripted = tmp_path / "c3d_ucf101.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    with pytest.raises(BadWeights) as err:
        load_c3d(scripted)
    assert "TorchScript archive" in _one_line(err)
    foreign = tmp_path / "vggish.pth"
    torch.save({"features.0.weight": _NotWeights()}, foreign)
    with pytest.raises(BadWeights) as err:
        load_vggish(foreign)
    assert "not a weights-only torch state dict" in _one_line(err)


def test_magvit_flax_c3d_file_matches_a_flax_reference(tmp_path):
    """MAGVIT's Flax C3D (its structure: BGR flip, align-corners resize, x * 255 + x_offset, SAME convs, pool5 after
    padding H and W by one, (C, T, H, W) flattening) run in jax, against our loader of the same msgpack file."""
    jax = pytest.importorskip("jax")
    linen = pytest.importorskip("flax.linen")
    serialization = pytest.importorskip("flax.serialization")
    traverse = pytest.importorskip("flax.traverse_util")
    jnp = jax.numpy
    widths, names = TINY_C3D["widths"], ("conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b")

    def resize_axis(x, axis, out):  # align corners: output j reads input j * (in - 1) / (out - 1)
        n = x.shape[axis]
        weights = jnp.maximum(0.0, 1 - jnp.abs(jnp.arange(out)[None] * (n - 1) / (out - 1) - jnp.arange(n)[:, None]))
        return jnp.moveaxis(jnp.tensordot(jnp.moveaxis(x, axis, -1), weights, axes=1), -1, axis)

    class FlaxC3D(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = resize_axis(resize_axis(jnp.flip(x, -1), 2, 112), 3, 112)
            x = x * 255.0 + self.param("x_offset", linen.initializers.normal(20.0), (16, 112, 112, 3))[None]
            for name, width in zip(names, widths):
                x = linen.relu(linen.Conv(width, (3, 3, 3), name=name)(x))
                if name == "conv1a":
                    x = linen.max_pool(x, (1, 2, 2), (1, 2, 2))
                elif name == "conv5b":
                    x = linen.max_pool(jnp.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1), (0, 0))), (2, 2, 2), (2, 2, 2))
                elif name in ("conv2a", "conv3b", "conv4b"):
                    x = linen.max_pool(x, (2, 2, 2), (2, 2, 2))
            x = jnp.transpose(x, (0, 4, 1, 2, 3)).reshape(x.shape[0], -1)
            x = linen.relu(linen.Dense(TINY_C3D["fc_width"], name="fc6")(x))
            x = linen.relu(linen.Dense(TINY_C3D["fc_width"], name="fc7")(x))
            return linen.Dense(101, name="fc8")(x)

    videos = np.random.default_rng(8).integers(0, 256, (2, 16, 40, 48, 3), dtype=np.uint8)
    x = jnp.asarray(videos, jnp.float32) / 255.0
    rng = np.random.default_rng(9)  # parameters drawn here (flax's init would compile the net twice); biases non-zero
    params = {("x_offset",): rng.normal(-100, 20, (16, 112, 112, 3))}
    for name, c_in, c_out in zip(names, (3, *widths), widths):
        params[(name, "kernel")] = rng.normal(0, (27 * c_in) ** -0.5, (3, 3, 3, c_in, c_out))
        params[(name, "bias")] = rng.normal(0, 0.1, c_out)
    for name, c_in, c_out in (("fc6", widths[-1] * 16, 16), ("fc7", 16, 16), ("fc8", 16, 101)):
        params[(name, "kernel")], params[(name, "bias")] = rng.normal(0, c_in ** -0.5, (c_in, c_out)), rng.normal(
            0, 0.1, c_out)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    variables = {"params": traverse.unflatten_dict(params)}
    path = tmp_path / "c3d_ucf101.flax"
    path.write_bytes(serialization.to_bytes(variables))
    reference = np.asarray(jax.jit(FlaxC3D().apply)(variables, x))
    model = load_c3d(path)
    with torch.no_grad():
        ours = model(model.preprocess(videos)).numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    np.testing.assert_allclose(model.mean.numpy(), -np.asarray(params[("x_offset",)]).transpose(3, 0, 1, 2))
