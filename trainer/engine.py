"""The LM training job on the shared framework: resume, loop, checkpoints, MLflow and launch for `videopoet train`.

    run(cfg)                                  driver: opens the MLflow run, launches the workers
      videopoet.training.launch               --num-workers 0: this process, plain engine
                                              N >= 1: Ray Train TorchTrainer, N ranks (gloo / NCCL),
                                              engine.max_failures worker-group restarts
        train_worker(loop_config)             one rank
          LMTrainer                           (trainer.lm_trainer) DeepSpeed ZeRO-3 or plain step
          CheckpointManager                   <checkpoint.dir>/<run name>/checkpoints/step_<N:08d>/:
                                              rank 0 stages, every rank writes its part, barrier,
                                              rank 0 commits (meta.json, rename, keep-N)
          run_loop                            save every checkpoint.every_steps, at a stop and at the end

Resume: the run's newest checkpoint (same checkpoint.dir and run name; a changed config is refused
naming the differing keys), else `checkpoint.resume_from`. A restarted Ray worker group (max_failures)
resumes the same way. Stopping: SIGTERM/SIGINT write <run dir>/STOP, rank 0 polls it at every step
boundary and all ranks stop together; `checkpoint.stop_after=K` stops at the absolute step K.
Exactness of resume: every random draw of the data comes from (data.seed, step) (trainer.data), the
data stream positions, model, optimiser and LR-schedule states are in the checkpoint, and the model
has no dropout; torch's RNG state is saved too for anything that might use it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from videopoet.config import from_dict, to_dict
from videopoet.tracking import Tracker
from videopoet.trainer.config import TrainConfig, run_name, training_dict
from videopoet.trainer.lm_trainer import EXPORT_KIND, LMTrainer, export_checkpoint  # noqa: F401  (job API)
from videopoet.training.checkpoints import CheckpointManager
from videopoet.training.launch import WorkerContext, launch, stop_requested, worker_context
from videopoet.training.loop import Cadence, run_loop

TRAIN_KIND = "videopoet-lm-train"
_LOGGED = ("loss", "lr", "grad_norm", "tokens_per_s", "flops_per_s", "flops_per_s_per_device",
           "padding_ratio", "step_time_s", "global_batch", "seq_len", "mfu")


def run_dir_of(cfg: TrainConfig) -> Path:
    return Path(cfg.checkpoint.dir).resolve() / run_name(cfg)


def dataclasses_replace_engine(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    return dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, **changes))


class LMRun:
    """One rank's run of the LM job: the trainer, its checkpoints and its metrics (rank 0)."""

    def __init__(self, cfg: TrainConfig, ctx: WorkerContext, loop_config: dict[str, Any]):
        self.cfg, self.ctx, self.loop_config = cfg, ctx, loop_config
        self.run_dir = Path(loop_config["run_dir"])
        self.trainer = LMTrainer(cfg, rank=ctx.rank, world_size=ctx.world_size, local_rank=ctx.local_rank,
                                 engine=loop_config["engine"])
        self.manager = CheckpointManager.for_config(self.run_dir, kind=TRAIN_KIND, cfg=cfg, keep=cfg.checkpoint.keep,
                                                    as_dict=training_dict)
        self.tracker = Tracker.attach(loop_config["run_id"]) if ctx.is_main else Tracker.disabled()
        self.tokens = 0

    def resume(self) -> None:
        resume = self.manager.resume_point()
        source = resume[0] if resume is not None else None
        if source is None and self.cfg.checkpoint.resume_from:
            source = Path(self.cfg.checkpoint.resume_from)
            self.manager.read_meta(source)
        if source is not None:
            self.trainer.load_payload(source)
            self.tracker.set_tags({"resumed_from": str(source)})
            if self.ctx.is_main:
                print(f"resumed from {source} at step {self.trainer.step}", flush=True)

    def save(self) -> None:
        """Every rank writes its part into the staging directory; rank 0 commits it."""
        step = self.trainer.step
        if self.ctx.is_main:
            self.manager.begin(step)
        self.ctx.barrier()
        self.trainer.save_payload(self.manager.staging_dir(step))
        self.ctx.barrier()
        if self.ctx.is_main:
            path = self.manager.commit(step, extra={"engine": self.trainer.kind, "world_size": self.ctx.world_size})
            self.tracker.set_tags({"checkpoint.latest": str(path)})
        self.ctx.barrier()

    def log(self, m: dict[str, Any], step: int, due: bool) -> None:
        """Every step's metrics (buffered) under its own 0-based step; shares and a flush when due."""
        self.tokens += m["tokens"]
        s = int(m["step"])
        self.tracker.log_metrics({k: m[k] for k in _LOGGED if m.get(k) is not None}, s, flush=False)
        self.tracker.log_metrics({f"{m['task']}/loss": m["loss"], f"group/{m['group']}/loss": m["loss"]}, s,
                                 flush=False)
        if due:
            total = max(1, self.trainer.step)
            self.tracker.log_metrics({f"share/{g}": n / total for g, n in self.trainer.group_steps.items()}, s)
            if self.ctx.is_main and not self.loop_config.get("progress", True):  # plain lines for non-TTY jobs
                print(f"step {step}/{self.cfg.schedule.max_steps} {m['group']} loss {m['loss']:.4f} "
                      f"{m['tokens_per_s']:.0f} tokens/s", flush=True)

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        self.resume()
        cadence = Cadence(max_steps=cfg.schedule.max_steps, log_every=cfg.log_every,
                          save_every=cfg.checkpoint.every_steps, stop_after=cfg.checkpoint.stop_after)
        result = run_loop(self.trainer, cadence, save=self.save, log=self.log,
                          stop_requested=stop_requested(self.loop_config, self.ctx), any_rank=self.ctx.any_rank,
                          is_main=self.ctx.is_main,
                          progress="train" if self.loop_config.get("progress", True) else None)
        latest = self.manager.latest() if self.ctx.is_main else None
        summary = {
            "step": self.trainer.step, "steps_run": result.steps_run, "stopped": result.stopped,
            "tokens": self.tokens, "elapsed_s": result.elapsed_s,
            "tokens_per_s": self.tokens / result.elapsed_s if result.elapsed_s > 0 else 0.0,
            "final_loss": result.last.get("loss"), "mlflow_run_id": self.loop_config["run_id"],
            "checkpoint": str(latest or ""), "run_dir": str(self.run_dir),
        }
        self.tracker.log_metrics({"run/tokens_per_s": summary["tokens_per_s"], "run/steps_run": result.steps_run},
                                 self.trainer.step)
        if cfg.checkpoint.export and self.trainer.step >= cfg.schedule.max_steps:
            export_dir = self.run_dir / "export"
            digest = self.trainer.export(export_dir)  # a collective under ZeRO-3
            if self.ctx.is_main:
                self.tracker.set_tags({"export": str(export_dir)})
                summary.update(export=str(export_dir), export_hash=digest)
        self.tracker.flush()
        return summary


