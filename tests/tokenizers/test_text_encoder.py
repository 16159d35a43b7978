"""Frozen text encoder: the embedded MiniLM default and the production T5 path (a tiny T5 saved here)."""

import pytest
import torch

from videopoet.tokenizers.text_encoder import MAX_TOKENS, TextEncoder, TextEncoderError, embedded_model_dir


@pytest.fixture(scope="module")
def embedded():
    return TextEncoder()


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory):
    """A randomly initialised T5 encoder saved like a real checkpoint; it borrows the embedded
    model's (WordPiece) tokenizer because no SentencePiece model can be fetched offline."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    d = tmp_path_factory.mktemp("tiny_t5")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir(), local_files_only=True)
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=tokenizer.vocab_size, d_model=24, d_kv=8, num_heads=3, num_layers=2, d_ff=48,
                   pad_token_id=tokenizer.pad_token_id)
    T5EncoderModel(cfg).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def test_embedded_shapes_mask_and_width(embedded):
    emb, mask, truncated = embedded.encode(["a red car drives along a coastal road", "hi"])
    assert embedded.width == 384 and embedded.identity == "bert:all-MiniLM-L6-v2"
    assert emb.shape == (2, MAX_TOKENS, 384) and emb.dtype == torch.float16
    assert mask.shape == (2, MAX_TOKENS) and mask.dtype == torch.bool
    # [CLS] hi [SEP] = 3 tokens; mask is a prefix; padding rows are zero
    assert mask[1].sum() == 3 and mask[1, :3].all() and not mask[1, 3:].any()
    assert emb[1, 3:].abs().sum() == 0 and emb[1, :3].abs().sum() > 0
    assert not truncated.any()
    assert len(embedded.content_hash) == 64


def test_same_caption_same_embeddings_regardless_of_batch(embedded):
    cap = "a dog catches a frisbee in the park"
    a, ma, _ = embedded.encode([cap])
    b, mb, _ = embedded.encode(["something else entirely, longer than the other", cap])
    assert torch.equal(ma[0], mb[1])
    n = int(ma[0].sum())
    assert torch.allclose(a[0, :n].float(), b[1, :n].float(), atol=2e-3)
    c, _, _ = embedded.encode([cap])
    assert torch.equal(a, c)
    d, _, _ = embedded.encode(["a cat sleeps on a sofa"])
    assert not torch.allclose(a[0, :4].float(), d[0, :4].float(), atol=1e-2)


def test_long_caption_truncated_and_flagged(embedded):
    long = " ".join(["word"] * 100)
    emb, mask, truncated = embedded.encode([long, "short caption"])
    assert truncated.tolist() == [True, False]
    assert mask[0].all()
    just_fits = " ".join(["word"] * (MAX_TOKENS - 2))  # + [CLS] + [SEP] = 64
    _, m, t = embedded.encode([just_fits])
    assert m[0].all() and not t[0]


def test_missing_model_dir_names_the_path(tmp_path):
    missing = tmp_path / "no-such-t5-xl"
    with pytest.raises(TextEncoderError, match="no-such-t5-xl") as err:
        TextEncoder(missing)
    assert "does not exist" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextEncoderError, match="config.json"):
        TextEncoder(tmp_path / "empty")


def test_t5_production_path(tiny_t5_dir):
    enc = TextEncoder(tiny_t5_dir)
    from transformers import T5EncoderModel

    assert isinstance(enc.model, T5EncoderModel)
    assert enc.width == 24 and enc.identity.startswith("t5:")
    emb, mask, truncated = enc.encode(["a tiny t5 caption", " ".join(["x"] * 90)])
    assert emb.shape == (2, MAX_TOKENS, 24)
    assert truncated.tolist() == [False, True]
    assert torch.equal(enc.encode(["a tiny t5 caption"])[0][0], emb[0])
    # the hash covers the weights: changing them changes it
    h = enc.content_hash
    assert TextEncoder(tiny_t5_dir).content_hash == h
    model = T5EncoderModel.from_pretrained(tiny_t5_dir, local_files_only=True)
    with torch.no_grad():
        model.shared.weight.add_(1.0)
    model.save_pretrained(tiny_t5_dir)
    assert TextEncoder(tiny_t5_dir).content_hash != h
