"""A user mistake anywhere in the CLI is one line on stderr and exit 2, never a traceback (in-process, fast)."""

from __future__ import annotations

import json

import pytest

from videopoet.cli import main
from videopoet.pipeline.clip_shards import Clip, write_clip_shard


@pytest.fixture
def layout(tmp_path):
    import numpy as np

    write_clip_shard(tmp_path / "clips" / "shards" / "shard-000000-00.tar",
                     [Clip("k0", np.zeros((1, 8, 8, 3), np.uint8), {"caption": "c"})])
    (tmp_path / "clips" / "plan.json").write_text("{}")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.jsonl").write_text(json.dumps({"path": str(tmp_path / "missing.mp4")}) + "\n")
    return tmp_path


def mistakes(t):
    return {
        "ingest output is a file": ["ingest", "--input", str(t / "media"), "--output", str(t / "afile"),
                                    "--engine", "local", "--no-track"],
        "ingest output not writable": ["ingest", "--input", str(t / "media"), "--output", str(t / "afile" / "x"),
                                       "--engine", "local", "--no-track"],
        "tokenize input is a token-less dir": ["tokenize", "--input", str(t / "media"), "--output", str(t / "tok"),
                                               "--video-tokenizer", str(t / "v"), "--audio-tokenizer", str(t / "a")],
        "tokenize missing checkpoint": ["tokenize", "--input", str(t / "clips"), "--output", str(t / "tok"),
                                        "--video-tokenizer", str(t / "nope"), "--audio-tokenizer", str(t / "nope")],
        "train on clip shards": ["train", f"data.shards=[{t / 'clips'}]", "--num-workers", "0"],
        "train checkpoint.dir is a file": ["train", "--num-workers", "0", f"checkpoint.dir={t / 'afile'}",
                                           f"data.shards=[{t / 'clips'}]"],
        "train --export missing": ["train", "--export", str(t / "nope"), "--out", str(t / "exp")],
        "train-tokenizer wrong data": ["train-tokenizer", "video", "--data", str(t / "media"), "--out", str(t / "vt")],
        "train-tokenizer out is a file": ["train-tokenizer", "audio", "--data", str(t / "clips"),
                                          "--out", str(t / "afile")],
        "sample unknown task": ["sample", "--task", "nope", "--checkpoint", "x", "--video-tokenizer", "y"],
        "sample missing checkpoint": ["sample", "--task", "t2v", "--caption", "c", "--checkpoint", str(t / "nope"),
                                      "--video-tokenizer", str(t / "nope"), "--out", str(t / "s.mp4"),
                                      "--device", "cpu"],
        "status of a non-output": ["status", str(t / "media")],
        "unknown flag after overrides": ["train", "a=b", "--bogus"],
        "bad log level": ["status", str(t / "clips"), "--log-level", "LOUD"],
    }


@pytest.mark.parametrize("name", list(mistakes(__import__("pathlib").Path("/x"))))
def test_a_user_mistake_is_one_line_and_exit_2(layout, capsys, name):
    argv = mistakes(layout)[name]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (name, err)
    assert "Traceback" not in err
    assert len(lines) == 1, (name, err)
    assert lines[0].startswith("videopoet"), err


def test_flags_and_overrides_in_any_order(layout, capsys):
    from videopoet import commands
    from videopoet.cli import build_parser

    a = commands.parse(build_parser(), ["train", "x.y=1", "--no-progress", "z=2", "--log-level", "info"])
    b = commands.parse(build_parser(), ["train", "--log-level", "INFO", "--no-progress", "x.y=1", "z=2"])
    assert a.overrides == b.overrides == ["x.y=1", "z=2"] and a.no_progress and a.log_level == b.log_level == "INFO"
