"""Liveness of a Ray data job: notice a job that cannot finish on what is left of the cluster.

Ray waits for resources forever: after a node is lost, a pool actor and the prepare tasks that need
the same CPUs can wait on each other with nothing in the job's output. The rule (`StallWatchdog`):

    stalled   no unit has finished for `ray.stall_warn_s` (since the start or the last finished unit)
    stuck     the job's smallest working set, its pool actors + one prepare task, does not fit on the
              cluster's alive nodes (each node's total resources, `ray.nodes()`; first-fit decreasing,
              as a task or an actor needs all its resources on one node)

Stalled and stuck: one line on stderr (what is pending, what the cluster has, what to change). Still
stalled and stuck at `ray.stall_fail_s`: `RayStalledError` (a `UsageError`: `videopoet` prints the one
line and exits 2). Committed units stay committed; a rerun into the same output resumes. A slow job
that fits is never stopped. `ray.stall_warn_s=0` turns the watchdog off, `ray.stall_fail_s=0` only warns.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from videopoet.config import UsageError
from videopoet.jobs.config import RayConfig

Resources = dict[str, float]
KINDS = ("CPU", "GPU")


class RayStalledError(UsageError):
    """A Ray job stopped by its watchdog: it could not make progress on the cluster it had (one line)."""


def fmt(res: Resources) -> str:
    return "{" + ", ".join(f"{k}: {res.get(k, 0.0):g}" for k in KINDS if res.get(k) or k == "CPU") + "}"


def alive_nodes() -> list[Resources]:
    """The total resources of each alive node of the connected cluster."""
    import ray

    return [{k: float(n["Resources"].get(k, 0.0)) for k in KINDS} for n in ray.nodes() if n.get("Alive")]


def fits(nodes: list[Resources], demands: list[Resources]) -> bool:
    """Whether every demand can be placed whole on one of the nodes (first-fit decreasing)."""
    free = [dict(n) for n in nodes]
    for d in sorted(demands, key=lambda d: tuple(-d.get(k, 0.0) for k in reversed(KINDS))):
        for n in free:
            if all(n.get(k, 0.0) + 1e-9 >= d.get(k, 0.0) for k in KINDS):
                for k in KINDS:
                    n[k] = n.get(k, 0.0) - d.get(k, 0.0)
                break
        else:
            return False
    return True


class StallWatchdog:
    """Watches a Ray job's loop: `progressed()` on every finished unit, `check(pending)` while waiting."""

    def __init__(self, cfg: RayConfig, label: str, pool_size: int, *,
                 nodes: Callable[[], list[Resources]] = alive_nodes, clock: Callable[[], float] = time.monotonic,
                 out: TextIO | None = None):
        self.cfg, self.label, self.pool_size = cfg, label, pool_size
        self.actor: Resources = {"CPU": cfg.actor_cpus, "GPU": cfg.gpus_per_actor if cfg.use_gpu else 0.0}
        self.task: Resources = {"CPU": cfg.decode_cpus, "GPU": 0.0}
        self.nodes, self.clock, self.out = nodes, clock, out
        self.last = clock()
        self.warned = False

    @property
    def enabled(self) -> bool:
        return self.cfg.stall_warn_s > 0

    @property
    def poll_s(self) -> float | None:
        """How long the job loop may block before calling `check` (None: block, the watchdog is off)."""
        return max(0.1, min(5.0, self.cfg.stall_warn_s / 4)) if self.enabled else None

    def progressed(self) -> None:
        self.last = self.clock()
        self.warned = False

    def check(self, pending: int) -> None:
        """Warn once, then raise `RayStalledError`, while stalled on resources the cluster cannot give."""
        stalled = self.clock() - self.last
        if not self.enabled or pending <= 0 or stalled < self.cfg.stall_warn_s:
            return
        nodes = self.nodes()
        need = [self.actor] * self.pool_size + [self.task]
        if fits(nodes, need):
            return  # slow, not stuck: everything it waits for can be placed
        total = {k: sum(n.get(k, 0.0) for n in nodes) for k in KINDS}
        want = {k: sum(d.get(k, 0.0) for d in need) for k in KINDS}
        what = (f"{pending} unit(s) pending: their prepare tasks need {fmt(self.task)} each beside "
                f"{self.pool_size} pool actor(s) of {fmt(self.actor)}, {fmt(want)} in all, but the cluster has "
                f"{fmt(total)} on {len(nodes)} alive node(s)")
        change = ("add a node with these resources, or lower ray.pool_size, ray.actor_cpus or ray.decode_cpus; "
                  "committed units are kept and a rerun into the same output resumes")
        fail = self.cfg.stall_fail_s
        if not self.warned:
            self.warned = True
            stop = f"stopping at ray.stall_fail_s={fail:g}s" if fail > 0 else "ray.stall_fail_s=0: waiting"
            print(f"{self.label}: WARNING no unit finished for {stalled:.0f}s: {what}; {change} ({stop})",
                  file=self.out or sys.stderr, flush=True)
        if fail > 0 and stalled >= fail:
            raise RayStalledError(f"{self.label}: stopped, no unit finished for {stalled:.0f}s "
                                  f"(ray.stall_fail_s={fail:g}): {what}; {change}")
