"""The unified vocabulary (paper §3.1, Table 1): special and task ids, visual codes, audio codes.

    ids 0 .. 255              special tokens (Table 1) and task tokens
    ids 256 .. 262,399        MAGVIT-v2 visual codes (2^18)            id = 256 + code
    ids 262,400 .. 266,495    SoundStream audio codes, 4 RVQ levels     id = 262,400 + 1024*level + code
                              of 1,024 each, disjoint per level (paper §3.1)

Text never enters as ids: T5 embeddings are projected into TEXT_SLOTS reserved positions after
`<bot_i>`; those positions hold the placeholder id `<text>` in the token sequence.

The special ids below are part of the checkpoint format: never renumber one, only add new ones in
the unused range. Token shards store raw codes; offsets are applied here, by pipeline.tasks.
"""

from __future__ import annotations

import numpy as np

NUM_SPECIAL = 256
NUM_VISUAL = 262_144  # 2^18, MAGVIT-v2 LFQ
VISUAL_OFFSET = NUM_SPECIAL
AUDIO_CODES_PER_LEVEL = 1024
AUDIO_LEVELS = 4
NUM_AUDIO = AUDIO_CODES_PER_LEVEL * AUDIO_LEVELS
AUDIO_OFFSET = VISUAL_OFFSET + NUM_VISUAL  # 262,400
VOCAB_SIZE = AUDIO_OFFSET + NUM_AUDIO  # 266,496
TEXT_SLOTS = 64  # at most 64 T5 tokens (paper §3.1)

# Table 1 (plus the few the table leaves implicit, marked *). Ids 0..31: delimiters, 32..63: tasks.
SPECIAL_TOKENS: dict[str, int] = {
    "<pad>": 0,  # * never in a training sequence (AGD needs no padding); kept so id 0 means nothing
    "<bos>": 1,
    "<eos>": 2,
    "<bot_i>": 3,
    "<eot_i>": 4,
    "<bov_i>": 5,
    "<eov_i>": 6,
    "<boa_i>": 7,
    "<eoa_i>": 8,
    "<bov_o>": 9,
    "<eov_o>": 10,
    "<boa_o>": 11,
    "<eoa_o>": 12,
    "<res>": 13,  # output is 128x224 portrait; absent means 128x128 (paper §4.1)
    "<dur_41>": 14,  # * output is 41 frames (5.125 s); absent means 17 frames (the paper's "special
    #                  conditioning tokens that indicate what format of video should be generated")
    "<text>": 15,  # * placeholder id in the TEXT_SLOTS positions; the model overwrites its embedding
}

# One <task> token per kind of output relation (paper §4.1: "a unique token for each unique output";
# t2v, i2v and unconditional generation share one). Which task names use which is in pipeline.tasks.
TASK_TOKENS: dict[str, int] = {
    "<task_video>": 32,  # generate a video (or image) from text / first frame / audio / nothing
    "<task_fp>": 33,  # frame prediction: continue a video from COMMIT-encoded first frames
    "<task_inpaint>": 34,
    "<task_outpaint>": 35,
    "<task_style>": 36,  # stylization from flow+depth tokens and text
    "<task_v2a>": 37,  # video-to-audio
    "<task_avcont>": 38,  # audio-video continuation
}

TOKENS: dict[str, int] = {**SPECIAL_TOKENS, **TASK_TOKENS}
ID_TO_NAME: dict[int, str] = {v: k for k, v in TOKENS.items()}
assert len(ID_TO_NAME) == len(TOKENS) and max(TOKENS.values()) < NUM_SPECIAL


def token_id(name: str) -> int:
    """Id of a special or task token by its Table 1 name, e.g. token_id("<bov_o>")."""
    try:
        return TOKENS[name]
    except KeyError:
        raise KeyError(f"unknown special token {name!r}; known: {', '.join(TOKENS)}") from None


