"""The tokenize job's models: their identity (hashes read without loading), loading once per worker process."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from videopoet.checkpoint import CheckpointError, read_meta
from videopoet.config import ConfigError
from videopoet.pipeline.tokenize_config import HASH_KEYS, TokenizeConfig, TokenizerMismatch
from videopoet.tokenizers import magvit2, soundstream
from videopoet.tokenizers import text_encoder as te
from videopoet.tokenizers.magvit2 import VideoTokenizer
from videopoet.tokenizers.soundstream import AudioTokenizer
from videopoet.tokenizers.text_encoder import TextEncoder


def set_torch_threads(n: int) -> None:
    """Pin torch's intra-op threads: float reductions (and so quantised codes near a decision
    boundary) may differ with the thread count, and every engine must give the same bytes."""
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def model_identity(cfg: TokenizeConfig) -> dict[str, str]:
    """The hashes of the checkpoints `cfg` names, read without loading any weights."""
    ident: dict[str, str] = {}
    for name, path, kind in (("video_tokenizer", cfg.video_tokenizer, magvit2.CHECKPOINT_KIND),
                             ("audio_tokenizer", cfg.audio_tokenizer, soundstream.CHECKPOINT_KIND)):
        if name == "audio_tokenizer" and cfg.mode == "sr":
            ident[f"{name}_hash"] = ""  # SR shards hold no audio: the audio tokenizer is neither needed nor loaded
            continue
        if not path:
            raise ConfigError(f"{name}='': give --{name.replace('_', '-')} CHECKPOINT_DIR")
        try:
            meta = read_meta(path)
        except (CheckpointError, OSError, ValueError) as err:
            raise ConfigError(f"{name}={path}: not a readable checkpoint ({err})") from None
        if meta.get("kind") != kind:
            raise ConfigError(f"{name}={path}: a {meta.get('kind')!r} checkpoint, expected {kind!r}")
        ident[f"{name}_hash"] = str(meta["content_hash"])
    try:
        tdir = Path(cfg.text_encoder).expanduser() if cfg.text_encoder else te.embedded_model_dir()
        model_type = json.loads((tdir / "config.json").read_text())["model_type"]
        ident["text_encoder_id"] = f"{model_type}:{te.EMBEDDED_NAME if not cfg.text_encoder else tdir.name}"
        ident["text_encoder_hash"] = te.weights_hash(tdir)
    except (OSError, KeyError, ValueError) as err:
        raise ConfigError(
            f"text_encoder={cfg.text_encoder or '(embedded)'}: not a usable model directory ({err})") from None
    return ident


@dataclass
class Models:
    video: Any
    audio: Any  # None in the SR mode
    text: Any
    device: str

    def identity(self) -> dict[str, str]:
        audio_hash = self.audio.content_hash if self.audio is not None else ""
        return {"video_tokenizer_hash": self.video.content_hash, "audio_tokenizer_hash": audio_hash,
                "text_encoder_id": self.text.identity, "text_encoder_hash": self.text.content_hash}


_MODELS: dict[tuple, Models] = {}


def load_models(cfg: TokenizeConfig, expected: dict[str, str] | None = None) -> Models:
    """The three models on this worker's device, loaded once per process (Beam may build several
    DoFn instances in one worker process; they share these). Refuses checkpoints whose hashes are
    not `expected` (the plan's), e.g. a checkpoint replaced on disk while the job ran."""
    set_torch_threads(cfg.torch_threads)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        # Same tokens on every run and worker: no autotuned (nondeterministic) kernels.
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    audio_path = cfg.audio_tokenizer if cfg.mode != "sr" else ""
    key = (cfg.video_tokenizer, audio_path, cfg.text_encoder, device)
    models = _MODELS.get(key)
    if models is not None and expected is not None and models.identity() != {k: expected.get(k) for k in HASH_KEYS}:
        models = None  # a checkpoint at the same path was replaced since it was cached: load it again
    if models is None:
        models = Models(
            video=VideoTokenizer.load(cfg.video_tokenizer, device=device).eval(),
            audio=AudioTokenizer.load(audio_path, device=device).eval() if audio_path else None,
            text=TextEncoder(cfg.text_encoder or None, device=device),
            device=device,
        )
        _MODELS[key] = models
    if expected is not None:
        got = models.identity()
        diff = [k for k in HASH_KEYS if got[k] != expected.get(k)]
        if diff:
            raise TokenizerMismatch(f"loaded models differ from the plan in {', '.join(diff)} "
                                    f"(a checkpoint changed on disk during the job?)")
    return models
