"""MAGVIT-v2 tokenizer: shapes, exact causality (random and trained weights), image == 1-frame
video, gradients, save/load, inflation from the image network."""

import pytest
import torch

from videopoet.tokenizers.magvit2 import (
    VideoTokenizer,
    inflate_state_dict,
    latent_frame_index,
    tensor_to_video,
    video_to_tensor,
)


def _video(b=2, t=17, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def _trained(steps=4):
    torch.manual_seed(1)
    model = VideoTokenizer.from_recipe("tiny")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = _video(b=1, t=9, seed=3)
    for step in range(steps):
        out = model(x)
        loss = (out.reconstruction - x).square().mean() + out.aux_loss(model.cfg, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"random": VideoTokenizer.from_recipe("tiny"), "trained": _trained()}


@pytest.mark.parametrize("which", ["random", "trained"])
def test_encoder_is_causal_and_first_frame_is_the_image(models, which):
    model = models[which]
    x = _video(t=17)
    with torch.no_grad():
        z_full = model.encoder(x)
    tokens = model.encode(x)
    assert tokens.shape == (2, 5, 4, 4)
    for k in range(4):
        prefix = model.encode(x[:, :, : 1 + 4 * k])
        assert torch.equal(prefix, tokens[:, : k + 1]), k
        with torch.no_grad():
            z_prefix = model.encoder(x[:, :, : 1 + 4 * k])
        assert torch.allclose(z_prefix, z_full[:, :, : k + 1], atol=1e-5)
    assert torch.equal(model.encode_image(x[:, :, 0]), tokens[:, :1])
    # changing only future frames leaves earlier tokens untouched, and does change later ones
    y = x.clone()
    y[:, :, 5:] = _video(t=12, seed=9)
    changed = model.encode(y)
    assert torch.equal(changed[:, :2], tokens[:, :2])
    assert not torch.equal(changed[:, 2:], tokens[:, 2:])


@pytest.mark.parametrize("which", ["random", "trained"])
def test_decoder_is_causal(models, which):
    model = models[which]
    tokens = model.encode(_video(b=1, t=13))
    full = model.decode(tokens)
    assert full.shape == (1, 3, 13, 32, 32)
    for k in range(3):
        prefix = model.decode(tokens[:, : k + 1])
        assert torch.allclose(prefix, full[:, :, : 1 + 4 * k], atol=1e-5), k


def test_shapes_paper_resolutions(models):
    model = models["random"]
    assert model.encode(_video(b=1, t=17, h=128, w=128)).shape == (1, 5, 16, 16)
    portrait = _video(b=1, t=5, h=224, w=128)
    assert model.encode(portrait).shape == (1, 2, 28, 16)
    assert model.latent_shape(17, 224, 128) == (5, 28, 16)
    assert model.latent_shape(41, 128, 128) == (11, 16, 16)
    assert model.encode(_video(b=1, t=41, h=16, w=16)).shape == (1, 11, 2, 2)
    assert model.decode(torch.zeros(1, 2, 28, 16, dtype=torch.long)).shape == (1, 3, 5, 224, 128)
    tokens = model.encode(_video(b=1, t=1))
    assert tokens.dtype == torch.long and 0 <= tokens.min() and tokens.max() < 2**18


def test_gradients_reach_every_parameter(models):
    torch.manual_seed(0)
    model = VideoTokenizer.from_recipe("tiny")
    x = _video(b=1, t=5)
    out = model(x)
    loss = (out.reconstruction - x).square().mean() + out.aux_loss(model.cfg, 0)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad
    # the encoder learns through the straight-through estimator
    assert model.encoder.conv_in.conv.weight.grad.abs().sum() > 0
    # AdaGN starts as plain GroupNorm but gets gradients from the latent statistics
    assert model.decoder.levels[0].adanorm.to_scale.weight.grad.abs().sum() > 0


def test_bad_inputs_raise_clear_errors(models):
    model = models["random"]
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        model.encode(_video(t=6))
    with pytest.raises(ValueError, match="multiples of 8"):
        model.encode(_video(h=20))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        model.encode(_video() * 200)
    with pytest.raises(ValueError, match="token ids"):
        model.decode(torch.full((1, 1, 2, 2), -1))


def test_save_load_roundtrip_and_content_hash(tmp_path, models):
    model = models["trained"]
    h = model.save(tmp_path / "tok")
    loaded = VideoTokenizer.load(tmp_path / "tok")
    assert loaded.content_hash == h == model.content_hash
    x = _video(b=1, t=5)
    assert torch.equal(loaded.encode(x), model.encode(x))
    assert loaded.cfg == model.cfg
    fresh = VideoTokenizer.from_recipe("tiny")
    assert fresh.content_hash != h  # computed for unsaved weights, differs for different weights
    (tmp_path / "tok" / "weights.pt").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="content hash"):
        VideoTokenizer.load(tmp_path / "tok")


def test_inflation_reproduces_the_image_network():
    torch.manual_seed(0)
    image_net = VideoTokenizer.from_recipe("tiny", ["temporal_kernel=1"])
    with torch.no_grad():  # make the affine / AdaGN params non-trivial too
        for p in image_net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    video_net = VideoTokenizer.from_recipe("tiny")
    video_net.load_state_dict(inflate_state_dict(image_net.state_dict(), video_net))
    img = _video(b=2, t=1)
    with torch.no_grad():
        assert torch.allclose(image_net.encoder(img), video_net.encoder(img), atol=1e-5)
        static = img.expand(-1, -1, 9, -1, -1)
        z_img = image_net.encoder(static)
        assert torch.allclose(z_img, video_net.encoder(static), atol=1e-4)
        tokens = video_net.encode(static)
        assert torch.allclose(image_net.decode(tokens), video_net.decode(tokens), atol=1e-4)


def test_frame_index_and_pixel_conversion():
    assert latent_frame_index(9, 3, torch.device("cpu")).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert latent_frame_index(5, 3, torch.device("cpu")).tolist() == [0, 1, 1, 2, 2]
    rgb = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    x = video_to_tensor(rgb)
    assert x.shape == (3, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(tensor_to_video(x), rgb)
