"""Test support: a multi-node Ray cluster on loopback, each node a `ray start --block` process tree the test owns.

Used by tests/infra/test_cluster.py (Ray Jobs, multi-node data and training) and
tests/infra/test_ray_liveness.py (a data job losing a node). Nodes are started with Popen in their own
sessions and stopped by their own process trees (SIGTERM, then SIGKILL of every descendant ever seen),
never `ray stop` or a broad kill, so a test run never touches another Ray on the machine.

Loopback only: with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray resolves "localhost"/127.0.0.1 to 127.0.0.1
(not to the address of the machine's default route), in every process of the nodes, the job drivers and
the `videopoet` drivers the tests start. The same switch refuses `ray start --address` (worker nodes), so
a worker node's `ray start` runs through WORKER_START, which allows it and keeps 127.0.0.1
(docs/cluster.md).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
WORKER_START = ("import sys, ray._private.ray_constants as k, ray._private.services as s; k.ENABLE_RAY_CLUSTER = True; "
                "s.get_node_ip_address = lambda address=None: '127.0.0.1'; from ray.scripts.scripts import main; "
                "sys.argv[0] = 'ray'; main()")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def node_env(**extra: str) -> dict[str, str]:
    """The environment of the nodes and of every driver a test starts against them."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="disabled", DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1", **LOOPBACK, **extra)
    env.pop("RAY_ADDRESS", None)
    return env


class ProcessTree:
    """A process started in its own session, and every descendant ever seen of it."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.seen: dict[int, psutil.Process] = {}

    def tree(self) -> list[psutil.Process]:
        """The live processes (the root and all its descendants); remembered for stop() and survivors()."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            self.seen.setdefault(p.pid, p)
        return procs

    def signal_all(self, sig: int) -> None:
        for p in self.tree():
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass

    def kill(self) -> None:
        """Lose it at once: SIGKILL every process of the tree (a machine going away)."""
        for _ in range(3):
            self.signal_all(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 8) -> None:
        """SIGTERM the tree (what `ray stop` sends), then SIGKILL whatever is left of it."""
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.survivors():
            self.tree()
            time.sleep(0.2)
        self.kill()
        psutil.wait_procs(list(self.seen.values()), timeout=10)

    def survivors(self) -> list[psutil.Process]:
        alive = []
        for p in self.seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        return alive


class LoopbackCluster:
    """A head and worker nodes of `num_cpus` logical CPUs each on 127.0.0.1; logs in `root/<node>.log`.

    `head_args` are extra `ray start --head` arguments (the dashboard's), `env` extra node environment."""

    def __init__(self, root: Path, *, head_args: tuple[str, ...] = ("--include-dashboard", "false"),
                 env: dict[str, str] | None = None, num_cpus: int = 1):
        self.root = root
        self.temp_dir = Path(tempfile.mkdtemp(prefix="vp-ray-", dir="/tmp"))  # short: socket paths <= 107
        self.gcs_port = free_port()
        self.address = f"{HOST}:{self.gcs_port}"
        self.head_args, self.env, self.num_cpus = list(head_args), env or {}, num_cpus
        self.nodes: dict[str, ProcessTree] = {}

    def _start(self, name: str, args: list[str], head: bool) -> None:
        ports = ["--node-ip-address", HOST, "--node-manager-port", str(free_port()),
                 "--object-manager-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                 "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
                 "--metrics-export-port", str(free_port()), "--disable-usage-stats", "--num-cpus", str(self.num_cpus)]
        start = [str(BIN / "ray")] if head else [sys.executable, "-c", WORKER_START]
        with open(self.root / f"{name}.log", "w") as log:
            proc = subprocess.Popen([*start, "start", "--block", *args, *ports], stdout=log, stderr=subprocess.STDOUT,
                                    env=node_env(**self.env), start_new_session=True)
        self.nodes[name] = ProcessTree(proc)

    def start_head(self) -> None:
        self._start("head", ["--head", "--port", str(self.gcs_port), "--ray-client-server-port", str(free_port()),
                             "--temp-dir", str(self.temp_dir), *self.head_args], True)

    def add_node(self, name: str) -> None:
        self._start(name, ["--address", self.address], False)

    def alive(self) -> int:
        """Nodes the GCS holds alive (-1 while it cannot be asked), from a driver process of its own."""
        out = subprocess.run([sys.executable, "-c", "import ray; ray.init(address=%r, log_to_driver=False); "
                              "print('alive-nodes', sum(n['Alive'] for n in ray.nodes()))" % self.address],
                             capture_output=True, text=True, timeout=60, env=node_env())
        found = re.findall(r"^alive-nodes (\d+)$", out.stdout, re.M)  # Ray may print lines of its own
        return int(found[-1]) if out.returncode == 0 and found else -1

    def wait_nodes(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.alive()) != n:
            for node in self.nodes.values():
                node.tree()
            assert time.monotonic() < deadline, (n, got, {k: self.logs(k) for k in self.nodes})
            time.sleep(1)

    def logs(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text()[-3000:]

    def stop(self) -> list[psutil.Process]:
        """Stop workers first, the head last; returns the processes that survived (should be none)."""
        for name in [k for k in self.nodes if k != "head"] + ["head"]:
            self.nodes[name].stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return [p for node in self.nodes.values() for p in node.survivors()]
