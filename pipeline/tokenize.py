"""`videopoet tokenize`: clip shards -> token shards for every pretraining task, on Beam, Ray or locally.

    videopoet tokenize --engine beam --input /data/clips --output /data/tokens \
        --video-tokenizer ckpt/magvit2 --audio-tokenizer ckpt/soundstream --text-encoder /models/t5-xl
    videopoet tokenize --engine ray --use-gpu --ray-address auto --input ... --output ... ...

One work unit per input clip shard (sorted). For each clip the unit computes, with the models loaded
once per worker and batched per clip shape:
  video tokens (MAGVIT-v2), first-frame tokens (image-to-video condition), COMMIT condition tokens
  fp1/fp5/inpaint/outpaint (videopoet.tokenizers.commit), stylization tokens (the cond video
  through the same tokenizer, paper §4.1), audio tokens (SoundStream, 4 x 106 for 17 frames,
  4 x 256 for 41), text embeddings (frozen encoder, float16 [64, D] + mask), the tokenizers' and text
  encoder's content hashes, and len_<task> for every task (pipeline.tasks.sequence_lengths).
An image (a 1-frame clip) gets its 256 video tokens and text only.

Output (docs/formats.md, "Tokenize output"): `shards/shard-BBBBBB-00.parquet` (token shards,
videopoet.pipeline.token_shards), `stats/part-BBBBBB.parquet` (codebook counts), and LAST the
manifest part `manifest/part-BBBBBB.parquet` (one row per clip, ok or failed with a reason), whose
presence commits unit B (the ingest protocol, videopoet.pipeline.manifest). A rerun skips committed
units; `plan.json` pins the input shards, the content settings and the model hashes, and a rerun with
other tokenizer checkpoints is refused (recorded in refusals.jsonl, one clear error): token ids from
two tokenizers must never share a dataset. Every engine runs the same `read_unit` + `tokenize_unit`,
so outputs are byte-identical whatever the engine.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from videopoet.pipeline.jobs import add_engine_arguments, as_override, engine_overrides
from videopoet.config import ConfigError, RecipeRegistry, config_hash
from videopoet.pipeline import manifest as mf
from videopoet.pipeline.ingest import BeamConfig, RayConfig

# Bump when what a clip's row contains changes for the same clip and models.
TOKENIZE_VERSION = 1
MANIFEST_VERSION = 1
MANIFEST_VERSION_KEY = b"videopoet.tokenize_manifest_version"
STATS_DIR = "stats"
SUMMARY_DIR = "summary"
REFUSALS_FILE = "refusals.jsonl"
# The sizes ingest writes: (height, width) -> video_format.
PRODUCTION_SIZES = {(128, 128): "square", (224, 128): "portrait"}
CLIP_FPS = 8
AUDIO_SAMPLES_PER_FRAME = 16_000 // CLIP_FPS
HASH_KEYS = ("video_tokenizer_hash", "audio_tokenizer_hash", "text_encoder_id", "text_encoder_hash")
_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass
class TokenizeConfig:
    """Tokenize job settings. Recipes: `default` (`videopoet tokenize --config default ...`), `tiny`
    (small model batches: the demo and the tests)."""

    input: str = ""  # clip shard directory (recursive) or one .tar
    output: str = ""
    engine: Literal["beam", "ray", "local"] = "beam"
    video_tokenizer: str = ""  # checkpoint directory (VideoTokenizer.save)
    audio_tokenizer: str = ""  # checkpoint directory (AudioTokenizer.save)
    text_encoder: str = ""  # local Hugging Face model directory; "" = the embedded MiniLM
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when the worker has a GPU
    encode_batch: int = 8  # videos per video-tokenizer forward (condition videos count)
    audio_batch: int = 32  # clips per audio-tokenizer forward
    torch_threads: int = 0  # intra-op threads on every worker; 0 = the driver's torch default
    any_size: bool = False  # accept any clip size the tokenizer takes (not only 128x128 / 224x128)
    progress: bool = True
    track: bool = True  # MLflow run with the dataset summary and its plots
    plots: bool = True
    beam: BeamConfig = field(default_factory=BeamConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self) -> None:
        if self.encode_batch < 1 or self.audio_batch < 1:
            raise ValueError(f"encode_batch={self.encode_batch}, audio_batch={self.audio_batch}: must be >= 1")
        if self.torch_threads < 0:
            raise ValueError(f"torch_threads={self.torch_threads}: must be >= 0")


TOKENIZE_RECIPES: RecipeRegistry[TokenizeConfig] = RecipeRegistry(TokenizeConfig)


@TOKENIZE_RECIPES.register
def default() -> TokenizeConfig:
    """videopoet tokenize --config default --engine beam --input CLIPS --output TOKENS --video-tokenizer V --audio-tokenizer A"""
    return TokenizeConfig()


@TOKENIZE_RECIPES.register
def tiny() -> TokenizeConfig:
    """videopoet tokenize --config tiny --engine local --input CLIPS --output TOKENS --video-tokenizer V --audio-tokenizer A"""
    return TokenizeConfig(encode_batch=4, audio_batch=8)


class TokenizerMismatch(ConfigError):
    """The given checkpoints are not the ones an existing output was made with."""


# --- models ------------------------------------------------------------------------------------

def model_identity(cfg: TokenizeConfig) -> dict[str, str]:
    """The hashes of the checkpoints `cfg` names, read without loading any weights."""
    from videopoet.checkpoint import CheckpointError, read_meta
    from videopoet.tokenizers import magvit2, soundstream, text_encoder as te

    ident: dict[str, str] = {}
    for name, path, kind in (("video_tokenizer", cfg.video_tokenizer, magvit2.CHECKPOINT_KIND),
                             ("audio_tokenizer", cfg.audio_tokenizer, soundstream.CHECKPOINT_KIND)):
        if not path:
            raise ConfigError(f"{name}='': give --{name.replace('_', '-')} CHECKPOINT_DIR")
        try:
            meta = read_meta(path)
        except (CheckpointError, OSError, ValueError) as err:
            raise ConfigError(f"{name}={path}: not a readable checkpoint ({err})") from None
        if meta.get("kind") != kind:
            raise ConfigError(f"{name}={path}: a {meta.get('kind')!r} checkpoint, expected {kind!r}")
        ident[f"{name}_hash"] = str(meta["content_hash"])
    try:
        tdir = Path(cfg.text_encoder).expanduser() if cfg.text_encoder else te.embedded_model_dir()
        model_type = json.loads((tdir / "config.json").read_text())["model_type"]
        ident["text_encoder_id"] = f"{model_type}:{te.EMBEDDED_NAME if not cfg.text_encoder else tdir.name}"
        ident["text_encoder_hash"] = te.weights_hash(tdir)
    except (OSError, KeyError, ValueError) as err:
        raise ConfigError(f"text_encoder={cfg.text_encoder or '(embedded)'}: not a usable model directory ({err})") from None
    return ident


@dataclass
class Models:
    video: Any
    audio: Any
    text: Any
    device: str

    def identity(self) -> dict[str, str]:
        return {"video_tokenizer_hash": self.video.content_hash, "audio_tokenizer_hash": self.audio.content_hash,
                "text_encoder_id": self.text.identity, "text_encoder_hash": self.text.content_hash}


_MODELS: dict[tuple, Models] = {}


def load_models(cfg: TokenizeConfig, expected: dict[str, str] | None = None) -> Models:
    """The three models on this worker's device, loaded once per process (Beam may build several
    DoFn instances in one worker process; they share these). Refuses checkpoints whose hashes are
    not `expected` (the plan's), e.g. a checkpoint replaced on disk while the job ran."""
    import torch

    from videopoet.pipeline.jobs import set_torch_threads
    from videopoet.tokenizers.magvit2 import VideoTokenizer
    from videopoet.tokenizers.soundstream import AudioTokenizer
    from videopoet.tokenizers.text_encoder import TextEncoder

    set_torch_threads(cfg.torch_threads)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        # Same tokens on every run and worker: no autotuned (nondeterministic) kernels.
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    key = (cfg.video_tokenizer, cfg.audio_tokenizer, cfg.text_encoder, device)
    models = _MODELS.get(key)
    if models is not None and expected is not None and models.identity() != {k: expected.get(k) for k in HASH_KEYS}:
        models = None  # a checkpoint at the same path was replaced since it was cached: load it again
    if models is None:
        models = Models(
            video=VideoTokenizer.load(cfg.video_tokenizer, device=device).eval(),
            audio=AudioTokenizer.load(cfg.audio_tokenizer, device=device).eval(),
            text=TextEncoder(cfg.text_encoder or None, device=device),
            device=device,
        )
        _MODELS[key] = models
    if expected is not None:
        got = models.identity()
        diff = [k for k in HASH_KEYS if got[k] != expected.get(k)]
        if diff:
            raise TokenizerMismatch(f"loaded models differ from the plan in {', '.join(diff)} "
                                    f"(a checkpoint changed on disk during the job?)")
    return models


# --- reading a clip shard ----------------------------------------------------------------------

@dataclass
class ClipItem:
    """One clip of an input shard: the clip, or why it cannot be used."""

    key: str
    clip: Any = None  # clip_shards.Clip
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


@dataclass
class ReadUnit:
    index: int
    shard: str  # input shard, relative to the input root
    items: list[ClipItem]
    read_seconds: float = 0.0


def read_clip_shard(path: str | Path, name: str) -> list[ClipItem]:
    """The clips of one shard, tolerant of damage: a bad member costs its own clip, a damaged tar
    the clip being read when it broke (and a row keyed '' when nothing can be read at all).

    Same member rules as clip_shards.iter_clip_shard (which stops at the first bad member): names
    validated, arrays loaded with allow_pickle=False.
    """
    from videopoet.pipeline.clip_shards import _MEMBER, Clip, ShardFormatError, _load_npy

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
                    where = f"{name}: member {info.name!r}"
                    if _KEY.match(key):
                        item(key).fail("read", "BadMember", f"{where} is not a clip-shard member (see docs/formats.md)")
                    else:
                        item("").fail("read", "BadMember", f"{where} is not a clip-shard member (see docs/formats.md)")
                    continue
                key, fld = match["key"], match["field"]
                current = key
                it = item(key)
                if fld in members[key]:
                    it.fail("read", "DuplicateMember", f"{name}: clip {key} has two {fld} members")
                    continue
                data = tar.extractfile(info).read()
                try:
                    members[key][fld] = json.loads(data) if fld == "json" else _load_npy(data, f"{name}:{info.name}")
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
                it.fail("read", "MissingMember", f"{name}: clip {key} lacks its {'rgb.npy' if 'rgb.npy' not in got else 'json'} member")
            elif not isinstance(got["json"], dict):
                it.fail("read", "BadMember", f"{name}: clip {key}: json member is not an object")
            else:
                it.clip = Clip(key=key, rgb=got["rgb.npy"], audio=got.get("audio.npy"), cond=got.get("cond.npy"),
                               meta=got["json"])
        out.append(it)
    return out


def read_unit(index: int, path: str, name: str) -> ReadUnit:
    t0 = time.perf_counter()
    items = read_clip_shard(path, name)
    return ReadUnit(index=index, shard=name, items=items, read_seconds=time.perf_counter() - t0)


def check_clip(it: ClipItem, shard: str, cfg: TokenizeConfig, spatial: int, temporal: int) -> None:
    """Fail `it` (with the reason) when its arrays cannot be tokenized as they are."""
    from videopoet.pipeline.clip_shards import ShardFormatError

    clip = it.clip
    where = f"{shard}: clip {it.key}"
    try:
        clip.validate()
    except ShardFormatError as err:
        it.fail("check", "BadArray", f"{shard}: {err}")
        return
    t, h, w, _ = clip.rgb.shape
    if t not in (1, 17, 41) or (t - 1) % temporal:
        it.fail("check", "BadLength", f"{where}: {t} frames; expected 1 (image), 17 or 41")
        return
    fmt = clip.meta.get("format")
    if not cfg.any_size:
        if (h, w) not in PRODUCTION_SIZES:
            it.fail("check", "BadSize", f"{where}: {h}x{w} frames; expected 128x128 (square) or 224x128 "
                                        "(portrait, height x width); any_size=true accepts others")
            return
        if fmt is not None and fmt != PRODUCTION_SIZES[(h, w)]:
            it.fail("check", "FormatMismatch", f"{where}: format {fmt!r} but {h}x{w} frames")
            return
    elif h % spatial or w % spatial:
        it.fail("check", "BadSize", f"{where}: {h}x{w} frames; height and width must be multiples of {spatial}")
        return
    if t == 1 and h != w:
        it.fail("check", "BadSize", f"{where}: an image must be square, got {h}x{w}")
        return
    if clip.audio is not None and t > 1 and clip.audio.shape[0] != t * AUDIO_SAMPLES_PER_FRAME:
        it.fail("check", "AudioLength", f"{where}: {clip.audio.shape[0]} audio samples; {t} frames at 8 fps "
                                        f"need {t * AUDIO_SAMPLES_PER_FRAME} at 16 kHz")
        return
    if not isinstance(clip.meta.get("caption", ""), str):
        it.fail("check", "BadMeta", f"{where}: caption is not a string")


def video_format(clip: Any) -> str:
    fmt = clip.meta.get("format")
    if fmt in ("square", "portrait"):
        return fmt
    h, w = clip.rgb.shape[1:3]
    return "portrait" if h > w else "square"


# --- tokenizing a unit -------------------------------------------------------------------------

@dataclass
class UnitResult:
    index: int
    clips_ok: int = 0
    clips_failed: int = 0
    skipped: bool = False
    seconds: float = 0.0


def _encode_videos(models: Models, clips: list[Any], encode_batch: int) -> list[dict[str, np.ndarray]]:
    """Every video-tokenizer output of clips of one shape, in forwards of `encode_batch` videos.

    Per clip: video_tokens, and for videos first_frame_tokens, COMMIT condition tokens, and
    style_tokens when the clip has a cond video. All flattened in t, h, w order, int32.
    """
    import torch

    from videopoet.tokenizers import commit
    from videopoet.tokenizers.magvit2 import video_to_tensor

    vt = models.video
    dev = vt.device
    videos = torch.stack([video_to_tensor(c.rgb) for c in clips]).to(dev)  # [B, 3, T, H, W]
    frames = videos.shape[2]
    jobs: list[tuple[int, str, Any]] = [(i, "video_tokens", videos[i]) for i in range(len(clips))]
    if frames > 1:
        for task in commit.tasks_for(frames):
            cond = commit.condition_video(videos, task)
            jobs += [(i, f"{task}_tokens", cond[i]) for i in range(len(clips))]
        for i, c in enumerate(clips):
            if c.cond is not None:
                jobs.append((i, "style_tokens", video_to_tensor(c.cond).to(dev)))
    out: list[dict[str, np.ndarray]] = [{} for _ in clips]
    for start in range(0, len(jobs), encode_batch):
        part = jobs[start:start + encode_batch]
        tokens = vt.encode(torch.stack([x for _, _, x in part])).cpu().numpy()
        for (i, name, _), tok in zip(part, tokens):
            out[i][name] = tok.reshape(-1).astype(np.int32)
    if frames > 1:
        first = vt.encode_image(videos[:, :, 0]).cpu().numpy()  # [B, 1, h, w]
        for i in range(len(clips)):
            out[i]["first_frame_tokens"] = first[i].reshape(-1).astype(np.int32)
    return out


def _encode_audio(models: Models, clips: list[Any], audio_batch: int) -> list[np.ndarray]:
    """Level-major audio codes [4 * F] (int32) of clips with equally long audio."""
    import torch

    from videopoet.tokenizers.soundstream import int16_to_float

    out = []
    for start in range(0, len(clips), audio_batch):
        part = clips[start:start + audio_batch]
        wave = torch.stack([int16_to_float(c.audio) for c in part])  # [B, 1, S]
        codes = models.audio.encode(wave).cpu().numpy()  # [B, 4, F]
        out += [c.reshape(-1).astype(np.int32) for c in codes]
    return out


def _grouped(items: list[ClipItem], key) -> dict[Any, list[ClipItem]]:
    groups: dict[Any, list[ClipItem]] = {}
    for it in items:
        groups.setdefault(key(it), []).append(it)
    return groups


class StageError(RuntimeError):
    """A model stage failed in a way that says nothing about the clips (out of memory, every clip
    failing alike): the unit is not committed, so a retry or a rerun redoes it."""


def _is_resource_error(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"


def _run_stage(stage: str, groups: dict[Any, list[ClipItem]], fn, shard: str) -> dict[str, Any]:
    """fn(list of clips) -> list of results per group; a failing batch is retried clip by clip so
    one bad clip fails alone (as a row), never the unit. Clips reach the models only after
    `check_clip`, so a stage where every clip of several fails, or one out of memory, is a fault
    of the worker, not of the data: that raises StageError instead of committing failure rows."""
    results: dict[str, Any] = {}
    errors: list[BaseException] = []
    total = sum(len(m) for m in groups.values())
    for _, members in groups.items():
        try:
            for it, r in zip(members, fn([m.clip for m in members])):
                results[it.key] = r
        except Exception:
            for it in members:
                try:
                    results[it.key] = fn([it.clip])[0]
                except Exception as err:
                    if _is_resource_error(err):
                        raise StageError(f"{shard}: {stage} ran out of memory on clip {it.key} even alone "
                                         f"(lower encode_batch/audio_batch or use a larger device): {err}") from err
                    errors.append(err)
                    reason = str(err).splitlines()[0] if str(err) else repr(err)
                    it.fail(stage, type(err).__name__, f"{shard}: clip {it.key}: {stage} failed ({reason})")
    if total >= 2 and len(errors) == total:
        raise StageError(f"{shard}: {stage} failed on all {total} clips ({type(errors[0]).__name__}: {errors[0]}); "
                         "not committing the unit: a model or device fault, not bad input") from errors[0]
    return results


def tokenize_unit(unit: ReadUnit, models: Models, out: str | Path, cfg: TokenizeConfig) -> UnitResult:
    """Tokenize one input shard and commit it: token shard, stats, then the manifest part (last)."""
    from videopoet.pipeline import token_shards as ts
    from videopoet.pipeline.jobs import parquet_bytes

    t0 = time.perf_counter()
    out = Path(out)
    mf.clean_batch(out, unit.index)
    vcfg = models.video.cfg
    items = list(unit.items)
    for it in items:  # keys are unique within a unit: the reader groups members by key
        if it.ok:
            check_clip(it, unit.shard, cfg, vcfg.spatial_factor, vcfg.temporal_factor)

    ok = [it for it in items if it.ok]
    video = _run_stage("video_tokenizer", _grouped(ok, lambda it: it.clip.rgb.shape),
                       lambda clips: _encode_videos(models, clips, cfg.encode_batch), unit.shard)
    with_audio = [it for it in items if it.ok and it.clip.audio is not None and it.clip.rgb.shape[0] > 1]
    audio = _run_stage("audio_tokenizer", _grouped(with_audio, lambda it: it.clip.audio.shape),
                       lambda clips: _encode_audio(models, clips, cfg.audio_batch), unit.shard)
    captioned = [it for it in items if it.ok and it.clip.meta.get("caption", "").strip()]

    def encode_text(clips):
        emb, mask, trunc = models.text.encode([c.meta["caption"] for c in clips])
        return list(zip(emb.numpy(), mask.numpy(), trunc.numpy()))

    text = _run_stage("text_encoder", {0: captioned} if captioned else {}, encode_text, unit.shard)

    ident = models.identity()
    token_rows: list[dict[str, Any]] = []
    manifest_rows: list[dict[str, Any]] = []
    shard_rel = f"{mf.SHARDS_DIR}/shard-{unit.index:06d}-00.parquet"
    for it in items:
        row = {"batch": unit.index, "input_shard": unit.shard, "key": it.key}
        if not it.ok:
            manifest_rows.append(dict(row, status="failed", stage=it.stage, error_class=it.error_class, message=it.message))
            continue
        clip = it.clip
        frames, h, w = (int(x) for x in clip.rgb.shape[:3])
        lat = models.video.latent_shape(frames, h, w)
        v = video[it.key]
        trow: dict[str, Any] = {
            "key": it.key, "source_uri": str(clip.meta.get("source_uri", "")),
            "caption": str(clip.meta.get("caption", "")), "video_format": video_format(clip),
            "num_frames": frames, "latent_t": lat[0], "latent_h": lat[1], "latent_w": lat[2],
            "video_tokens": v["video_tokens"], "first_frame_tokens": v.get("first_frame_tokens"),
            "audio_tokens": audio.get(it.key), "audio_frames": 0,
            "text_emb": None, "text_dim": models.text.width, "text_mask": None, "text_truncated": False,
            **ident,
        }
        for name in ts.VIDEO_COND_COLUMNS:
            trow[name] = v.get(name)
        if trow["audio_tokens"] is not None:
            trow["audio_frames"] = trow["audio_tokens"].size // ts.AUDIO_LEVELS
        if it.key in text:
            emb, mask, trunc = text[it.key]
            trow.update(text_emb=emb, text_mask=mask, text_truncated=bool(trunc))
        try:
            trow = ts.with_sequence_lengths(trow)
            ts.normalize_row(trow, ts.default_task_names(), where=unit.shard)
        except Exception as err:  # a row the trainer could not use is a failed clip, not a crash
            it.fail("row", type(err).__name__, f"{unit.shard}: clip {it.key}: {err}")
            manifest_rows.append(dict(row, status="failed", stage=it.stage, error_class=it.error_class, message=it.message))
            continue
        token_rows.append(trow)
        manifest_rows.append(dict(
            row, status="ok", token_shard=shard_rel, num_frames=frames, video_format=trow["video_format"],
            latent_t=lat[0], latent_h=lat[1], latent_w=lat[2], audio_frames=trow["audio_frames"],
            has_cond=trow["style_tokens"] is not None, has_text=trow["text_emb"] is not None,
            text_truncated=trow["text_truncated"],
        ))
    if token_rows:
        ts.write_token_shard(out / shard_rel, token_rows)
    mf.write_bytes_atomic(stats_path(out, unit.index), parquet_bytes(_stats_table(token_rows, vcfg.bits)))
    mf.write_bytes_atomic(mf.part_path(out, unit.index), parquet_bytes(manifest_table(manifest_rows)))  # commit: last
    return UnitResult(index=unit.index, clips_ok=len(token_rows), clips_failed=len(items) - len(token_rows),
                      seconds=time.perf_counter() - t0 + unit.read_seconds)


def process_unit(index: int, path: str, name: str, models: Models, out: str | Path, cfg: TokenizeConfig) -> UnitResult:
    """Read and tokenize one shard in this process (the local and Beam path); skips committed units."""
    if mf.is_committed(Path(out), index):
        return result_from_part(out, index)
    return tokenize_unit(read_unit(index, path, name), models, out, cfg)


# --- manifest and stats ------------------------------------------------------------------------

# (name, arrow type, meaning)
MANIFEST_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("batch", "int32", "work unit (= index of the input shard in sorted order)"),
    ("input_shard", "string", "input clip shard, relative to --input"),
    ("key", "string", "clip key ('' when a damaged shard gave no key)"),
    ("status", "string", "'ok' or 'failed'"),
    ("stage", "string", "failed: read, check, video_tokenizer, audio_tokenizer, text_encoder, row"),
    ("error_class", "string", "failed: short reason (BadMember, DamagedShard, BadArray, BadSize, AudioLength, ...)"),
    ("message", "string", "failed: one line naming the shard, the clip and the reason"),
    ("token_shard", "string", "ok: token shard holding the row, relative to --output"),
    ("num_frames", "int32", "ok: 1, 17 or 41"),
    ("video_format", "string", "ok: square or portrait"),
    ("latent_t", "int32", "ok: latent grid"),
    ("latent_h", "int32", ""),
    ("latent_w", "int32", ""),
    ("audio_frames", "int32", "ok: SoundStream frames (0 without audio)"),
    ("has_cond", "bool", "ok: style tokens present"),
    ("has_text", "bool", "ok: text embedding present"),
    ("text_truncated", "bool", "ok: the caption had more than 64 text tokens"),
)


def manifest_schema():
    import pyarrow as pa

    types = {"string": pa.string(), "int32": pa.int32(), "bool": pa.bool_()}
    return pa.schema([(n, types[t]) for n, t, _ in MANIFEST_COLUMNS],
                     metadata={MANIFEST_VERSION_KEY: str(MANIFEST_VERSION).encode()})


def manifest_table(rows: list[dict[str, Any]]):
    import pyarrow as pa

    sch = manifest_schema()
    return pa.Table.from_pylist([{n: r.get(n) for n in sch.names} for r in rows], schema=sch)


def read_manifest(path: str | Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise mf.ManifestError(f"{path}: not a readable Parquet manifest ({err})") from None
    if (table.schema.metadata or {}).get(MANIFEST_VERSION_KEY) != str(MANIFEST_VERSION).encode():
        raise mf.ManifestError(f"{path}: not a tokenize manifest of version {MANIFEST_VERSION}")
    return table


def result_from_part(out: str | Path, index: int) -> UnitResult:
    status = read_manifest(mf.part_path(Path(out), index)).column("status").to_pylist()
    return UnitResult(index=index, skipped=True, clips_ok=status.count("ok"), clips_failed=status.count("failed"))


def stats_path(out: Path, index: int) -> Path:
    return Path(out) / STATS_DIR / f"part-{index:06d}.parquet"


def _stats_table(rows: list[dict[str, Any]], video_bits: int):
    """One unit's sparse counts as (level, code, count) rows: code counts for `video` and
    `audio0`..`audio3`, and samples per sequence length for `len_<task>` (code = the length).
    The summary sums these parts, so it never rereads the token shards."""
    import pyarrow as pa

    from videopoet.pipeline.token_shards import AUDIO_CODES_PER_LEVEL, AUDIO_LEVELS, default_task_names, len_column

    levels, codes, counts = [], [], []

    def add(level: str, values: list[np.ndarray], size: int | None = None) -> None:
        if not values:
            return
        c = np.bincount(np.concatenate(values), minlength=size or 0)
        nz = np.flatnonzero(c)
        levels.extend([level] * nz.size)
        codes.append(nz.astype(np.int32))
        counts.append(c[nz].astype(np.int64))

    add("video", [r["video_tokens"] for r in rows], 2 ** video_bits)
    audio = [r["audio_tokens"].reshape(AUDIO_LEVELS, -1) for r in rows if r["audio_tokens"] is not None]
    for level in range(AUDIO_LEVELS):
        add(f"audio{level}", [a[level] for a in audio], AUDIO_CODES_PER_LEVEL)
    for task in default_task_names():
        lengths = [r[len_column(task)] for r in rows if r[len_column(task)] > 0]
        add(len_column(task), [np.asarray(lengths, dtype=np.int64)] if lengths else [])
    return pa.table({
        "level": pa.array(levels, pa.string()),
        "code": pa.array(np.concatenate(codes) if codes else np.zeros(0, np.int32), pa.int32()),
        "count": pa.array(np.concatenate(counts) if counts else np.zeros(0, np.int64), pa.int64()),
    })


# --- plan --------------------------------------------------------------------------------------

def input_shards(root: str) -> list[tuple[Path, str]]:
    """(path, name relative to the input) of every committed clip shard under `root`, sorted."""
    from videopoet.pipeline.clip_shards import list_shards
    from videopoet.pipeline.jobs import relative_to

    rootp = Path(root).expanduser()
    if not rootp.exists():
        raise ConfigError(f"input={root}: no such clip shard directory or file")
    shards = list_shards(rootp)
    if not shards:
        raise ConfigError(f"input={root}: no clip shards (*.tar) found")
    base = rootp.parent if rootp.is_file() else rootp
    return [(p, relative_to(p, base)) for p in shards]


def make_plan(cfg: TokenizeConfig, shards: list[tuple[Path, str]], ident: dict[str, str]) -> dict[str, Any]:
    from videopoet.pipeline.token_shards import TOKEN_FORMAT_VERSION

    listing = json.dumps([[name, p.stat().st_size] for p, name in shards], separators=(",", ":")).encode()
    return {
        "tokenize_version": TOKENIZE_VERSION, "manifest_version": MANIFEST_VERSION,
        "token_format_version": TOKEN_FORMAT_VERSION,
        "content_config_hash": config_hash({"any_size": cfg.any_size}),
        "inputs_sha256": hashlib.sha256(listing).hexdigest(), "num_units": len(shards),
        **ident,
    }


def check_or_write_plan(out: Path, plan: dict[str, Any]) -> None:
    """Refuse to mix: other model hashes than the output's are recorded and stop the job (one error);
    other inputs/settings are refused like ingest does."""
    from videopoet.pipeline.ingest import check_or_write_plan as check_plan

    path = out / mf.PLAN_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in HASH_KEYS if old.get(k) != plan[k]]
        if diff:
            detail = "; ".join(f"{k}: output has {old.get(k)}, given {plan[k]}" for k in diff)
            message = (f"output={out}: made with other models ({detail}); refusing to mix tokens of two "
                       "tokenizers in one dataset: rerun with the original checkpoints or use a new --output")
            record = {"status": "failed", "stage": "plan", "error_class": "TokenizerMismatch", "message": message,
                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **{f"given_{k}": plan[k] for k in diff}}
            with open(out / REFUSALS_FILE, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
            raise TokenizerMismatch(message)
    check_plan(out, plan)


# --- engines -----------------------------------------------------------------------------------

def run_local(units: list[tuple[int, Path, str]], cfg: TokenizeConfig, out: Path, ident: dict[str, str], progress) -> list[UnitResult]:
    if not units:
        return []
    models = load_models(cfg, ident)
    results = []
    for index, path, name in units:
        r = process_unit(index, str(path), name, models, out, cfg)
        progress.update(ok=r.clips_ok, failed=r.clips_failed, skipped=r.skipped)
        results.append(r)
    return results


def _make_beam_dofn(cfg: TokenizeConfig, out: str, ident: dict[str, str]):
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    class TokenizeShardFn(beam.DoFn):
        """One input shard per element; the models load once per worker (setup), RunInference-style."""

        def __init__(self, cfg: TokenizeConfig, out: str, ident: dict[str, str]):
            self.cfg, self.out, self.ident = cfg, out, ident
            self.clips_ok = Metrics.counter("videopoet.tokenize", "clips_ok")
            self.clips_failed = Metrics.counter("videopoet.tokenize", "clips_failed")

        def setup(self):
            self.models = load_models(self.cfg, self.ident)

        def process(self, element):
            index, path, name = element
            r = process_unit(index, path, name, self.models, self.out, self.cfg)
            if not r.skipped:
                self.clips_ok.inc(r.clips_ok)
                self.clips_failed.inc(r.clips_failed)
            yield index

    return TokenizeShardFn(cfg, out, ident)


def run_beam(units, cfg: TokenizeConfig, out: Path, ident: dict[str, str], progress) -> list[UnitResult]:
    if not units:
        return []
    import apache_beam as beam

    from videopoet.pipeline.engines import beam_pipeline_options
    from videopoet.pipeline.jobs import PartWatcher

    def on_commit(index: int) -> None:
        r = result_from_part(out, index)
        progress.update(ok=r.clips_ok, failed=r.clips_failed)

    elements = [(i, str(p), n) for i, p, n in units]
    with PartWatcher([u[0] for u in units], lambda i: mf.is_committed(out, i), on_commit):
        pipeline = beam.Pipeline(options=beam_pipeline_options(cfg))
        _ = (
            pipeline
            | "Shards" >> beam.Create(elements, reshuffle=False)
            | "Distribute" >> beam.Reshuffle()
            | "TokenizeCommit" >> beam.ParDo(_make_beam_dofn(cfg, str(out), ident))
        )
        pipeline.run().wait_until_finish()
    missing = [i for i, _, _ in units if not mf.is_committed(out, i)]
    if missing:
        raise RuntimeError(f"beam pipeline finished but units {missing[:10]} are not committed")
    return [dataclasses.replace(result_from_part(out, i), skipped=False) for i, _, _ in units]


class TokenizeActor:
    """Holds the models (loaded once, on its GPU with --use-gpu) and tokenizes + commits units."""

    def __init__(self, cfg: TokenizeConfig, out: str, ident: dict[str, str]):
        self.cfg, self.out = cfg, out
        self.models = load_models(cfg, ident)

    def finish(self, unit: ReadUnit) -> UnitResult:
        return tokenize_unit(unit, self.models, self.out, self.cfg)


def run_ray(units, cfg: TokenizeConfig, out: Path, ident: dict[str, str], progress) -> list[UnitResult]:
    """Reading a shard is a CPU task; the models live in an actor pool that tokenizes and commits."""
    if not units:
        return []
    import ray
    from ray.util import ActorPool

    from videopoet.pipeline.engines import _ray_init, ray_pool_size

    started = _ray_init(cfg)
    try:
        res = ray.cluster_resources()
        if cfg.ray.use_gpu and res.get("GPU", 0.0) <= 0:
            raise ConfigError("ray.use_gpu=true: the Ray cluster has no GPU")
        pool_size = ray_pool_size(cfg, res.get("CPU", 1.0), res.get("GPU", 0.0))
        actor_cls = ray.remote(num_cpus=cfg.ray.actor_cpus, num_gpus=cfg.ray.gpus_per_actor if cfg.ray.use_gpu else 0,
                               max_restarts=2, max_task_retries=2)(TokenizeActor)
        read = ray.remote(num_cpus=cfg.ray.decode_cpus, max_retries=2)(read_unit)
        pool = ActorPool([actor_cls.remote(cfg, str(out), ident) for _ in range(pool_size)])
        inflight_limit = cfg.ray.max_inflight_batches or 2 * pool_size + 2
        queue = list(units)
        results: list[UnitResult] = []
        inflight = 0
        while queue or inflight:
            while queue and inflight < inflight_limit:
                index, path, name = queue.pop(0)
                pool.submit(lambda actor, ref: actor.finish.remote(ref), read.remote(index, str(path), name))
                inflight += 1
            r = pool.get_next_unordered()
            inflight -= 1
            progress.update(ok=r.clips_ok, failed=r.clips_failed)
            results.append(r)
        return sorted(results, key=lambda r: r.index)
    finally:
        if started:
            ray.shutdown()


# --- summary -----------------------------------------------------------------------------------

def merge_manifest(out: Path, num_units: int) -> Path:
    import pyarrow as pa

    from videopoet.pipeline.jobs import parquet_bytes

    tables = [read_manifest(mf.part_path(out, i)) for i in range(num_units)]
    table = pa.concat_tables(tables) if tables else manifest_schema().empty_table()
    path = out / mf.MERGED_FILE
    mf.write_bytes_atomic(path, parquet_bytes(table.replace_schema_metadata(manifest_schema().metadata)))
    return path


def read_stats(out: Path, num_units: int, video_bits: int) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]]]:
    """Summed unit stats: code counts per level, and {task: {sequence length: samples}}."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from videopoet.pipeline.token_shards import AUDIO_CODES_PER_LEVEL, AUDIO_LEVELS, default_task_names, len_column

    sizes = {"video": 2 ** video_bits, **{f"audio{i}": AUDIO_CODES_PER_LEVEL for i in range(AUDIO_LEVELS)}}
    usage = {k: np.zeros(n, np.int64) for k, n in sizes.items()}
    groups: dict[str, dict[int, int]] = {t: {} for t in default_task_names()}
    by_level = {len_column(t): t for t in groups}
    for i in range(num_units):
        table = pq.read_table(stats_path(out, i))
        for level in pc.unique(table["level"]).to_pylist():
            part = table.filter(pc.equal(table["level"], level))
            code, count = part["code"].to_numpy(), part["count"].to_numpy()
            if level in usage:
                np.add.at(usage[level], code, count)
            elif level in by_level:
                g = groups[by_level[level]]
                for length, n in zip(code.tolist(), count.tolist()):
                    g[length] = g.get(length, 0) + n
    return usage, {t: {str(k): v for k, v in sorted(g.items())} for t, g in groups.items()}


def _usage_figures(c: np.ndarray) -> dict[str, Any]:
    total = int(c.sum())
    p = c[c > 0] / max(total, 1)
    return {"codes": int(c.size), "tokens": total, "used": int((c > 0).sum()),
            "used_fraction": float((c > 0).mean()), "perplexity": float(np.exp(-(p * np.log(p)).sum())) if total else 0.0}


def write_plots(out: Path, usage: dict[str, np.ndarray], groups: dict[str, dict[str, int]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / SUMMARY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, len(usage), figsize=(4 * len(usage), 3.2))
    for ax, (level, c) in zip(np.atleast_1d(axes), usage.items()):
        bins = min(c.size, 512)
        binned = c.reshape(bins, -1).sum(1) if c.size % bins == 0 else np.histogram(np.arange(c.size), bins, weights=c)[0]
        ax.bar(np.arange(bins) * (c.size / bins), binned, width=c.size / bins, color="tab:blue")
        f = _usage_figures(c)
        ax.set_title(f"{level}: {f['used']}/{f['codes']} used, ppl {f['perplexity']:.0f}", fontsize=9)
        ax.set_xlabel("code id")
        ax.set_ylabel("count")
    fig.tight_layout()
    paths.append(folder / "codebook_usage.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)

    tasks = [t for t, g in groups.items() if g]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(groups)), 3.5))
    labels, heights = [], []
    for t in groups:
        for length, n in groups[t].items():
            labels.append(f"{t}\n{length}")
            heights.append(n)
    ax.bar(range(len(heights)), heights, color="tab:green")
    ax.set_xticks(range(len(heights)), labels, fontsize=6)
    ax.set_ylabel("samples")
    ax.set_title(f"samples per (task, sequence length); {len(tasks)} tasks servable")
    fig.tight_layout()
    paths.append(folder / "task_lengths.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)
    return paths


def summarize(out: Path, cfg: TokenizeConfig, num_units: int, video_bits: int, wall_s: float,
              results: list[UnitResult], plan: dict[str, Any]) -> dict[str, Any]:
    """manifest.parquet + summary.json (+ plots): counts, failures, task/length groups, codebook use."""
    merged = merge_manifest(out, num_units)
    table = read_manifest(merged)
    status = table.column("status").to_pylist()
    reasons: dict[str, int] = {}
    for s, cls in zip(status, table.column("error_class").to_pylist()):
        if s == "failed":
            reasons[cls] = reasons.get(cls, 0) + 1
    ok_keys = [k for k, st in zip(table.column("key").to_pylist(), status) if st == "ok"]
    usage, groups = read_stats(out, num_units, video_bits)
    fresh = [r for r in results if not r.skipped]
    new_clips = sum(r.clips_ok + r.clips_failed for r in fresh)
    summary = {
        "clips": len(status), "clips_ok": status.count("ok"), "clips_failed": status.count("failed"),
        "failures_by_class": dict(sorted(reasons.items())),
        "duplicate_keys": len(ok_keys) - len(set(ok_keys)),  # same clip in two input shards
        "units": num_units, "units_this_run": len(fresh), "clips_this_run": new_clips,
        "wall_seconds": wall_s, "clips_per_s": new_clips / wall_s if wall_s > 0 else 0.0,
        "samples_per_task": {t: sum(g.values()) for t, g in groups.items()},
        "samples_per_task_and_length": groups,
        "codebook_usage": {k: _usage_figures(c) for k, c in usage.items()},
        "engine": cfg.engine, "device": cfg.device, "manifest": str(merged),
        **{k: plan[k] for k in HASH_KEYS},
    }
    if cfg.plots:
        summary["plots"] = [str(p) for p in write_plots(out, usage, groups)]
    mf.write_json_atomic(out / mf.SUMMARY_FILE, summary)
    return summary


def summary_line(s: dict[str, Any]) -> str:
    servable = sum(1 for n in s["samples_per_task"].values() if n)
    return (f"tokenize: {s['clips_ok']} clips ok, {s['clips_failed']} failed ({s['clips_this_run']} this run) "
            f"in {s['units']} shards; {servable} tasks servable; video codes used "
            f"{s['codebook_usage']['video']['used']}; {s['clips_per_s']:.2f} clips/s in {s['wall_seconds']:.1f} s")


def run_tokenize(cfg: TokenizeConfig) -> dict[str, Any]:
    """Run the whole job with `cfg.engine`; returns the summary (also written to summary.json)."""
    from videopoet.checkpoint import read_meta
    from videopoet.pipeline.jobs import Progress

    if not cfg.output:
        raise ConfigError("output='': give --output DIR")
    if not cfg.input:
        raise ConfigError("input='': give --input CLIP_SHARD_DIR")
    import torch

    if cfg.torch_threads == 0:
        # Resolved here, once, so that every worker of every engine uses the same count.
        cfg = dataclasses.replace(cfg, torch_threads=torch.get_num_threads())
    if cfg.device == "cuda" and cfg.engine == "local" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: this machine has no CUDA GPU (use device=auto or cpu)")
    out = Path(cfg.output).expanduser().resolve()
    shards = input_shards(cfg.input)
    ident = model_identity(cfg)
    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(cfg, shards, ident)
    check_or_write_plan(out, plan)
    video_bits = int(read_meta(cfg.video_tokenizer)["config"]["bits"])
    units = [(i, p, name) for i, (p, name) in enumerate(shards)]
    t0 = time.perf_counter()
    progress = Progress(len(units), cfg.progress, desc=f"tokenize[{cfg.engine}]", rate_of="ok")
    results: list[UnitResult] = []
    try:
        todo = []
        for u in units:
            if mf.is_committed(out, u[0]):
                r = result_from_part(out, u[0])
                results.append(r)
                progress.update(ok=r.clips_ok, failed=r.clips_failed, skipped=True)
            else:
                todo.append(u)
        runner = {"local": run_local, "beam": run_beam, "ray": run_ray}[cfg.engine]
        results.extend(runner(todo, cfg, out, ident, progress))
    finally:
        progress.close()
    wall = time.perf_counter() - t0
    summary = summarize(out, cfg, len(units), video_bits, wall, results, plan)
    print(summary_line(summary), flush=True)
    if cfg.track:
        _track(cfg, summary, out)
    return summary


def _track(cfg: TokenizeConfig, summary: dict[str, Any], out: Path) -> None:
    import mlflow

    from videopoet.tracking import start_run

    with start_run("tokenize", cfg, tags={"engine": cfg.engine}):
        mlflow.log_metrics({k: float(summary[k]) for k in (
            "clips", "clips_ok", "clips_failed", "units", "units_this_run", "clips_this_run",
            "wall_seconds", "clips_per_s")})
        mlflow.log_metrics({f"samples_{t}": float(n) for t, n in summary["samples_per_task"].items()})
        for level, f in summary["codebook_usage"].items():
            mlflow.log_metrics({f"{level}_codes_used": float(f["used"]), f"{level}_perplexity": f["perplexity"]})
        mlflow.log_artifact(str(out / mf.SUMMARY_FILE))
        mlflow.log_artifact(str(out / mf.PLAN_FILE))
        for p in summary.get("plots", []):
            mlflow.log_artifact(p, artifact_path="summary")


# --- CLI ---------------------------------------------------------------------------------------

def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tokenize",
        help="clip shards -> token shards for every pretraining task (Beam, Ray or local; exactly once)",
        description="Tokenize clip shards with the MAGVIT-v2 video tokenizer, the SoundStream audio tokenizer "
        "and a frozen text encoder into Parquet token shards with per-task sequence lengths, a manifest and a "
        "dataset summary. Rerunning into the same --output resumes; other checkpoints are refused. "
        "Trailing key=value arguments override the config (e.g. encode_batch=16 any_size=true).",
    )
    p.add_argument("--config", default="default", help=f"recipe ({', '.join(TOKENIZE_RECIPES.names())}) or YAML file")
    p.add_argument("--input", help="clip shard directory (searched recursively) or one .tar")
    p.add_argument("--output", help="output directory (shards/, manifest/, stats/, manifest.parquet, summary.json, summary/)")
    p.add_argument("--video-tokenizer", help="video tokenizer checkpoint directory")
    p.add_argument("--audio-tokenizer", help="audio tokenizer checkpoint directory")
    p.add_argument("--text-encoder", help="local text encoder model directory (default: the embedded MiniLM)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="model device (default: auto)")
    add_engine_arguments(p, num_cpus_help="logical CPUs of a local Ray / local Beam workers",
                         use_gpu_help="run the models on GPU actors (Ray)")
    p.set_defaults(func=_main)


def config_from_args(args: argparse.Namespace) -> TokenizeConfig:
    flags = (as_override("input", args.input) + as_override("output", args.output)
             + as_override("video_tokenizer", args.video_tokenizer) + as_override("audio_tokenizer", args.audio_tokenizer)
             + as_override("text_encoder", args.text_encoder) + as_override("device", args.device)
             + engine_overrides(args))
    return TOKENIZE_RECIPES.get(args.config, list(args.overrides) + flags)


def _main(args: argparse.Namespace) -> int:
    run_tokenize(config_from_args(args))
    return 0


if __name__ == "__main__":  # `python -m videopoet.pipeline.tokenize ...` (same as `videopoet tokenize ...`)
    import sys

    from videopoet.cli import main

    sys.exit(main(["tokenize", *sys.argv[1:]]))
