"""Unified vocabulary and task layouts (paper §3.1, §4.1, Fig. 3, Table 1)."""

import itertools

import numpy as np
import pytest

from videopoet.pipeline import tasks as T
from videopoet.pipeline import vocab as V


def make_row(frames=17, fmt="square", text=True, audio=True, cond=True, seed=0, n_text=10, style_ff=False):
    rng = np.random.default_rng(seed)
    t = 1 + (frames - 1) // 4
    h, w = (28 if fmt == "portrait" else 16), 16
    codes = lambda n: rng.integers(0, V.NUM_VISUAL, n)  # noqa: E731
    af = int(frames / 8 * 50) if (audio and frames > 1) else 0
    row = {
        "key": f"k{seed}", "caption": "a cat" if text else "", "video_format": fmt, "num_frames": frames,
        "latent_t": t, "latent_h": h, "latent_w": w, "video_tokens": codes(t * h * w),
        "first_frame_tokens": None if frames == 1 else codes(h * w),
        "audio_tokens": rng.integers(0, 1024, 4 * af) if af else None, "audio_frames": af,
        "text_emb": np.ones((64, 8), np.float16) if text else None,
        "text_mask": (np.arange(64) < n_text) if text else None,
    }
    for name in ("fp1_tokens", "fp5_tokens", "inpaint_tokens", "outpaint_tokens", "style_tokens"):
        row[name] = codes(t * h * w) if (cond and frames > 1) else None
    if style_ff is not None:  # None: the key's hash decides (pipeline.tasks.style_first_frame)
        row["style_first_frame"] = style_ff
    return row


def test_vocabulary_constants_match_paper():
    assert V.NUM_SPECIAL == 256 and V.VISUAL_OFFSET == 256 and V.NUM_VISUAL == 2**18
    assert V.AUDIO_OFFSET == 262_400 and V.NUM_AUDIO == 4096 and V.VOCAB_SIZE == 266_496
    for name in ("<bos>", "<bot_i>", "<eot_i>", "<bov_i>", "<eov_i>", "<boa_i>", "<eoa_i>", "<res>",
                 "<bov_o>", "<eov_o>", "<boa_o>", "<eoa_o>", "<eos>"):
        assert 0 <= V.token_id(name) < V.NUM_SPECIAL
    assert len(set(V.TOKENS.values())) == len(V.TOKENS)
    with pytest.raises(KeyError, match="unknown special token"):
        V.token_id("<nope>")


def test_offsets_round_trip_and_disjoint_audio_levels():
    codes = np.array([0, 1, V.NUM_VISUAL - 1])
    ids = V.visual_ids(codes)
    assert ids.tolist() == [256, 257, 262_399]
    assert V.visual_codes(ids).tolist() == codes.tolist()
    audio = np.arange(8) % 1024  # 4 levels x 2 frames, level-major
    aids = V.audio_ids(audio, frames=2)
    assert aids.tolist() == [262_400, 262_401, 263_426, 263_427, 264_452, 264_453, 265_478, 265_479]
    assert (V.audio_codes(aids) == audio.reshape(4, 2)).all()
    assert aids.max() < V.VOCAB_SIZE
    with pytest.raises(ValueError, match="visual codes"):
        V.visual_ids([V.NUM_VISUAL])
    with pytest.raises(ValueError, match="audio codes"):
        V.audio_ids([1024, 0, 0, 0])


def seg_len(layout, name, output):
    return layout.segment(name, output).length


def test_token_counts_match_paper():
    row = make_row()
    # 17-frame 128x128 video: (5,16,16) -> 1,280 tokens
    assert seg_len(T.build_layout("t2v", row), "video", True) == 1280
    # 128x224 portrait: (5,28,16) -> 2,240
    assert seg_len(T.build_layout("t2v", make_row(fmt="portrait")), "video", True) == 2240
    # image: (1,16,16) -> 256
    assert seg_len(T.build_layout("t2i", make_row(frames=1)), "video", True) == 256
    # 2.125 s of audio: 106 frames x 4 levels -> 424
    assert seg_len(T.build_layout("v2a", row), "audio", True) == 424
    assert seg_len(T.build_layout("a2v", row), "audio", False) == 424


