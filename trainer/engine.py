"""The training engine: DeepSpeed ZeRO-3 (or plain PyTorch) around the plain model, under Ray Train.

The model (trainer.model.VideoPoetLM) has no distribution inside; this module wraps it from outside:

    TorchTrainer (Ray Train V2, one worker per data-parallel rank; gloo on CPU, NCCL on GPU)
      train_loop_per_worker(loop_config)
        Trainer(cfg, rank, world)             one rank's Stateful training state
          AGDLoader                           (trainer.data) this rank's slice of the step's group batch
          deepspeed.initialize(LossForward(model), client AdamW, LambdaLR, infra/deepspeed/*.json)
            or the plain engine: torch AdamW + LambdaLR, gradients all-reduced by hand when world > 1
        every `checkpoint.every_steps` steps, on a stop request and at the end:
          each rank saves its ZeRO-3 shards into a temporary directory, barrier,
          ray.train.report(metrics, Checkpoint.from_directory(tmp))  (Ray merges the ranks' files)
        resume: ray.train.get_checkpoint() (the run's own latest, Ray Train V2 restores it when the
          same checkpoint.dir/name is started again) or checkpoint.resume_from (train_loop_config)

`--num-workers 0` runs the same Trainer in this process without Ray or DeepSpeed (the reference
the distributed run is tested against), checkpointing to <checkpoint.dir>/<name>/checkpoint_<step>.

Exactness of resume: every random draw of the data comes from (data.seed, step) (trainer.data), the
data stream positions, model, optimiser and LR-schedule states are in the checkpoint, and the model
has no dropout; torch's RNG state is saved too for anything that might use it.

Stopping: SIGTERM (or SIGINT) sets a flag in the process that owns the loop; under Ray the driver
writes a STOP file in the run directory that rank 0 checks at every step boundary and broadcasts.
The loop then checkpoints at the step boundary and returns; running the same command resumes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch

from videopoet.config import config_hash, from_dict, to_dict
from videopoet.trainer.config import ScheduleConfig, TrainConfig, deepspeed_config_path
from videopoet.trainer.data import AGDLoader, Batch

STATE_FILE = "trainer_state.json"
PLAIN_WEIGHTS = "plain_state.pt"
STOP_FILE = "STOP"
EXPORT_KIND = "videopoet-lm"


def lr_factor(sched: ScheduleConfig, step: int) -> float:
    """Multiplier of the peak lr at `step`: linear warm-up, then cosine/linear decay to min_lr_ratio."""
    if sched.warmup_steps and step < sched.warmup_steps:
        return (step + 1) / sched.warmup_steps
    if sched.decay == "constant":
        return 1.0
    span = max(1, sched.max_steps - sched.warmup_steps)
    progress = min(1.0, (step - sched.warmup_steps) / span)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if sched.decay == "cosine" else 1 - progress
    return sched.min_lr_ratio + (1 - sched.min_lr_ratio) * shape


# Settings that say how/where a run executes, not what it computes: changing them keeps the run
# name (so the same command with another stop point or cluster address resumes the same run).
_NOT_HASHED = {"checkpoint": ("stop_after", "resume_from", "name"), "engine": ("ray_address", "max_failures")}


def training_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config minus the _NOT_HASHED fields: what determines the numbers a run produces."""
    d = to_dict(cfg)
    for section, keys in _NOT_HASHED.items():
        for k in keys:
            d[section].pop(k, None)
    d.pop("log_every", None)
    return d


def run_name(cfg: TrainConfig) -> str:
    return cfg.checkpoint.name or f"lm-{cfg.recipe}-{config_hash(training_dict(cfg))[:8]}"


def _torch():
    import torch

    return torch


