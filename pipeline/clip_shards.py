"""Clip shards: the contract between `ingest` and the tokenizer/tokenize jobs (docs/formats.md).

A clip shard is a plain POSIX tar in webdataset layout: for each clip, members named
`<key>.<field>` with fields
    rgb.npy    uint8 [T, H, W, 3]   8 fps frames (T = 17, 41, or 1 for an image)
    audio.npy  int16 [S]            mono 16 kHz, only when the clip has audio
    cond.npy   uint8 [T, H, W, 3]   flow x, flow y, depth (only when flow or depth was computed)
    json       utf-8 JSON           caption, lineage, format, versions (see docs/formats.md)
Any webdataset reader can stream them. We write the tar ourselves (not webdataset.TarWriter) so
that member metadata is fixed (mtime 0, uid 0, mode 0644): the same clips give the same bytes on
any engine and any machine. Shards are committed atomically: written to `<name>.tmp` and renamed.

Reading never unpickles (np.load(allow_pickle=False)) and validates member names: `iter_clip_shard`
stops at the first bad member; `read_clip_shard` (the tokenize job's reader) fails only the clip a
bad member belongs to.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from videopoet.config import UsageError
from videopoet.paths import resolve_shards

CLIP_FORMAT_VERSION = 1
ARRAY_FIELDS = ("rgb", "audio", "cond")
_MEMBER = re.compile(r"^(?P<key>[A-Za-z0-9_\-]+)\.(?P<field>rgb\.npy|audio\.npy|cond\.npy|json)$")
_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


class ShardFormatError(ValueError):
    """A clip shard that does not follow docs/formats.md; the message names the file and member."""


class ClipShardPathError(ShardFormatError, UsageError):
    """A clip-shard input that names no clip shards (missing, wrong kind of directory); one line for the user."""


@dataclass
class Clip:
    key: str
    rgb: np.ndarray  # uint8 [T, H, W, 3]
    meta: dict[str, Any]
    audio: np.ndarray | None = None  # int16 [S]
    cond: np.ndarray | None = None  # uint8 [T, H, W, 3]
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not _MEMBER.match(f"{self.key}.json"):
            raise ShardFormatError(f"clip key {self.key!r}: only letters, digits, '_' and '-' allowed")
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 4 or self.rgb.shape[-1] != 3:
            raise ShardFormatError(
                f"clip {self.key}: rgb must be uint8 [T,H,W,3], got {self.rgb.dtype} {self.rgb.shape}")
        if self.audio is not None and (self.audio.dtype != np.int16 or self.audio.ndim != 1):
            raise ShardFormatError(
                f"clip {self.key}: audio must be int16 [S], got {self.audio.dtype} {self.audio.shape}")
        if self.cond is not None and (self.cond.dtype != np.uint8 or self.cond.shape != self.rgb.shape):
            raise ShardFormatError(f"clip {self.key}: cond must be uint8 shaped like rgb {self.rgb.shape}, "
                                   f"got {self.cond.dtype} {self.cond.shape}")


class NpyMember:
    """A .npy member's bytes without copying the array: the .npy header and the array's own buffer,
    written one after the other (what np.save writes, byte for byte; np.save into a BytesIO then
    tarfile's 16 KiB copy loop copied every clip's pixels three times). len() is the size in bytes;
    bytes() joins them (a copy) for readers that want one bytes object."""

    __slots__ = ("header", "data")

    def __init__(self, array: np.ndarray):
        array = np.ascontiguousarray(array)
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(array))
        self.header = head.getvalue()
        self.data = memoryview(array).cast("B") if array.size else b""

    def __len__(self) -> int:
        return len(self.header) + len(self.data)

    def __bytes__(self) -> bytes:
        return self.header + bytes(self.data)

    def chunks(self) -> tuple:
        return self.header, self.data


def _npy_bytes(array: np.ndarray) -> NpyMember:
    return NpyMember(array)


def clip_members(clip: Clip) -> list[tuple[str, bytes | NpyMember]]:
    """The (member name, bytes) pairs of one clip, in the fixed order rgb, audio, cond, json (the
    arrays as NpyMember: header + the array's buffer, no copy; len() and bytes() work on it)."""
    clip.validate()
    members = [(f"{clip.key}.rgb.npy", _npy_bytes(clip.rgb))]
    if clip.audio is not None:
        members.append((f"{clip.key}.audio.npy", _npy_bytes(clip.audio)))
    if clip.cond is not None:
        members.append((f"{clip.key}.cond.npy", _npy_bytes(clip.cond)))
    meta = dict(clip.meta, key=clip.key, clip_format_version=CLIP_FORMAT_VERSION)
    members.append((f"{clip.key}.json", json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()))
    return members


def write_tar_atomic(path: str | Path, members: Iterable[tuple[str, bytes | NpyMember]]) -> int:
    """Write a deterministic tar of (name, bytes) at `path` via `<path>.tmp` + rename; returns bytes.

    The bytes are those of tarfile (USTAR, mtime 0, uid/gid 0, mode 0644, empty owner names, 512
    padding, two zero blocks, 10 KiB records), written here directly: each member's header with
    TarInfo.tobuf, then its data straight from its buffers (no per-member BytesIO and copy loop)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    offset = 0
    with open(tmp, "wb") as raw:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            head = info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")
            raw.write(head)
            for chunk in (data.chunks() if isinstance(data, NpyMember) else (data,)):
                raw.write(chunk)
            pad = -info.size % tarfile.BLOCKSIZE
            if pad:
                raw.write(tarfile.NUL * pad)
            offset += len(head) + info.size + pad
        offset += 2 * tarfile.BLOCKSIZE
        raw.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE) + tarfile.NUL * (-offset % tarfile.RECORDSIZE))
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    return path.stat().st_size


def write_clip_shard(path: str | Path, clips: Iterable[Clip]) -> int:
    """Write clips to one shard atomically; returns the shard's size in bytes."""
    return write_tar_atomic(path, (m for clip in clips for m in clip_members(clip)))


def _load_npy(data: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:
        raise ShardFormatError(f"{where}: not a plain .npy array ({err})") from None


def _clip_from(key: str, got: dict[str, Any]) -> Clip:
    return Clip(key=key, rgb=got["rgb.npy"], audio=got.get("audio.npy"), cond=got.get("cond.npy"), meta=got["json"])


def _member_value(field_name: str, data: bytes, where: str) -> Any:
    return json.loads(data) if field_name == "json" else _load_npy(data, where)


def iter_clip_shard(path: str | Path) -> Iterator[Clip]:
    """Yield the clips of one shard in stored order; raises ShardFormatError on a bad member."""
    path = str(path)
    current: dict[str, Any] = {}
    current_key: str | None = None

    def finish() -> Clip:
        if "json" not in current or "rgb.npy" not in current:
            raise ShardFormatError(f"{path}: clip {current_key} lacks its rgb.npy or json member")
        return _clip_from(current_key, current)

    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            match = _MEMBER.match(info.name)
            if not info.isfile() or match is None:
                raise ShardFormatError(f"{path}: unexpected member {info.name!r} (see docs/formats.md)")
            key, fld = match["key"], match["field"]
            if key != current_key:
                if current_key is not None:
                    yield finish()
                current, current_key = {}, key
            data = tar.extractfile(info).read()
            current[fld] = _member_value(fld, data, f"{path}:{info.name}")
        if current_key is not None:
            yield finish()


@dataclass
class ClipItem:
    """One clip of a shard read tolerantly: the clip, or why it cannot be used."""

    key: str
    clip: Clip | None = None
    stage: str | None = None
    error_class: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.stage is None

    def fail(self, stage: str, error_class: str, message: str) -> "ClipItem":
        if self.stage is None:  # the first reason is the one reported
            self.stage, self.error_class, self.message = stage, error_class, message
        self.clip = None
        return self


def read_clip_shard(path: str | Path, name: str) -> list[ClipItem]:
    """The clips of one shard, tolerant of damage: a bad member costs its own clip, a damaged tar
    the clip being read when it broke (and a row keyed '' when nothing can be read at all).

    Same member rules as iter_clip_shard (which stops at the first bad member): names validated,
    arrays loaded with allow_pickle=False. `name` is how messages name the shard.
    """
    members: dict[str, dict[str, Any]] = {}
    items: dict[str, ClipItem] = {}

    def item(key: str) -> ClipItem:
        if key not in items:
            items[key] = ClipItem(key)
            members[key] = {}
        return items[key]

    current: str | None = None
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                match = _MEMBER.match(info.name)
                if not info.isfile() or match is None:
                    key = info.name.split(".", 1)[0]
                    message = f"{name}: member {info.name!r} is not a clip-shard member (see docs/formats.md)"
                    item(key if _KEY.match(key) else "").fail("read", "BadMember", message)
                    continue
                key, fld = match["key"], match["field"]
                current = key
                it = item(key)
                if fld in members[key]:
                    it.fail("read", "DuplicateMember", f"{name}: clip {key} has two {fld} members")
                    continue
                data = tar.extractfile(info).read()
                try:
                    members[key][fld] = _member_value(fld, data, f"{name}:{info.name}")
                except (ShardFormatError, ValueError) as err:
                    it.fail("read", "BadMember", f"{name}:{info.name}: unreadable ({str(err).split(': ', 1)[-1]})")
            current = None
    except (tarfile.TarError, OSError, EOFError) as err:
        if current is not None:
            item(current).fail("read", "DamagedShard", f"{name}: clip {current}: damaged tar ({err})")
        elif not items:
            item("").fail("read", "DamagedShard", f"{name}: damaged tar, no clip readable ({err})")
    out = []
    for key, it in items.items():
        got = members.get(key, {})
        if it.ok:
            if "rgb.npy" not in got or "json" not in got:
                missing = "rgb.npy" if "rgb.npy" not in got else "json"
                it.fail("read", "MissingMember", f"{name}: clip {key} lacks its {missing} member")
            elif not isinstance(got["json"], dict):
                it.fail("read", "BadMember", f"{name}: clip {key}: json member is not an object")
            else:
                it.clip = _clip_from(key, got)
        out.append(it)
    return out


def list_shards(root: str | Path | list[str | Path]) -> list[Path]:
    """Committed clip shards, sorted (.tmp files excluded): `root` is an ingest output directory, a shards
    folder (recursive), one .tar, a glob or a list of these (videopoet.paths.resolve_shards); anything else,
    or no shard at all, raises ClipShardPathError naming the path and what was expected."""
    return resolve_shards(root, ".tar", error=ClipShardPathError)


def iter_clips(root: str | Path) -> Iterator[Clip]:
    """Every clip under `root` (anything list_shards takes), in shard order."""
    for shard in list_shards(root):
        yield from iter_clip_shard(shard)
