"""SoundStream config, recipes and constants, without importing torch (so that CLI modules that
need the config types stay fast to import). The model lives in videopoet.tokenizers.soundstream,
which re-exports everything here."""

from __future__ import annotations

from dataclasses import dataclass, field

from videopoet.config import RecipeRegistry

SAMPLE_RATE = 16_000
HOP = 320
NUM_LEVELS = 4
CODEBOOK_SIZE = 1024
AUDIO_VOCAB = NUM_LEVELS * CODEBOOK_SIZE
CHECKPOINT_KIND = "soundstream"


@dataclass
class SoundStreamConfig:
    sample_rate: int = SAMPLE_RATE
    channels: int = 32  # C in the paper; the widest block has 16 C
    channel_mults: list[int] = field(default_factory=lambda: [2, 4, 8, 16])
    strides: list[int] = field(default_factory=lambda: [2, 4, 5, 8])
    dilations: list[int] = field(default_factory=lambda: [1, 3, 9])
    latent_dim: int = 128  # D: the RVQ works in this space
    num_quantizers: int = NUM_LEVELS
    codebook_size: int = CODEBOOK_SIZE
    ema_decay: float = 0.99
    kmeans_iters: int = 10
    dead_code_threshold: float = 2.0
    quantizer_dropout: bool = True
    commitment_weight: float = 1.0
    seed: int = 0  # initial weights and codebooks are a function of the config

    @property
    def hop(self) -> int:
        hop = 1
        for s in self.strides:
            hop *= s
        return hop

    def validate(self) -> None:
        if len(self.channel_mults) != len(self.strides):
            raise ValueError(f"channel_mults {self.channel_mults} and strides {self.strides} differ in length")
        if any(s < 1 for s in self.strides) or self.channels < 1 or self.latent_dim < 1:
            raise ValueError("strides, channels and latent_dim must be positive")
        if self.num_quantizers < 1 or self.codebook_size < 2:
            raise ValueError("need at least 1 quantizer and 2 codes")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay} must lie in (0, 1)")


RECIPES: RecipeRegistry[SoundStreamConfig] = RecipeRegistry(SoundStreamConfig)


@RECIPES.register
def paper() -> SoundStreamConfig:
    """SoundStream at 16 kHz as VideoPoet uses it: C = 32, hop 320 (50 Hz), RVQ 4 x 1,024.

    videopoet train-tokenizer audio --data CLIP_SHARDS --config paper
    """
    return SoundStreamConfig()


@RECIPES.register
def tiny() -> SoundStreamConfig:
    """CPU-sized SoundStream for tests, the demo and the bench; same framing and vocabulary.

    videopoet train-tokenizer audio --data CLIP_SHARDS --config tiny
    """
    return SoundStreamConfig(channels=8, latent_dim=64)