class LossForward(torch.nn.Module):
    """The module DeepSpeed wraps: forward = the model's output-only next-token loss.

    DeepSpeed's engine only intercepts `forward`; training needs the model's `loss` method, so this
    thin wrapper makes it the forward. Its state-dict keys are the model's, prefixed with "model.".
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens, prefix_len: int, text_emb=None, text_mask=None, text_start=None):
        loss, _ = self.model.loss(tokens, prefix_len, text_emb=text_emb, text_mask=text_mask, text_start=text_start)
        return loss


def load_deepspeed_config(cfg: TrainConfig, bf16: bool) -> dict:
    ds = json.loads(deepspeed_config_path(cfg.engine.deepspeed).read_text())
    ds = {k: v for k, v in ds.items() if not k.startswith("_")}
    # One AGD group per optimiser step: no accumulation, and the per-rank batch varies by group
    # (DeepSpeed only uses these numbers for its throughput counters).
    ds["train_micro_batch_size_per_gpu"] = 1
    ds["gradient_accumulation_steps"] = 1
    ds.pop("train_batch_size", None)
    ds["gradient_clipping"] = cfg.optim.grad_clip
    ds.setdefault("bf16", {})["enabled"] = bf16
    ds.setdefault("zero_allow_untested_optimizer", True)
    return ds


class FlopCounter:
    """Training FLOPs per token of the model at a sequence length, from a meta-device copy.

    Under ZeRO-3 the live model's parameters are partitioned (numel 0 on each rank), so the count
    comes from a copy with no storage.
    """

    def __init__(self, model_cfg):
        torch = _torch()
        from videopoet.trainer.model import VideoPoetLM

        with torch.device("meta"):
            self.model = VideoPoetLM(model_cfg)
        self._cache: dict[int, float] = {}

    def __call__(self, seq_len: int) -> float:
        if seq_len not in self._cache:
            self._cache[seq_len] = float(self.model.flops_per_token(seq_len))
        return self._cache[seq_len]

    @property
    def num_params(self) -> int:
        return self.model.num_params()


class Trainer:
    """One rank's training state and step (Stateful: state_dict / load_state_dict, save / load)."""

    def __init__(self, cfg: TrainConfig, *, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 engine: str | None = None, loader: AGDLoader | None = None):
        torch = _torch()
        from videopoet.trainer.model import VideoPoetLM

        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.kind = engine or cfg.engine.kind
        use_gpu = cfg.engine.use_gpu and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{local_rank}" if use_gpu else "cpu")
        if use_gpu:
            torch.cuda.set_device(self.device)
        self.bf16 = cfg.engine.precision == "bf16" or (cfg.engine.precision == "auto" and use_gpu)
        self.loader = loader or AGDLoader(cfg.data, cfg.schedule.max_steps)
        dims = self.loader.text_dims() - {0}
        if dims and dims != {cfg.model.text_dim}:
            raise ValueError(f"token shards have text_dim {sorted(dims)} but model.text_dim={cfg.model.text_dim}; "
                             f"set model.text_dim={min(dims)} (or re-tokenize with the model's text encoder)")
        self.flops = FlopCounter(cfg.model)
        self.step = 0
        self.group_steps: Counter[str] = Counter()

        model_cfg = cfg.model
        ds_config = None
        if self.kind == "deepspeed":
            ds_config = load_deepspeed_config(cfg, self.bf16)
            if "activation_checkpointing" in ds_config and not model_cfg.grad_checkpoint:
                import dataclasses

                model_cfg = dataclasses.replace(model_cfg, grad_checkpoint=True)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank and in the reference
        if self.kind == "deepspeed" and cfg.engine.zero_init:
            import deepspeed

            with deepspeed.zero.Init(config_dict_or_path=ds_config):
                model = VideoPoetLM(model_cfg)
            # Under zero.Init the model's own reset_parameters ran on already-partitioned (empty)
            # tensors: gather everything once, re-initialise on rank 0, and let DeepSpeed scatter it.
            with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=0):
                if rank == 0:
                    model.reset_parameters()
        else:
            model = VideoPoetLM(model_cfg)
        self.module = LossForward(model)
        params = [p for p in self.module.parameters() if p.requires_grad]
        # Weight decay on matrices only; under zero.Init a parameter is an empty 1-D tensor and its
        # real shape is ds_shape.
        def ndim(p) -> int:
            return len(getattr(p, "ds_shape", p.shape))

        groups = [{"params": [p for p in params if ndim(p) >= 2], "weight_decay": cfg.optim.weight_decay},
                  {"params": [p for p in params if ndim(p) < 2], "weight_decay": 0.0}]
        optim = torch.optim.AdamW(
            [g for g in groups if g["params"]],
            lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(cfg.schedule, s))
        if self.kind == "deepspeed":
            import deepspeed

            if ds_config["zero_optimization"].get("stage") == 3:
                # Parameters the model reads outside a submodule's forward (the null-text embedding)
                # must be gathered whenever the wrapper runs.
                for p in model.parameters(recurse=False):
                    deepspeed.zero.register_external_parameter(self.module, p)
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=self.module, optimizer=optim, lr_scheduler=sched, config=ds_config,
                dist_init_required=world_size > 1 or None,
            )
        else:
            self.module.to(self.device)
            self.engine, self.optimizer, self.scheduler = self.module, optim, sched
        self.params = params

    # -- one step ----------------------------------------------------------------------------
    def _inputs(self, batch: Batch):
        torch = _torch()
        dtype = torch.bfloat16 if (self.bf16 and self.kind == "deepspeed") else torch.float32
        tokens = batch.tokens.to(self.device, non_blocking=True)
        emb = batch.text_emb.to(self.device, dtype=dtype) if batch.text_emb is not None else None
        mask = batch.text_mask.to(self.device) if batch.text_mask is not None else None
        return tokens, emb, mask

    def _all_reduce_mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        torch = _torch()
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def train_step(self) -> dict[str, Any]:
        """Run one optimiser step on this rank's slice of the next AGD group batch; returns metrics."""
        torch = _torch()
        t0 = time.perf_counter()
        batch = self.loader.next_batch(self.rank, self.world_size)
        tokens, emb, mask = self._inputs(batch)
        lr = self.optimizer.param_groups[0]["lr"]
        args = (tokens, batch.prefix_len, emb, mask, batch.text_start)
        if self.kind == "deepspeed":
            loss = self.engine(*args)
            self.engine.backward(loss)
            self.engine.step()
            grad_norm = self.engine.get_global_grad_norm()
            grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        else:
            autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.bf16 and self.device.type == "cuda"
                        else contextlib.nullcontext())
            with autocast:
                loss = self.module(*args)
            loss.backward()
            if self.world_size > 1:
                import torch.distributed as dist

                for p in self.params:  # DDP by hand: average gradients (the reference engine)
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad.div_(self.world_size)
            clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        loss_value = self._all_reduce_mean(float(loss.detach().float().item()))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        L = batch.tokens.shape[1]
        global_tokens = batch.global_batch * L
        flops = self.flops(L) * global_tokens / dt
        self.group_steps[batch.group] += 1
        metrics = {
            "step": self.step, "task": batch.task, "group": batch.group, "loss": loss_value, "lr": lr,
            "grad_norm": grad_norm, "seq_len": L, "global_batch": batch.global_batch, "tokens": global_tokens,
            "step_time_s": dt, "tokens_per_s": global_tokens / dt, "flops_per_s": flops,
            "flops_per_s_per_device": flops / self.world_size, "padding_ratio": batch.padding_ratio,
            "text_dropped": batch.dropped_text,
        }
        if self.device.type == "cuda":
            metrics["mfu"] = flops / self.world_size / self.cfg.engine.peak_flops
        self.step += 1
        return metrics

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything besides model/optimiser/scheduler tensors: JSON-serialisable."""
        return {"step": self.step, "data": self.loader.state_dict(), "group_steps": dict(self.group_steps),
                "world_size": self.world_size, "engine": self.kind, "config": to_dict(self.cfg),
                "config_hash": config_hash(training_dict(self.cfg))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.loader.load_state_dict(state["data"])
        self.group_steps = Counter(state.get("group_steps", {}))
        if self.loader.step != self.step:
            raise ValueError(f"checkpoint step {self.step} and data position step {self.loader.step} disagree")

    def save(self, directory: str | Path) -> Path:
        """Write this rank's part of a checkpoint into `directory` (every rank calls it)."""
        torch = _torch()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tag = f"step_{self.step:08d}"
        if self.kind == "deepspeed":
            self.engine.save_checkpoint(str(directory), tag=tag)
        elif self.rank == 0:
            torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict()}, directory / PLAIN_WEIGHTS)
        torch.save({"cpu": torch.get_rng_state(),
                    **({"cuda": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {})},
                   directory / f"rng_rank{self.rank}.pt")
        if self.rank == 0:
            (directory / STATE_FILE).write_text(json.dumps({**self.state_dict(), "tag": tag}, indent=1))
        return directory

    def load(self, directory: str | Path) -> None:
        """Restore model, optimiser, LR schedule, data position and RNG from a checkpoint directory."""
        torch = _torch()
        directory = Path(directory)
        state_path = directory / STATE_FILE
        if not state_path.is_file():
            raise FileNotFoundError(f"{directory}: not a videopoet training checkpoint (no {STATE_FILE})")
        state = json.loads(state_path.read_text())
        saved = from_dict(TrainConfig, state["config"])
        if to_dict(saved.model) != to_dict(self.cfg.model):
            raise ValueError(f"{directory}: saved with another model config; resume with the same model settings")
        changed = [k for k, v in training_dict(self.cfg).items() if training_dict(saved).get(k) != v]
        if changed and self.rank == 0:
            print(f"warning: resuming {directory} with changed config section(s) {changed}; "
                  "losses will not match an uninterrupted run", flush=True)
        if state["engine"] != self.kind:
            raise ValueError(f"{directory}: a {state['engine']} checkpoint cannot resume a {self.kind} run")
        if self.kind == "deepspeed":
            if state["world_size"] != self.world_size:
                raise ValueError(
                    f"{directory}: ZeRO-3 checkpoint of {state['world_size']} ranks cannot load on {self.world_size}; "
                    "convert it with `python -m deepspeed.checkpoint.ds_to_universal` first (docs/formats.md)")
            path, _ = self.engine.load_checkpoint(str(directory), tag=state["tag"])
            if path is None:
                raise FileNotFoundError(f"{directory}: DeepSpeed found no checkpoint with tag {state['tag']}")
        else:
            blob = torch.load(directory / PLAIN_WEIGHTS, map_location=self.device, weights_only=True)
            self.module.load_state_dict(blob["model"])
            self.optimizer.load_state_dict(blob["optimizer"])
            self.scheduler.load_state_dict(blob["scheduler"])
        rng_path = directory / f"rng_rank{self.rank}.pt"
        if rng_path.is_file():
            rng = torch.load(rng_path, weights_only=True)
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.load_state_dict(state)

    def consolidated_state_dict(self) -> dict[str, Any] | None:
        """Full fp32 model weights on rank 0 (None elsewhere); a collective under ZeRO-3."""
        torch = _torch()
        model = self.module.model
        out: dict[str, Any] = {}
        if self.kind == "deepspeed":
            import deepspeed

            for name, p in model.named_parameters():
                with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                    if self.rank == 0:
                        out[name] = p.detach().to("cpu", torch.float32).clone()
            if self.rank == 0:
                for name, b in model.named_buffers():
                    if name in model.state_dict():
                        out[name] = b.detach().cpu().clone()
        elif self.rank == 0:
            out = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
                   for k, v in model.state_dict().items()}
        return out if self.rank == 0 else None

    def export(self, directory: str | Path) -> str | None:
        """Consolidated weights as a videopoet-lm checkpoint for sampling; returns the content hash on rank 0."""
        from videopoet.checkpoint import save_checkpoint

        state = self.consolidated_state_dict()
        if state is None:
            return None
        return save_checkpoint(directory, state, kind=EXPORT_KIND, config={"model": to_dict(self.cfg.model)},
                               extra={"step": self.step, "train_config": to_dict(self.cfg)})


