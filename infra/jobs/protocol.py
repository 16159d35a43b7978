"""The data-job protocol: what a job (ingest, tokenize) defines so that every engine can run it.

A job cuts its work into fixed units (each with an integer `index`), in an order that depends only
on its inputs. A unit is the unit of work, of commit and of resume:

    units()                      the units, in order (the driver calls it once)
    plan(units) / check_plan     what must not change on a rerun, written to (or checked against)
                                 `<out>/plan.json`, so that resuming never mixes two jobs
    setup() -> state             per worker, once: load the models
    items(unit) -> [item]        the unit's CPU work pieces (Ray runs one task per item)
    prepare(item) -> prepared    CPU work (decode an input, read a shard); never raises for bad data
    prepare_failed(item, err)    what a piece whose task died for good becomes (default: the error)
    commit_unit(unit, prepared, state) -> result
                                 the model work and the commit: every output file written
                                 atomically, the unit's manifest part LAST (its existence commits it)
    result_from_part(index)      the result of a committed unit, read back (skipped=True)
    summarize(units, results, wall_s) -> summary dict (summary.json)

`process(unit, state)` = skip a committed unit, else prepare its items here and commit: the local
and Beam path. Results carry `index` and `skipped`. Exactly once: a unit's commit marker is
`commit.part_path(out, index)`; a rerun skips committed units and the job's commit cleans what an
interrupted attempt left (`commit.clean_unit`), so a killed and rerun job ends with the same bytes.

A job object is pickled to Beam and Ray workers: its class must live in an importable module (not
`__main__`), and `driver_only` names the attributes workers never need (the input listing).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Generic, Sequence, TypeVar

from videopoet.config import ConfigError
from videopoet.jobs import commit
from videopoet.jobs.config import EngineConfig

U = TypeVar("U")  # a unit (has .index)
R = TypeVar("R")  # a unit's result (has .index and .skipped)


def check_or_write_plan(out: Path, plan: dict[str, Any]) -> None:
    """A rerun must see the same inputs and content settings, or resuming would mix two jobs."""
    path = Path(out) / commit.PLAN_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in plan if old.get(k) != plan[k])
        if diff:
            raise ConfigError(
                f"output={out}: already holds a job with other {', '.join(diff)}; "
                "rerun with the same inputs and settings, or use a new --output"
            )
        return
    commit.write_json_atomic(path, plan)


class DataJob(ABC, Generic[U, R]):
    """One exactly-once data job over fixed units (see the module docstring)."""

    name: str = "job"  # the command: progress label, Beam metric namespace videopoet.<name>, MLflow run
    progress_unit: str = "unit"  # what the progress bar counts
    rate_of: str = "ok"  # the progress counter whose rate the bar shows
    driver_only: tuple[str, ...] = ()  # attributes not shipped to workers

    def __init__(self, cfg: EngineConfig, out: Path):
        self.cfg = cfg
        self.out = Path(out)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self.driver_only}

    # --- driver ---
    @abstractmethod
    def units(self) -> list[U]: ...

    @abstractmethod
    def plan(self, units: Sequence[U]) -> dict[str, Any]: ...

    def check_plan(self, plan: dict[str, Any]) -> None:
        check_or_write_plan(self.out, plan)

    def progress_total(self, units: Sequence[U]) -> int:
        return len(units)

    @abstractmethod
    def progress_counts(self, result: R) -> tuple[int, dict[str, int]]:
        """(progress units done, counters) of one unit's result."""

    def counters(self, result: R) -> dict[str, int]:
        """Beam counters of a fresh result (namespace videopoet.<name>)."""
        return self.progress_counts(result)[1]

    def distributions(self, result: R) -> dict[str, int]:
        """Beam distributions of a fresh result."""
        return {}

    @abstractmethod
    def summarize(self, units: Sequence[U], results: list[R], wall_s: float) -> dict[str, Any]: ...

    @abstractmethod
    def summary_line(self, summary: dict[str, Any]) -> str: ...

    def track(self, tracker: Any, summary: dict[str, Any]) -> None:
        """Log the summary's figures and files to the job's run (a videopoet.tracking.Tracker); when cfg.track."""

    # --- workers ---
    @abstractmethod
    def setup(self) -> Any: ...

    def items(self, unit: U) -> list[Any]:
        return [unit]

    @abstractmethod
    def prepare(self, item: Any) -> Any: ...

    def prepare_failed(self, item: Any, err: BaseException) -> Any:
        raise err

    @abstractmethod
    def commit_unit(self, unit: U, prepared: list[Any], state: Any) -> R: ...

    @abstractmethod
    def result_from_part(self, index: int) -> R: ...

    def is_committed(self, index: int) -> bool:
        return commit.is_committed(self.out, index)

    def process(self, unit: U, state: Any) -> R:
        """Prepare and commit one unit in this process; a committed unit is skipped (Beam may retry)."""
        index = unit.index  # type: ignore[attr-defined]
        if self.is_committed(index):
            return self.result_from_part(index)
        return self.commit_unit(unit, [self.prepare(item) for item in self.items(unit)], state)

    # Beam elements: a unit as plain values (default: the unit itself)
    def to_element(self, unit: U) -> Any:
        return unit

    def from_element(self, element: Any) -> U:
        return element
