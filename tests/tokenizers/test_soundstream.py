"""SoundStream audio tokenizer: framing, code ranges, LLM layout, causality, persistence."""

import pytest
import torch

from videopoet.checkpoint import CheckpointError
from videopoet.tokenizers.soundstream import (
    AUDIO_VOCAB,
    CODEBOOK_SIZE,
    HOP,
    NUM_LEVELS,
    AudioTokenizer,
    CausalConv1d,
    CausalConvTranspose1d,
    flatten_codes,
    unflatten_codes,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    return AudioTokenizer.from_recipe("tiny")


def test_framing_34000_and_82000(tok):
    wave = 0.3 * torch.randn(2, 1, 34_000).clamp(-1, 1)
    codes = tok.encode(wave)
    assert codes.shape == (2, NUM_LEVELS, 106) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < CODEBOOK_SIZE
    assert tok.encode(0.1 * torch.randn(1, 1, 82_000)).shape == (1, 4, 256)
    # floor(S / 320) in general, including lengths that are not a multiple of the hop
    for s in (320, 639, 640, 16_001):
        assert tok.encode(torch.zeros(1, 1, s)).shape[-1] == s // HOP


def test_paper_recipe_same_framing():
    from videopoet.tokenizers.soundstream import RECIPES

    cfg = RECIPES.get("paper")
    assert cfg.hop == 320 and cfg.num_quantizers == 4 and cfg.codebook_size == 1024 and cfg.ema_decay == 0.99


def test_decode_shape_and_range(tok):
    codes = torch.randint(0, CODEBOOK_SIZE, (3, 4, 106))
    wave = tok.decode(codes)
    assert wave.shape == (3, 1, 106 * HOP)
    assert float(wave.abs().max()) <= 1.0
    assert tok.decode(codes, length=34_000).shape == (3, 1, 34_000)
    # coarser decodes (fewer levels) are allowed: quantizer dropout trains for them
    assert tok.decode(codes[:, :2]).shape == (3, 1, 106 * HOP)
    with pytest.raises(ValueError, match="range|lie in"):
        tok.decode(codes + CODEBOOK_SIZE)


def test_encode_is_deterministic_and_recipe_is_reproducible(tok):
    wave = 0.2 * torch.randn(1, 1, 8_000)
    assert torch.equal(tok.encode(wave), tok.encode(wave))
    other = AudioTokenizer.from_recipe("tiny")
    assert other.content_hash == tok.content_hash
    assert torch.equal(other.encode(wave), tok.encode(wave))


def test_flatten_level_major_with_offsets():
    codes = torch.randint(0, CODEBOOK_SIZE, (2, 4, 106))
    ids = flatten_codes(codes)
    assert ids.shape == (2, 4 * 106)
    # level-major: position l*F + f holds level l, frame f, offset by l*1024
    for level in range(4):
        assert torch.equal(ids[:, level * 106:(level + 1) * 106], codes[:, level] + level * CODEBOOK_SIZE)
    assert torch.equal(unflatten_codes(ids), codes)


def test_offsets_give_4096_distinct_ids():
    every = torch.arange(CODEBOOK_SIZE).view(1, 1, -1).expand(1, 4, -1)
    ids = flatten_codes(every)
    assert ids.unique().numel() == AUDIO_VOCAB == 4096
    assert int(ids.min()) == 0 and int(ids.max()) == 4095


def test_unflatten_rejects_ids_of_the_wrong_level():
    ids = flatten_codes(torch.zeros(1, 4, 5, dtype=torch.long))
    ids[0, 0] = 2000  # a level-1 id in level 0's block
    with pytest.raises(ValueError, match="level 0"):
        unflatten_codes(ids)
    with pytest.raises(ValueError):
        unflatten_codes(torch.zeros(1, 7, dtype=torch.long))


def test_causal_layers():
    torch.manual_seed(0)
    conv = CausalConv1d(2, 3, 16, stride=8)
    x = torch.randn(1, 2, 400)
    y = conv(x)
    assert y.shape[-1] == 400 // 8
    x2 = x.clone()
    x2[..., 200:] = torch.randn(1, 2, 200)
    y2 = conv(x2)
    # output frame f covers samples < 8 (f + 1): frames 0..24 cannot see sample 200
    assert torch.allclose(y[..., :25], y2[..., :25]) and not torch.allclose(y[..., 25], y2[..., 25])
    up = CausalConvTranspose1d(3, 2, 5)
    z = torch.randn(1, 3, 10)
    z2 = z.clone()
    z2[..., 6:] += 1.0
    assert up(z).shape[-1] == 50
    assert torch.allclose(up(z)[..., :30], up(z2)[..., :30])


def test_encoder_and_decoder_are_causal(tok):
    torch.manual_seed(1)
    wave = 0.3 * torch.randn(1, 1, 32 * HOP)
    changed = wave.clone()
    changed[..., 20 * HOP:] = 0.3 * torch.randn(1, 1, 12 * HOP)
    with torch.no_grad():
        a, b = tok.encoder(wave), tok.encoder(changed)
    assert torch.allclose(a[..., :20], b[..., :20]), "frames before the change must not move"
    assert not torch.allclose(a[..., 20:], b[..., 20:])
    codes = tok.encode(wave)
    later = codes.clone()
    later[..., 20:] = (later[..., 20:] + 1) % CODEBOOK_SIZE
    da, db = tok.decode(codes), tok.decode(later)
    assert torch.allclose(da[..., : 20 * HOP], db[..., : 20 * HOP])


def test_save_load_round_trip(tok, tmp_path):
    h = tok.save(tmp_path / "ck")
    assert h == tok.content_hash
    loaded = AudioTokenizer.load(tmp_path / "ck")
    assert loaded.content_hash == h and loaded.cfg == tok.cfg
    wave = 0.2 * torch.randn(2, 1, 34_000)
    codes = tok.encode(wave)
    assert torch.equal(loaded.encode(wave), codes)
    assert torch.allclose(loaded.decode(codes), tok.decode(codes))
    (tmp_path / "ck" / "weights.pt").write_bytes(b"tampered")
    with pytest.raises(CheckpointError, match="hash"):
        AudioTokenizer.load(tmp_path / "ck")


def test_bad_input_is_named(tok):
    with pytest.raises(ValueError, match=r"\[B, 1, S\]"):
        tok.encode(torch.zeros(2, 34_000))
    with pytest.raises(ValueError, match="int16"):
        tok.encode(torch.zeros(1, 1, 34_000, dtype=torch.int16))


@pytest.mark.parametrize("recipe", ["tiny", "paper"])
def test_untrained_autoencoder_passes_the_signal(recipe):
    """The init keeps the input-dependent part of encoder -> decoder near the input's scale (torch's
    default conv init attenuated it ~50 dB below the input-independent, bias-driven output)."""
    model = AudioTokenizer.from_recipe(recipe)
    t = torch.arange(8_000) / 16_000
    wave = (0.3 * torch.sin(2 * torch.pi * 440 * t)).view(1, 1, -1)
    with torch.no_grad():
        signal = model.decoder(model.encoder(wave)) - model.decoder(model.encoder(torch.zeros_like(wave)))
    ratio = float(signal.std() / wave.std())
    assert 0.05 < ratio < 20, ratio
