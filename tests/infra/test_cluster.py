"""Jobs on a real multi-node Ray cluster, simulated on loopback: Ray Jobs submission, and multi-node data and training.

One module-scoped cluster of `ray start --block` processes this module owns (started with Popen in
their own sessions, stopped by their own process trees, never `ray stop` or a broad kill):
  head    `ray start --head` on 127.0.0.1, 1 logical CPU, dashboard (Jobs API) on a free loopback port
  node A  `ray start --address <head>`, 1 logical CPU
One CPU per node makes Ray Train put one worker on each node and splits a data job's actor pool and
its prepare tasks across the two nodes. Tests, in order:
  Ray Jobs    `videopoet ingest` and a short `videopoet train` submitted through JobSubmissionClient
              (entrypoints with `--ray-address auto`), SUCCEEDED, outputs checked, logs via `ray job logs`
  tokenize    on the two nodes == the local engine, byte for byte
  train       1 worker on each of 2 nodes (the Ray Jobs run) == 2 workers on one node: loss curve and
              export hash
  node loss   node A SIGKILLed mid-train (after the first checkpoint) with engine.max_failures=1, a
              replacement node B joins: the restarted worker group resumes from the last checkpoint and
              ends with the same export hash
Every process a node started is checked gone at the end (psutil). docs/cluster.md has the commands.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import pytest
from loopback_ray import BIN, HOST, LoopbackCluster, free_port, node_env

from videopoet.pipeline import token_shards as ts

pytestmark = pytest.mark.slow

STEPS = 6


class Cluster(LoopbackCluster):
    """The loopback cluster with the head's dashboard (the Jobs API and the state API) on a free port."""

    def __init__(self, root: Path):
        self.dash_port = free_port()
        self.dashboard = f"http://{HOST}:{self.dash_port}"
        super().__init__(root, head_args=("--dashboard-host", HOST, "--dashboard-port", str(self.dash_port)))

    def alive(self) -> int:
        from ray.util.state import list_nodes

        try:
            return sum(1 for n in list_nodes(address=self.dashboard, raise_on_missing_output=False)
                       if n.state == "ALIVE")
        except Exception:
            return -1  # the dashboard is not up yet


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("ray_cluster"))
    try:
        c.start_head()
        c.wait_nodes(1)
        c.add_node("node_a")
        c.wait_nodes(2)
        yield c
    finally:
        left = c.stop()
        assert not left, f"processes of the test's Ray nodes survived: {left}"


# --- inputs --------------------------------------------------------------------------------------
def _train_common(tmp: Path, shards: Path, mlflow_db: Path) -> list[str]:
    return [
        f"data.shards=[{shards}]", "data.tasks=[t2i,t2v,i2v]", "data.tokens_per_step=256", "data.batch_multiple=2",
        "model.d_model=32", "model.n_heads=2", "model.ffn_dim=64", "model.text_dim=16",
        f"schedule.max_steps={STEPS}", "schedule.warmup_steps=2", "optim.lr=3e-3", "checkpoint.every_steps=2",
        f"checkpoint.dir={tmp / 'runs'}", "log_every=1",
    ]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Small inputs: two generated videos (the Ray Jobs working dir), synthetic token shards, an MLflow db."""
    from videopoet.pipeline.samples_content import VideoSpec
    from videopoet.pipeline.samples_write import _write_video

    tmp = tmp_path_factory.mktemp("cluster_work")
    job_dir = tmp / "job_dir"  # uploaded by Ray Jobs as the job's working directory
    (job_dir / "media").mkdir(parents=True)
    for i in range(2):
        spec = VideoSpec(name=f"v{i}.mp4", width=96, height=64, fps=Fraction(24), frames=72, speed=1 + i,
                         caption=f"square {i}")
        _write_video(job_dir / "media" / spec.name, spec, i)
    shards = tmp / "tokens"
    rows = ts.synthetic_rows(24, 11, num_frames=(17,), text_dim=16, latent_hw=(2, 2), image_fraction=0.3)
    ts.write_token_shard(shards / "part-0.parquet", rows, row_group_size=8)
    db = tmp / "mlflow.db"
    return {"tmp": tmp, "job_dir": job_dir, "shards": shards, "db": db,
            "common": _train_common(tmp, shards, db), "env": {"MLFLOW_TRACKING_URI": f"sqlite:///{db}",
                                                            "VIDEOPOET_EXPERIMENT": "test-cluster"}}


# --- Ray Jobs ------------------------------------------------------------------------------------
def _submit(cluster: Cluster, entrypoint: str, work: dict, timeout: float = 240) -> tuple[str, str]:
    """Submit through the Jobs API, wait for a final state; returns (job id, `ray job logs` output)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(cluster.dashboard)
    job_id = client.submit_job(entrypoint=entrypoint,
                               runtime_env={"working_dir": str(work["job_dir"]), "env_vars": work["env"]})
    deadline = time.monotonic() + timeout
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                            JobStatus.STOPPED}:
        assert time.monotonic() < deadline, client.get_job_logs(job_id)[-4000:]
        time.sleep(1)
    logs = subprocess.run([str(BIN / "ray"), "job", "logs", job_id, "--address", cluster.dashboard],
                          capture_output=True, text=True, timeout=60, env=node_env()).stdout
    assert status == JobStatus.SUCCEEDED, (status, client.get_job_info(job_id).message, logs[-4000:])
    return job_id, logs


