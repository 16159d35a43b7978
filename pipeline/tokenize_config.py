"""The tokenize job's config (`TokenizeConfig`), recipes (`default`, `tiny`) and constants; torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from videopoet.config import ConfigError, RecipeRegistry
from videopoet.jobs.config import EngineConfig
from videopoet.pipeline.media.config import SR_INPUT_FORMATS

# Bump when what a clip's row contains changes for the same clip and models.
TOKENIZE_VERSION = 1
MANIFEST_VERSION = 1
MANIFEST_VERSION_KEY = b"videopoet.tokenize_manifest_version"
STATS_DIR = "stats"
SUMMARY_DIR = "summary"
REFUSALS_FILE = "refusals.jsonl"
# The sizes ingest writes: (height, width) -> video_format.
PRODUCTION_SIZES = {(128, 128): "square", (224, 128): "portrait"}
CLIP_FPS = 8
AUDIO_SAMPLES_PER_FRAME = 16_000 // CLIP_FPS
SR_FORMATS = tuple(sorted(SR_INPUT_FORMATS))  # the HR formats `--mode sr` tokenizes (media.config)
HASH_KEYS = ("video_tokenizer_hash", "audio_tokenizer_hash", "text_encoder_id", "text_encoder_hash")



@dataclass
class TokenizeConfig(EngineConfig):
    """Tokenize job settings. Recipes: `default` (`videopoet tokenize --config default ...`), `tiny`
    (small model batches: the demo and the tests). Engine keys (engine, progress, track, beam.*, ray.*):
    videopoet.jobs.config.EngineConfig."""

    input: str = ""  # clip shard directory (recursive) or one .tar
    output: str = ""
    video_tokenizer: str = ""  # checkpoint directory (VideoTokenizer.save)
    audio_tokenizer: str = ""  # checkpoint directory (AudioTokenizer.save)
    text_encoder: str = ""  # local Hugging Face model directory; "" = the embedded MiniLM
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when the worker has a GPU
    encode_batch: int = 8  # videos per video-tokenizer forward (condition videos count)
    audio_batch: int = 32  # clips per audio-tokenizer forward
    torch_threads: int = 0  # intra-op threads on every worker; 0 = the driver's torch default
    any_size: bool = False  # accept any clip size the tokenizer takes (not only 128x128 / 224x128)
    plots: bool = True  # summary/*.png (logged with the MLflow run when track=true)
    # "lm": token shards for the LM's tasks; "sr": SR token shards (HR tokens, LR tokens of the 2x
    # bicubic downsample, text) of the clips in `sr_format` (docs/formats.md "SR token shards")
    mode: Literal["lm", "sr"] = "lm"
    sr_format: str = ""  # sr mode: portrait_2x, portrait_4x or square_2x
    sr_frames: int = 17  # sr mode: clip length kept (one HR grid per output); other lengths are skipped

    def validate(self) -> None:
        if self.encode_batch < 1 or self.audio_batch < 1:
            raise ValueError(f"encode_batch={self.encode_batch}, audio_batch={self.audio_batch}: must be >= 1")
        if self.torch_threads < 0:
            raise ValueError(f"torch_threads={self.torch_threads}: must be >= 0")
        if self.mode == "sr" and self.sr_format not in SR_FORMATS:
            raise ValueError(f"sr_format={self.sr_format!r}: mode=sr needs one of {list(SR_FORMATS)}")
        if self.mode == "lm" and self.sr_format:
            raise ValueError(f"sr_format={self.sr_format!r} needs mode=sr (--mode sr)")
        if self.sr_frames not in (17, 41):
            raise ValueError(f"sr_frames={self.sr_frames}: must be 17 or 41")


TOKENIZE_RECIPES: RecipeRegistry[TokenizeConfig] = RecipeRegistry(TokenizeConfig)


@TOKENIZE_RECIPES.register
def default() -> TokenizeConfig:
    """videopoet tokenize --config default --engine beam --input CLIPS --output TOKENS
    --video-tokenizer V --audio-tokenizer A"""
    return TokenizeConfig()


@TOKENIZE_RECIPES.register
def tiny() -> TokenizeConfig:
    """videopoet tokenize --config tiny --engine local --input CLIPS --output TOKENS
    --video-tokenizer V --audio-tokenizer A"""
    return TokenizeConfig(encode_batch=4, audio_batch=8)


class TokenizerMismatch(ConfigError):
    """The given checkpoints are not the ones an existing output was made with."""
