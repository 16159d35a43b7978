"""Ray liveness: a data job that loses a node mid-run either finishes (capacity left) or says so and stops.

One module-scoped loopback cluster of `ray start --block` processes this module owns
(tests/support/loopback_ray.py: own sessions, each node's process tree stopped by itself, never `ray stop`
or a broad kill; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps everything on 127.0.0.1): a head and worker
nodes of 1 logical CPU each; the head's GCS declares a lost node dead within a few seconds. The job is
`videopoet ingest --engine ray --ray-address <head>` over 6 generated videos, one unit each, so its
actor pool is 1 actor (1 CPU) and every prepare task needs 1 CPU.
  capacity left   head + node_a + node_b; node_a SIGKILLed after the first committed unit: the job
                  finishes, and its bytes equal the local engine's
  no capacity     head + node_b; node_b SIGKILLed after the first committed unit: the head alone cannot
                  hold the actor and a prepare task; the watchdog prints its one line and stops the job
                  (exit 2) within ray.stall_fail_s; node_c joins, the rerun resumes to the same bytes
Every process of the nodes and the drivers is checked gone at the end (psutil).
"""

from __future__ import annotations

import subprocess
import time
from fractions import Fraction
from pathlib import Path

import pytest
from loopback_ray import BIN, LoopbackCluster, ProcessTree, node_env

pytestmark = pytest.mark.slow

N_INPUTS = 6
WARN_S, FAIL_S = 3, 12
# A SIGKILLed node is declared dead after about 3 failed health checks 0.5 s apart (default: 5 x 3 s).
FAST_DEATH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
              "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LoopbackCluster(tmp_path_factory.mktemp("ray_liveness"), env=FAST_DEATH)
    try:
        c.start_head()
        c.wait_nodes(1)
        c.add_node("node_a")
        c.wait_nodes(2)
        c.add_node("node_b")
        c.wait_nodes(3)
        yield c
    finally:
        left = c.stop()
        assert not left, f"processes of the test's Ray nodes survived: {left}"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from videopoet.pipeline.samples_content import VideoSpec
    from videopoet.pipeline.samples_write import _write_video

    root = tmp_path_factory.mktemp("liveness_media")
    for i in range(N_INPUTS):
        spec = VideoSpec(name=f"v{i}.mp4", width=96, height=64, fps=Fraction(24), frames=72, speed=1 + i % 3,
                         caption=f"clip {i}")
        _write_video(root / spec.name, spec, i)
    return root


ARGS = ["--config", "tiny", "--flow", "none", "--depth", "none", "--no-progress", "--no-track",
        "media.clips_per_video=1", "batch_size=1"]


@pytest.fixture(scope="module")
def reference(media, tmp_path_factory, output_digests):
    out = tmp_path_factory.mktemp("liveness_local") / "out"
    proc = subprocess.run([str(BIN / "videopoet"), "ingest", "--engine", "local", "--input", str(media),
                           "--output", str(out), *ARGS], capture_output=True, text=True, timeout=300, env=node_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = output_digests(out)
    assert len(digests) >= 2 * N_INPUTS
    return digests


def _ingest(cluster: LoopbackCluster, media: Path, out: Path, log: Path) -> ProcessTree:
    cmd = [str(BIN / "videopoet"), "ingest", "--engine", "ray", "--ray-address", cluster.address,
           "--input", str(media), "--output", str(out), *ARGS,
           f"ray.stall_warn_s={WARN_S}", f"ray.stall_fail_s={FAIL_S}"]
    with open(log, "w") as f:
        return ProcessTree(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=node_env(),
                                            start_new_session=True))


def _kill_after_first_commit(job: ProcessTree, out: Path, cluster: LoopbackCluster, node: str, log: Path) -> None:
    deadline = time.monotonic() + 150
    while not (parts := list((out / "manifest").glob("part-*.parquet"))):
        job.tree()
        assert job.proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)
    cluster.nodes[node].kill()
    assert len(parts) < N_INPUTS and job.proc.poll() is None, "the node was lost after the job's end"


