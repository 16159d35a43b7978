"""The super-resolution cascade: LM-resolution video tokens -> SR stage 1 (-> SR stage 2) HR tokens (paper §3.3, A.3).

A stage is one SR checkpoint (the `model/` directory `videopoet train-sr` writes, kind "sr-transformer"; its
parent run directory is accepted too). Stage k's LR grid must equal the grid of the tokens it receives: the
LM's tokens for stage 1, stage 1's HR tokens for stage 2 (checked when the cascade loads and again per call,
one UsageError line naming the checkpoint and both grids). Each stage runs MaskGIT (trainer/sr/sampling.py)
with the guidance of the stage its checkpoint was trained as (paper: text 4.0 / LR 1.0 for stage 1, 8.0 / 2.0
for stage 2), `steps` steps (paper: 24), any of them overridable; stage k draws from seed + k, so a seed
gives the same tokens. Without a caption the text passes equal the text-dropped ones, so the text scale
is set to the LR scale: the same guided logits with one pass fewer. Decoding to pixels is the caller's
(the video tokenizer of the LM, which made the SR token shards too).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from videopoet.checkpoint import CheckpointError, load_checkpoint
from videopoet.config import ConfigError, UsageError, from_dict
from videopoet.trainer.sr.model import SRConfig, SRTransformer
from videopoet.trainer.sr.sampling import STAGE_GUIDANCE, SRSamplingConfig, sample, stage_sampling
from videopoet.trainer.sr.windows import Grid

MODEL_KIND = "sr-transformer"  # trainer.sr.train.MODEL_KIND (the job module is a layer above)


@dataclass
class SRStage:
    path: Path  # the checkpoint directory
    model: SRTransformer
    stage: int  # the stage it was trained as (1 or 2): its default guidance
    sampling: SRSamplingConfig

    @property
    def lr_grid(self) -> Grid:
        return tuple(self.model.cfg.lr_grid)

    @property
    def hr_grid(self) -> Grid:
        return tuple(self.model.cfg.hr_grid)


def _grid(grid) -> str:
    return "(" + ", ".join(str(int(n)) for n in grid) + ")"


def load_stage(path: str | Path, device: torch.device | str = "cpu", flag: str = "--super-resolve") -> SRStage:
    """One SR checkpoint as a stage with its paper sampling settings; UsageError naming `flag` and the path."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{flag} {path}: no such checkpoint directory")
    if not (path / "meta.json").is_file() and (path / "model" / "meta.json").is_file():
        path = path / "model"  # a train-sr run directory: its exported model
    try:
        tensors, meta = load_checkpoint(path, kind=MODEL_KIND)
        cfg = from_dict(SRConfig, meta["config"])
        model = SRTransformer(cfg)
        model.load_state_dict(tensors)
    except (CheckpointError, ConfigError, RuntimeError) as err:
        raise UsageError(f"{flag} {path}: {' '.join(str(err).split())}") from None
    stage = int(meta.get("extra", {}).get("stage", 1))
    if f"stage{stage}" not in STAGE_GUIDANCE:
        raise UsageError(f"{flag} {path}: trained as stage {stage}; the cascade knows stages 1 and 2")
    return SRStage(path, model.to(device).eval(), stage, stage_sampling(f"stage{stage}"))


def _per_stage(values: list[float] | None, n: int, name: str) -> list[float | None]:
    if not values:
        return [None] * n
    if len(values) not in (1, n):
        raise UsageError(f"{name}: {len(values)} values for {n} stage(s); give one, or one per stage")
    return list(values) * n if len(values) == 1 else list(values)


def load_cascade(paths: list[str | Path], device: torch.device | str = "cpu", *, steps: int | None = None,
                 text_scales: list[float] | None = None, lr_scales: list[float] | None = None,
                 seed: int = 0, flag: str = "--super-resolve") -> list[SRStage]:
    """One or two stages, chained: stage k+1's LR grid must be stage k's HR grid. Overrides apply per stage
    (a list of one value applies to every stage)."""
    if not 1 <= len(paths) <= 2:
        raise UsageError(f"{flag}: one or two SR checkpoints (SR1_DIR[,SR2_DIR]), got {len(paths)}")
    if steps is not None and steps < 1:
        raise UsageError(f"--sr-steps {steps}: must be at least 1")
    text = _per_stage(text_scales, len(paths), "--sr-text-scale")
    lr = _per_stage(lr_scales, len(paths), "--sr-lr-scale")
    stages = []
    for k, path in enumerate(paths):
        st = load_stage(path, device, flag)
        changes = {"seed": seed + k}
        if steps is not None:
            changes["steps"] = steps
        if text[k] is not None:
            changes["text_scale"] = float(text[k])
        if lr[k] is not None:
            changes["lr_scale"] = float(lr[k])
        st.sampling = replace(st.sampling, **changes)
        if stages and st.lr_grid != stages[-1].hr_grid:
            raise UsageError(f"{flag} {st.path}: stage {k + 1} expects LR tokens of grid {_grid(st.lr_grid)}, but "
                             f"stage {k} ({stages[-1].path}) makes HR tokens of grid {_grid(stages[-1].hr_grid)}")
        stages.append(st)
    return stages


