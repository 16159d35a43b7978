"""The checkpoint manager of every training job: one layout, atomic steps, latest, keep-N, one resume policy.

Layout (training checkpoint format version 2, docs/formats.md "Training checkpoints"):

    <run_dir>/checkpoints/step_<N:08d>/
        meta.json     {"format": "videopoet-train-checkpoint", "format_version": 2, "kind", "step",
                       "config", "extra"}
        ...           the trainer's payload (state.pt, or the LM's trainer_state.json + ZeRO-3 shards)

A step is written into `checkpoints/.step_<N:08d>.partial/` (every rank may write its part there),
then meta.json is added and the directory renamed into place, so a killed job never leaves a
partial step under the final name; the newest `keep` steps are kept. Resume policy: the newest step
is resumed when its config equals the run's; otherwise the run is refused with one ConfigError line
listing the differing keys. One allowance keeps run directories resumable across versions: a key that
the checkpoint's config lacks (added to the config by a later version) is accepted when the run's
value equals the key's default (`defaults`, the config dataclass's own defaults), since a new key's
default must reproduce what the older version did. A run directory holding a layout of an older
version is refused too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from videopoet.checkpoint import CheckpointError
from videopoet.config import ConfigError, to_dict

FORMAT = "videopoet-train-checkpoint"
FORMAT_VERSION = 2
META_FILE = "meta.json"
_STEP_RE = re.compile(r"^step_(\d{8})$")


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [prefix.rstrip(".") or "<config>"]
    keys: list[str] = []
    for k in sorted(set(a) | set(b), key=str):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += config_diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            keys.append(f"{prefix}{k}")
    return keys


_ABSENT = object()


def _lookup(config: Any, dotted: str) -> Any:
    """The value at a dotted key of a nested dict, or _ABSENT."""
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return _ABSENT
        config = config[part]
    return config


def new_keys_at_default(stored: dict, current: dict, defaults: dict, keys: list[str]) -> list[str]:
    """Those of the differing `keys` that `stored` lacks and whose current value is the default."""
    return [k for k in keys if _lookup(stored, k) is _ABSENT and _lookup(defaults, k) is not _ABSENT
            and _lookup(current, k) == _lookup(defaults, k)]


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


class CheckpointManager:
    """Checkpoints of one run directory. `config` is the plain dict a resume must match exactly
    (a job leaves out settings that do not change the numbers, e.g. where or how long it runs)."""

    def __init__(self, run_dir: str | Path, *, kind: str, config: dict[str, Any], keep: int = 2,
                 defaults: dict[str, Any] | None = None):
        if keep < 1:
            raise ValueError(f"keep={keep}: must be >= 1")
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "checkpoints"
        self.kind, self.config, self.keep, self.defaults = kind, config, keep, defaults or {}

    @classmethod
    def for_config(cls, run_dir: str | Path, *, kind: str, cfg: Any, keep: int = 2,
                   as_dict: Callable[[Any], dict[str, Any]] = to_dict) -> "CheckpointManager":
        """The manager of a run of dataclass config `cfg`, compared as `as_dict(cfg)` with its dataclass's
        defaults (`as_dict(type(cfg)())`) for keys that older checkpoints lack."""
        return cls(run_dir, kind=kind, config=as_dict(cfg), keep=keep, defaults=as_dict(type(cfg)()))

    # -- names -----------------------------------------------------------------------------------
    def step_dir(self, step: int) -> Path:
        return self.root / f"step_{step:08d}"

    def staging_dir(self, step: int) -> Path:
        return self.root / f".step_{step:08d}.partial"

    def steps(self) -> list[Path]:
        """Complete checkpoints (a meta.json present), oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir()
                      if _STEP_RE.match(p.name) and (p / META_FILE).is_file())

    def latest(self) -> Path | None:
        found = self.steps()
        return found[-1] if found else None

    # -- reading -----------------------------------------------------------------------------------
    def read_meta(self, path: str | Path) -> dict[str, Any]:
        """meta.json of a step directory, checked for format, version and kind."""
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise CheckpointError(f"{path}: not a training checkpoint (no {META_FILE})")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise CheckpointError(
                f"{path}: a training checkpoint of format version {meta.get('format_version', 1)} (older layout); "
                f"this version reads training checkpoint format version {FORMAT_VERSION} only "
                "(docs/formats.md 'Training checkpoints'): use a new run directory")
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: training checkpoint format version {meta.get('format_version')}, "
                                  f"this version reads {FORMAT_VERSION}")
        if meta.get("kind") != self.kind:
            raise CheckpointError(f"{path}: a {meta.get('kind')!r} checkpoint, expected {self.kind!r}")
        return meta

    def check_layout(self) -> None:
        """Refuse a run directory that holds checkpoints of an older layout (format version 1)."""
        found = []
        if (self.run_dir / "train_state").is_dir() and any((self.run_dir / "train_state").glob("step_*")):
            found.append("train_state/step_* (audio tokenizer)")
        if any(p.is_dir() for p in self.run_dir.glob("checkpoint_*")):
            found.append("checkpoint_* (LM)")
        if self.root.is_dir():
            old = [p for p in self.root.iterdir() if _STEP_RE.match(p.name) and (p / META_FILE).is_file()
                   and json.loads((p / META_FILE).read_text()).get("format") != FORMAT]
            if old:
                found.append("checkpoints/step_* without a training-checkpoint meta.json (video tokenizer)")
        if found:
            raise CheckpointError(
                f"{self.run_dir}: holds training checkpoints of an older layout ({'; '.join(found)}; "
                f"training checkpoint format version 1); this version resumes format version {FORMAT_VERSION} "
                "only (docs/formats.md 'Training checkpoints'): use a new run directory, or finish that run "
                "with the videopoet version that wrote it")

    def check_config(self, path: Path, meta: dict[str, Any]) -> None:
        stored = meta.get("config", {})
        diff = config_diff(stored, self.config)
        accepted = new_keys_at_default(stored, self.config, self.defaults, diff)
        diff = [k for k in diff if k not in accepted]
        if diff:
            shown = ", ".join(diff[:8]) + (f" (+{len(diff) - 8} more)" if len(diff) > 8 else "")
            raise ConfigError(f"{path}: written with a different config (differing keys: {shown}); "
                              "use a new run directory or the same config")

    def resume_point(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint and its meta, after the layout and config checks; None for a new run."""
        self.check_layout()
        latest = self.latest()
        if latest is None:
            return None
        meta = self.read_meta(latest)
        self.check_config(latest, meta)
        return latest, meta

    # -- writing -----------------------------------------------------------------------------------
    def begin(self, step: int) -> Path:
        """A fresh staging directory for `step` (call on one rank, then let every rank write into it)."""
        staging = self.staging_dir(step)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def commit(self, step: int, extra: dict[str, Any] | None = None) -> Path:
        """Add meta.json to the staging directory of `step`, rename it into place, keep the newest N."""
        staging, final = self.staging_dir(step), self.step_dir(step)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind, "step": step,
                "config": self.config, "extra": extra or {}}
        _write_json_atomic(staging / META_FILE, meta)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        self.prune()
        return final

    def abort(self, step: int) -> None:
        shutil.rmtree(self.staging_dir(step), ignore_errors=True)

    def save(self, step: int, write_payload: Callable[[Path], Any], extra: dict[str, Any] | None = None) -> Path:
        """Single-writer save: stage, let `write_payload(dir)` fill it, commit (nothing left on failure)."""
        staging = self.begin(step)
        try:
            write_payload(staging)
        except BaseException:
            self.abort(step)
            raise
        return self.commit(step, extra)

    def prune(self) -> None:
        for old in self.steps()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        if self.root.is_dir():  # staging directories of killed saves
            newest = self.latest()
            for p in self.root.glob(".step_*.partial"):
                if newest is not None and p.name < f".{newest.name}":
                    shutil.rmtree(p, ignore_errors=True)


def save_state_file(directory: Path, state: dict[str, Any], name: str = "state.pt") -> None:
    """The payload of a single-process trainer: its state_dict as one torch file (weights_only-loadable)."""
    torch.save(state, Path(directory) / name)


def load_state_file(directory: Path, name: str = "state.pt", map_location: Any = "cpu") -> dict[str, Any]:
    return torch.load(Path(directory) / name, map_location=map_location, weights_only=True)