@pytest.mark.timeout(240)
def test_ray_job_ingest_runs_on_the_cluster(cluster, work):
    from videopoet.pipeline import manifest as mf
    from videopoet.pipeline.clip_shards import iter_clips

    out = work["tmp"] / "clips"
    entry = (f"videopoet ingest --config tiny --engine ray --ray-address auto --input media --output {out} "
             "--flow none --depth none --no-progress --no-track media.clips_per_video=1")
    _, logs = _submit(cluster, entry, work)
    assert "ingest: 2 inputs ok, 0 failed, 2 clips" in logs, logs[-3000:]
    rows = mf.read_manifest(out / mf.MERGED_FILE).to_pylist()
    inputs = {r["input_id"]: r["status"] for r in rows if r["kind"] == "input"}
    assert inputs == {"v0.mp4": "ok", "v1.mp4": "ok"}, rows
    clips = list(iter_clips(out))
    assert len(clips) == 2 and all(c.rgb.shape == (17, 128, 128, 3) for c in clips)


@pytest.mark.timeout(300)
def test_ray_job_train_one_worker_per_node(cluster, work):
    from ray.util.state import list_actors

    summary = work["tmp"] / "job_train.json"
    entry = ("videopoet train --config tiny --ray-address auto --num-workers 2 --no-progress "
             + " ".join(work["common"]) + f" checkpoint.name=job --summary-json {summary}")
    _, logs = _submit(cluster, entry, work, timeout=280)
    assert "train done: step 6" in logs, logs[-3000:]
    s = json.loads(summary.read_text())
    assert s["step"] == STEPS and s["export_hash"]
    workers = list_actors(address=cluster.dashboard, filters=[("class_name", "=", "RayTrainWorker")],
                          raise_on_missing_output=False, detail=True)
    assert len({a.node_id for a in workers}) == 2, workers  # one worker on each node
    work["job_train"] = s


# --- multi-node data job -------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_tokenize_on_two_nodes_equals_local_bytes(cluster, work, output_digests):
    import numpy as np
    import torch

    from videopoet.pipeline.clip_shards import Clip, write_clip_shard
    from videopoet.pipeline.tokenize import TOKENIZE_RECIPES, run_tokenize
    from videopoet.tokenizers.magvit2 import VideoTokenizer
    from videopoet.tokenizers.soundstream import AudioTokenizer

    tmp = work["tmp"]
    torch.manual_seed(0)
    VideoTokenizer.from_recipe("tiny", ["channels=4", "norm_groups=2"]).save(tmp / "video_tok")
    AudioTokenizer.from_recipe("tiny", ["channels=2", "latent_dim=16", "kmeans_iters=1"]).save(tmp / "audio_tok")
    rng = np.random.default_rng(0)
    for s in range(2):  # two units: the actor pool and the prepare tasks spread over both nodes
        write_clip_shard(tmp / "tok_clips" / f"shard-{s}.tar", [
            Clip(key=f"s{s}c{i}", rgb=rng.integers(0, 256, (17, 16, 16, 3), dtype=np.uint8),
                 meta={"caption": "", "source_uri": f"gen://{s}/{i}"}) for i in range(2)])
    args = [f"video_tokenizer={tmp / 'video_tok'}", f"audio_tokenizer={tmp / 'audio_tok'}", "any_size=true"]
    run_tokenize(TOKENIZE_RECIPES.get("tiny", [f"input={tmp / 'tok_clips'}", f"output={tmp / 'tok_local'}",
                                               "engine=local", "progress=false", "track=false", *args]))
    entry = (f"videopoet tokenize --config tiny --engine ray --ray-address auto --input {tmp / 'tok_clips'} "
             f"--output {tmp / 'tok_ray'} --no-progress --no-track " + " ".join(args))
    _submit(cluster, entry, work)
    local, ray_ = output_digests(tmp / "tok_local", ("stats",)), output_digests(tmp / "tok_ray", ("stats",))
    assert len(local) >= 6 and ray_ == local


