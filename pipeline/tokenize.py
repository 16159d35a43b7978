"""`videopoet tokenize`: clip shards -> token shards for every pretraining task, on Beam, Ray or locally.

    videopoet tokenize --engine beam --input /data/clips --output /data/tokens \
        --video-tokenizer ckpt/magvit2 --audio-tokenizer ckpt/soundstream --text-encoder /models/t5-xl
    videopoet tokenize --engine ray --use-gpu --ray-address auto --input ... --output ... ...

The tokenize job on the data-job protocol (videopoet.jobs): one unit per input clip shard (sorted);
per worker the models load once (tokenize_models); a unit's shard is read tolerantly (a Ray task)
and tokenized and committed (tokenize_encode), its manifest part last.

Output (docs/formats.md, "Tokenize output"): `shards/shard-BBBBBB-00.parquet` (token shards,
videopoet.pipeline.token_shards), `stats/part-BBBBBB.parquet` (codebook counts), and LAST the
manifest part `manifest/part-BBBBBB.parquet` (one row per clip, ok or failed with a reason), whose
presence commits unit B. A rerun skips committed units; `plan.json` pins the input shards, the
content settings and the model hashes, and a rerun with other tokenizer checkpoints is refused
(recorded in refusals.jsonl, one clear error): token ids from two tokenizers must never share a
dataset. Every engine runs the same read + tokenize, so outputs are byte-identical whatever the engine.

`--mode sr --sr-format F` (tokenize_sr): the same job writing SR token shards (pipeline.sr_shards)
of the clips in HR format F for `videopoet train-sr`; other clips are manifest rows of status
"skipped" with a reason, as are the SR formats' clips in the LM mode.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from videopoet.checkpoint import read_meta
from videopoet.config import ConfigError, config_hash
from videopoet.jobs.cli_args import as_override, engine_overrides
from videopoet.jobs.protocol import DataJob
from videopoet.jobs.protocol import check_or_write_plan as check_plan
from videopoet.jobs.run import run_job
from videopoet.paths import output_dir, shards_base
from videopoet.pipeline import manifest as mf
from videopoet.pipeline.clip_shards import list_shards
from videopoet.pipeline.sr_shards import SR_FORMAT_VERSION
from videopoet.pipeline.token_shards import TOKEN_FORMAT_VERSION
from videopoet.pipeline.tokenize_config import (
    HASH_KEYS,
    MANIFEST_VERSION,
    REFUSALS_FILE,
    TOKENIZE_RECIPES,
    TOKENIZE_VERSION,
    TokenizeConfig,
    TokenizerMismatch,
)
from videopoet.pipeline.tokenize_encode import (
    ReadUnit,
    ShardUnit,
    UnitResult,
    read_unit,
    result_from_part,
    tokenize_unit,
)
from videopoet.pipeline.tokenize_models import Models, load_models, model_identity
from videopoet.pipeline.tokenize_sr import tokenize_sr_unit
from videopoet.pipeline.tokenize_stats import read_manifest, sr_summary_line, summarize, summarize_sr, summary_line
from videopoet.tracking import Tracker

__all__ = ["REFUSALS_FILE", "TOKENIZE_RECIPES", "TokenizeConfig", "TokenizeJob", "TokenizerMismatch", "read_manifest",
           "run_from_args", "run_tokenize"]


class TokenizeJob(DataJob[ShardUnit, UnitResult]):
    """Input clip shards -> token shards, stats parts and manifest parts (videopoet.jobs.protocol)."""

    name = "tokenize"
    progress_unit = "shard"
    rate_of = "ok"
    driver_only = ("_shards",)

    def __init__(self, cfg: TokenizeConfig, out: Path, ident: dict[str, str], shards: list[tuple[Path, str]]):
        super().__init__(cfg, out)
        self.ident = ident
        self._shards = shards

    def units(self) -> list[ShardUnit]:
        return [ShardUnit(i, str(p), name) for i, (p, name) in enumerate(self._shards)]

    def plan(self, units: Sequence[ShardUnit]) -> dict[str, Any]:
        return make_plan(self.cfg, self._shards, self.ident)

    def check_plan(self, plan: dict[str, Any]) -> None:
        check_or_write_plan(self.out, plan)

    def progress_counts(self, r: UnitResult) -> tuple[int, dict[str, int]]:
        # "skipped" is the bar's own word (units already committed): clips this mode skips are "not_taken"
        return 1, {"ok": r.clips_ok, "failed": r.clips_failed, "not_taken": r.clips_skipped}

    def counters(self, r: UnitResult) -> dict[str, int]:
        return {"clips_ok": r.clips_ok, "clips_failed": r.clips_failed, "clips_skipped": r.clips_skipped}

    def setup(self) -> Models:
        return load_models(self.cfg, self.ident)

    def prepare(self, unit: ShardUnit) -> ReadUnit:
        return read_unit(unit.index, unit.path, unit.name)

    def commit_unit(self, unit: ShardUnit, prepared: list[ReadUnit], models: Models) -> UnitResult:
        if self.cfg.mode == "sr":
            return tokenize_sr_unit(prepared[0], models, self.out, self.cfg)
        return tokenize_unit(prepared[0], models, self.out, self.cfg)

    def result_from_part(self, index: int) -> UnitResult:
        return result_from_part(self.out, index)

    def summarize(self, units: Sequence[ShardUnit], results: list[UnitResult], wall_s: float) -> dict[str, Any]:
        video_bits = int(read_meta(self.cfg.video_tokenizer)["config"]["bits"])
        plan = json.loads((self.out / mf.PLAN_FILE).read_text())
        if self.cfg.mode == "sr":
            return summarize_sr(self.out, self.cfg, len(units), video_bits, wall_s, results, plan)
        return summarize(self.out, self.cfg, len(units), video_bits, wall_s, results, plan)

    def summary_line(self, summary: dict[str, Any]) -> str:
        return sr_summary_line(summary) if summary.get("mode") == "sr" else summary_line(summary)

    def track(self, tracker: Tracker, summary: dict[str, Any]) -> None:
        tracker.log_metrics({k: float(summary[k]) for k in (
            "clips", "clips_ok", "clips_failed", "clips_skipped", "units", "units_this_run", "clips_this_run",
            "wall_seconds", "clips_per_s")}, step=0)
        if summary.get("mode") == "sr":
            tracker.log_metrics({"video_codes_used": float(summary["codebook_usage"]["video"]["used"])}, step=0)
            tracker.log_artifact(self.out / mf.SUMMARY_FILE)
            tracker.log_artifact(self.out / mf.PLAN_FILE)
            return
        tracker.log_metrics({f"samples_{t}": float(n) for t, n in summary["samples_per_task"].items()}, step=0)
        for level, f in summary["codebook_usage"].items():
            tracker.log_metrics({f"{level}_codes_used": float(f["used"]), f"{level}_perplexity": f["perplexity"]},
                                step=0)
        tracker.log_artifact(self.out / mf.SUMMARY_FILE)
        tracker.log_artifact(self.out / mf.PLAN_FILE)
        for p in summary.get("plots", []):
            tracker.log_artifact(p, artifact_path="summary")


# --- plan --------------------------------------------------------------------------------------

def input_shards(root: str) -> list[tuple[Path, str]]:
    """(path, name relative to the shards folder) of every committed clip shard `root` names, sorted.

    `root`: an ingest output directory, its shards/ folder, one .tar or a glob (clip_shards.list_shards);
    names are relative to the shards folder, so `--input OUT` and `--input OUT/shards` plan the same job."""
    shards = list_shards(os.path.expanduser(root))
    base = shards_base(root)
    return [(p, _relative_to(p, base)) for p in shards]


def make_plan(cfg: TokenizeConfig, shards: list[tuple[Path, str]], ident: dict[str, str]) -> dict[str, Any]:
    listing = json.dumps([[name, p.stat().st_size] for p, name in shards], separators=(",", ":")).encode()
    if cfg.mode == "sr":  # another output format and content: an LM output never resumes as SR, nor back
        content = {"mode": "sr", "sr_format": cfg.sr_format, "sr_frames": cfg.sr_frames}
        versions = {"mode": "sr", "sr_format_version": SR_FORMAT_VERSION}
    else:  # (unchanged keys: LM outputs written before the SR mode existed still resume)
        content = {"any_size": cfg.any_size}
        versions = {"token_format_version": TOKEN_FORMAT_VERSION}
    return {
        "tokenize_version": TOKENIZE_VERSION, "manifest_version": MANIFEST_VERSION, **versions,
        "content_config_hash": config_hash(content),
        "inputs_sha256": hashlib.sha256(listing).hexdigest(), "num_units": len(shards),
        **ident,
    }


def check_or_write_plan(out: Path, plan: dict[str, Any]) -> None:
    """Refuse to mix: other model hashes than the output's are recorded and stop the job (one error);
    other inputs/settings are refused like ingest does."""
    path = out / mf.PLAN_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        old_mode, new_mode = old.get("mode", "lm"), plan.get("mode", "lm")
        if old_mode != new_mode:
            raise ConfigError(f"output={out}: holds {old_mode.upper()} token shards (tokenize --mode {old_mode}); "
                              f"a --mode {new_mode} run needs another --output")
        diff = [k for k in HASH_KEYS if old.get(k) != plan[k]]
        if diff:
            detail = "; ".join(f"{k}: output has {old.get(k)}, given {plan[k]}" for k in diff)
            message = (f"output={out}: made with other models ({detail}); refusing to mix tokens of two "
                       "tokenizers in one dataset: rerun with the original checkpoints or use a new --output")
            record = {"status": "failed", "stage": "plan", "error_class": "TokenizerMismatch", "message": message,
                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      **{f"given_{k}": plan[k] for k in diff}}
            with open(out / REFUSALS_FILE, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
            raise TokenizerMismatch(message)
    check_plan(out, plan)


def _relative_to(path: Path, root: Path) -> str:
    """`path` relative to `root` when under it (portable manifests), else absolute, POSIX style."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def run_tokenize(cfg: TokenizeConfig) -> dict[str, Any]:
    """Run the whole job with `cfg.engine`; returns the summary (also written to summary.json)."""
    if not cfg.output:
        raise ConfigError("output='': give --output DIR")
    if not cfg.input:
        raise ConfigError("input='': give --input CLIP_SHARD_DIR")
    if cfg.torch_threads == 0:
        # Resolved here, once, so that every worker of every engine uses the same count.
        cfg = dataclasses.replace(cfg, torch_threads=torch.get_num_threads())
    if cfg.device == "cuda" and cfg.engine == "local" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: this machine has no CUDA GPU (use device=auto or cpu)")
    shards = input_shards(cfg.input)
    out = output_dir(cfg.output, "--output").resolve()
    return run_job(TokenizeJob(cfg, out, model_identity(cfg), shards))


def config_from_args(args: argparse.Namespace) -> TokenizeConfig:
    flags = (as_override("input", args.input) + as_override("output", args.output)
             + as_override("video_tokenizer", args.video_tokenizer)
             + as_override("audio_tokenizer", args.audio_tokenizer)
             + as_override("text_encoder", args.text_encoder) + as_override("device", args.device)
             + as_override("mode", getattr(args, "mode", None))
             + as_override("sr_format", getattr(args, "sr_format", None))
             + engine_overrides(args))
    return TOKENIZE_RECIPES.get(args.config, list(args.overrides) + flags)


def run_from_args(args: argparse.Namespace) -> int:
    """`videopoet tokenize ARGS` (arguments: videopoet.pipeline.tokenize_cli)."""
    run_tokenize(config_from_args(args))
    return 0


if __name__ == "__main__":
    # Run through the imported module, not __main__: configs pickled to Beam/Ray workers must
    # name classes those workers can import.
    from videopoet import commands
    from videopoet.pipeline import tokenize_cli

    sys.exit(commands.main_for(tokenize_cli))