# ---------------------------------------------------------------------------------------------
# metrics (rank 0)


class Tracker:
    """MLflow on rank 0: per-step metrics buffered and flushed every `log_every` steps."""

    def __init__(self, cfg: TrainConfig, enabled: bool, tags: dict[str, str] | None = None):
        self.cfg, self.enabled, self.tags = cfg, enabled, tags or {}
        self.buffer: list[tuple[str, float, int]] = []
        self.run_id: str | None = None
        self._ctx = None
        self.task_loss: dict[str, list[float]] = {}

    def __enter__(self) -> "Tracker":
        if self.enabled:
            from videopoet.tracking import start_run

            self._ctx = start_run("train", self.cfg, run_name=run_name(self.cfg), tags=self.tags)
            self.run_id = self._ctx.__enter__().info.run_id
        return self

    def __exit__(self, *exc) -> None:
        if self._ctx is not None:
            self.flush()
            self._ctx.__exit__(*exc)

    def step(self, m: dict[str, Any], group_steps: Counter, total_steps: int) -> None:
        if not self.enabled:
            return
        s = int(m["step"])
        for key in ("loss", "lr", "grad_norm", "tokens_per_s", "flops_per_s", "flops_per_s_per_device",
                    "padding_ratio", "step_time_s", "global_batch", "seq_len", "mfu"):
            if key in m and m[key] is not None and not (isinstance(m[key], float) and math.isnan(m[key])):
                self.buffer.append((key, float(m[key]), s))
        self.buffer.append((f"{m['task']}/loss", float(m["loss"]), s))
        self.buffer.append((f"group/{m['group']}/loss", float(m["loss"]), s))
        if (s + 1) % self.cfg.log_every == 0:
            for g, n in group_steps.items():
                self.buffer.append((f"share/{g}", n / max(1, total_steps), s))
            self.flush()

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.enabled:
            self.buffer += [(k, float(v), step) for k, v in metrics.items()]
            self.flush()

    def tag(self, key: str, value: str) -> None:
        if self.enabled:
            import mlflow

            mlflow.set_tag(key, value)

    def flush(self) -> None:
        if not self.enabled or not self.buffer:
            return
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        client = MlflowClient()
        items = [Metric(k, v, now, s) for k, v, s in self.buffer]
        for i in range(0, len(items), 1000):  # MLflow's batch limit
            client.log_batch(self.run_id, metrics=items[i:i + 1000])
        self.buffer.clear()


