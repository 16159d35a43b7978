"""The interface every training job's trainer implements, so one loop and one checkpoint manager serve all.

A trainer is Stateful: `state_dict()` / `load_state_dict()` cover everything exact resume needs
(model, optimisers, schedule, data position, RNG), and `save_payload(dir)` / `load_payload(dir)`
write and read them inside a checkpoint step directory (the checkpoint manager owns the directory's
name, its meta.json, atomicity and keep-N; the trainer owns the files in it: a state.pt, or the LM's
DeepSpeed ZeRO-3 shards written by every rank). `train_step()` takes the trainer's next batch from
its own deterministic data stream and returns that step's metrics; `step` counts completed steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class StatefulTrainer(Protocol):
    step: int  # optimiser steps completed so far (the checkpoint's step)

    def train_step(self) -> dict[str, Any]:
        """One optimiser step on the next batch of this trainer's data stream; returns its metrics."""

    def state_dict(self) -> dict[str, Any]:
        """Model, optimisers, schedule, data position and RNG: enough to resume exactly."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def save_payload(self, directory: Path) -> None:
        """Write this rank's part of a checkpoint into `directory` (every rank calls it)."""

    def load_payload(self, directory: Path) -> None:
        """Restore from a checkpoint directory `save_payload` wrote."""

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics (empty when the job has none, and on ranks other than 0)."""

    def export(self, directory: Path) -> str | None:
        """Write the artifact other stages load (a tokenizer, the LM weights); its content hash."""
