"""Convert an OpenAI / open_clip CLIP ViT state dict (e.g. ViT-B-16) into a transformers CLIPModel, offline.

Accepted file: a plain state dict in OpenAI's naming, as open_clip saves it (`open_clip_pytorch_model.bin`,
`open_clip_model.safetensors`, or any .bin/.pt/.pth read with torch.load weights_only=True, or .safetensors):
`visual.conv1.weight`, `visual.class_embedding`, `visual.positional_embedding`, `visual.ln_pre.*`,
`visual.transformer.resblocks.{i}.{ln_1, attn.in_proj_weight/bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`,
`visual.ln_post.*`, `visual.proj`, `token_embedding.weight`, `positional_embedding`, `transformer.resblocks.{i}...`,
`ln_final.*`, `text_projection`, `logit_scale` (a `state_dict` wrapper and a `module.` prefix are stripped;
OpenAI's scalar `input_resolution`, `context_length`, `vocab_size` are ignored). OpenAI's own `ViT-B-16.pt` is a
TorchScript archive, which we do not load (it would run code): save its state_dict once where torch.jit is trusted,
or use open_clip's file of the same weights. Sizes come from the tensors: widths, depths, patch, image size
(patch * sqrt(positions - 1)), context, vocabulary, embedding size; heads = width / 64 as in OpenAI's model.
Activation (the QuickGELU caveat, eval.md §2): OpenAI-trained weights use QuickGELU (x * sigmoid(1.702 x)), the
default here; open_clip models trained without it (e.g. LAION ViT-B-16) need quick_gelu=False, else the embeddings
drift silently. The tokenizer sits beside the weights: vocab.json + merges.txt, tokenizer.json, or OpenAI's
`bpe_simple_vocab_16e6.txt.gz` (shipped in the clip and open_clip packages), from which the CLIP BPE vocabulary is
rebuilt as OpenAI's SimpleTokenizer does.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPTokenizer

from videopoet.eval.weights_errors import BadWeights, MissingWeights, load_state_dict_file

OPENAI_BPE = "bpe_simple_vocab_16e6.txt.gz"
OPENAI_MERGES = 49152 - 256 - 2  # SimpleTokenizer keeps the first 48894 merges of its file
IGNORED = {"input_resolution", "context_length", "vocab_size"}


def read_openai_state(path: Path) -> dict[str, torch.Tensor]:
    state = load_state_dict_file(path, "CLIP weights")
    return {k.removeprefix("module."): v for k, v in state.items() if k not in IGNORED}


def _blocks(state: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[2] for k in state if k.startswith(f"{prefix}transformer.resblocks.")})


def openai_config(state: dict, quick_gelu: bool = True, bos_token_id: int = 49406, eos_token_id: int = 49407
                  ) -> CLIPConfig:
    """The CLIPConfig whose shapes match an OpenAI-layout state dict."""
    act = "quick_gelu" if quick_gelu else "gelu"
    vision_width, _, patch, _ = state["visual.conv1.weight"].shape
    positions = state["visual.positional_embedding"].shape[0]
    text_width = state["ln_final.weight"].shape[0]
    vision = dict(hidden_size=vision_width, intermediate_size=state["visual.transformer.resblocks.0.mlp.c_fc.weight"]
                  .shape[0], num_hidden_layers=_blocks(state, "visual."), num_attention_heads=vision_width // 64,
                  patch_size=patch, image_size=patch * round((positions - 1) ** 0.5), hidden_act=act)
    text = dict(vocab_size=state["token_embedding.weight"].shape[0], hidden_size=text_width,
                intermediate_size=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                num_hidden_layers=_blocks(state, ""), num_attention_heads=text_width // 64,
                max_position_embeddings=state["positional_embedding"].shape[0], hidden_act=act,
                bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=state["text_projection"].shape[1])


def _block_names(src: str, dst: str, state: dict) -> dict[str, torch.Tensor]:
    out = {}
    q, k, v = state[f"{src}.attn.in_proj_weight"].chunk(3)  # nn.MultiheadAttention packs [q; k; v]
    qb, kb, vb = state[f"{src}.attn.in_proj_bias"].chunk(3)
    for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
        out[f"{dst}.self_attn.{name}.weight"], out[f"{dst}.self_attn.{name}.bias"] = w, b
    pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for a, b in pairs.items():
        for leaf in ("weight", "bias"):
            out[f"{dst}.{b}.{leaf}"] = state[f"{src}.{a}.{leaf}"]
    return out


def openai_to_transformers(state: dict) -> dict[str, torch.Tensor]:
    """OpenAI / open_clip names -> transformers CLIPModel names (projections transposed, attention split)."""
    out = {
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_model.final_layer_norm.weight": state["ln_final.weight"],
        "text_model.final_layer_norm.bias": state["ln_final.bias"],
        "text_projection.weight": state["text_projection"].T,
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],  # sic: transformers' name
        "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
        "visual_projection.weight": state["visual.proj"].T,
        "logit_scale": state["logit_scale"],
    }
    for i in range(_blocks(state, "")):
        out.update(_block_names(f"transformer.resblocks.{i}", f"text_model.encoder.layers.{i}", state))
    for i in range(_blocks(state, "visual.")):
        out.update(_block_names(f"visual.transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}", state))
    return {k: v.float().contiguous() for k, v in out.items()}


def tokenizer_from_openai_bpe(path: Path) -> CLIPTokenizer:
    """CLIP's BPE tokenizer rebuilt from OpenAI's merges file, the vocabulary as SimpleTokenizer builds it."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = [line for line in fh.read().split("\n") if line.strip()]
    merges = [tuple(line.split()) for line in lines[1:OPENAI_MERGES + 1]]  # line 0 is the "#version" header
    byte_chars = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))  # GPT-2's bytes_to_unicode: printable bytes map to themselves ...
    chars, extra = list(byte_chars), 0
    for b in range(256):
        if b not in byte_chars:  # ... the others to 256 + n, in byte order
            byte_chars.append(b)
            chars.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in chars]
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, merges=merges)


def load_tokenizer(directory: Path):
    if (directory / "tokenizer.json").is_file() or (directory / "vocab.json").is_file():
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if (directory / OPENAI_BPE).is_file():
        return tokenizer_from_openai_bpe(directory / OPENAI_BPE)
    raise MissingWeights(f"CLIP weights: {directory} has no tokenizer (vocab.json + merges.txt, tokenizer.json, or "
                         f"{OPENAI_BPE}); copy them from the same CLIP release")


def clip_from_openai_state(path: Path, quick_gelu: bool = True) -> tuple[CLIPModel, object]:
    """(transformers CLIPModel, tokenizer) from an OpenAI-layout state-dict file and the tokenizer beside it."""
    tokenizer = load_tokenizer(path.parent)
    state = read_openai_state(path)
    needed = ("visual.conv1.weight", "visual.proj", "token_embedding.weight", "text_projection", "ln_final.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise BadWeights(f"CLIP weights: {path} lacks {missing[0]} (not an OpenAI / open_clip CLIP ViT state dict)")
    model = CLIPModel(openai_config(state, quick_gelu, tokenizer.bos_token_id, tokenizer.eos_token_id))
    try:
        model.load_state_dict(openai_to_transformers(state))
    except (KeyError, RuntimeError) as err:
        raise BadWeights(f"CLIP weights: {path}: {str(err).splitlines()[-1].strip()}") from None
    return model, tokenizer