# ---------------------------------------------------------------------------------------------
# the loop shared by the in-process and the Ray paths


def train_loop(
    trainer: Trainer,
    tracker: Tracker,
    *,
    save: Callable[[Trainer, dict], str | None],
    should_stop: Callable[[], bool],
    progress: bool = True,
) -> dict[str, Any]:
    """Train until max_steps or a stop request; checkpoint every N steps, on stop and at the end."""
    cfg = trainer.cfg
    total = cfg.schedule.max_steps
    start_step = trainer.step
    bar = None
    if progress and trainer.rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    last: dict[str, Any] = {}
    tokens = 0
    t0 = time.perf_counter()
    stopped = False
    last_saved = trainer.step if trainer.step > 0 else -1
    stop_after = cfg.checkpoint.stop_after
    while trainer.step < total:
        if should_stop() or (stop_after is not None and trainer.step >= stop_after):
            stopped = True
            break
        last = trainer.train_step()
        tokens += last["tokens"]
        tracker.step(last, trainer.group_steps, trainer.step)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(task=last["task"], loss=f"{last['loss']:.3f}")
        elif trainer.rank == 0 and trainer.step % cfg.log_every == 0:  # plain log lines for non-TTY jobs
            print(f"step {trainer.step}/{total} {last['group']} loss {last['loss']:.4f} "
                  f"{last['tokens_per_s']:.0f} tokens/s", flush=True)
        if trainer.step % cfg.checkpoint.every_steps == 0 and trainer.step < total:
            where = save(trainer, last)
            last_saved = trainer.step
            if where:
                tracker.tag("checkpoint.latest", where)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    if trainer.step != last_saved and trainer.step > 0:
        where = save(trainer, last)
        if where:
            tracker.tag("checkpoint.latest", where)
    steps_run = trainer.step - start_step
    summary = {
        "step": trainer.step, "steps_run": steps_run, "stopped": stopped, "tokens": tokens,
        "elapsed_s": elapsed, "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
        "final_loss": last.get("loss"), "mlflow_run_id": tracker.run_id,
    }
    tracker.log({"run/tokens_per_s": summary["tokens_per_s"], "run/steps_run": steps_run}, trainer.step)
    return summary


