"""The loop every training job runs: log / eval / save every N steps, stop requests, time limit, stop_after.

Cadence, the same in all three jobs:
  - `log_every`, `eval_every`, `save_every`: at every step number divisible by N, and at max_steps;
  - a stop request (SIGTERM/SIGINT -> STOP file, see `stopping`) or the time limit ends the run at
    the next step boundary, all ranks together;
  - `stop_after` is an ABSOLUTE step number: the run stops once `step >= stop_after` (whatever step
    it resumed from), for time-sliced jobs; it is not part of the config a resume must match;
  - a stop is a checkpoint: the loop saves at the end of the run whenever the last step is unsaved,
    so the same command resumes exactly there.
Step numbers count completed optimiser steps (the checkpoint of step N holds the state after N steps).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tqdm import tqdm

from videopoet.training.interface import StatefulTrainer


@dataclass
class Cadence:
    max_steps: int
    log_every: int = 1
    eval_every: int = 0  # 0: never
    save_every: int = 0  # 0: only at the end and at a stop
    stop_after: int | None = None  # absolute step count
    time_limit_s: float | None = None

    def due(self, every: int, step: int) -> bool:
        return step == self.max_steps or (every > 0 and step % every == 0)

    @property
    def end(self) -> int:
        return self.max_steps if self.stop_after is None else min(self.max_steps, self.stop_after)


@dataclass
class LoopResult:
    start_step: int
    step: int
    stopped: bool  # ended before max_steps (stop request, time limit or stop_after)
    reason: str  # "done", "stop_after", "time_limit" or "stop_request"
    elapsed_s: float
    last: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steps_run(self) -> int:
        return self.step - self.start_step


def run_loop(
    trainer: StatefulTrainer,
    cadence: Cadence,
    *,
    save: Callable[[], Any],
    log: Callable[[dict[str, Any], int, bool], None] | None = None,
    on_eval: Callable[[dict[str, float], int], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    any_rank: Callable[[bool], bool] = bool,
    is_main: bool = True,
    progress: str | None = None,
    keep_history: bool = False,
) -> LoopResult:
    """Train `trainer` until cadence.max_steps or a stop; returns what happened.

    save():                   write a checkpoint of trainer.step (called on every rank)
    log(metrics, step, due):  called after every step; `due` is the log cadence
    on_eval(metrics, step):   receives trainer.evaluate() at the eval cadence
    stop_requested():         this rank's view of a stop request (rank 0 polls the STOP file)
    any_rank(flag):           True on every rank when any rank's flag is True (a collective)
    """
    start = trainer.step
    t0 = time.perf_counter()
    last_saved = start
    bar = tqdm(total=cadence.max_steps, initial=start, desc=progress, unit="step", mininterval=5,
               dynamic_ncols=True) if (progress and is_main) else None
    history: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    reason = "done"
    while trainer.step < cadence.max_steps:
        if cadence.stop_after is not None and trainer.step >= cadence.stop_after:
            reason = "stop_after"
            break
        local = bool(stop_requested and stop_requested())
        timed_out = cadence.time_limit_s is not None and time.perf_counter() - t0 > cadence.time_limit_s
        if any_rank(local or timed_out):
            reason = "time_limit" if timed_out else "stop_request"
            break
        last = trainer.train_step()
        step = trainer.step
        if keep_history:
            history.append({"step": step, **last})
        if bar is not None:
            bar.update(1)
        if log is not None:
            log(last, step, cadence.due(cadence.log_every, step))
        if cadence.eval_every > 0 and cadence.due(cadence.eval_every, step):
            metrics = trainer.evaluate()
            if on_eval is not None:
                on_eval(metrics, step)
        if cadence.due(cadence.save_every, step):
            save()
            last_saved = step
    if bar is not None:
        bar.close()
    if trainer.step != last_saved and trainer.step > 0:
        save()  # a stop is a checkpoint: the same command resumes exactly here
    return LoopResult(start_step=start, step=trainer.step, stopped=trainer.step < cadence.max_steps,
                      reason=reason, elapsed_s=time.perf_counter() - t0, last=last, history=history)
