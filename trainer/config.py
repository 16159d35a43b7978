"""The `videopoet train` config: model, AGD data, optimiser, schedule, engine, checkpoints.

Recipes (`videopoet train --config NAME [key=value ...]`):
    tiny   CPU, 2 Ray workers, DeepSpeed ZeRO-3 (gloo), fp32: the demo and the tests
    300m   the paper's §5.2 task ablation: lr 1e-3, 300k steps, batch 1,024 sequences; 64 GPUs, ZeRO-3, bf16
    1b     one node of 8 GPUs, ZeRO-3, bf16 (the paper's smaller model)
    8b     multi-node (64 GPUs), ZeRO-3, bf16, activation checkpointing (the paper's model)
Model sizes: 300m and 1b are named by their non-embedding parameters (310M, 1.03B; totals 0.86B, 2.12B),
8b by its total (8.67B; 6.48B non-embedding); trainer.model explains why.
YAML files in configs/ may name one of these as `base:` and override any key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from videopoet.config import RecipeRegistry, config_hash, to_dict
from videopoet.trainer.data import DataConfig
from videopoet.trainer.model import MODEL_RECIPES, ModelConfig


@dataclass
class OptimConfig:
    lr: float = 3e-4  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # max global grad norm (0: no clipping)

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr}: must be > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas={self.betas}: two values in [0, 1)")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip={self.grad_clip}: must be >= 0")


@dataclass
class ScheduleConfig:
    max_steps: int = 1000  # also the length the AGD stages (data.stage_ends) are fractions of
    warmup_steps: int = 100  # linear warm-up from 0
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio

    def validate(self) -> None:
        if self.max_steps < 1 or self.warmup_steps < 0:
            raise ValueError(f"max_steps={self.max_steps}, warmup_steps={self.warmup_steps}: "
                             "need max_steps >= 1, warmup_steps >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio={self.min_lr_ratio}: must lie in [0, 1]")


@dataclass
class EngineConfig:
    kind: Literal["deepspeed", "plain"] = "deepspeed"  # plain: one process, no DeepSpeed (reference)
    deepspeed: str = "zero3_cpu"  # infra/deepspeed/<name>.json or a path to a DeepSpeed JSON config
    num_workers: int = 2  # Ray Train workers (data-parallel ranks)
    use_gpu: bool = False
    ray_address: str | None = None  # None: start a local Ray; "auto" or ray://host:port for a cluster
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    zero_init: bool = False  # build the model inside deepspeed.zero.Init (needed at 8B: no full copy per rank)
    peak_flops: float = 989e12  # per-device peak for MFU (H100 SXM dense bf16); CPU runs report FLOP/s only
    max_failures: int = 0  # Ray Train worker-group restarts (each resumes from the latest checkpoint)

    def validate(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"num_workers={self.num_workers}: must be >= 0")
        if self.peak_flops <= 0:
            raise ValueError(f"peak_flops={self.peak_flops}: must be > 0")


@dataclass
class CheckpointConfig:
    # run `name` lives in <dir>/<name>/ (checkpoints/step_<N>/ ...): a shared filesystem for multi-node
    dir: str = "runs"
    name: str = ""  # run name; empty: derived from the recipe and config hash. Same name again = resume.
    every_steps: int = 100
    keep: int = 2  # checkpoints kept
    resume_from: str | None = None  # a checkpoint directory to start from (when the run has none of its own)
    stop_after: int | None = None  # checkpoint and stop at this absolute step (time-sliced jobs); run again to go on
    export: bool = True  # write consolidated weights (videopoet-lm checkpoint) at the end

    def validate(self) -> None:
        if self.every_steps < 1 or self.keep < 1:
            raise ValueError(f"every_steps={self.every_steps}, keep={self.keep}: must be >= 1")
        if "://" in self.dir:
            raise ValueError(f"dir={self.dir}: checkpoints are written to a filesystem path (for multi-node a "
                             "shared one: NFS, Lustre or a mounted bucket), not a URI")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=lambda: MODEL_RECIPES.get("tiny"))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log_every: int = 10  # steps between MLflow metric flushes
    seed: int = 0  # model initialisation (data draws use data.seed)
    recipe: str = "custom"

    def validate(self) -> None:
        if self.log_every < 1:
            raise ValueError(f"log_every={self.log_every}: must be >= 1")


TRAIN_RECIPES: RecipeRegistry[TrainConfig] = RecipeRegistry(TrainConfig)


@TRAIN_RECIPES.register
def tiny() -> TrainConfig:
    """CPU in minutes: videopoet train --config tiny data.shards=[demo_out/tokens] --num-workers 2"""
    return TrainConfig(
        model=MODEL_RECIPES.get("tiny"),
        data=DataConfig(tokens_per_step=2048, cond_dropout=0.1),
        optim=OptimConfig(lr=1e-3, weight_decay=0.0),
        schedule=ScheduleConfig(max_steps=300, warmup_steps=20),
        engine=EngineConfig(deepspeed="zero3_cpu", num_workers=2),
        checkpoint=CheckpointConfig(every_steps=100),
        recipe="tiny",
    )


def _gpu(model: str, *, tokens: int, steps: int, warmup: int, lr: float, ds: str, workers: int) -> TrainConfig:
    return TrainConfig(
        model=MODEL_RECIPES.get(model),
        # One lane per rank, one row group per lane and group: a rank reads ~1 row per row it uses
        # (docs/results/2026-12-04-loader.md); batches are the same at any world size dividing `workers`.
        data=DataConfig(tokens_per_step=tokens, cond_dropout=0.1, shuffle_window=1, lanes=workers),
        optim=OptimConfig(lr=lr, weight_decay=0.1),
        schedule=ScheduleConfig(max_steps=steps, warmup_steps=warmup),
        engine=EngineConfig(deepspeed=ds, num_workers=workers, use_gpu=True, zero_init=model == "8b"),
        checkpoint=CheckpointConfig(every_steps=1000, keep=3),
        log_every=10,
        recipe=model,
    )


# Paper §5.2: "All task combinations are trained using a learning rate of 10^-3 for the same number of
# steps (300k) with a batch size of 1024." AGD batches by tokens (sequences of one group share a length),
# so the batch of 1,024 sequences is a budget of 1,024 x 2,633 tokens (a square 17-frame conditioned
# layout, e.g. fp5: 1,351 + 1,282): exactly 1,024 such sequences, proportionally more of shorter ones.
ABLATION_BATCH = 1024
ABLATION_TOKENS_PER_STEP = ABLATION_BATCH * 2633


def r300m() -> TrainConfig:
    """The §5.2 ablation (64 GPUs, ~42k tokens per rank: there is no gradient accumulation):

        videopoet train --config 300m data.shards=[/data/tokens] --ray-address auto --use-gpu --num-workers 64"""
    return _gpu("300m", tokens=ABLATION_TOKENS_PER_STEP, steps=300_000, warmup=5000, lr=1e-3, ds="zero3_gpu",
                workers=64)


def r1b() -> TrainConfig:
    """One node: videopoet train --config 1b data.shards=[/data/tokens] --use-gpu --num-workers 8"""
    return _gpu("1b", tokens=524_288, steps=200_000, warmup=2000, lr=3e-4, ds="zero3_gpu", workers=8)


def r8b() -> TrainConfig:
    """64 GPUs:

        videopoet train --config 8b data.shards=[s3://bucket/tokens] --ray-address auto --use-gpu
            --num-workers 64 checkpoint.dir=/shared/runs
    ~2T tokens (paper §4.2): 2,097,152 tokens/step x 1M steps."""
    return _gpu("8b", tokens=2_097_152, steps=1_000_000, warmup=5000, lr=1.5e-4, ds="zero3_multinode_8b", workers=64)


# Recipe names that are not Python identifiers: the registry keys recipes by function name.
for _name, _fn in (("300m", r300m), ("1b", r1b), ("8b", r8b)):
    _fn.__name__ = _name
    TRAIN_RECIPES.register(_fn)


# Settings that say how/where a run executes, not what it computes: changing them keeps the run
# name (so the same command with another stop point or cluster address resumes the same run) and
# they are left out of the config a resume must match.
_NOT_HASHED = {"checkpoint": ("stop_after", "resume_from", "name"), "engine": ("ray_address", "max_failures")}


def training_dict(cfg: TrainConfig) -> dict:
    """The config minus the _NOT_HASHED fields and log_every: what determines the numbers a run produces."""
    d = to_dict(cfg)
    for section, keys in _NOT_HASHED.items():
        for k in keys:
            d[section].pop(k, None)
    d.pop("log_every", None)
    return d


def run_name(cfg: TrainConfig) -> str:
    return cfg.checkpoint.name or f"lm-{cfg.recipe}-{config_hash(training_dict(cfg))[:8]}"