def check_input(stages: list[SRStage], grid, flag: str = "--super-resolve") -> None:
    """UsageError unless the incoming token grid is stage 1's LR grid (call before generating the tokens)."""
    if tuple(grid) != stages[0].lr_grid:
        first = stages[0]
        raise UsageError(f"{flag} {first.path}: stage 1 expects LR tokens of grid {_grid(first.lr_grid)}, "
                         f"given {_grid(grid)}")


def check_text(stages: list[SRStage], text_emb: torch.Tensor | None, flag: str = "--super-resolve") -> None:
    """UsageError unless the text embeddings [B, S, D] fit every stage (slots and width)."""
    if text_emb is None:
        return
    for st in stages:
        want = (st.model.cfg.text_slots, st.model.cfg.text_dim)
        if tuple(text_emb.shape[1:]) != want:
            raise UsageError(f"{flag} {st.path}: trained on text embeddings of {want[0]} slots x {want[1]}, the "
                             f"text encoder gives {text_emb.shape[1]} x {text_emb.shape[2]} (give the encoder "
                             "its SR token shards used: --text-encoder)")


@torch.no_grad()
def run_cascade(stages: list[SRStage], tokens: torch.Tensor, text_emb: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None, progress: bool = True, flag: str = "--super-resolve"
                ) -> list[torch.Tensor]:
    """LR ids [B, T, h, w] -> each stage's HR ids (the last is the cascade's output), on the stages' device.

    text_emb [B, S, D] (or [S, D], broadcast over the batch) and its mask: the caption, or None."""
    check_input(stages, tokens.shape[1:], flag)
    device = next(stages[0].model.parameters()).device
    tokens = tokens.to(device).long()
    if text_emb is not None:
        text_emb = torch.as_tensor(text_emb, dtype=torch.float32, device=device)
        text_mask = (torch.ones(text_emb.shape[:-1], dtype=torch.bool, device=device) if text_mask is None
                     else torch.as_tensor(text_mask, dtype=torch.bool, device=device))
        if text_emb.ndim == 2:
            text_emb, text_mask = text_emb[None], text_mask[None]
        text_emb = text_emb.expand(tokens.shape[0], -1, -1)
        text_mask = text_mask.expand(tokens.shape[0], -1)
    check_text(stages, text_emb, flag)
    outputs = []
    for k, st in enumerate(stages):
        cfg = st.sampling if text_emb is not None else replace(st.sampling, text_scale=st.sampling.lr_scale)
        t0 = time.perf_counter()
        tokens = sample(st.model, tokens, text_emb, text_mask, cfg)
        outputs.append(tokens)
        if progress:
            guidance = (f"text {cfg.text_scale:g} / LR {cfg.lr_scale:g}" if text_emb is not None
                        else f"LR {cfg.lr_scale:g} (no caption)")
            print(f"super-resolve stage {k + 1}/{len(stages)} ({st.path}, trained as stage {st.stage}): tokens "
                  f"{_grid(st.lr_grid)} -> {_grid(st.hr_grid)}, {cfg.steps} steps, guidance {guidance}, seed "
                  f"{cfg.seed}: {time.perf_counter() - t0:.1f} s", flush=True)
    return outputs


def parse_paths(value: str) -> list[str]:
    """SR1_DIR[,SR2_DIR] -> the paths (empty items dropped)."""
    return [p for p in (v.strip() for v in value.split(",")) if p]


def parse_scales(value: str | None, name: str) -> list[float] | None:
    """'4' or '4,8' -> [4.0] / [4.0, 8.0]; UsageError naming the flag."""
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise UsageError(f"{name} {value}: expected a number or one per stage (e.g. 4,8)") from None
