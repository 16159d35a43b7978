"""One path convention: every stage takes the previous stage's output directory (videopoet.paths)."""

from __future__ import annotations

import importlib
import json
import re
import shlex

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from videopoet import commands
from videopoet.cli import COMMAND_SPECS, build_parser
from videopoet.config import UsageError
from videopoet.paths import output_dir, output_file, shards_base
from videopoet.pipeline.clip_shards import Clip, ClipShardPathError, list_shards, write_clip_shard
from videopoet.pipeline.token_shards import TokenShardPathError, list_token_shards, synthetic_rows, write_token_shard


def _meta(path, **extra):
    path.mkdir(parents=True, exist_ok=True)
    (path / "meta.json").write_text(json.dumps({"kind": "test", **extra}))


def demo_layout(root):
    """The demo's output layout with tiny real files (no job runs)."""
    out = root / "demo_out"
    (out / "media").mkdir(parents=True)
    (out / "media" / "manifest.jsonl").write_text('{"path": "a.mp4"}\n')
    clips = out / "clips"
    rgb = np.zeros((1, 8, 8, 3), np.uint8)
    write_clip_shard(clips / "shards" / "shard-000000-00.tar", [Clip("k0", rgb, {"caption": "c"})])
    (clips / "manifest").mkdir()
    pq.write_table(pa.table({"kind": ["input"]}), clips / "manifest" / "part-000000.parquet")
    pq.write_table(pa.table({"kind": ["input"]}), clips / "manifest.parquet")
    (clips / "plan.json").write_text("{}")
    (clips / "summary.json").write_text("{}")
    tokens = out / "tokens"
    write_token_shard(tokens / "shards" / "shard-000000-00.parquet", synthetic_rows(2))
    (tokens / "manifest").mkdir()
    pq.write_table(pa.table({"key": ["k0"]}), tokens / "manifest" / "part-000000.parquet")
    pq.write_table(pa.table({"key": ["k0"]}), tokens / "manifest.parquet")
    (tokens / "plan.json").write_text("{}")
    for name in ("video_tokenizer", "audio_tokenizer"):
        _meta(out / name / "tokenizer")
        _meta(out / name / "checkpoints" / "step_00000040", step=40)
    run = out / "lm" / "demo-lm"
    _meta(run / "export")
    step = run / "checkpoints" / "step_00000100"
    _meta(step, step=100)
    (step / "trainer_state.json").write_text("{}")
    return out


def test_clip_shards_from_a_job_output_a_shards_folder_a_file_a_glob_and_a_list(tmp_path):
    out = demo_layout(tmp_path)
    want = [out / "clips" / "shards" / "shard-000000-00.tar"]
    assert list_shards(out / "clips") == want
    assert list_shards(out / "clips" / "shards") == want
    assert list_shards(want[0]) == want
    assert list_shards(str(out / "clips" / "shards" / "*.tar")) == want
    assert list_shards([out / "clips", str(want[0])]) == want
    assert shards_base(out / "clips") == out / "clips" / "shards" == shards_base(out / "clips" / "shards")


def test_token_shards_from_a_job_output_never_list_manifest_parts(tmp_path):
    out = demo_layout(tmp_path)
    want = [out / "tokens" / "shards" / "shard-000000-00.parquet"]
    assert list_token_shards(out / "tokens") == want
    assert list_token_shards([out / "tokens" / "shards"]) == want
    assert list_token_shards(str(out / "tokens" / "shards" / "*.parquet")) == want


@pytest.mark.parametrize("given, message", [
    ("clips", "holds clip shards (`videopoet ingest` output); expected token shards"),
    ("missing", "no such file or directory; expected token shards"),
    ("lm/demo-lm", "a training run or checkpoint directory; expected token shards"),
    ("media/manifest.jsonl", "a file, not a .parquet shard"),
    ("tokens/shards/*.tar", "matches no .parquet files"),
])
def test_a_wrong_token_input_is_one_line_naming_the_path(tmp_path, given, message):
    out = demo_layout(tmp_path)
    with pytest.raises(TokenShardPathError) as err:
        list_token_shards(str(out / given))
    text = str(err.value)
    assert message in text and str(out / given) in text and "\n" not in text
    assert isinstance(err.value, UsageError)


def test_a_wrong_clip_input_is_one_line_naming_the_path(tmp_path):
    out = demo_layout(tmp_path)
    with pytest.raises(ClipShardPathError, match="holds token shards .* expected clip shards"):
        list_shards(out / "tokens")
    with pytest.raises(ClipShardPathError, match="no .tar shards in it"):
        list_shards(out / "media")


def test_output_checks(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        output_dir(tmp_path / "f", "--output")
    with pytest.raises(UsageError, match="cannot create"):
        output_dir(tmp_path / "f" / "sub", "--output")
    with pytest.raises(UsageError, match="is a directory"):
        output_file(tmp_path, "--out")
    assert output_dir(tmp_path / "new").is_dir()


# --- every --help example's paths against the demo's layout ------------------------------------------

INPUT_FLAGS = {  # flag -> check of the path it names
    "--input": None, "--data": list_shards, "--video-tokenizer": "meta.json", "--audio-tokenizer": "meta.json",
    "--checkpoint": "meta.json", "--export": "trainer_state.json",
}
OUTPUT_FLAGS = ("--output", "--out")


def help_examples():
    """(command, argv) of every `videopoet ...` example line in the commands' descriptions that uses demo_out."""
    found = []
    for module in COMMAND_SPECS:
        spec = importlib.import_module(module)
        text = spec.DESCRIPTION.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("videopoet ") and "demo_out" in line and "..." not in line:
                argv = shlex.split(line)[1:]
                found.append((argv[0], argv))
    return found


def test_help_examples_exist_for_every_stage():
    names = {name for name, _ in help_examples()}
    # sample's examples are being rewritten elsewhere (no demo_out paths yet)
    assert {"ingest", "train-tokenizer", "tokenize", "train", "status"} <= names


@pytest.mark.parametrize("name, argv", help_examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_help_example_paths_fit_the_demo_layout(tmp_path, monkeypatch, name, argv):
    demo_layout(tmp_path)
    monkeypatch.chdir(tmp_path)
    for flag, value in zip(argv, argv[1:]):
        if not value.startswith("demo_out"):
            continue
        check = INPUT_FLAGS.get(flag, "")
        if flag == "--input" and name == "tokenize":
            assert list_shards(value)
        elif flag == "--input":
            assert (tmp_path / value).is_file(), value
        elif callable(check):
            assert check(value)
        elif check:
            assert (tmp_path / value / check).is_file(), f"{flag} {value}"
        elif flag in OUTPUT_FLAGS:
            assert not (tmp_path / value).is_file(), value
    for arg in argv:
        m = re.fullmatch(r"data\.shards=\[(.*)\]", arg)
        if m:
            assert list_token_shards(m.group(1).split(","))
    if name == "status":
        from videopoet.status import status

        status(argv[1])
    commands.parse(build_parser(), argv)  # every example parses
