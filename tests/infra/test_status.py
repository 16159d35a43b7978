"""`videopoet status OUT` on tiny outputs, and library logging routed to the log file (no Ray/Beam starts)."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq

from videopoet import logs
from videopoet.cli import main


def _ingest_output(out):
    (out / "manifest").mkdir(parents=True)
    (out / "shards").mkdir()
    (out / "shards" / "shard-000000-00.tar").write_bytes(b"")
    (out / "plan.json").write_text(json.dumps({"num_batches": 3}))
    (out / "summary.json").write_text(json.dumps({"inputs": 4, "clips": 5, "clips_per_s": 2.5, "wall_seconds": 2.0}))
    meta = {b"videopoet.manifest_version": b"1"}
    rows = [{"kind": "input", "status": "failed", "error_class": "ZeroByteFile", "message": "a.mp4: empty"},
            {"kind": "input", "status": "failed", "error_class": "ZeroByteFile", "message": "b.mp4: empty"},
            {"kind": "input", "status": "failed", "error_class": "NoVideoStream", "message": "c.m4a: no video"},
            {"kind": "input", "status": "ok", "error_class": None, "message": None},
            {"kind": "clip", "status": None, "error_class": None, "message": None}]
    for i, part in enumerate((rows[:3], rows[3:])):
        pq.write_table(pa.Table.from_pylist(part).replace_schema_metadata(meta),
                       out / "manifest" / f"part-{i:06d}.parquet")


def test_status_of_a_data_job_output(tmp_path, capsys):
    _ingest_output(tmp_path / "clips")
    assert main(["status", str(tmp_path / "clips")]) == 0
    text = capsys.readouterr().out
    assert "ingest output" in text and "committed units: 2 of 3" in text
    assert "ZeroByteFile: 2, e.g. a.mp4: empty" in text and "NoVideoStream: 1" in text
    assert "clips_per_s 2.50" in text and "runs the 1 uncommitted unit(s)" in text
    assert main(["status", str(tmp_path / "clips"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["units_committed"] == 2 and status["failures_by_class"]["ZeroByteFile"]["count"] == 2


def test_status_of_a_training_run(tmp_path, capsys):
    run = tmp_path / "lm" / "demo-lm"
    for step in (50, 100):
        d = run / "checkpoints" / f"step_{step:08d}"
        d.mkdir(parents=True)
        (d / "meta.json").write_text(json.dumps({"kind": "videopoet-lm-train", "step": step}))
    (run / "checkpoints" / ".step_00000150.partial").mkdir()
    assert main(["status", str(tmp_path / "lm")]) == 0  # a checkpoint.dir with one run
    text = capsys.readouterr().out
    assert "training (videopoet-lm-train)" in text and "latest step 100" in text
    assert "resumes from step 100" in text and ".step_00000150.partial" in text


def test_library_info_goes_to_the_log_file_not_the_terminal(tmp_path, capsys):
    log = tmp_path / "out" / "logs" / "job.log"
    try:
        logs.setup("WARNING", log)
        ray = logging.getLogger("ray.train.fake")
        ray.info("an info line from ray")
        logging.getLogger("DeepSpeed").propagate = False  # what DeepSpeed does at import; adopted anyway
        logging.getLogger("DeepSpeed").info("an info line from deepspeed")
        ray.warning("Failed to query Ray Train Controller actor state. State API may be temporarily unavailable.")
        ray.warning("a real warning")
        err = capsys.readouterr().err
        text = log.read_text()
        assert "an info line from ray" in text and "an info line from deepspeed" in text
        assert "Failed to query Ray Train Controller" in text  # known harmless: kept in the file ...
        assert "Failed to query" not in err and "info line" not in err  # ... not on the terminal
        assert "a real warning" in err
        assert all(h.why and h.name for h in logs.KNOWN_HARMLESS)
    finally:
        logs.setup("WARNING", None)
