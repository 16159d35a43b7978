"""Pretraining tasks: each turns one token-shard row into a Fig. 3 sequence layout (paper §4.1).

A layout is one flat id sequence in the unified vocabulary (pipeline.vocab):

    <bos> <task> [<bot_i> <text>x64 <eot_i>] [<bov_i> visual <eov_i>] [<boa_i> audio <eoa_i>] [<res>] [<dur_41>] <bov_o>
    |---------------------------------------- prefix: bidirectional, no loss ---------------------------------------|
        video... <eov_o> [<boa_o> audio... <eoa_o>] <eos>            (or <boa_o> audio... <eoa_o> <eos> for v2a)
    |------------------- output: causal, every position is a target ------------------|

The begin-of-output token closes the prefix, so the last prefix position predicts the first output
token. Absent modalities are dropped together with their delimiters; `<res>` only for 128x224
(portrait) and `<dur_41>` only for 41-frame outputs; text-to-image has neither `<eov_o>` nor `<eos>`,
so an image is exactly the first latent frame of a video and the model keeps generating at
inference (paper §4.1). Text embeddings go into TEXT_SLOTS positions after `<bot_i>`, which hold
the placeholder `<text>`; the model replaces them with projected embeddings (or its learned null
embedding where the text mask is False, which is also how condition dropout works).

Task list (name: prefix -> output; text: required / optional (slots present only when the row has
a caption) / always (null text when none) / none):
    uncond    (nothing)                          -> video         text none
    t2v       text                               -> video         text required
    t2i       text                               -> image         text always (no caption = uncond. image)
    i2v       first frame                        -> video         text optional
    fp1, fp5  COMMIT tokens (first 1 / 5 frames) -> video         text optional
    inpaint   COMMIT tokens (masked centre)      -> video         text optional
    outpaint  COMMIT tokens (masked border)      -> video         text optional
    style     flow+depth tokens + text           -> video         text required
              (+ the first frame's tokens on a fixed subset of clips: paper §4.1 "on a subset of steps")
    a2v       audio                              -> video         text none
    v2a       video                              -> audio         text none
    avcont    COMMIT first frame + its audio (first 1/T of each level) -> video + audio    text none

Stylization's first frame: a clip's style layout carries `<bov_i> first frame <eov_i>` before the
flow+depth condition when `style_first_frame(row)` holds: the row's explicit `style_first_frame`
field if it has one (sampling requests), else a hash of (STYLE_FIRST_FRAME_SEED, key) below
STYLE_FIRST_FRAME_SHARE. It is a pure function of the stored row, so the len_style column written at
tokenize time and the layout built at training time agree, and the two variants differ in length
(+ h·w + 2), so AGD puts them in separate (task, length) groups: no padding, and the share of style
steps that see the first frame is the share of clips selected.

LAYOUT_VERSION numbers these layouts (docs/formats.md "Unified vocabulary and task layouts"); token
shards carry it through their format version (pipeline.token_shards.TOKEN_FORMAT_VERSION), since
their len_ columns are layout lengths. Version 2: style's first-frame variant; avcont conditions on
the first frame (fp1 COMMIT tokens) and its audio (was: 5 frames and 5/T of the audio).

Within one (task, sequence length) every layout has the same prefix_len and text_start
(tests/pipeline/test_vocab_tasks.py checks every combination), so an AGD batch has scalar ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from videopoet.pipeline import vocab as V

LAYOUT_VERSION = 2
TEXT_SLOTS = V.TEXT_SLOTS
FP5_FRAMES = 5  # frames of condition in fp5 (paper A.2: K600 uses 5 condition frames)
AVCONT_FRAMES = 1  # avcont's condition: "the first frame and its corresponding audio" (paper §5.2)
STYLE_FIRST_FRAME_SHARE = 0.5  # clips whose style layout also takes the first frame (the paper gives no share)
STYLE_FIRST_FRAME_SEED = 0

TASK_NAMES: tuple[str, ...] = (
    "uncond", "t2v", "t2i", "i2v", "fp1", "fp5", "inpaint", "outpaint", "style", "a2v", "v2a", "avcont",
)
IMAGE_TASKS = ("t2i",)
VIDEO_OUTPUT_TASKS = tuple(t for t in TASK_NAMES if t != "v2a")
AUDIO_OUTPUT_TASKS = ("v2a", "avcont")

TextMode = Literal["required", "optional", "always", "none"]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    task_token: str
    text: TextMode
    condition: str | None  # row column giving the visual input tokens, if any
    description: str


TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        TaskSpec("uncond", "<task_video>", "none", None, "unconditional video"),
        TaskSpec("t2v", "<task_video>", "required", None, "text-to-video"),
        TaskSpec("t2i", "<task_video>", "always", None, "text-to-image (an image is a 1-frame video)"),
        TaskSpec("i2v", "<task_video>", "optional", "first_frame_tokens", "image-to-video"),
        TaskSpec("fp1", "<task_fp>", "optional", "fp1_tokens", "frame prediction from 1 frame"),
        TaskSpec("fp5", "<task_fp>", "optional", "fp5_tokens", "frame prediction from 5 frames"),
        TaskSpec("inpaint", "<task_inpaint>", "optional", "inpaint_tokens", "video inpainting"),
        TaskSpec("outpaint", "<task_outpaint>", "optional", "outpaint_tokens", "video outpainting"),
        TaskSpec("style", "<task_style>", "required", "style_tokens", "stylization from flow+depth and text"),
        TaskSpec("a2v", "<task_video>", "none", None, "audio-to-video"),
        TaskSpec("v2a", "<task_v2a>", "none", "video_tokens", "video-to-audio"),
        TaskSpec("avcont", "<task_avcont>", "none", "fp1_tokens", "audio-video continuation"),
    )
}
assert tuple(TASKS) == TASK_NAMES


class TaskNotServable(ValueError):
    """The row lacks what the task needs (e.g. no caption for t2v); sequence_lengths reports 0."""


@dataclass(frozen=True)
class Segment:
    """A run of positions in a layout: one special token, the text slots, or a visual/audio span."""

    name: str  # "<bov_o>", "text", "video", "condition", "first_frame", "audio", "audio_head", ...
    kind: Literal["special", "text", "visual", "audio"]
    start: int
    length: int
    output: bool  # part of the causal output (a loss target)


@dataclass
class Layout:
    tokens: np.ndarray  # int64 [L]: prefix then output; text slots hold the <text> placeholder
    prefix_len: int  # [0, prefix_len) bidirectional prefix; targets are tokens[prefix_len:]
    text_start: int | None  # first of TEXT_SLOTS positions for projected text embeddings, or None
    task: str = ""
    segments: tuple[Segment, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_targets(self) -> int:
        return len(self) - self.prefix_len

    def segment(self, name: str, output: bool | None = None) -> Segment:
        for s in self.segments:
            if s.name == name and (output is None or s.output == output):
                return s
        raise KeyError(f"layout of {self.task!r} has no segment {name!r}")

    def output_plan(self) -> list[tuple[int, int, int]]:
        """Per output position: (forced_id or -1, lo, hi). Sampling draws ids in [lo, hi) where forced is -1.

        Visual outputs may take any visual id; audio outputs only their RVQ level's ids (level-major).
        """
        plan: list[tuple[int, int, int]] = []
        for s in self.segments:
            if not s.output:
                continue
            if s.kind == "special":
                plan.append((int(self.tokens[s.start]), 0, 0))
            elif s.kind == "visual":
                plan += [(-1, *V.VISUAL_RANGE)] * s.length
            elif s.kind == "audio":
                frames = s.length // V.AUDIO_LEVELS
                for level in range(V.AUDIO_LEVELS):
                    plan += [(-1, *V.audio_level_range(level))] * frames
            else:
                raise ValueError(f"segment {s.name} of kind {s.kind} cannot be an output")
        assert len(plan) == self.num_targets
        return plan

    def describe(self) -> str:
        """One line per segment, e.g. for docs and debugging."""
        return "\n".join(
            f"{s.start:6d} +{s.length:<5d} {'out' if s.output else 'pre'} {s.kind:8s} {s.name}" for s in self.segments
        )


# ---------------------------------------------------------------------------------------------
# row access


def _where(row: dict) -> str:
    return f"row {row.get('key', '?')!r}"


def _get(row: dict, name: str) -> Any:
    value = row.get(name)
    if value is None:
        return None
    return value


def has_text(row: dict) -> bool:
    """A row has text when it carries an embedding with at least one valid slot."""
    if _get(row, "text_emb") is None:
        return False
    mask = _get(row, "text_mask")
    return mask is None or bool(np.asarray(mask, dtype=bool).any())


def _video_grid(row: dict) -> tuple[int, int, int, int, str]:
    where = _where(row)
    try:
        frames = int(row["num_frames"])
        fmt = str(row["video_format"])
        t, h, w = int(row["latent_t"]), int(row["latent_h"]), int(row["latent_w"])
    except KeyError as err:
        raise ValueError(f"{where}: missing column {err.args[0]!r}") from None
    if fmt not in ("square", "portrait"):
        raise ValueError(f"{where}: video_format={fmt!r}, expected 'square' or 'portrait'")
    if frames not in (1, 17, 41):
        raise ValueError(f"{where}: num_frames={frames}, expected 1, 17 or 41")
    if frames == 1 and fmt != "square":
        raise ValueError(f"{where}: images are 128x128 ('square'), got {fmt!r}")
    return frames, t, h, w, fmt


def _tokens(row: dict, name: str, size: int, required: bool = True) -> np.ndarray | None:
    value = _get(row, name)
    if value is None:
        if required:
            raise TaskNotServable(f"{_where(row)}: no {name}")
        return None
    arr = np.asarray(value).reshape(-1)
    if arr.size != size:
        raise ValueError(f"{_where(row)}: {name} has {arr.size} tokens, expected {size}")
    return arr


def _audio(row: dict) -> tuple[np.ndarray, int]:
    value = _get(row, "audio_tokens")
    frames = int(row.get("audio_frames") or 0)
    if value is None or frames == 0:
        raise TaskNotServable(f"{_where(row)}: no audio")
    arr = np.asarray(value).reshape(-1)
    if arr.size != V.AUDIO_LEVELS * frames:
        raise ValueError(f"{_where(row)}: audio_tokens has {arr.size} tokens, expected {V.AUDIO_LEVELS}x{frames}")
    return arr, frames


def audio_head_frames(audio_frames: int, num_frames: int) -> int:
    """Audio frames covering the first AVCONT_FRAMES video frames (avcont's audio condition): 6 of 106
    for 17 frames, 6 of 256 for 41."""
    return audio_frames * AVCONT_FRAMES // num_frames


def style_first_frame(row: dict) -> bool:
    """Whether this row's style layout takes the first frame (module docstring): the row's explicit
    `style_first_frame` when set, else a stable hash of its key; always False without first_frame_tokens."""
    if _get(row, "first_frame_tokens") is None:
        return False
    explicit = row.get("style_first_frame")
    if explicit is not None:
        return bool(explicit)
    digest = hashlib.blake2b(f"{STYLE_FIRST_FRAME_SEED}:{row.get('key', '')}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < STYLE_FIRST_FRAME_SHARE * 2**64


# ---------------------------------------------------------------------------------------------
# building


class _Builder:
    def __init__(self, task: str):
        self.task = task
        self.parts: list[np.ndarray] = []
        self.segments: list[Segment] = []
        self.pos = 0
        self.prefix_len: int | None = None
        self.text_start: int | None = None

    def _add(self, name: str, kind: str, ids: np.ndarray) -> None:
        self.segments.append(Segment(name, kind, self.pos, int(ids.size), self.prefix_len is not None))
        self.parts.append(ids)
        self.pos += int(ids.size)

    def special(self, name: str) -> None:
        self._add(name, "special", np.array([V.token_id(name)], dtype=np.int64))

    def text(self) -> None:
        self.special("<bot_i>")
        self.text_start = self.pos
        self._add("text", "text", np.full(TEXT_SLOTS, V.token_id("<text>"), dtype=np.int64))
        self.special("<eot_i>")

    def visual(self, name: str, codes: np.ndarray) -> None:
        self._add(name, "visual", V.visual_ids(codes))

    def audio(self, name: str, codes: np.ndarray, frames: int) -> None:
        self._add(name, "audio", V.audio_ids(codes, frames))

    def begin_output(self, name: str) -> None:
        self.special(name)
        self.prefix_len = self.pos

    def build(self) -> Layout:
        assert self.prefix_len is not None
        return Layout(np.concatenate(self.parts), self.prefix_len, self.text_start, self.task, tuple(self.segments))


def build_layout(task: str, row: dict) -> Layout:
    """The Fig. 3 layout of `task` for one token-shard row (python/numpy values, raw codes).

    Raises TaskNotServable when the row lacks what the task needs, ValueError when it is malformed.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r}: unknown; tasks: {', '.join(TASK_NAMES)}")
    spec = TASKS[task]
    frames, t, h, w, fmt = _video_grid(row)
    is_image = frames == 1
    if (task in IMAGE_TASKS) != is_image:
        raise TaskNotServable(f"{_where(row)}: task {task!r} needs {'an image' if task in IMAGE_TASKS else 'a video'}")
    video = _tokens(row, "video_tokens", t * h * w)
    text = has_text(row)
    if spec.text == "required" and not text:
        raise TaskNotServable(f"{_where(row)}: task {task!r} needs a caption embedding")

    b = _Builder(task)
    b.special("<bos>")
    b.special(spec.task_token)
    if spec.text in ("required", "always") or (spec.text == "optional" and text):
        b.text()
    if task == "i2v":
        b.special("<bov_i>")
        b.visual("first_frame", _tokens(row, "first_frame_tokens", h * w))
        b.special("<eov_i>")
    elif task == "v2a":
        b.special("<bov_i>")
        b.visual("video", video)
        b.special("<eov_i>")
    elif spec.condition is not None:
        if task == "style" and style_first_frame(row):
            b.special("<bov_i>")
            b.visual("first_frame", _tokens(row, "first_frame_tokens", h * w))
            b.special("<eov_i>")
        b.special("<bov_i>")
        b.visual("condition", _tokens(row, spec.condition, t * h * w))
        b.special("<eov_i>")
    if task in ("a2v", "v2a", "avcont"):
        audio, audio_frames = _audio(row)
    if task == "a2v":
        b.special("<boa_i>")
        b.audio("audio", audio, audio_frames)
        b.special("<eoa_i>")
    elif task == "avcont":
        head = audio_head_frames(audio_frames, frames)
        b.special("<boa_i>")
        b.audio("audio_head", audio.reshape(V.AUDIO_LEVELS, audio_frames)[:, :head].reshape(-1), head)
        b.special("<eoa_i>")

    if task == "v2a":
        b.begin_output("<boa_o>")
        b.audio("audio", audio, audio_frames)
        b.special("<eoa_o>")
        b.special("<eos>")
        return b.build()

    if fmt == "portrait":
        b.special("<res>")
    if frames == 41:
        b.special("<dur_41>")
    b.begin_output("<bov_o>")
    b.visual("video", video)
    if task == "t2i":
        return b.build()  # no <eov_o>/<eos>: the model keeps generating video after an image
    b.special("<eov_o>")
    if task == "avcont":
        b.special("<boa_o>")
        b.audio("audio", audio, audio_frames)
        b.special("<eoa_o>")
    b.special("<eos>")
    return b.build()


def sequence_lengths(row: dict) -> dict[str, int]:
    """Length of every task's layout for this row; 0 where the row cannot serve the task."""
    out: dict[str, int] = {}
    for task in TASK_NAMES:
        try:
            out[task] = len(build_layout(task, row))
        except TaskNotServable:
            out[task] = 0
    return out


def output_range(task: str) -> tuple[int, int]:
    """[lo, hi) of the ids a task's (first) generated modality uses."""
    return V.AUDIO_RANGE if task == "v2a" else V.VISUAL_RANGE
