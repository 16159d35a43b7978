"""Where the ingest job's inputs come from: directories, globs, fsspec URLs and manifests.

`discover_inputs(src)` turns one `--input` argument into a sorted list of `InputSpec`s (id, uri,
caption, is_image). Listing is cheap and happens on the driver; the content hash (sha256 of the
bytes) is computed by the worker that decodes the input (`open_local`), so that the driver never
reads millions of files.

Accepted `src`:
- a local directory or an fsspec directory URL: every file below it (recursive) becomes an input,
  whatever its extension (FFmpeg reads many containers no fixed list names: .asf, .dv, .vob, ...;
  a file FFmpeg cannot open becomes a failed row, NotMedia), except the files that are known not to
  be media (`NON_MEDIA_EXTENSIONS`: caption sidecars, documents, manifests, checksums, hidden
  files), which `list_inputs` returns as `skipped` with the reason; ingest writes them to
  summary.json, so that no file below a directory is unaccounted for. A sidecar `<stem>.txt` next
  to a file is its caption (the webdataset convention);
- a glob (`/data/**/*.mp4`, `s3://bucket/videos/*.mp4`);
- one media file or URL;
- a manifest `*.csv`, `*.jsonl`/`*.ndjson` or `*.parquet` with a `path` column and optional
  `caption` and `id` columns; relative paths are relative to the manifest's folder.
Ids are the manifest's `id`, else the path relative to the listed root (or the whole URL/path of a
manifest entry). Inputs are sorted by id, so the same source lists the same way everywhere.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from videopoet.pipeline.media.config import IMAGE_EXTENSIONS

# Known video containers (a glob or single file with these is listed without a second thought;
# under a directory every file that is not NON_MEDIA is listed anyway). .gif/.tif are images.
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".m1v", ".m2v", ".vob", ".ts",
    ".mts", ".m2ts", ".flv", ".f4v", ".ogv", ".ogm", ".wmv", ".asf", ".dv", ".3gp", ".3g2", ".y4m",
    ".mxf", ".divx", ".rm", ".rmvb", ".nut", ".ivf", ".h264", ".264", ".hevc", ".265",
)
# Audio-only containers are listed too: each gets a failed manifest row (NoVideoStream) instead of
# silently vanishing from the accounting.
AUDIO_EXTENSIONS = (".m4a", ".mp3", ".aac", ".wav", ".flac", ".ogg", ".opus")
MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".ndjson", ".parquet")
# Files under a directory input that are known not to be media: skipped (with this reason) instead
# of probed. Anything else is probed; FFmpeg decides.
NON_MEDIA_EXTENSIONS = {
    **{e: "caption or subtitle sidecar" for e in (".txt", ".srt", ".vtt", ".ass", ".ssa", ".sub", ".idx", ".lrc")},
    **{e: "manifest or metadata" for e in MANIFEST_EXTENSIONS + (".json", ".yaml", ".yml", ".xml", ".nfo", ".tsv")},
    **{e: "document" for e in (".md", ".rst", ".html", ".htm", ".pdf", ".doc", ".docx", ".log")},
    **{e: "checksum or signature" for e in (".md5", ".sha1", ".sha256", ".sha512", ".sig", ".asc")},
    **{e: "archive" for e in (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst")},
    **{e: "code" for e in (".py", ".sh", ".js", ".css")},
}
_HASH_CHUNK = 1 << 20


class SourceError(ValueError):
    """An `--input` that cannot be listed; the message names it and says why."""


@dataclass(frozen=True)
class InputSpec:
    id: str
    uri: str  # local absolute path, or an fsspec URL with its protocol
    caption: str = ""
    is_image: bool = False


@dataclass(frozen=True)
class Listing:
    """What one `--input` names: the inputs, and the files below a directory left out (path, reason)."""

    specs: list[InputSpec]
    skipped: list[tuple[str, str]]


def skip_reason(path: str) -> str | None:
    """Why a file under a directory input is not an input (None: it is one)."""
    name = path.rsplit("/", 1)[-1]
    if name.startswith("."):
        return "hidden file"
    return NON_MEDIA_EXTENSIONS.get(_suffix(path))


def is_image_uri(uri: str) -> bool:
    return _suffix(uri) in IMAGE_EXTENSIONS


def _suffix(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1].split("?", 1)[0]
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _has_protocol(text: str) -> bool:
    return "://" in text


def _fs_and_path(uri: str):
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _uri_of(fs, path: str) -> str:
    """The uri we record: plain absolute path for local files, protocol URL otherwise."""
    if _is_local(fs):
        return str(Path(path).resolve())
    return fs.unstrip_protocol(path)


def _read_caption(fs, path: str) -> str:
    stem = path.rsplit(".", 1)[0]
    side = stem + ".txt"
    try:
        if fs.isfile(side):
            with fs.open(side, "rb") as f:
                return f.read().decode("utf-8", errors="replace").strip()
    except OSError:
        pass
    return ""


def _media_kind(path: str, extensions: tuple[str, ...]) -> bool:
    return _suffix(path) in extensions


def discover_inputs(src: str, *, extensions: tuple[str, ...] | None = None) -> list[InputSpec]:
    """List the inputs named by `src` (see module docstring), sorted by id; ids are unique."""
    return list_inputs(src, extensions=extensions).specs


def list_inputs(src: str, *, extensions: tuple[str, ...] | None = None) -> Listing:
    """The inputs named by `src` (sorted by id, ids unique) and the skipped files below a directory.
    `extensions`: only files with these suffixes (the rest are skipped, reason given); None = every
    file that is not known non-media."""
    src = str(src)
    if not src:
        raise SourceError("--input is empty: give a directory, a glob, a URL or a manifest")
    skipped: list[tuple[str, str]] = []
    if _suffix(src) in MANIFEST_EXTENSIONS and not any(c in src for c in "*?["):
        specs = _from_manifest(src)
    else:
        specs = _from_listing(src, extensions, skipped)
    specs.sort(key=lambda s: (s.id, s.uri))
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.id in seen:
            raise SourceError(f"{src}: input id {spec.id!r} is used twice ({seen[spec.id]} and {spec.uri})")
        seen[spec.id] = spec.uri
    return Listing(specs, sorted(skipped))


def _from_listing(src: str, extensions: tuple[str, ...] | None, skipped: list[tuple[str, str]]) -> list[InputSpec]:
    fs, path = _fs_and_path(src)
    if any(c in path for c in "*?["):
        matches = sorted(p for p in fs.glob(path) if fs.isfile(p))
        root = _glob_root(path)
        if not matches:
            raise SourceError(f"{src}: the glob matches no file")
    elif fs.isdir(path):
        found = sorted(fs.find(path))
        root = path
        matches = []
        for p in found:
            reason = skip_reason(p)
            if reason is None and extensions is not None and not _media_kind(p, extensions):
                reason = "extension not in the listing's extensions"
            if reason is None:
                matches.append(p)
            else:
                skipped.append((_uri_of(fs, p), reason))
        if not matches:
            raise SourceError(f"{src}: no media files below it ({len(found)} file(s), all known non-media)")
    elif fs.isfile(path):
        matches, root = [path], path.rsplit("/", 1)[0] if "/" in path else ""
    else:
        raise SourceError(f"{src}: no such file, directory or glob match")
    specs = []
    for p in matches:
        rel = p[len(root):].lstrip("/") if root and p.startswith(root) else p
        specs.append(InputSpec(id=rel or p, uri=_uri_of(fs, p), caption=_read_caption(fs, p), is_image=is_image_uri(p)))
    return specs


def _glob_root(path: str) -> str:
    parts = path.split("/")
    fixed = []
    for part in parts:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return "/".join(fixed)


def _manifest_records(src: str) -> list[dict]:
    import fsspec

    suffix = _suffix(src)
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            with fsspec.open(src, "rb") as f:
                return pq.read_table(f).to_pylist()
        with fsspec.open(src, "rt", encoding="utf-8") as f:
            if suffix == ".csv":
                return list(csv.DictReader(f))
            records = []
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise SourceError(f"{src}:{n}: not a JSON object ({err.msg})") from None
            return records
    except FileNotFoundError:
        raise SourceError(f"{src}: manifest not found") from None


def _from_manifest(src: str) -> list[InputSpec]:
    records = _manifest_records(src)
    if not records:
        raise SourceError(f"{src}: the manifest has no rows")
    if "path" not in records[0]:
        raise SourceError(f"{src}: a manifest needs a 'path' column (found: {', '.join(records[0])})")
    fs, mpath = _fs_and_path(src)
    base = mpath.rsplit("/", 1)[0] if "/" in mpath else "."
    specs = []
    for n, rec in enumerate(records, 1):
        raw = rec.get("path")
        if not raw:
            raise SourceError(f"{src}: row {n} has an empty 'path'")
        raw = str(raw)
        if _has_protocol(raw):
            uri = raw[len("file://"):] if raw.startswith("file://") else raw
            if raw.startswith("file://"):
                uri = str(Path(uri).resolve())
        elif _is_local(fs):
            uri = str((Path(base) / raw).resolve()) if not os.path.isabs(raw) else str(Path(raw).resolve())
        else:
            uri = fs.unstrip_protocol(raw if raw.startswith("/") else f"{base}/{raw}")
        caption = rec.get("caption")
        ident = rec.get("id")
        specs.append(InputSpec(
            id=str(ident) if ident not in (None, "") else raw,
            uri=uri,
            caption="" if caption is None else str(caption),
            is_image=is_image_uri(raw),
        ))
    return specs


def sha256_stream(f, sink=None) -> tuple[str, int]:
    """sha256 hex and size of a binary stream read in 1 MiB chunks (optionally copied to `sink`)."""
    h = hashlib.sha256()
    size = 0
    while True:
        chunk = f.read(_HASH_CHUNK)
        if not chunk:
            break
        h.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return h.hexdigest(), size


@contextlib.contextmanager
def open_local(uri: str) -> Iterator[tuple[str, str, int]]:
    """Yield (local path, sha256, size) for `uri`.

    Local files are hashed in place; remote ones are copied once to a temporary file while being
    hashed (one download serves both the hash and the decoder), and the copy is removed after.
    """
    if not _has_protocol(uri) or uri.startswith("file://"):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        with open(path, "rb") as f:
            digest, size = sha256_stream(f)
        yield path, digest, size
        return
    import fsspec

    tmpdir = tempfile.mkdtemp(prefix="videopoet-ingest-")
    try:
        local = os.path.join(tmpdir, "input" + _suffix(uri))
        with fsspec.open(uri, "rb") as src, open(local, "wb") as dst:
            digest, size = sha256_stream(src, dst)
        yield local, digest, size
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