# (task, prefix_len, total length) for a square 17-frame clip with text, audio and conditions:
# prefix = <bos> <task> [<bot_i> 64 <eot_i>] [<bov_i> N <eov_i>] [<boa_i> N <eoa_i>] <bov_o>
EXPECTED_SQUARE_17 = {
    "uncond": (3, 3 + 1280 + 2),
    "t2v": (3 + 66, 3 + 66 + 1282),
    "i2v": (3 + 66 + 258, 3 + 66 + 258 + 1282),
    "fp1": (3 + 66 + 1282, 3 + 66 + 1282 + 1282),
    "fp5": (3 + 66 + 1282, 3 + 66 + 1282 + 1282),
    "inpaint": (3 + 66 + 1282, 3 + 66 + 1282 + 1282),
    "outpaint": (3 + 66 + 1282, 3 + 66 + 1282 + 1282),
    "style": (3 + 66 + 1282, 3 + 66 + 1282 + 1282),
    "a2v": (3 + 426, 3 + 426 + 1282),
    "v2a": (3 + 1282, 3 + 1282 + 426),  # ... <eov_i> <boa_o> | audio <eoa_o> <eos>
    # layout version 2: the first frame (fp1 COMMIT tokens) and its audio, 6 of 106 frames per level
    "avcont": (3 + 1282 + 4 * 6 + 2, 3 + 1282 + 26 + 1281 + 427),  # video <eov_o> <boa_o> audio <eoa_o> <eos>
}


@pytest.mark.parametrize("task", [t for t in T.TASK_NAMES if t != "t2i"])
def test_layout_lengths_square_17(task):
    lay = T.build_layout(task, make_row())
    assert (lay.prefix_len, len(lay)) == EXPECTED_SQUARE_17[task]


def test_special_tokens_and_order():
    tid = V.token_id
    lay = T.build_layout("t2v", make_row())
    toks = lay.tokens
    assert toks[0] == tid("<bos>") and toks[1] == tid("<task_video>") and toks[2] == tid("<bot_i>")
    assert lay.text_start == 3 and (toks[3:67] == tid("<text>")).all() and toks[67] == tid("<eot_i>")
    assert toks[lay.prefix_len - 1] == tid("<bov_o>")
    assert toks[-2] == tid("<eov_o>") and toks[-1] == tid("<eos>")
    assert (toks[lay.prefix_len:-2] >= V.VISUAL_OFFSET).all()
    # <res> only for portrait, <dur_41> only for 41 frames, right before <bov_o>
    assert tid("<res>") not in toks and tid("<dur_41>") not in toks
    portrait = T.build_layout("t2v", make_row(fmt="portrait", frames=41)).tokens
    assert (portrait == tid("<res>")).sum() == 1 and (portrait == tid("<dur_41>")).sum() == 1
    p = T.build_layout("t2v", make_row(fmt="portrait", frames=41))
    assert portrait[p.prefix_len - 3] == tid("<res>") and portrait[p.prefix_len - 2] == tid("<dur_41>")


def test_text_to_image_has_no_eos_and_no_end_of_video():
    lay = T.build_layout("t2i", make_row(frames=1))
    assert V.token_id("<eos>") not in lay.tokens and V.token_id("<eov_o>") not in lay.tokens
    assert lay.num_targets == 256 and (lay.tokens[lay.prefix_len:] >= V.VISUAL_OFFSET).all()
    # The image prefix equals the square 17-frame text-to-video prefix: the model sees an image as
    # the start of a video.
    assert (lay.tokens[: lay.prefix_len] == T.build_layout("t2v", make_row()).tokens[: lay.prefix_len]).all()
    # An image without caption still has text slots (null text): unconditional image generation.
    assert T.build_layout("t2i", make_row(frames=1, text=False)).text_start == 3


