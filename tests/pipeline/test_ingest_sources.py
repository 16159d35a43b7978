"""Ingest sources (directories, globs, URLs, manifests) and the manifest/commit files; no decoding."""

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from videopoet.pipeline import manifest as mf
from videopoet.pipeline.sources import SourceError, discover_inputs, open_local


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    files = {"b.mp4": b"bbb", "a.mp4": b"aaaa", "sub/c.webm": b"c", "sub/pic.jpg": b"jpg", "x.m4a": b"m"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "sub" / "pic.txt").write_text("a red ball\n")
    (root / "notes.md").write_text("not media")
    return root


def test_directory_is_recursive_sorted_with_sidecar_captions(tree):
    specs = discover_inputs(str(tree))
    assert [s.id for s in specs] == ["a.mp4", "b.mp4", "sub/c.webm", "sub/pic.jpg", "x.m4a"]
    pic = specs[3]
    assert pic.is_image and pic.caption == "a red ball"
    assert not specs[0].is_image and specs[0].caption == ""
    assert all(s.uri.startswith(str(tree.resolve())) for s in specs)
    # file:// URL of the same directory lists the same inputs
    assert discover_inputs(tree.resolve().as_uri()) == specs


def test_glob_and_single_file(tree):
    specs = discover_inputs(str(tree / "**" / "*.webm"))
    assert [s.id for s in specs] == ["sub/c.webm"]
    one = discover_inputs(str(tree / "a.mp4"))
    assert [s.id for s in one] == ["a.mp4"]
    with pytest.raises(SourceError, match="no such file"):
        discover_inputs(str(tree / "missing"))
    with pytest.raises(SourceError, match="matches no file"):
        discover_inputs(str(tree / "*.avi"))


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_manifests_resolve_relative_paths(tree, kind):
    rows = [{"path": "sub/pic.jpg", "caption": "cap, with comma", "id": "img1"},
            {"path": "a.mp4", "caption": "", "id": ""}]
    path = tree / f"list.{kind}"
    if kind == "csv":
        path.write_text('path,caption,id\nsub/pic.jpg,"cap, with comma",img1\na.mp4,,\n')
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    specs = discover_inputs(str(path))
    assert [(s.id, s.caption, s.is_image) for s in specs] == [("a.mp4", "", False), ("img1", "cap, with comma", True)]
    assert specs[1].uri == str((tree / "sub/pic.jpg").resolve())


def test_manifest_errors_name_the_problem(tree):
    bad = tree / "bad.jsonl"
    bad.write_text('{"file": "a.mp4"}\n')
    with pytest.raises(SourceError, match="'path' column"):
        discover_inputs(str(bad))
    dup = tree / "dup.jsonl"
    dup.write_text('{"path": "a.mp4", "id": "x"}\n{"path": "b.mp4", "id": "x"}\n')
    with pytest.raises(SourceError, match="'x' is used twice"):
        discover_inputs(str(dup))


def test_open_local_hashes_local_and_fsspec_urls(tree):
    import fsspec

    with open_local(str(tree / "a.mp4")) as (path, digest, size):
        assert digest == hashlib.sha256(b"aaaa").hexdigest() and size == 4 and path == str(tree / "a.mp4")
    with fsspec.open("memory://bucket/v.mp4", "wb") as f:
        f.write(b"remote bytes")
    specs = discover_inputs("memory://bucket/")
    assert [s.uri for s in specs] == ["memory:///bucket/v.mp4"]  # fsspec canonical form
    with open_local(specs[0].uri) as (path, digest, size):
        assert open(path, "rb").read() == b"remote bytes"
        assert digest == hashlib.sha256(b"remote bytes").hexdigest() and size == 12
    import os

    assert not os.path.exists(path)  # the temporary copy is gone


def _rows(batch):
    return [
        {"kind": "input", "batch": batch, "input_id": "a", "uri": "/a", "status": "ok", "clips": 1, "seconds": 2.5},
        {"kind": "clip", "batch": batch, "input_id": "a", "uri": "/a", "key": f"k{batch}",
         "shard": mf.shard_name(batch, 0)},
    ]