def visual_ids(codes) -> np.ndarray:
    """Raw MAGVIT-v2 codes (0..262,143) -> vocabulary ids (int64)."""
    arr = np.asarray(codes, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= NUM_VISUAL):
        raise ValueError(f"visual codes must lie in 0..{NUM_VISUAL - 1}, got {arr.min()}..{arr.max()}")
    return arr + VISUAL_OFFSET


def audio_ids(codes, frames: int | None = None) -> np.ndarray:
    """Raw SoundStream codes, level-major [4*F] (all of level 0, then level 1, ...) -> vocabulary ids.

    Level k's codes map to AUDIO_OFFSET + 1024*k + code, so the levels never share an id.
    """
    arr = np.asarray(codes, dtype=np.int64).reshape(-1)
    if arr.size % AUDIO_LEVELS:
        raise ValueError(f"audio codes: {arr.size} values is not a multiple of {AUDIO_LEVELS} levels")
    f = arr.size // AUDIO_LEVELS
    if frames is not None and f != frames:
        raise ValueError(f"audio codes: {arr.size} values, expected {AUDIO_LEVELS}x{frames}")
    if arr.size and (arr.min() < 0 or arr.max() >= AUDIO_CODES_PER_LEVEL):
        raise ValueError(f"audio codes must lie in 0..{AUDIO_CODES_PER_LEVEL - 1}, got {arr.min()}..{arr.max()}")
    level = np.repeat(np.arange(AUDIO_LEVELS, dtype=np.int64), f)
    return arr + AUDIO_OFFSET + AUDIO_CODES_PER_LEVEL * level


def visual_codes(ids) -> np.ndarray:
    """Vocabulary ids -> raw visual codes (inverse of visual_ids); raises on a non-visual id."""
    arr = np.asarray(ids, dtype=np.int64)
    if arr.size and (arr.min() < VISUAL_OFFSET or arr.max() >= AUDIO_OFFSET):
        raise ValueError(f"ids {arr.min()}..{arr.max()} are not all visual ({VISUAL_OFFSET}..{AUDIO_OFFSET - 1})")
    return arr - VISUAL_OFFSET


def audio_codes(ids) -> np.ndarray:
    """Vocabulary ids, level-major [4*F] -> raw codes [4, F] (inverse of audio_ids)."""
    arr = np.asarray(ids, dtype=np.int64).reshape(AUDIO_LEVELS, -1)
    lo = AUDIO_OFFSET + AUDIO_CODES_PER_LEVEL * np.arange(AUDIO_LEVELS)[:, None]
    codes = arr - lo
    if codes.size and (codes.min() < 0 or codes.max() >= AUDIO_CODES_PER_LEVEL):
        raise ValueError("ids are not level-major audio ids (a level holds another level's or a non-audio id)")
    return codes


def audio_level_range(level: int) -> tuple[int, int]:
    """[lo, hi) of the ids of RVQ level `level`."""
    lo = AUDIO_OFFSET + AUDIO_CODES_PER_LEVEL * level
    return lo, lo + AUDIO_CODES_PER_LEVEL


VISUAL_RANGE = (VISUAL_OFFSET, AUDIO_OFFSET)
AUDIO_RANGE = (AUDIO_OFFSET, VOCAB_SIZE)


def describe(token: int) -> str:
    """Human name of one id, for debugging layouts: '<bov_o>', 'v:1234', 'a1:17'."""
    token = int(token)
    if token < NUM_SPECIAL:
        return ID_TO_NAME.get(token, f"<unused_{token}>")
    if token < AUDIO_OFFSET:
        return f"v:{token - VISUAL_OFFSET}"
    if token < VOCAB_SIZE:
        level, code = divmod(token - AUDIO_OFFSET, AUDIO_CODES_PER_LEVEL)
        return f"a{level}:{code}"
    raise ValueError(f"id {token} outside the vocabulary (0..{VOCAB_SIZE - 1})")
