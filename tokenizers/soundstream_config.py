"""SoundStream configs: the model's (SoundStreamConfig, recipes, constants) and its training job's
(AudioTrainConfig, RECIPES_TRAIN), a plain torch-free config module. The model lives in
videopoet.tokenizers.soundstream, the training job in videopoet.tokenizers.train_audio."""

from __future__ import annotations

import dataclasses
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


# --------------------------------------------------------------------------------------------------
# the training job's config (videopoet train-tokenizer audio)

TRAIN_STATE_KIND = "soundstream-train"


@dataclass
class DiscConfig:
    wave_scales: int = 3
    wave_channels: int = 16
    wave_max_channels: int = 1024
    stft_channels: int = 32
    stft_window: int = 1024
    stft_hop: int = 256


@dataclass
class LossConfig:
    rec_weight: float = 1.0
    adv_weight: float = 1.0
    feat_weight: float = 100.0
    # Time-domain L1 (EnCodec's l_t); 0 in the SoundStream recipe. The tiny recipe turns it on:
    # with minutes of CPU training, mel + GAN alone do not align the waveform's phase (SI-SNR).
    wave_weight: float = 0.0
    mel_windows: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])
    n_mels: int = 64
    # Floor of the mel magnitudes before the log. At 1e-5 the sqrt(w/2)-weighted log term of digital
    # silence (exact zeros between clicks or bursts) dwarfs everything else until the decoder emits
    # ~1e-7; the tiny recipe floors at 1e-2 (~ -95 dB under a full-scale tone at w 2048).
    log_floor: float = 1e-5
    gan_start_step: int = 2000

    def validate(self) -> None:
        if any(w < 16 or w & (w - 1) for w in self.mel_windows):
            raise ValueError(f"mel_windows {self.mel_windows}: each must be a power of two >= 16")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    disc_lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    grad_clip: float = 10.0


@dataclass
class DataConfig:
    segment_samples: int = 16_000
    batch_size: int = 16
    holdout_fraction: float = 0.05
    eval_clips: int = 8
    seed: int = 0

    def validate(self) -> None:
        if self.segment_samples < 2048:
            raise ValueError(f"segment_samples={self.segment_samples}: at least 2048 (the largest mel window)")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction={self.holdout_fraction} must lie in [0, 1)")


@dataclass
class AudioTrainConfig:
    model: SoundStreamConfig = field(default_factory=SoundStreamConfig)
    disc: DiscConfig = field(default_factory=DiscConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 100_000
    log_every: int = 50
    eval_every: int = 2000
    save_every: int = 2000
    keep_checkpoints: int = 2
    # ViSQOL (speech mode, 16 kHz) of the held-out reconstructions at eval time, beside Opus at 6 kbps on the
    # same clips: the quality bar for a 2 kbps codec (SI-SNR cannot rise above 0 dB at that rate)
    eval_visqol: bool = True

    def validate(self) -> None:
        if self.steps < 1 or self.log_every < 1 or self.eval_every < 1 or self.save_every < 1:
            raise ValueError("steps, log_every, eval_every and save_every must be positive")
        if self.data.segment_samples < self.model.hop:
            raise ValueError("data.segment_samples is shorter than one frame")


RECIPES_TRAIN: RecipeRegistry[AudioTrainConfig] = RecipeRegistry(AudioTrainConfig)


def _train_paper() -> AudioTrainConfig:
    """SoundStream at 16 kHz (C = 32), 2 s crops, batch 32, GAN after 2k steps.

    3,200 frames per step is 3.1 per code, above SoundStream's dead-code threshold of 2 (with
    fewer, EMA counts stay below 2 and most codes are re-drawn every step).

    videopoet train-tokenizer audio --data CLIP_SHARDS --config paper
    """
    return AudioTrainConfig(model=paper(), data=DataConfig(segment_samples=32_000, batch_size=32))


def _train_tiny() -> AudioTrainConfig:
    """CPU-sized: tiny model and discriminators, 0.5 s crops, batch 8; minutes on a laptop.

    Time-domain L1 at 100,000: the mel term's gradient ignores phase and dominates a smaller L1
    (bench/audio.py --learn, 600 CPU-s, held-out mel distance / SI-SNR: 1.36 / -35.9 dB at 20,000,
    1.31 / -29.2 dB at 100,000, 1.61 / -21.4 dB at 200,000; at 2,000 SI-SNR was -48.7 dB after 150
    CPU-s). GAN after 1,000 reconstruction-only steps (a GAN step costs ~2 plain ones, and at step
    300 the waveform is not aligned yet).

    videopoet train-tokenizer audio --data CLIP_SHARDS --config tiny steps=200
    """
    # 200 frames per step is 0.2 per code: the dead-code threshold scales down with it.
    return AudioTrainConfig(
        model=dataclasses.replace(tiny(), dead_code_threshold=0.1),
        disc=DiscConfig(wave_channels=4, wave_max_channels=64, stft_channels=8),
        loss=LossConfig(gan_start_step=1000, wave_weight=100_000.0, log_floor=1e-2),
        optim=OptimConfig(lr=1e-3, disc_lr=3e-4, betas=[0.8, 0.99], grad_clip=10.0),
        data=DataConfig(segment_samples=8000, batch_size=8, eval_clips=4),
        steps=1500, log_every=10, eval_every=250, save_every=250,
    )


# registered under the recipe names `paper` and `tiny` (the model recipes above keep those function names)
_train_paper.__name__, _train_tiny.__name__ = "paper", "tiny"
RECIPES_TRAIN.register(_train_paper)
RECIPES_TRAIN.register(_train_tiny)