def train_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """One rank of `videopoet train` (in-process or a Ray Train worker); rank 0 writes the summary."""
    cfg = from_dict(TrainConfig, loop_config["config"])
    ctx = worker_context(use_gpu=cfg.engine.use_gpu)
    summary = LMRun(cfg, ctx, loop_config).train()
    if ctx.is_main:
        Path(loop_config["summary_file"]).write_text(json.dumps(summary, default=str))
    return summary


def run(cfg: TrainConfig, *, num_workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run `cfg` names; num_workers (default engine.num_workers): 0 = this process
    with the plain engine, N >= 1 = N Ray Train workers with engine.kind. Returns rank 0's summary."""
    workers = cfg.engine.num_workers if num_workers is None else num_workers
    if workers == 0 and cfg.engine.kind != "plain":
        cfg = dataclasses_replace_engine(cfg, kind="plain")
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    # refuse early
    CheckpointManager.for_config(run_dir, kind=TRAIN_KIND, cfg=cfg, as_dict=training_dict).resume_point()
    summary_file = run_dir / "last_summary.json"
    summary_file.unlink(missing_ok=True)
    tags = {"engine": cfg.engine.kind if workers else "plain", "world_size": str(max(1, workers)),
            "run_dir": str(run_dir)}
    env = {} if (cfg.engine.use_gpu or "DS_ACCELERATOR" in os.environ) else {"DS_ACCELERATOR": "cpu"}
    with Tracker.start("train", cfg, run_name=run_name(cfg), tags=tags) as tracker:
        loop_config = {"config": to_dict(cfg), "run_dir": str(run_dir), "summary_file": str(summary_file),
                       "run_id": tracker.run_id, "progress": progress,
                       "engine": "plain" if workers == 0 else cfg.engine.kind}
        launch(train_worker, loop_config, num_workers=workers, run_dir=run_dir, use_gpu=cfg.engine.use_gpu,
               ray_address=cfg.engine.ray_address, max_failures=cfg.engine.max_failures, env=env,
               name="train")
    return json.loads(summary_file.read_text()) if summary_file.is_file() else {"run_dir": str(run_dir)}


def run_local(cfg: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train in this process with the plain engine (no Ray, no DeepSpeed); resumable from the run dir."""
    return run(cfg, num_workers=0, progress=progress)


def run_ray(cfg: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """engine.num_workers Ray Train workers (locally unless engine.ray_address is set)."""
    return run(cfg, num_workers=max(1, cfg.engine.num_workers), progress=progress)
