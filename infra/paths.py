"""Paths on the command line: one convention for every stage's inputs and outputs (standard library only).

Every stage takes the previous stage's output directory as its input. A shard input may be
    a job output directory   (has `shards/` and `plan.json` or `summary.json`: ingest, tokenize)
    a shards folder          (searched recursively for the shard suffix)
    one shard file, a glob   (`demo_out/clips/shards/*.tar`), or a list of any of these.
Anything else is a UsageError: one line naming the path and what was expected. `resolve_shards` is
the one implementation; pipeline.clip_shards and pipeline.token_shards call it with their suffix.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

from videopoet.config import UsageError

SHARDS_DIR = "shards"
JOB_MARKERS = ("plan.json", "summary.json")
GLOB_CHARS = set("*?[")
# shard suffix -> (what it is, the job that writes it); used to name a wrong kind of input
KNOWN_SHARDS = {".tar": ("clip shards", "videopoet ingest"), ".parquet": ("token shards", "videopoet tokenize")}


def job_shards_dir(path: str | Path) -> Path | None:
    """`path/shards` when `path` is a data job's output directory, else None."""
    p = Path(path)
    if (p / SHARDS_DIR).is_dir() and any((p / m).is_file() for m in JOB_MARKERS):
        return p / SHARDS_DIR
    return None


def is_glob(spec: str) -> bool:
    return any(c in GLOB_CHARS for c in str(spec))


def expected(suffix: str) -> str:
    what, job = KNOWN_SHARDS.get(suffix, (f"{suffix} shards", "a data job"))
    return (f"expected {what}: the output directory of `{job}`, its shards/ folder, a {suffix} file, "
            "a glob or a list of these")


def _describe(path: Path, suffix: str) -> str:
    """What a path that holds no `suffix` shards is, for the error message."""
    if path.is_file():
        return f"a file, not a {suffix} shard"
    shards = job_shards_dir(path)
    where = shards if shards is not None else path
    for other, (what, job) in KNOWN_SHARDS.items():
        if other != suffix and next(where.rglob(f"*{other}"), None) is not None:
            return f"holds {what} (`{job}` output)"
    if (path / "checkpoints").is_dir() or (path / "meta.json").is_file():
        return "a training run or checkpoint directory"
    if shards is not None:
        return f"a job output with no {suffix} shards in shards/"
    return f"no {suffix} shards in it"


def resolve_shards(spec: str | Path | Sequence[str | Path], suffix: str, *,
                   error: type[Exception] = UsageError) -> list[Path]:
    """Shard files (sorted, unique) named by `spec`; `error` (a UsageError subclass) on anything else."""
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise error(f"no input given; {expected(suffix)}")
        return sorted({p for s in spec for p in resolve_shards(s, suffix, error=error)})
    text = os.path.expanduser(str(spec))
    if is_glob(text):
        found = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
        files = sorted({f for m in found for f in (resolve_shards(m, suffix, error=error) if m.is_dir() else [m])
                        if f.name.endswith(suffix)})
        if not files:
            raise error(f"{spec}: matches no {suffix} files; {expected(suffix)}")
        return files
    path = Path(text)
    if not path.exists():
        raise error(f"{spec}: no such file or directory; {expected(suffix)}")
    if path.is_file():
        if path.name.endswith(suffix):
            return [path]
        raise error(f"{spec}: {_describe(path, suffix)}; {expected(suffix)}")
    root = job_shards_dir(path) or path
    files = sorted(p for p in root.rglob(f"*{suffix}") if p.is_file())
    if root is path and (path / "manifest").is_dir():
        # A job output without markers (half written) still must not list its manifest parts as shards.
        files = [p for p in files if p.parent.name not in ("manifest", "stats")]
    if not files:
        raise error(f"{spec}: {_describe(path, suffix)}; {expected(suffix)}")
    return files


def shards_base(spec: str | Path) -> Path:
    """The folder shard names are relative to: a job output's shards/, a file's folder, or the folder itself."""
    path = Path(os.path.expanduser(str(spec)))
    if is_glob(str(spec)):
        parts = []
        for part in path.parts:
            if is_glob(part):
                break
            parts.append(part)
        return Path(*parts) if parts else Path(".")
    if path.is_file():
        return path.parent
    return job_shards_dir(path) or path


def output_dir(path: str | Path | None, flag: str = "--output") -> Path:
    """An output directory a job may write: created if missing; a UsageError if it is a file or not writable."""
    if not path:
        raise UsageError(f"{flag}: missing; give an output directory")
    p = Path(os.path.expanduser(str(path)))
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {path}: is a file; expected a directory (new, or this job's earlier output)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot create the directory ({err.strerror or err})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: not writable")
    return p


def output_file(path: str | Path, flag: str = "--out") -> Path:
    """An output file a job may write: its folder is created; a UsageError if it is a directory or not writable."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; expected a file name")
    output_dir(p.parent if str(p.parent) else ".", flag=f"{flag} folder")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{flag} {path}: not writable")
    return p


def input_dir(path: str | Path | None, flag: str, what: str, *, needs: Sequence[str] = ()) -> Path:
    """An existing input directory (e.g. a checkpoint); a UsageError naming `what` if it is missing or lacks `needs`."""
    if not path:
        raise UsageError(f"{flag}: missing; expected {what}")
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise UsageError(f"{flag} {path}: no such directory; expected {what}")
    if not p.is_dir():
        raise UsageError(f"{flag} {path}: a file; expected {what}")
    missing = [n for n in needs if not (p / n).exists()]
    if missing:
        raise UsageError(f"{flag} {path}: has no {', '.join(missing)}; expected {what}")
    return p