# --- multi-node training -------------------------------------------------------------------------
def _losses(db: Path, run_id: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    return {m.step: m.value for m in MlflowClient(f"sqlite:///{db}").get_metric_history(run_id, "loss")}


def _train_cmd(work: dict, name: str, *extra: str) -> list[str]:
    return [str(BIN / "videopoet"), "train", "--config", "tiny", "--num-workers", "2", "--no-progress",
            *work["common"], f"checkpoint.name={name}", "--summary-json", str(work["tmp"] / f"{name}.json"), *extra]


def _train_env(work: dict) -> dict[str, str]:
    return {**node_env(), **work["env"]}


@pytest.mark.timeout(240)
def test_train_two_nodes_equals_two_workers_on_one_node(cluster, work):
    two_nodes = work.get("job_train")
    assert two_nodes, "needs test_ray_job_train_one_worker_per_node (the 2-node run)"
    # 2 workers on one node: a local Ray of 2 CPUs started by the command itself
    proc = subprocess.run(_train_cmd(work, "one_node"), env=_train_env(work), capture_output=True, text=True,
                          timeout=220, cwd=work["tmp"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one_node = json.loads((work["tmp"] / "one_node.json").read_text())
    a, b = _losses(work["db"], two_nodes["mlflow_run_id"]), _losses(work["db"], one_node["mlflow_run_id"])
    assert sorted(a) == list(range(STEPS)) and a == b, (a, b)
    assert one_node["export_hash"] == two_nodes["export_hash"]
    work["one_node"] = one_node


@pytest.mark.timeout(300)
def test_worker_node_killed_mid_train_resumes_to_the_same_export(cluster, work):
    reference = work.get("job_train")
    assert reference, "needs test_ray_job_train_one_worker_per_node"
    name = "node_loss"
    cmd = _train_cmd(work, name, "--ray-address", cluster.address, "engine.max_failures=1")
    log = open(work["tmp"] / f"{name}.log", "w")
    proc = subprocess.Popen(cmd, env=_train_env(work), stdout=log, stderr=subprocess.STDOUT, cwd=work["tmp"],
                            start_new_session=True)
    try:
        first = work["tmp"] / "runs" / name / "checkpoints" / "step_00000002"
        deadline = time.monotonic() + 200
        while not first.is_dir():
            assert proc.poll() is None and time.monotonic() < deadline, (work["tmp"] / f"{name}.log").read_text()
            time.sleep(0.05)
        cluster.nodes["node_a"].kill()  # one of the two workers dies with its node
        cluster.add_node("node_b")  # the replacement node the restarted worker group is placed on
        assert proc.wait(timeout=240) == 0, (work["tmp"] / f"{name}.log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    out = (work["tmp"] / f"{name}.log").read_text()
    s = json.loads((work["tmp"] / f"{name}.json").read_text())
    assert "resumed from" in out and s["steps_run"] < STEPS, out[-3000:]  # the restart resumed mid-run
    assert s["step"] == STEPS and s["export_hash"] == reference["export_hash"]
    got = _losses(work["db"], s["mlflow_run_id"])
    ref = _losses(work["db"], reference["mlflow_run_id"])
    assert all(got[k] == ref[k] for k in got), (got, ref)
