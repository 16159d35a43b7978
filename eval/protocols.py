"""Evaluation protocols as data: what each paper benchmark generates, which real clips it compares with, and how.

Six protocols (paper §5.1, Tables 2-4, Appendix A.1, A.2, A.5; ../shared/reference/eval.md):

- msrvtt_t2v (t2v, fvd + clipsim): every MSR-VTT test caption is generated (CLIPSIM, ViT-B/16); the first
  2048 x 20 form the FVD groups; real: 2,048 test videos, central 16 frames at the source rate.
- ucf101_t2v (t2v, fvd + is): class prompts of 10,000 x 4 testlist01 videos (MAGVIT); real: 10,000 of
  trainlist01 (TGAN2), central 16 frames at the source rate.
  Both t2v: 16 frames, the LM's 128x128 bicubic-upsampled to 256x256 (A.1 "Resolution"), real centre-cropped.
- k600_fp (fp5, fvd): Kinetics-600 test, 50,000 x 4, 16 frames at 8 fps 128x128, the first 5 the condition.
- ssv2_inpaint / ssv2_outpaint (fvd): SSv2 validation, 50,000, 16 frames at 8 fps 128x128, the central
  H/2 x W/2 box masked (inpaint) or everything but it (outpaint), as COMMIT (tokenizers/commit.py).
- davis_style (style, clipsim): Table 5's 40 rows (20 DAVIS 2016 videos x 2 prompts), 16 frames from the
  row's start frame, central square crop at full height, 256x256.

Choices the paper leaves open, made here: K600/SSv2 clips are the 8 fps pick (the model's clip rate, so
condition frames move as in training), the middle 16-frame window of the video (pipeline.media with
one window per video); DAVIS takes 16 consecutive source frames (24 fps) because Table 5's start frames
leave too few frames for an 8 fps pick (bear: start 60 of 82 frames); when N exceeds a split (UCF-101
10,000 of 3,783 test videos, SSv2 50,000 of 24,777) each repeat holds the whole split once plus a
seeded draw with replacement for the rest, else a seeded draw without replacement in dataset order.

`Protocol.record()` is what every score carries: two scores are comparable only when their records
are equal. Listing (`list_examples`, `list_real`) reads annotation files only; `load_example` decodes
one clip. `make_standin` writes a tiny dataset in the real layout for tests (eval/datasets.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videopoet.config import UsageError
from videopoet.eval import datasets as D
from videopoet.pipeline.media import FORMATS, MediaConfig, MediaError, probe_and_decode, resize_crop

PROTOCOL_VERSION = 1
METRICS = ("fvd", "clipsim", "is")
REAL_PICKS = ("8fps", "central_native", "consecutive")
MASKS = ("", "centre", "border")


@dataclass(frozen=True)
class Protocol:
    """One benchmark's evaluation recipe. Field docs are the contract with eval/eval_job.py."""

    name: str  # "msrvtt_t2v" | "ucf101_t2v" | "k600_fp" | "ssv2_inpaint" | "ssv2_outpaint" | "davis_style"
    task: str  # the LM task that generates (pipeline.tasks.TASK_NAMES)
    dataset: str  # "msrvtt" | "ucf101" | "k600" | "ssv2" | "davis" (eval/datasets.py layouts)
    split: str  # the split the prompts / condition clips come from
    num_samples: int  # clips per metric group (FVD / IS computed on each group)
    repeats: int  # groups: report mean ± std over them
    frames: int  # frames per clip fed to the metrics
    fps: int  # frame rate of the generated clips (and of the real ones unless real_pick says otherwise)
    size: tuple[int, int]  # (width, height) of generated and real clips before metric preprocessing
    crop: str  # how a source frame becomes `size`: "centre" = scale to cover, centre crop
    metrics: tuple[str, ...]  # subset of METRICS
    condition_frames: int = 0  # k600_fp: the first 5 frames are the condition
    mask: str = ""  # ssv2: "centre" (inpaint: central H/2 x W/2 box masked) / "border" (outpaint), as COMMIT
    real_set: str = ""  # which real clips the FVD compares against (words, for humans)
    seed: int = 0  # every draw (subsamples, real-set choice) derives from it
    generate: int = 0  # examples list_examples yields: 0 = num_samples * repeats, -1 = every item of the split
    generate_size: tuple[int, int] = (128, 128)  # the LM's output (w, h); bicubic-resized to `size` when different
    generate_frames: int = 17  # the LM's clip length (1 + 4k for the tokenizer); metrics take the first `frames`
    real_split: str = ""  # split of the FVD real set ("" = the generated examples' own real clips)
    real_samples: int = 0  # size of the FVD real set when real_split is set
    real_pick: str = "8fps"  # REAL_PICKS: "8fps" = pipeline.media 8 fps pick (middle window),
    # "central_native" = central `frames` frames at the source rate, "consecutive" = `frames` source frames from start

    def __post_init__(self) -> None:
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise UsageError(f"protocol {self.name}: metrics {bad} not in {METRICS}")
        if self.real_pick not in REAL_PICKS:
            raise UsageError(f"protocol {self.name}: real_pick={self.real_pick!r}, allowed {REAL_PICKS}")
        if self.mask not in MASKS:
            raise UsageError(f"protocol {self.name}: mask={self.mask!r}, allowed {MASKS}")
        if self.num_samples < 1 or self.repeats < 1 or self.frames < 1:
            raise UsageError(f"protocol {self.name}: num_samples, repeats and frames must be >= 1")
        if self.generate_frames < self.frames:
            raise UsageError(f"protocol {self.name}: generate_frames={self.generate_frames} must be >= frames")
        if self.condition_frames >= self.frames:
            raise UsageError(f"protocol {self.name}: condition_frames={self.condition_frames} must be < frames")

    def record(self, **overrides) -> dict:
        """Everything a score must carry (JSON-ready). Extra keys (weights hashes, real-set stats hash) are
        added from overrides; a score is comparable with another only when the two records are equal."""
        out = {"protocol_version": PROTOCOL_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out.update(overrides)
        return out

    def with_overrides(self, **kw) -> Protocol:
        """A copy with some fields changed (e.g. num_samples=8 for tests); unknown names are a UsageError."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(kw) - names)
        if unknown:
            raise UsageError(f"protocol {self.name}: unknown field(s) {unknown}; fields are {sorted(names)}")
        for key in ("size", "generate_size", "metrics"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return dataclasses.replace(self, **kw)

    @property
    def total(self) -> int:
        """Examples generated when the split is large enough (-1: the whole split)."""
        return self.generate or self.num_samples * self.repeats


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol(
        "msrvtt_t2v", "t2v", "msrvtt", "test", num_samples=2048, repeats=20, frames=16, fps=8, size=(256, 256),
        crop="centre", metrics=("fvd", "clipsim"), generate=-1, real_split="test", real_samples=2048,
        real_pick="central_native",
        real_set="2,048 MSR-VTT test videos (seeded draw), central 16 frames at the source rate, centre crop; "
                 "generated: all test captions for CLIPSIM (ViT-B/16), the first 40,960 as 20 x 2,048 for FVD"),
    Protocol(
        "ucf101_t2v", "t2v", "ucf101", "testlist01", num_samples=10000, repeats=4, frames=16, fps=8,
        size=(256, 256), crop="centre", metrics=("fvd", "is"), real_split="trainlist01", real_samples=10000,
        real_pick="central_native",
        real_set="10,000 UCF-101 trainlist01 videos (TGAN2), central 16 frames at the source rate, centre crop; "
                 "generated: class prompts of 4 x 10,000 test videos (MAGVIT 10k x 4)"),
    Protocol(
        "k600_fp", "fp5", "k600", "test", num_samples=50000, repeats=4, frames=16, fps=8, size=(128, 128),
        crop="centre", metrics=("fvd",), condition_frames=5,
        real_set="the same Kinetics-600 test clips the condition frames come from (MAGVIT), 16 frames at 8 fps"),
    Protocol(
        "ssv2_inpaint", "inpaint", "ssv2", "validation", num_samples=50000, repeats=1, frames=16, fps=8,
        size=(128, 128), crop="centre", metrics=("fvd",), mask="centre",
        real_set="the same SSv2 validation clips that are masked (MAGVIT), 16 frames at 8 fps"),
    Protocol(
        "ssv2_outpaint", "outpaint", "ssv2", "validation", num_samples=50000, repeats=1, frames=16, fps=8,
        size=(128, 128), crop="centre", metrics=("fvd",), mask="border",
        real_set="the same SSv2 validation clips that are masked (MAGVIT), 16 frames at 8 fps"),
    Protocol(
        "davis_style", "style", "davis", "table5", num_samples=40, repeats=1, frames=16, fps=24, size=(256, 256),
        crop="centre", metrics=("clipsim",), real_pick="consecutive",
        real_set="none (CLIPSIM only); source clips: 16 consecutive DAVIS 2016 480p frames from Table 5's start "
                 "frame, central square crop at full height, 256x256"),
)}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise UsageError(f"protocol {name!r}: allowed {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


@dataclass(frozen=True)
class ExampleRef:
    """One example to generate (or one real clip): cheap and picklable; listing never decodes video."""

    index: int
    key: str
    path: str
    caption: str
    start_frame: int = 0
    label: int = -1


@dataclass
class Example:
    ref: ExampleRef
    real: np.ndarray | None  # uint8 [frames, H, W, 3] at `size` (None for t2v: the real set is list_real's)
    # uint8 at generate_size, what the LM conditions on: fp [condition_frames, ...]; inpaint / outpaint / style
    # [generate_frames, ...] (masked / masked / source clip); None for t2v
    condition: np.ndarray | None


# ---------------------------------------------------------------------------------------------- listing


def _draw(available: int, n: int, seed: int) -> list[int]:
    """n indices of `available`: a seeded subset in dataset order, or all + a seeded draw with replacement."""
    rng = np.random.default_rng(seed)
    if n <= available:
        return sorted(rng.choice(available, size=n, replace=False).tolist())
    return list(range(available)) + rng.choice(available, size=n - available, replace=True).tolist()


def _refs(items: list[D.Item], order: list[int], limit: int | None) -> list[ExampleRef]:
    order = order if limit is None else order[:limit]
    return [ExampleRef(i, items[j].key, items[j].path, items[j].caption, items[j].start_frame, items[j].label)
            for i, j in enumerate(order)]


def list_examples(protocol: Protocol, root: str | Path, limit: int | None = None) -> list[ExampleRef]:
    """The examples to generate, in a deterministic order (index = position). MSR-VTT: its test captions in
    file order (the first num_samples * repeats form the FVD groups); DAVIS: Table 5's rows; others: per repeat,
    a draw of num_samples items seeded by (seed, repeat). UsageError naming a missing layout file."""
    items = D.read_items(protocol.dataset, root, protocol.split)
    if not items:
        raise UsageError(f"{root}: no {protocol.dataset} items in split {protocol.split!r}")
    if protocol.dataset in ("msrvtt", "davis"):
        total = len(items) if protocol.total < 0 else min(protocol.total, len(items))
        order = list(range(total))
    else:
        order = [j for r in range(protocol.repeats)
                 for j in _draw(len(items), protocol.num_samples, protocol.seed * 1000 + r)]
    return _refs(items, order, limit)


def list_real(protocol: Protocol, root: str | Path, limit: int | None = None) -> list[ExampleRef]:
    """The FVD real set: a seeded draw of real_samples from real_split (MSR-VTT: distinct test videos), or,
    when real_split is empty, the generated examples themselves (their `real` clips)."""
    if not protocol.real_split:
        return list_examples(protocol, root, limit)
    items = D.read_items(protocol.dataset, root, protocol.real_split)
    if protocol.dataset == "msrvtt":
        items = D.msrvtt_videos(items)
    if not items:
        raise UsageError(f"{root}: no {protocol.dataset} items in split {protocol.real_split!r}")
    return _refs(items, _draw(len(items), protocol.real_samples, protocol.seed * 1000 + 999), limit)


# ---------------------------------------------------------------------------------------------- decoding


def _media_config() -> MediaConfig:
    return MediaConfig(clip_frames=(17,), clips_per_video=1, audio=False, flow="none", depth="none",
                       decode_timeout_s=0, strict_duration=False)


def _decode_8fps(path: str, frames: int, size: tuple[int, int]) -> np.ndarray:
    """pipeline.media's 8 fps pick and scale-to-cover centre crop: the middle window of `frames` frames."""
    fmt = next((name for name, wh in FORMATS.items() if tuple(wh) == tuple(size)), None)
    if fmt is None:
        raise UsageError(f"size {size}: the 8 fps pick decodes through pipeline.media formats {dict(FORMATS)}")
    cfg = dataclasses.replace(_media_config(), clip_frames=(frames,), formats=(fmt,))
    return probe_and_decode(path, cfg)[0].rgb


def _decode_central_native(path: str, frames: int, size: tuple[int, int]) -> np.ndarray:
    """The central `frames` frames at the source rate (paper A.1: no temporal downsampling), centre crop."""
    import av

    try:
        with av.open(path) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except FileNotFoundError:
        raise MediaError("open", "FileNotFound", f"{path}: no such file") from None
    except av.error.FFmpegError as err:
        raise MediaError("decode", type(err).__name__, f"{path}: FFmpeg failed while decoding ({err})") from None
    if len(decoded) < frames:
        raise MediaError("too_short", "TooShort", f"{path}: {len(decoded)} frames decode, {frames} needed")
    start = (len(decoded) - frames) // 2
    return np.stack([resize_crop(img, *size) for img in decoded[start:start + frames]])


def _read_consecutive(folder: str, start: int, frames: int, size: tuple[int, int]) -> np.ndarray:
    """DAVIS: `frames` consecutive JPEG frames from `start`, central square crop at full height, resized."""
    from PIL import Image

    out = []
    for t in range(start, start + frames):
        path = Path(folder) / f"{t:05d}.jpg"
        if not path.exists():
            raise MediaError("too_short", "TooShort", f"{path}: missing ({frames} frames from {start} needed)")
        with Image.open(path) as img:
            out.append(resize_crop(np.asarray(img.convert("RGB")), *size))
    return np.stack(out)


def decode_real(protocol: Protocol, ref: ExampleRef, frames: int | None = None) -> np.ndarray:
    """uint8 [frames, H, W, 3] of one real clip as the protocol defines it (frames defaults to the
    protocol's). Raises MediaError (stage "too_short" when the source holds too few frames)."""
    frames = frames or protocol.frames
    if protocol.real_pick == "8fps":
        return _decode_8fps(ref.path, frames, protocol.size)
    if protocol.real_pick == "central_native":
        return _decode_central_native(ref.path, frames, protocol.size)
    return _read_consecutive(ref.path, ref.start_frame, frames, protocol.size)


def centre_box(height: int, width: int) -> tuple[int, int, int, int]:
    """The central H/2 x W/2 box (top, bottom, left, right): COMMIT's inpaint/outpaint region (tokenizers/commit.py)."""
    return height // 4, height // 4 + height // 2, width // 4, width // 4 + width // 2


def condition_of(protocol: Protocol, clip: np.ndarray) -> np.ndarray | None:
    """What the LM conditions on, uint8 at generate_size, from the source clip (generate_frames long): fp the
    first condition_frames; inpaint the clip with the centre box black; outpaint the centre box with its border
    pixels replicated outward (COMMIT's fills, tokenizers/commit.py); style the source clip; t2v None."""
    if protocol.task == "t2v":
        return None
    if tuple(protocol.generate_size) != tuple(protocol.size):
        clip = np.stack([resize_crop(img, *protocol.generate_size) for img in clip])
    if protocol.condition_frames:
        return clip[: protocol.condition_frames].copy()
    if protocol.mask:
        _, h, w, _ = clip.shape
        top, bottom, left, right = centre_box(h, w)
        if protocol.mask == "centre":
            out = clip.copy()
            out[:, top:bottom, left:right] = 0
            return out
        return np.pad(clip[:, top:bottom, left:right], ((0, 0), (top, h - bottom), (left, w - right), (0, 0)),
                      mode="edge")
    return clip.copy()


def load_example(protocol: Protocol, ref: ExampleRef) -> Example:
    """Decode one example. t2v: nothing to decode (real and condition None; the FVD real set is list_real's).
    Others: the source clip of generate_frames (17) frames; real = its first `frames` (16) at `size`, condition
    = condition_of(the whole clip), which the LM encodes (COMMIT / flow+depth) at its own clip length."""
    if protocol.task == "t2v":
        return Example(ref, None, None)
    clip = decode_real(protocol, ref, max(protocol.frames, protocol.generate_frames))
    return Example(ref, clip[: protocol.frames], condition_of(protocol, clip))


def make_standin(name: str, root: str | Path, n: int, seed: int = 0) -> Path:
    """A tiny generated dataset for protocol `name` in its real layout (eval/datasets.py); returns the root."""
    protocol = get_protocol(name)
    return D.write_standin(protocol.dataset, Path(root), n, seed)
