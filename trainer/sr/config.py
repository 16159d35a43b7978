"""The config of `videopoet train-sr` (SRTrainConfig) and its recipes: tiny, demo, stage1, stage2."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from videopoet.config import RecipeRegistry
from videopoet.trainer.sr.model import SR_RECIPES, SRConfig
from videopoet.trainer.sr.objective import ObjectiveConfig
from videopoet.training.zero import deepspeed_config_path

TRAIN_STATE_KIND = "sr-train"


@dataclass
class SROptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.1  # cosine decay from lr to lr * min_lr_ratio at `steps`
    grad_clip: float = 1.0  # 0: no clipping
    bf16: bool = True  # autocast to bfloat16 on a GPU (ignored on the CPU)


@dataclass
class SRDataConfig:
    batch_size: int = 256  # the GLOBAL batch (examples per optimiser step), split over the workers
    seed: int = 0  # data order and the per-example objective draws
    eval_examples: int = 4  # the first rows of the first shard: eval accuracy and the side-by-side video


@dataclass
class SRTrainConfig:
    stage: int = 1  # 1: LM resolution -> 2x, 2: 2x -> 4x (MaskGIT guidance of the eval video, tags)
    model: SRConfig = field(default_factory=SRConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: SROptimConfig = field(default_factory=SROptimConfig)
    data: SRDataConfig = field(default_factory=SRDataConfig)
    steps: int = 100_000
    seed: int = 0  # model initialisation
    log_every: int = 10
    eval_every: int = 1000  # eval accuracy (+ the LR | SR | HR video with --video-tokenizer); 0: only at the end
    save_every: int = 1000
    keep_checkpoints: int = 2
    sample_steps: int = 24  # MaskGIT steps of the eval video
    # ddp: every worker holds the model and AdamW, gradients all-reduced by hand (the CPU/tiny path, the
    # reference). deepspeed: DeepSpeed ZeRO with the `deepspeed` JSON (infra/deepspeed/<name>.json or a
    # path; zero3_gpu on GPUs): weights, gradients and AdamW state sharded over the Ray Train workers.
    engine: Literal["ddp", "deepspeed"] = "ddp"
    deepspeed: str = "zero3_cpu"

    def validate(self) -> None:
        if self.stage not in (1, 2):
            raise ValueError(f"stage={self.stage}: 1 or 2")
        self.model.validate()
        self.objective.validate()
        if self.data.batch_size < 1 or self.steps < 1:
            raise ValueError("data.batch_size and steps must be >= 1")
        if self.engine not in ("ddp", "deepspeed"):
            raise ValueError(f"engine={self.engine!r}: ddp or deepspeed")
        if self.engine == "deepspeed":
            deepspeed_config_path(self.deepspeed, key="deepspeed")


RECIPES_TRAIN: RecipeRegistry[SRTrainConfig] = RecipeRegistry(SRTrainConfig)


@RECIPES_TRAIN.register
def tiny() -> SRTrainConfig:
    """CPU tests and the demo: the tiny SR model, 8 examples a step."""
    return SRTrainConfig(stage=1, model=SR_RECIPES.get("tiny"),
                         optim=SROptimConfig(lr=1e-3, warmup_steps=5, weight_decay=0.0),
                         data=SRDataConfig(batch_size=8, eval_examples=2),
                         steps=50, log_every=1, eval_every=25, save_every=25, sample_steps=4)


@RECIPES_TRAIN.register
def demo() -> SRTrainConfig:
    """The demo's SR stage 1 (128x128 -> 256x256, HR tokens (5, 32, 32)): a couple of CPU minutes.

    videopoet train-sr --stage 1 --config demo --data SR_SHARDS --out runs/sr1 [--video-tokenizer DIR]
    """
    return SRTrainConfig(stage=1, model=SR_RECIPES.get("demo"),
                         optim=SROptimConfig(lr=1e-3, warmup_steps=10, weight_decay=0.0),
                         data=SRDataConfig(batch_size=4, eval_examples=2),
                         steps=100, log_every=5, eval_every=50, save_every=50, sample_steps=8)


@RECIPES_TRAIN.register
def stage1() -> SRTrainConfig:
    """First 2x stage (about 1B parameters, HR tokens (5, 56, 32))."""
    return SRTrainConfig(stage=1, model=SR_RECIPES.get("stage1"))


@RECIPES_TRAIN.register
def stage2() -> SRTrainConfig:
    """Second 2x stage (about 500M parameters, HR tokens (5, 112, 64))."""
    return SRTrainConfig(stage=2, model=SR_RECIPES.get("stage2"))
