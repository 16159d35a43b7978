"""Where log lines go: library chatter to the job's log file, the job's own lines and real warnings to the terminal.

`setup(level, log_file)` (called by `videopoet.commands.run_args` for every command, and in Ray
workers through `setup_from_env`, the worker_process_setup_hook) routes every library logger (Ray,
DeepSpeed, Apache Beam, MLflow, torch, Python warnings) through the root logger:
  - the log file gets everything at INFO and above (DEBUG with --log-level DEBUG), appended;
  - the terminal (stderr) gets WARNING and above (or --log-level), minus the KNOWN_HARMLESS lines,
    which still reach the log file.
The job's own progress bar and summary lines are printed, not logged, so they are never filtered.
Libraries that install their own handler and turn propagation off (Ray, DeepSpeed, MLflow) are
adopted: their loggers keep propagating to the root and ignore handlers they add later.
Standard library only.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# torch is left alone: it propagates already and sets its own levels (adopting it would un-silence Dynamo INFO).
LIBRARY_LOGGERS = ("ray", "DeepSpeed", "deepspeed", "apache_beam", "mlflow", "alembic", "py.warnings",
                   "urllib3", "filelock", "fsspec", "httpx", "transformers", "sentence_transformers")
ENV_LEVEL, ENV_FILE = "VIDEOPOET_LOG_LEVEL", "VIDEOPOET_LOG_FILE"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d]: %(message)s"


@dataclass(frozen=True)
class Harmless:
    """A known-harmless, repeated log line or warning: kept in the log file, not shown on the terminal."""

    name: str
    logger: str  # logger-name prefix the record comes from ("py.warnings" for warnings.warn)
    pattern: str  # regex searched in the message
    why: str

    def matches(self, record: logging.LogRecord) -> bool:
        return ((record.name == self.logger or record.name.startswith(self.logger + "."))
                and re.search(self.pattern, record.getMessage()) is not None)


KNOWN_HARMLESS = (
    Harmless("ray-train-controller-state", "ray.train",
             r"Failed to query Ray Train Controller actor state",
             "Ray Train's PlacementGroupCleaner polls the State API about once a second; a local Ray started "
             "without the dashboard has no State API, so every poll logs this. Cleanup is unaffected."),
    Harmless("deepspeed-torch-distributed-deprecations", "py.warnings",
             r"FutureWarning: `torch\.distributed\.[\w.]+` (is deprecated|is a private function|will be deprecated)",
             "DeepSpeed's comm layer calls torch.distributed's older collective names (_all_gather_base, "
             "reduce_scatter_tensor, ...); torch still supports them. Nothing in this repository calls them."),
    Harmless("deepspeed-torch-cuda-amp", "py.warnings",
             r"FutureWarning: `torch\.cuda\.amp\.[\w.]+\(",
             "DeepSpeed decorates ZeRO's linear layer with torch.cuda.amp.custom_fwd/bwd at import; a deprecation "
             "in torch, not a problem in the job."),
    Harmless("beam-gcs-filesystem", "apache_beam.io.filesystems",
             r"Failed to import GCSFileSystem",
             "Beam probes every filesystem at import; this project installs no google-cloud-storage and reads "
             "local files or fsspec URLs. Repeated in every Beam worker process."),
    Harmless("beam-apitools", "root",
             r"apitools not found, and bigquery client libraries are not available",
             "Beam's GCP IO modules say so at import; BigQuery is not used. Repeated in every Beam worker process."),
    Harmless("deepspeed-cpu-accelerator", "DeepSpeed",
             r"Setting accelerator to CPU",
             "DeepSpeed says so once per process on a machine without a GPU (every CPU demo worker)."),
)


class _TerminalFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(h.matches(record) for h in KNOWN_HARMLESS)


class _Terminal(logging.StreamHandler):
    """stderr as it is when a line is written (tests and the demo swap sys.stderr)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _LazyFileHandler(logging.FileHandler):
    """A FileHandler that creates its folder on the first line and drops lines it cannot write (no tracebacks)."""

    def __init__(self, path: str | Path):
        super().__init__(str(path), mode="a", encoding="utf-8", delay=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.stream is None:
                Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
            super().emit(record)
        except OSError:
            pass

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        pass


class _AdoptedLogger(logging.Logger):
    """A library logger that always propagates to the root and keeps no handlers of its own."""

    @property
    def propagate(self) -> bool:  # type: ignore[override]
        return True

    @propagate.setter
    def propagate(self, value: bool) -> None:
        pass

    def addHandler(self, hdlr: logging.Handler) -> None:  # noqa: N802 (logging's name)
        pass


def adopt(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    if type(logger) is logging.Logger:
        logger.__class__ = _AdoptedLogger
    logger.setLevel(logging.NOTSET)
    logger.disabled = False
    return logger


def setup(level: str = "WARNING", log_file: str | Path | None = None) -> None:
    """Route logging for this process (idempotent: a second call replaces the handlers it installed)."""
    level = (level or "WARNING").upper()
    if level not in LEVELS:
        from videopoet.config import UsageError

        raise UsageError(f"--log-level {level}: expected one of {', '.join(LEVELS)}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_videopoet", False):
            root.removeHandler(handler)
    terminal = _Terminal()
    terminal.setLevel(level)
    terminal.addFilter(_TerminalFilter())
    terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handlers: list[logging.Handler] = [terminal]
    file_level = min(logging.INFO, logging.getLevelName(level))
    if log_file:
        file = _LazyFileHandler(log_file)
        file.setLevel(file_level)
        file.setFormatter(logging.Formatter(FORMAT))
        handlers.append(file)
    for handler in handlers:
        handler._videopoet = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(file_level if log_file else logging.getLevelName(level))
    logging.captureWarnings(True)
    for name in LIBRARY_LOGGERS:
        adopt(name)
    # Ray workers started by this process run the same setup (videopoet.training.launch passes these on).
    os.environ[ENV_LEVEL] = level
    if log_file:
        os.environ[ENV_FILE] = str(Path(log_file).resolve())


def setup_from_env() -> None:
    """The Ray worker_process_setup_hook: the driver's routing, read from VIDEOPOET_LOG_LEVEL/FILE."""
    setup(os.environ.get(ENV_LEVEL, "WARNING"), os.environ.get(ENV_FILE) or None)


def default_log_file(out: str | Path | None, command: str) -> Path | None:
    """`<out>/logs/<command>.log` for a job writing to directory `out` (None when there is none)."""
    return Path(out) / "logs" / f"{command}.log" if out else None