def _finish(job: ProcessTree, timeout: float) -> int:
    try:
        return job.proc.wait(timeout=timeout)
    finally:
        job.stop(timeout=2)
        assert not job.survivors(), job.survivors()


@pytest.mark.timeout(300)
def test_node_lost_with_capacity_left_finishes_with_the_same_bytes(cluster, media, reference, output_digests,
                                                                   tmp_path):
    out, log = tmp_path / "out", tmp_path / "ingest.log"
    job = _ingest(cluster, media, out, log)
    try:
        _kill_after_first_commit(job, out, cluster, "node_a", log)  # head + node_b: 1 actor + 1 prepare task fit
        assert _finish(job, 240) == 0, log.read_text()[-3000:]
    finally:
        job.stop(timeout=2)
    text = log.read_text()
    assert f"ingest: {N_INPUTS} inputs ok, 0 failed" in text and "WARNING" not in text, text[-3000:]
    assert output_digests(out) == reference


@pytest.mark.timeout(300)
def test_node_lost_without_capacity_stops_and_a_rerun_resumes(cluster, media, reference, output_digests, tmp_path):
    cluster.wait_nodes(2)  # node_a's loss is known: head + node_b
    out, log = tmp_path / "out", tmp_path / "ingest.log"
    job = _ingest(cluster, media, out, log)
    t_kill = None
    try:
        _kill_after_first_commit(job, out, cluster, "node_b", log)  # the head alone: 1 CPU for actor + task
        t_kill = time.monotonic()
        code = _finish(job, 120)
    finally:
        job.stop(timeout=2)
    stopped_after = time.monotonic() - t_kill
    text = log.read_text()
    warn = [line for line in text.splitlines() if "WARNING no unit finished" in line]
    assert code == 2, text[-3000:]
    assert len(warn) == 1 and "{CPU: 2} in all, but the cluster has {CPU: 1} on 1 alive node(s)" in warn[0], text
    assert "ray.pool_size" in warn[0] and "stopped, no unit finished" in text.splitlines()[-1], text[-3000:]
    assert stopped_after < FAIL_S + 60, stopped_after
    committed = sorted((out / "manifest").glob("part-*.parquet"))
    assert 1 <= len(committed) < N_INPUTS, committed

    cluster.add_node("node_c")  # a healthy cluster again: the rerun resumes
    cluster.wait_nodes(2)
    rerun_log = tmp_path / "rerun.log"
    job = _ingest(cluster, media, out, rerun_log)
    assert _finish(job, 240) == 0, rerun_log.read_text()[-3000:]
    assert "WARNING" not in rerun_log.read_text()
    assert output_digests(out) == reference


def test_watchdog_rule_warns_once_then_stops_only_when_the_pool_cannot_fit():
    import io

    from videopoet.jobs.config import RayConfig
    from videopoet.jobs.ray_watchdog import RayStalledError, StallWatchdog, fits

    assert fits([{"CPU": 1}, {"CPU": 1}], [{"CPU": 1}, {"CPU": 1}])
    assert not fits([{"CPU": 2}], [{"CPU": 1, "GPU": 1}])
    assert not fits([{"CPU": 1.5}, {"CPU": 1.5}], [{"CPU": 2}])  # enough in all, but not on one node
    now, nodes, buf = [0.0], [[{"CPU": 1.0}]], io.StringIO()
    dog = StallWatchdog(RayConfig(stall_warn_s=3, stall_fail_s=8), "ingest[ray]", 1, nodes=lambda: nodes[0],
                        clock=lambda: now[0], out=buf)
    now[0] = 2.9
    dog.check(3)
    assert buf.getvalue() == ""  # not stalled yet
    now[0] = 4
    dog.check(3)
    now[0] = 5
    dog.check(3)
    assert buf.getvalue().count("\n") == 1 and "{CPU: 2} in all, but the cluster has {CPU: 1}" in buf.getvalue()
    with pytest.raises(RayStalledError, match="ray.stall_fail_s=8"):
        now[0] = 8
        dog.check(3)
    nodes[0] = [{"CPU": 2.0}]  # fits: only slow, never stopped
    now[0] = 1000
    dog.check(3)
    dog.progressed()
    assert dog.last == 1000 and not dog.warned
