"""SoundStream audio tokenizer: 16 kHz mono -> 4 residual-VQ levels x 1,024 codes at 50 Hz.

Architecture (Zeghidour et al. 2021, arXiv 2107.03312; docs/architecture.md "Audio tokenizer"):
  encoder  causal Conv1d(1->C, k7), 4 blocks (3 dilated residual units at dilations 1,3,9, then a
           strided causal conv with kernel 2*stride) with strides 2,4,5,8 (hop 320) and channels
           2C,4C,8C,16C, then Conv1d(k3) -> D
  RVQ      vector-quantize-pytorch ResidualVQ: 4 levels x 1,024 codes, EMA codebooks (decay 0.99,
           not the library's 0.8), k-means init, dead-code reset below an EMA count of 2,
           quantizer dropout (one n_q per batch, the library's way; the paper draws it per example)
  decoder  mirror of the encoder with causal transposed convs

Framing: every strided conv is left-padded by its stride, so a layer of stride s maps L samples to
floor(L / s) frames and the encoder maps S samples to floor(S / 320) frames: 34,000 samples
(2.125 s) -> 106 frames, 82,000 (5.125 s) -> 256. Frame f only sees samples < 320 * (f + 1) plus
the receptive field to the left: the encoder is causal (tests/tokenizers/test_soundstream.py checks it).
decode() returns 320 * F samples (pass `length` to zero-pad to the clip's length).

LLM vocabulary helpers: `flatten_codes` lays codes out level-major (VideoPoet §3.1, "transpose the
clip before flattening": all frames of level 0, then level 1, ...) with level l offset by l * 1,024,
so the four levels form one 4,096-id audio vocabulary; `unflatten_codes` inverts it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from videopoet.tokenizers.soundstream_config import (  # noqa: F401  (re-exported)
    AUDIO_VOCAB,
    CHECKPOINT_KIND,
    CODEBOOK_SIZE,
    HOP,
    NUM_LEVELS,
    RECIPES,
    SAMPLE_RATE,
    SoundStreamConfig,
    paper,
    tiny,
)

# --------------------------------------------------------------------------------------------------
# causal convolutions


class CausalConv1d(nn.Conv1d):
    """Conv1d left-padded so output frame t sees inputs <= its last sample; L -> floor(L / stride)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__(c_in, c_out, kernel, stride=stride, dilation=dilation)
        self.left_pad = dilation * (kernel - 1) + 1 - stride
        assert self.left_pad >= 0, "kernel too small for the stride"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left_pad, 0)))


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """Transposed conv (kernel 2 * stride) trimmed on the right so L frames -> L * stride samples."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__(c_in, c_out, 2 * stride, stride=stride)
        self.stride_ = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[..., : x.shape[-1] * self.stride_]


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = CausalConv1d(channels, channels, 7, dilation=dilation)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(F.elu(self.conv(F.elu(x))))


class EncoderBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int, dilations: Sequence[int]):
        super().__init__(
            *[ResidualUnit(c_in, d) for d in dilations], nn.ELU(), CausalConv1d(c_in, c_out, 2 * stride, stride)
        )


class DecoderBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int, dilations: Sequence[int]):
        super().__init__(
            nn.ELU(), CausalConvTranspose1d(c_in, c_out, stride), *[ResidualUnit(c_out, d) for d in dilations]
        )


class Encoder(nn.Sequential):
    """wave [B, 1, S] -> latents [B, D, floor(S / hop)]"""

    def __init__(self, cfg: SoundStreamConfig):
        widths = [cfg.channels] + [cfg.channels * m for m in cfg.channel_mults]
        blocks = [EncoderBlock(widths[i], widths[i + 1], s, cfg.dilations) for i, s in enumerate(cfg.strides)]
        super().__init__(
            CausalConv1d(1, cfg.channels, 7), *blocks, nn.ELU(), CausalConv1d(widths[-1], cfg.latent_dim, 3)
        )


class Decoder(nn.Sequential):
    """latents [B, D, F] -> wave [B, 1, F * hop] (no output squashing; decode() clamps)"""

    def __init__(self, cfg: SoundStreamConfig):
        widths = [cfg.channels] + [cfg.channels * m for m in cfg.channel_mults]
        blocks = [
            DecoderBlock(widths[i + 1], widths[i], s, cfg.dilations) for i, s in reversed(list(enumerate(cfg.strides)))
        ]
        super().__init__(
            CausalConv1d(cfg.latent_dim, widths[-1], 7), *blocks, nn.ELU(), CausalConv1d(cfg.channels, 1, 7)
        )


RESIDUAL_INIT_SCALE = 0.3


@torch.no_grad()
def init_weights(net: nn.Module) -> None:
    """Signal-preserving init: conv weights N(0, 1 / fan_in), zero biases, residual branches' output
    projections scaled by RESIDUAL_INIT_SCALE.

    PyTorch's default conv init (weight variance 1 / (3 fan_in), uniform biases) shrinks the
    input-dependent signal ~3x in variance per conv; through the ~12 non-residual convs of encoder +
    decoder it reached the output ~50 dB below the bias-driven, input-independent part (measured on
    `tiny`: 4e-5 vs 1.2e-2 std), so an untrained model's output ignored its input and training first
    had to grow that path back (SI-SNR stayed near -50 dB for hundreds of steps). With this init
    the signal reaches the output at about the input's scale. A transposed conv's fan-in is
    c_in * kernel / stride (each output sample sums kernel / stride taps per input channel)."""
    for mod in net.modules():
        if isinstance(mod, nn.ConvTranspose1d):
            c_in, _, kernel = mod.weight.shape
            nn.init.normal_(mod.weight, 0.0, (c_in * kernel / mod.stride[0]) ** -0.5)
            nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.Conv1d):
            _, c_in, kernel = mod.weight.shape
            nn.init.normal_(mod.weight, 0.0, (c_in * kernel) ** -0.5)
            nn.init.zeros_(mod.bias)
    for mod in net.modules():
        if isinstance(mod, ResidualUnit):
            mod.proj.weight.mul_(RESIDUAL_INIT_SCALE)


def build_rvq(cfg: SoundStreamConfig) -> nn.Module:
    from vector_quantize_pytorch import ResidualVQ

    return ResidualVQ(
        dim=cfg.latent_dim,
        num_quantizers=cfg.num_quantizers,
        codebook_size=cfg.codebook_size,
        decay=cfg.ema_decay,
        kmeans_init=True,
        kmeans_iters=cfg.kmeans_iters,
        threshold_ema_dead_code=cfg.dead_code_threshold,
        quantize_dropout=cfg.quantizer_dropout,
        commitment_weight=cfg.commitment_weight,
        # SoundStream's plain straight-through estimator, not the library's rotation-trick default.
        rotation_trick=False,
    )


# --------------------------------------------------------------------------------------------------
# the tokenizer


class AudioTokenizer(nn.Module):
    """SoundStream encoder + residual VQ + decoder. encode/decode are the public token interface."""

    def __init__(self, cfg: SoundStreamConfig, *, prime_codebooks: bool = True):
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.encoder = Encoder(cfg)
            self.rvq = build_rvq(cfg)
            self.decoder = Decoder(cfg)
            init_weights(self.encoder)
            init_weights(self.decoder)
            # The library leaves these affine-param buffers uninitialised (torch.empty); zero them
            # so that the same config always gives the same bytes and the same content hash.
            for name, buf in self.rvq.named_buffers():
                if name.endswith(("codebook_mean", "codebook_variance")):
                    buf.zero_()
            if prime_codebooks:
                self._prime_codebooks()
        self._content_hash: str | None = None

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_recipe(cls, name: str = "tiny", overrides: Sequence[str] = ()) -> "AudioTokenizer":
        return cls(RECIPES.get(name, list(overrides)))

    @classmethod
    def from_config(cls, cfg: SoundStreamConfig) -> "AudioTokenizer":
        return cls(cfg)

    @torch.no_grad()
    def _prime_codebooks(self) -> None:
        """k-means-initialise the codebooks on seeded noise so an untrained model's encode() is a pure
        function (the library would otherwise initialise them from the first batch it encodes).
        Training re-runs k-means on its first real batch (reset_codebooks())."""
        from loguru import logger

        gen = torch.Generator().manual_seed(self.cfg.seed)
        # 256 frames keep construction cheap; k-means then repeats vectors to fill 1,024 codes
        # (the library warns about that; an untrained model's codebook quality does not matter).
        wave = 0.1 * torch.randn(2, 1, 128 * self.cfg.hop, generator=gen)
        latents = self.encoder(wave).transpose(1, 2)
        dropout, self.rvq.quantize_dropout = self.rvq.quantize_dropout, False
        self.rvq.train()
        logger.disable("vector_quantize_pytorch")
        try:
            self.rvq(latents)
        finally:
            logger.enable("vector_quantize_pytorch")
            self.rvq.quantize_dropout = dropout

    def reset_codebooks(self) -> None:
        """Mark every codebook uninitialised: the next training forward runs k-means on its batch."""
        for layer in self.rvq.layers:
            layer._codebook.initted.fill_(False)

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict | None = None) -> str:
        """Write a videopoet checkpoint (weights + config + content hash); returns the hash."""
        from videopoet.checkpoint import save_checkpoint

        self._content_hash = save_checkpoint(path, self.state_dict(), kind=CHECKPOINT_KIND, config=self.cfg,
                                             extra=extra)
        return self._content_hash

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> "AudioTokenizer":
        from videopoet.checkpoint import CheckpointError, load_checkpoint
        from videopoet.config import from_dict

        tensors, meta = load_checkpoint(path, kind=CHECKPOINT_KIND)
        cfg = from_dict(SoundStreamConfig, meta["config"])
        model = cls(cfg, prime_codebooks=False)
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path}: weights do not fit the config "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        model._content_hash = meta["content_hash"]
        model.eval()
        return model.to(device or default_device())

    @property
    def content_hash(self) -> str:
        """SHA-256 of the weights file: the one recorded in the checkpoint after save()/load(), else
        that of the bytes save() would write now."""
        if self._content_hash is not None:
            return self._content_hash
        from videopoet.checkpoint import file_sha256

        # torch.save names the archive after the file, so hash a file named as save() names it.
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({k: v.detach().cpu() for k, v in self.state_dict().items()}, Path(tmp) / "weights.pt")
            return file_sha256(Path(tmp) / "weights.pt")

    def mark_modified(self) -> None:
        """Forget the recorded hash after the weights changed (training)."""
        self._content_hash = None

    # -- model ---------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.cfg.hop

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: wave [B, 1, S] -> (reconstruction [B, 1, F * hop], codes [B, F, Q] with -1
        for dropped levels, commitment loss summed over levels)."""
        latents = self.encoder(wave).transpose(1, 2)  # [B, F, D]
        quantized, codes, commit = self.rvq(latents)
        recon = self.decoder(quantized.transpose(1, 2))
        return recon, codes, commit.sum()

    def _check_wave(self, wave: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(wave) or wave.ndim != 3 or wave.shape[1] != 1:
            shape = tuple(wave.shape) if torch.is_tensor(wave) else type(wave).__name__
            raise ValueError(f"wave: expected a float tensor [B, 1, S] (mono), got {shape}")
        if wave.shape[-1] < self.cfg.hop:
            raise ValueError(f"wave: {wave.shape[-1]} samples is less than one frame ({self.cfg.hop} samples)")
        if not wave.is_floating_point():
            raise ValueError(f"wave: expected floats in [-1, 1], got {wave.dtype} (divide int16 by 32768)")
        return wave.to(self.device, torch.float32)

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """wave float [B, 1, S] in [-1, 1] at 16 kHz -> codes LongTensor [B, 4, floor(S / 320)] in [0, 1024)."""
        wave = self._check_wave(wave)
        was_training = self.training
        self.eval()
        try:
            latents = self.encoder(wave).transpose(1, 2)
            _, codes, _ = self.rvq(latents)
        finally:
            self.train(was_training)
        return codes.transpose(1, 2).long().contiguous()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """codes [B, Q, F] (Q <= 4 coarsest levels) -> wave float [B, 1, F * 320] clamped to [-1, 1];
        `length` zero-pads (or trims) to that many samples."""
        if not torch.is_tensor(codes) or codes.ndim != 3:
            raise ValueError(f"codes: expected a LongTensor [B, Q, F], got {getattr(codes, 'shape', type(codes))}")
        q = codes.shape[1]
        if not 1 <= q <= self.cfg.num_quantizers:
            raise ValueError(f"codes: {q} levels, expected 1..{self.cfg.num_quantizers}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.cfg.codebook_size):
            raise ValueError(f"codes: values must lie in [0, {self.cfg.codebook_size}) per level "
                             f"(got {int(codes.min())}..{int(codes.max())}); unflatten LLM ids first")
        was_training = self.training
        self.eval()
        try:
            quantized = self.rvq.get_output_from_indices(codes.to(self.device).long().transpose(1, 2))
            wave = self.decoder(quantized.transpose(1, 2)).clamp(-1.0, 1.0)
        finally:
            self.train(was_training)
        if length is not None:
            wave = F.pad(wave, (0, length - wave.shape[-1])) if length >= wave.shape[-1] else wave[..., :length]
        return wave


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------------------
# LLM layout


def flatten_codes(codes: torch.Tensor, codebook_size: int = CODEBOOK_SIZE) -> torch.Tensor:
    """codes [B, Q, F] in [0, codebook_size) -> ids [B, Q * F], level-major, level l offset by
    l * codebook_size (ids lie in [0, Q * codebook_size))."""
    if codes.ndim != 3:
        raise ValueError(f"codes: expected [B, Q, F], got {tuple(codes.shape)}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"codes: values must lie in [0, {codebook_size}), got {int(codes.min())}..{int(codes.max())}")
    offsets = torch.arange(codes.shape[1], device=codes.device).view(1, -1, 1) * codebook_size
    return (codes.long() + offsets).flatten(1)


def unflatten_codes(
    ids: torch.Tensor, num_levels: int = NUM_LEVELS, codebook_size: int = CODEBOOK_SIZE
) -> torch.Tensor:
    """Inverse of flatten_codes: ids [B, Q * F] -> codes [B, Q, F]; raises if an id is not in its
    level's range (e.g. a sampler put a level-2 id where level 0 belongs)."""
    if ids.ndim != 2 or ids.shape[1] % num_levels:
        raise ValueError(f"ids: expected [B, {num_levels} * F], got {tuple(ids.shape)}")
    levels = ids.long().view(ids.shape[0], num_levels, -1)
    offsets = torch.arange(num_levels, device=ids.device).view(1, -1, 1) * codebook_size
    codes = levels - offsets
    bad = (codes < 0) | (codes >= codebook_size)
    if bad.any():
        b, level, f = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"ids: id {int(levels[b, level, f])} at batch {b}, level {level}, frame {f} is outside "
                         f"that level's range [{level * codebook_size}, {(level + 1) * codebook_size})")
    return codes


def int16_to_float(audio) -> torch.Tensor:
    """Clip-shard audio (int16 [S]) -> float wave [1, S] in [-1, 1)."""
    return torch.as_tensor(audio).to(torch.float32).div(32768.0).unsqueeze(0)