# ---------------------------------------------------------------------------------------------
# in-process (plain, single rank)


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop checkpoints at the next step boundary and returns."""

    def __init__(self) -> None:
        self.flag = False
        self.previous: dict[int, Any] = {}

    def install(self) -> "_StopFlag":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: only the flag file / caller can stop us
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.flag = True

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def __call__(self) -> bool:
        return self.flag


def _latest_plain_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(p for p in run_dir.glob("checkpoint_*") if (p / STATE_FILE).is_file())
    return found[-1] if found else None


def dataclasses_replace_engine(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, **changes))


def run_local(cfg: TrainConfig, *, progress: bool = True, stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train in this process with the plain engine (no Ray, no DeepSpeed); resumable from run_dir."""
    run_dir = Path(cfg.checkpoint.dir).resolve() / run_name(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, engine="plain")
    resume = _latest_plain_checkpoint(run_dir) or (Path(cfg.checkpoint.resume_from) if cfg.checkpoint.resume_from else None)
    if resume is not None:
        trainer.load(resume)
        print(f"resumed from {resume} at step {trainer.step}", flush=True)

    def save(tr: Trainer, metrics: dict) -> str:
        final = run_dir / f"checkpoint_{tr.step:08d}"
        tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", suffix=".tmp", dir=run_dir))
        tr.save(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(run_dir.glob("checkpoint_*"))[:-cfg.checkpoint.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return str(final)

    flag = _StopFlag().install() if stop is None else None
    should_stop = stop or flag
    try:
        with Tracker(cfg, enabled=True, tags={"engine": "plain", "world_size": "1", "run_dir": str(run_dir)}) as tracker:
            summary = train_loop(trainer, tracker, save=save, should_stop=should_stop, progress=progress)
            summary["checkpoint"] = str(_latest_plain_checkpoint(run_dir) or "")
            if cfg.checkpoint.export and trainer.step >= cfg.schedule.max_steps:
                summary["export"] = str(run_dir / "export")
                summary["export_hash"] = trainer.export(run_dir / "export")
                tracker.tag("export", summary["export"])
    finally:
        if flag is not None:
            flag.restore()
    summary["run_dir"] = str(run_dir)
    return summary


# ---------------------------------------------------------------------------------------------
# Ray Train


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: one data-parallel rank (process group set up by Ray: gloo or NCCL)."""
    import ray.train
    import torch
    import torch.distributed as dist

    ctx = ray.train.get_context()
    rank, world, local_rank = ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank()
    for key, value in loop_config.get("env", {}).items():
        os.environ[key] = value
    os.environ.setdefault("LOCAL_RANK", str(local_rank))
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, int(loop_config.get("threads_per_worker", 1))))
    cfg = from_dict(TrainConfig, loop_config["config"])
    trainer = Trainer(cfg, rank=rank, world_size=world, local_rank=local_rank)
    stop_file = Path(loop_config["stop_file"])

    checkpoint = ray.train.get_checkpoint()
    source = None
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load(d)
        source = checkpoint.path
    elif loop_config.get("resume_from"):
        trainer.load(loop_config["resume_from"])
        source = loop_config["resume_from"]
    if source is not None and rank == 0:
        print(f"resumed from {source} at step {trainer.step}", flush=True)

    def should_stop() -> bool:
        flag = torch.tensor([1.0 if (rank == 0 and stop_file.exists()) else 0.0], device=trainer.device)  # NCCL: on the GPU
        if world > 1:
            dist.broadcast(flag, src=0)  # every rank must stop at the same step boundary
        return bool(flag.item())

    def save(tr: Trainer, metrics: dict) -> str | None:
        with tempfile.TemporaryDirectory(prefix="videopoet-ckpt-") as tmp:
            tr.save(tmp)
            if world > 1:
                dist.barrier()
            report = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
            report.update(step=tr.step, mlflow_run_id=tracker.run_id or "")
            ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        return f"{loop_config['run_dir']} (step {tr.step})"

    tags = {"engine": trainer.kind, "world_size": str(world), "run_dir": loop_config["run_dir"]}
    if source is not None:
        tags["resumed_from"] = str(source)
    with Tracker(cfg, enabled=rank == 0, tags=tags) as tracker:
        summary = train_loop(trainer, tracker, save=save, should_stop=should_stop, progress=loop_config.get("progress", True))
        if cfg.checkpoint.export and trainer.step >= cfg.schedule.max_steps:
            export_dir = loop_config["export_dir"]
            digest = trainer.export(export_dir)
            if rank == 0:
                tracker.tag("export", export_dir)
                summary.update(export=export_dir, export_hash=digest)
    if rank == 0:
        Path(loop_config["summary_file"]).write_text(json.dumps(summary, default=str))


def run_ray(cfg: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run a Ray Train TorchTrainer (locally unless engine.ray_address is set); returns the summary."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from videopoet.tracking import tracking_uri

    storage = str(cfg.checkpoint.dir)
    is_uri = "://" in storage
    if not is_uri:
        storage = str(Path(storage).resolve())
    name = run_name(cfg)
    run_dir = f"{storage.rstrip('/')}/{name}"
    local_run_dir = Path(run_dir) if not is_uri else Path(tempfile.gettempdir()) / "videopoet" / name
    local_run_dir.mkdir(parents=True, exist_ok=True)
    stop_file = local_run_dir / STOP_FILE
    stop_file.unlink(missing_ok=True)
    summary_file = local_run_dir / "last_summary.json"
    summary_file.unlink(missing_ok=True)
    env = {k: os.environ[k] for k in ("DS_ACCELERATOR", "RAY_AUTH_MODE", "TORCH_EXTENSIONS_DIR", "HF_HUB_OFFLINE",
                                      "VIDEOPOET_EXPERIMENT") if k in os.environ}
    env["MLFLOW_TRACKING_URI"] = tracking_uri()
    if not cfg.engine.use_gpu:
        env.setdefault("DS_ACCELERATOR", "cpu")

    started = False
    if not ray.is_initialized():
        ray.init(address=cfg.engine.ray_address, include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": env})
        started = True
    cpus = int(ray.cluster_resources().get("CPU", 1))
    loop_config = {
        "config": to_dict(cfg), "env": env, "stop_file": str(stop_file), "run_dir": run_dir,
        "export_dir": str(local_run_dir / "export"), "summary_file": str(summary_file),
        "resume_from": cfg.checkpoint.resume_from, "progress": progress,
        "threads_per_worker": max(1, cpus // max(1, cfg.engine.num_workers)),
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if cfg.engine.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.engine.num_workers, use_gpu=cfg.engine.use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if cfg.engine.use_gpu else {})}),
        run_config=RunConfig(
            name=name, storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
            failure_config=FailureConfig(max_failures=cfg.engine.max_failures),
            worker_runtime_env={"env_vars": env},
        ),
    )
    flag_previous = {}

    def on_signal(signum, frame):
        stop_file.write_text(f"signal {signum} at {time.time()}\n")

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            flag_previous[sig] = signal.signal(sig, on_signal)
        except ValueError:
            pass
    try:
        result = trainer.fit()
    finally:
        for sig, handler in flag_previous.items():
            signal.signal(sig, handler)
        if started:
            ray.shutdown()
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    summary["run_dir"] = run_dir
    if result.checkpoint is not None:
        summary["checkpoint"] = result.checkpoint.path
        if summary.get("mlflow_run_id"):
            from mlflow.tracking import MlflowClient

            os.environ.setdefault("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
            MlflowClient(env["MLFLOW_TRACKING_URI"]).set_tag(summary["mlflow_run_id"], "checkpoint.latest", result.checkpoint.path)
    stop_file.unlink(missing_ok=True)
    return summary


def export_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path) -> str:
    """Consolidate a training checkpoint (plain or ZeRO-3) into a videopoet-lm checkpoint, offline, on CPU."""
    torch = _torch()
    from videopoet.checkpoint import save_checkpoint

    checkpoint_dir = Path(checkpoint_dir)
    state = json.loads((checkpoint_dir / STATE_FILE).read_text())
    cfg = from_dict(TrainConfig, state["config"])
    if state["engine"] == "plain":
        weights = torch.load(checkpoint_dir / PLAIN_WEIGHTS, map_location="cpu", weights_only=True)["model"]
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        weights = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=state["tag"])
    model_weights = {k.removeprefix("model."): v.float() if v.is_floating_point() else v for k, v in weights.items()}
    return save_checkpoint(out_dir, model_weights, kind=EXPORT_KIND, config={"model": to_dict(cfg.model)},
                           extra={"step": state["step"], "train_config": state["config"]})