def test_absent_modalities_are_dropped_with_delimiters():
    tid = V.token_id
    lay = T.build_layout("uncond", make_row())
    for name in ("<bot_i>", "<eot_i>", "<boa_i>", "<eoa_i>", "<bov_i>", "<eov_i>", "<text>"):
        assert tid(name) not in lay.tokens
    assert lay.text_start is None
    no_text = T.build_layout("i2v", make_row(text=False))
    assert tid("<bot_i>") not in no_text.tokens and no_text.text_start is None
    assert len(T.build_layout("i2v", make_row())) - len(no_text) == 66
    # a row without text / audio / conditions cannot serve the tasks that need them
    lengths = T.sequence_lengths(make_row(text=False, audio=False, cond=False))
    for task in ("t2v", "style", "a2v", "v2a", "avcont", "fp1", "inpaint", "t2i"):
        assert lengths[task] == 0, task
    assert lengths["uncond"] > 0 and lengths["i2v"] > 0
    with pytest.raises(T.TaskNotServable, match="caption"):
        T.build_layout("t2v", make_row(text=False))


def test_row_payload_lands_in_the_sequence():
    row = make_row()
    lay = T.build_layout("avcont", row)
    video = lay.segment("video", True)
    assert (lay.tokens[video.start: video.start + video.length] == row["video_tokens"] + 256).all()
    cond = lay.segment("condition", False)
    assert (lay.tokens[cond.start: cond.start + cond.length] == row["fp1_tokens"] + 256).all()
    audio = lay.segment("audio", True)
    got = V.audio_codes(lay.tokens[audio.start: audio.start + audio.length])
    assert (got == row["audio_tokens"].reshape(4, -1)).all()
    head = lay.segment("audio_head", False)
    assert (V.audio_codes(lay.tokens[head.start: head.start + head.length]) == got[:, :6]).all()
    first = T.build_layout("i2v", row).segment("first_frame", False)
    assert first.length == 256


def all_rows():
    rows = []
    for frames, fmt, text, audio in itertools.product((17, 41), ("square", "portrait"), (0, 1), (0, 1)):
        rows.append(make_row(frames, fmt, bool(text), bool(audio)))
    rows += [make_row(frames=1, text=True), make_row(frames=1, text=False)]
    rows += [make_row(f, fmt, style_ff=True) for f, fmt in itertools.product((17, 41), ("square", "portrait"))]
    return rows


def test_lengths_equal_layouts_and_ids_in_range():
    for row in all_rows():
        lengths = T.sequence_lengths(row)
        assert set(lengths) == set(T.TASK_NAMES)
        for task, n in lengths.items():
            if n == 0:
                continue
            lay = T.build_layout(task, row)
            assert len(lay) == n and lay.tokens.dtype == np.int64
            assert lay.tokens.min() >= 0 and lay.tokens.max() < V.VOCAB_SIZE
            assert 0 < lay.prefix_len < len(lay)
            assert sum(s.length for s in lay.segments) == n
            plan = lay.output_plan()
            for (forced, lo, hi), tok in zip(plan, lay.tokens[lay.prefix_len:]):
                assert tok == forced if forced >= 0 else lo <= tok < hi


def test_task_and_length_fix_prefix_and_text_start():
    """AGD batches one (task, length) group: its prefix_len and text_start must be shared."""
    seen = {}
    for row in all_rows():
        for task, n in T.sequence_lengths(row).items():
            if n:
                lay = T.build_layout(task, row)
                key = (task, n)
                assert seen.setdefault(key, (lay.prefix_len, lay.text_start)) == (lay.prefix_len, lay.text_start), key
    assert len(seen) > 40


