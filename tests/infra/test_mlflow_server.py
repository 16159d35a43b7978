"""MLflow at team scale: jobs log to an `mlflow server` on loopback, artifacts going through the server.

The test starts `mlflow server --host 127.0.0.1 --port <free> --backend-store-uri sqlite:///<tmp>/mlflow.db
--artifacts-destination <tmp>/artifacts --serve-artifacts` as a process it owns, runs two short jobs with
MLFLOW_TRACKING_URI=http://127.0.0.1:<port> (a video tokenizer training, which logs side-by-side .mp4
reconstructions, then tokenize with that checkpoint, which logs codebook/length plots), and reads the
params, metrics and artifacts back through the server; the artifact files are in the server's
artifacts destination, and nothing was written to a local ./mlflow.db or ./mlartifacts. It stops the
server's whole process tree and checks that nothing it started survives. docs/cluster.md has the
commands and the PostgreSQL/MySQL and S3/GCS variants.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
VIDEO_SMALL = ["steps=3", "image_steps=1", "batch_size=2", "data.frames=5", "data.height=16", "data.width=16",
               "data.eval_clips=2", "data.shuffle_buffer=4", "loss.gan_start_step=2", "loss.r1_every=2",
               "log_every=1", "eval_every=3", "save_every=3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", HOST, "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--serve-artifacts"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    seen: dict[int, psutil.Process] = {}

    def tree():
        try:
            p = psutil.Process(proc.pid)
            for q in [p, *p.children(recursive=True)]:
                seen.setdefault(q.pid, q)
        except psutil.NoSuchProcess:
            pass

    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            tree()
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        tree()
        yield {"url": url, "root": root}
    finally:
        tree()
        for p in seen.values():
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(list(seen.values()), timeout=15)
        for p in alive:
            p.kill()
        psutil.wait_procs(alive, timeout=10)
        log.close()
        left = [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"mlflow server processes survived: {left}"


def _clips(root: Path) -> Path:
    """Two shards of 17-frame 16x16 moving squares (the tokenizer trains on their first 5 frames)."""
    from videopoet.pipeline.clip_shards import Clip, write_clip_shard

    rng = np.random.default_rng(0)
    for s in range(2):
        clips = []
        for i in range(4):
            rgb = np.empty((17, 16, 16, 3), np.uint8)
            rgb[:] = rng.integers(0, 80, 3)
            y, x = rng.integers(0, 10, 2)
            for f in range(17):
                xx = (x + f) % 11
                rgb[f, y:y + 5, xx:xx + 5] = rng.integers(120, 256, 3)
            clips.append(Clip(key=f"s{s}c{i}", rgb=rgb, meta={"caption": "a square", "source_uri": f"gen://{s}/{i}"}))
        write_clip_shard(root / f"shard-{s:05d}.tar", clips)
    return root


@pytest.mark.timeout(300)
def test_jobs_log_params_metrics_video_and_plots_through_the_server(server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from videopoet import cli
    from videopoet.tokenizers.soundstream import AudioTokenizer

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["url"])
    monkeypatch.setenv("VIDEOPOET_EXPERIMENT", "team")
    monkeypatch.chdir(tmp_path)
    clips = _clips(tmp_path / "clips")
    AudioTokenizer.from_recipe("tiny", ["channels=2", "latent_dim=16", "kmeans_iters=1"]).save(tmp_path / "audio")
    assert cli.main(["train-tokenizer", "video", "--data", str(clips), "--out", str(tmp_path / "vt"),
                     "--config", "tiny", *VIDEO_SMALL]) == 0
    assert cli.main(["tokenize", "--engine", "local", "--input", str(clips), "--output", str(tmp_path / "tokens"),
                     "--video-tokenizer", str(tmp_path / "vt" / "tokenizer"), "--audio-tokenizer",
                     str(tmp_path / "audio"), "--no-progress", "any_size=true"]) == 0

    client = MlflowClient(server["url"])
    exp = client.get_experiment_by_name("team")
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location  # proxied by the server
    runs = {r.data.tags["videopoet.job"]: r for r in client.search_runs([exp.experiment_id])}
    assert {"train-tokenizer-video", "tokenize"} <= set(runs), list(runs)
    vt, tok = runs["train-tokenizer-video"], runs["tokenize"]
    assert vt.data.params["steps"] == "3" and tok.data.params["any_size"] == "True"
    assert [m.step for m in client.get_metric_history(vt.info.run_id, "loss/recon")] == [1, 2, 3]
    assert np.isfinite(vt.data.metrics["eval/psnr"]) and tok.data.metrics["clips_ok"] == 8

    # artifacts: listed and downloaded through the server, byte-identical to what the jobs wrote
    videos = [a.path for a in client.list_artifacts(vt.info.run_id, "reconstructions")]
    plots = [a.path for a in client.list_artifacts(tok.info.run_id, "summary")]
    assert videos and all(p.endswith(".mp4") for p in videos), videos
    assert {Path(p).name for p in plots} >= {"codebook_usage.png", "task_lengths.png"}, plots
    for run, path, local in [(vt, videos[-1], tmp_path / "vt" / "eval_videos" / Path(videos[-1]).name),
                             (tok, plots[0], tmp_path / "tokens" / "summary" / Path(plots[0]).name)]:
        got = Path(client.download_artifacts(run.info.run_id, path, str(tmp_path / "dl")))
        assert got.read_bytes() == local.read_bytes() and len(got.read_bytes()) > 1000
    # ... and stored by the server in its artifacts destination, not by the client
    stored = {p.name for p in (server["root"] / "artifacts").rglob("*") if p.is_file()}
    assert Path(videos[-1]).name in stored and "codebook_usage.png" in stored, stored
    assert not any((tmp_path / n).exists() for n in ("mlflow.db", "mlartifacts", "mlruns"))