def test_parts_commit_merge_and_clean(tmp_path):
    assert not mf.is_committed(tmp_path, 0)
    mf.write_part(tmp_path, 0, _rows(0))
    mf.write_part(tmp_path, 1, _rows(1))
    assert mf.committed_batches(tmp_path) == [0, 1]
    # deterministic bytes: the same rows always give the same file
    assert mf.part_path(tmp_path, 0).read_bytes() == mf.table_bytes(_rows(0))
    merged = mf.read_manifest(mf.merge_parts(tmp_path, [1, 0]))
    assert merged["key"].to_pylist() == [None, "k0", None, "k1"]
    assert merged.schema.metadata[mf.VERSION_KEY] == b"1"
    # leftovers of an interrupted batch 2 are removed, committed batches untouched
    shards = tmp_path / mf.SHARDS_DIR
    shards.mkdir()
    for name in ("shard-000002-00.tar", "shard-000002-01.tar.tmp", "shard-000001-00.tar"):
        (shards / name).write_bytes(b"x")
    (tmp_path / mf.PARTS_DIR / "part-000002.parquet.tmp").write_bytes(b"x")
    removed = {p.name for p in mf.clean_batch(tmp_path, 2)}
    assert removed == {"shard-000002-00.tar", "shard-000002-01.tar.tmp", "part-000002.parquet.tmp"}
    assert (shards / "shard-000001-00.tar").exists() and mf.is_committed(tmp_path, 1)


def test_manifest_version_is_checked(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"kind": ["input"]}), path)
    with pytest.raises(mf.ManifestError, match="manifest version"):
        mf.read_manifest(path)


def test_every_file_below_a_directory_is_an_input_or_skipped_with_a_reason(tmp_path):
    from videopoet.pipeline.media.config import IMAGE_EXTENSIONS
    from videopoet.pipeline.sources import list_inputs, skip_reason

    root = tmp_path / "mixed"
    (root / "d").mkdir(parents=True)
    names = ["a.asf", "b.dv", "c.vob", "d/e.unknownext", "noext", "f.gif", "g.tif", "h.TIFF", "cap.txt",
             "f.txt", "notes.md", "list.csv", "meta.json", ".DS_Store", "d/sums.sha256"]
    for n in names:
        (root / n).write_bytes(b"x")
    listing = list_inputs(str(root))
    ids = [s.id for s in listing.specs]
    assert ids == ["a.asf", "b.dv", "c.vob", "d/e.unknownext", "f.gif", "g.tif", "h.TIFF", "noext"]
    assert {s.id for s in listing.specs if s.is_image} == {"g.tif", "h.TIFF"}  # GIF decodes as video
    assert [s.caption for s in listing.specs if s.id == "f.gif"] == ["x"]  # f.txt is its caption
    skipped = {u.rsplit("/", 1)[-1]: r for u, r in listing.skipped}
    assert skipped == {"cap.txt": "caption or subtitle sidecar", "f.txt": "caption or subtitle sidecar",
                       "notes.md": "document", "list.csv": "manifest or metadata",
                       "meta.json": "manifest or metadata", ".DS_Store": "hidden file",
                       "sums.sha256": "checksum or signature"}
    assert len(listing.specs) + len(listing.skipped) == len(names)  # nothing unaccounted for
    assert skip_reason("x.mp4") is None and ".gif" not in IMAGE_EXTENSIONS and ".tif" in IMAGE_EXTENSIONS
    assert discover_inputs(str(root)) == listing.specs


def test_a_non_media_file_under_a_directory_is_a_notmedia_row(tmp_path):
    from videopoet.pipeline.media import MediaConfig, MediaError, probe_and_decode

    path = tmp_path / "data.unknownext"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(MediaError) as err:
        probe_and_decode(str(path), MediaConfig(audio=False, decode_timeout_s=0))
    assert err.value.error_class == "NotMedia" and err.value.stage == "open"


def test_ingest_summary_counts_the_skipped_files(tmp_path):
    from videopoet.pipeline.ingest import INGEST_RECIPES, run_ingest

    root = tmp_path / "in"
    root.mkdir()
    (root / "junk.bin").write_bytes(bytes(range(256)) * 64)
    (root / "notes.md").write_text("not media")
    (root / ".hidden").write_text("x")
    out = tmp_path / "out"
    summary = run_ingest(INGEST_RECIPES.get("tiny", [
        "engine=local", f"input={root}", f"output={out}", "media.flow=none", "media.depth=none",
        "progress=false", "track=false"]))
    assert summary["inputs"] == 1 and summary["failures_by_class"] == {"NotMedia": 1}
    assert summary["skipped"] == 2 and summary["skipped_by_reason"] == {"document": 1, "hidden file": 1}
    assert json.loads((out / "summary.json").read_text())["skipped_files"] == [
        {"uri": str((root / ".hidden").resolve()), "reason": "hidden file"},
        {"uri": str((root / "notes.md").resolve()), "reason": "document"}]