def test_malformed_rows_raise_clear_errors():
    row = make_row()
    row["video_tokens"] = row["video_tokens"][:-1]
    with pytest.raises(ValueError, match="video_tokens has 1279 tokens, expected 1280"):
        T.sequence_lengths(row)
    with pytest.raises(ValueError, match="unknown"):
        T.build_layout("t2x", make_row())
    bad = make_row()
    bad["num_frames"] = 9
    with pytest.raises(ValueError, match="num_frames=9"):
        T.build_layout("uncond", bad)


def test_synthetic_token_shard_rows_agree():
    from videopoet.pipeline.token_shards import synthetic_rows

    for row in synthetic_rows(12, seed=3, num_frames=(17, 41), formats=("square", "portrait")):
        for task in T.TASK_NAMES:
            n = row[f"len_{task}"]
            assert n == (len(T.build_layout(task, row)) if n else 0)


def test_style_takes_the_first_frame_on_a_fixed_subset_of_clips():
    """Paper §4.1: stylization conditions on the first frame "on a subset of steps"."""
    tid = V.token_id
    row = make_row(style_ff=True)
    lay = T.build_layout("style", row)
    first, cond = lay.segment("first_frame", False), lay.segment("condition", False)
    assert (lay.tokens[first.start: first.start + first.length] == row["first_frame_tokens"] + 256).all()
    assert lay.tokens[first.start - 1] == tid("<bov_i>") and lay.tokens[first.start + 256] == tid("<eov_i>")
    assert first.start + 256 < cond.start and lay.text_start == 3
    plain = T.build_layout("style", make_row(style_ff=False))
    # + <bov_i> 256 <eov_i> in the prefix, same output: another (task, length) group, no padding
    assert (lay.prefix_len, len(lay)) == (plain.prefix_len + 258, len(plain) + 258)
    assert (lay.tokens[lay.prefix_len:] == plain.tokens[plain.prefix_len:]).all()
    # without an explicit choice the key decides, stably, for STYLE_FIRST_FRAME_SHARE of the clips
    keys = [make_row(style_ff=None, seed=0) | {"key": f"clip-{i}"} for i in range(4000)]
    picked = [T.style_first_frame(r) for r in keys]
    assert picked == [T.style_first_frame(r) for r in keys]
    assert abs(sum(picked) / 4000 - T.STYLE_FIRST_FRAME_SHARE) < 5 * (0.25 / 4000) ** 0.5
    for r, p in zip(keys[:50], picked):
        assert T.sequence_lengths(r)["style"] == len(T.build_layout("style", r)) == (2891 if p else 2633)
    # no first frame to give (an image, or a row without first_frame_tokens): never the variant
    assert not T.style_first_frame(make_row(style_ff=True) | {"first_frame_tokens": None})


def test_avcont_conditions_on_the_first_frame_and_its_audio():
    """Paper §5.2: "provided with the first frame and its corresponding audio"."""
    for frames, audio_frames in ((17, 106), (41, 256)):
        row = make_row(frames)
        lay = T.build_layout("avcont", row)
        head = lay.segment("audio_head", False)
        assert head.length == 4 * T.audio_head_frames(audio_frames, frames) == 4 * 6  # 1/8 s of 50 Hz audio
        assert lay.segment("condition", False).length == row["fp1_tokens"].size
    assert T.LAYOUT_VERSION == 2


def test_trainer_refuses_token_shards_of_the_old_layouts(tmp_path):
    """A version-1 shard's len_ columns are the old style/avcont lengths: the AGD index refuses it by name."""
    import pyarrow.parquet as pq

    from videopoet.pipeline import token_shards as ts
    from videopoet.trainer.data import ShardIndex

    path = tmp_path / "old" / "part-0.parquet"
    ts.write_token_shard(path, ts.synthetic_rows(4, seed=1), row_group_size=4)
    table = pq.read_table(path)
    meta = dict(table.schema.metadata) | {ts.VERSION_KEY: b"1"}
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(ts.TokenShardError, match=r"part-0.parquet: token format version 1, this code reads 2 .*"
                                                 r"videopoet tokenize"):
        ShardIndex.build([tmp_path / "old"])
