"""Alternating Gradient Descent data: grouping, no padding, schedule, determinism, rank slices, CFG dropout.

No model runs here; the engine tests (test_train_engine.py) train on the same kind of shards.
"""

from __future__ import annotations

import math
import os
from collections import Counter

import numpy as np
import pytest

from videopoet.pipeline import tasks as T
from videopoet.pipeline import token_shards as ts
from videopoet.trainer.data import AGDLoader, AGDSampler, DataConfig, ShardIndex, StepPlan, collate, task_columns


@pytest.fixture(scope="module", autouse=True)
def index_dir(tmp_path_factory):
    """The memory-mapped AGD indexes of this module go to a temporary cache, not ~/.cache."""
    saved = os.environ.get("VIDEOPOET_INDEX_DIR")
    os.environ["VIDEOPOET_INDEX_DIR"] = str(tmp_path_factory.mktemp("agd_index"))
    yield
    if saved is None:
        os.environ.pop("VIDEOPOET_INDEX_DIR", None)
    else:
        os.environ["VIDEOPOET_INDEX_DIR"] = saved


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    # Small latent grids (2x2) keep layouts short; both formats and lengths give several groups per task.
    rows = ts.synthetic_rows(96, 7, num_frames=(17, 41), formats=("square", "portrait"), text_dim=16,
                             latent_hw=(2, 2), image_fraction=0.3)
    ts.write_token_shard(root / "a.parquet", rows[:50], row_group_size=8)
    ts.write_token_shard(root / "b.parquet", rows[50:], row_group_size=8)
    return root, rows


def _cfg(root, **kw) -> DataConfig:
    base = dict(shards=[str(root)], tokens_per_step=1024, cond_dropout=0.1, shuffle_window=2, seed=3)
    base.update(kw)
    return DataConfig(**base)


def test_index_groups_match_layouts_built_from_tokens(shards):
    root, rows = shards
    index = ShardIndex.build([root])
    expected = Counter()
    for r in rows:
        for task in T.TASK_NAMES:
            try:
                layout = T.build_layout(task, ts.decode_row(dict(r)))
            except T.TaskNotServable:
                continue
            expected[(task, len(layout))] += 1
    assert {(g.task, g.length): g.size for g in index.groups} == dict(expected)
    with pytest.raises(ts.TokenShardError, match="no len_ column"):
        ShardIndex.build([root], tasks=["t2v", "nosuchtask"])


def test_a_ragged_group_is_refused_not_padded(shards):
    """collate stacks rows only when every layout has the group's length: a row whose len_<task>
    column disagrees with its layout (a shard from another layout version) trips the check."""
    from videopoet.trainer.data import StepPlan, collate

    root, _ = shards
    loader = AGDLoader(_cfg(root), total_steps=4)
    b = loader.next_batch()
    rows = [r for r in ts.iter_token_rows([root]) if int(r[ts.len_column(b.task)]) == b.tokens.shape[1]][:2]
    assert len(rows) == 2
    plan = StepPlan(step=0, group=0, task=b.task, length=b.tokens.shape[1] + 1, global_batch=2, positions=[],
                    drop_text=np.zeros(2, bool))
    with pytest.raises(ValueError, match="len_.* column says"):
        collate(plan, rows, "ragged")


def test_batches_have_no_padding_and_fill_the_token_budget(shards):
    root, _ = shards
    loader = AGDLoader(_cfg(root), total_steps=40)
    seen = set()
    for _ in range(40):
        b = loader.next_batch()
        L = b.tokens.shape[1]
        assert b.padding_ratio == 0.0 and b.real_tokens == b.tokens.numel()
        assert b.tokens.shape[0] == b.global_batch == max(1, 1024 // L)
        assert b.tokens.shape[0] * L <= 1024 or b.tokens.shape[0] == 1
        assert (b.tokens >= 0).all() and (b.tokens < T.V.VOCAB_SIZE).all()
        if b.text_start is not None:
            assert b.text_emb.shape == (b.tokens.shape[0], 64, 16) and b.text_mask.shape == (b.tokens.shape[0], 64)
            assert (b.tokens[:, b.text_start:b.text_start + 64] == T.V.token_id("<text>")).all()
        seen.add(b.task)
    assert len(seen) >= 3


def test_group_frequencies_follow_the_two_stage_schedule(shards):
    """Image steps: 90% of the first 25% of steps, then 10%.

    The draws are deterministic given the seed, so this cannot flake; the bound says they behave as
    independent Bernoulli(p) draws should: |share - p| < 5 sigma, sigma = sqrt(p(1-p)/n)
    (a 5-sigma miss has probability ~6e-7 for a correct sampler, while a sampler ignoring the
    schedule is off by 0.4-0.8, i.e. >40 sigma).
    """
    root, _ = shards
    steps = 8000
    sampler = AGDSampler(ShardIndex.build([root]), _cfg(root), total_steps=steps)
    kinds = np.array([sampler.index.groups[sampler.group_for_step(s)].kind == "image" for s in range(steps)])
    for lo, hi, p in ((0, steps // 4, 0.9), (steps // 4, steps, 0.1)):
        share = kinds[lo:hi].mean()
        sigma = math.sqrt(p * (1 - p) / (hi - lo))
        assert abs(share - p) < 5 * sigma, (lo, hi, share, p)


def test_task_weights_set_step_shares_within_a_modality(shards):
    root, _ = shards
    steps = 6000
    cfg = _cfg(root, tasks=["t2v", "uncond", "t2i"], task_weights={"t2v": 3.0, "uncond": 1.0},
               stage_ends=[1.0], stage_image_share=[0.2])
    sampler = AGDSampler(ShardIndex.build([root], cfg.tasks), cfg, total_steps=steps)
    tasks = Counter(sampler.index.groups[sampler.group_for_step(s)].task for s in range(steps))
    for task, p in (("t2i", 0.2), ("t2v", 0.8 * 0.75), ("uncond", 0.8 * 0.25)):
        sigma = math.sqrt(p * (1 - p) / steps)
        assert abs(tasks[task] / steps - p) < 5 * sigma, (task, tasks[task] / steps, p)
    # a task weight of 0 removes the task; the probabilities of every step sum to 1
    cfg0 = _cfg(root, tasks=["t2v", "uncond"], task_weights={"uncond": 0.0})
    s0 = AGDSampler(ShardIndex.build([root], cfg0.tasks), cfg0, total_steps=100)
    assert {s0.index.groups[s0.group_for_step(s)].task for s in range(200)} == {"t2v"}
    assert np.isclose(s0.group_probabilities(7).sum(), 1.0)


def test_every_draw_derives_from_seed_and_step(shards):
    root, _ = shards
    index = ShardIndex.build([root])
    a, b = AGDSampler(index, _cfg(root), 50), AGDSampler(index, _cfg(root), 50)
    plans_a = []
    for s in range(30):
        p = a.plan(s)
        plans_a.append(p)
        a.advance(p)
    # resume from a state_dict at step 12, and from a replay of (seed, step) alone: identical draws
    b.replay(12)
    assert b.state_dict()["consumed"] == [int(c) for c in _consumed_after(index, root, 12)]
    for s in range(12, 30):
        p = b.plan(s)
        assert (p.group, p.positions, p.drop_text.tolist()) == (
            plans_a[s].group, plans_a[s].positions, plans_a[s].drop_text.tolist()
        )
        b.advance(p)
    assert b.state_dict() == a.state_dict()
    other = AGDSampler(index, _cfg(root, seed=4), 50)
    assert [other.group_for_step(s) for s in range(30)] != [p.group for p in plans_a]
    # a state saved for other data is refused
    state = a.state_dict()
    state["fingerprint"] = "0" * 16
    with pytest.raises(ValueError, match="other token shards"):
        b.load_state_dict(state)


def _consumed_after(index, root, steps):
    s = AGDSampler(index, _cfg(root), 50)
    for k in range(steps):
        s.advance(s.plan(k))
    return s.consumed


def test_ranks_take_disjoint_slices_of_the_same_global_batch(shards):
    root, _ = shards
    index = ShardIndex.build([root])
    cfg = _cfg(root, batch_multiple=2)
    single, duo = AGDSampler(index, cfg, 40), AGDSampler(index, cfg, 40)
    for s in range(20):
        full = single.plan(s, 0, 1)
        r0, r1 = duo.plan(s, 0, 2), duo.plan(s, 1, 2)
        assert full.global_batch == r0.global_batch == r1.global_batch and full.global_batch % 2 == 0
        assert r0.positions + r1.positions == full.positions
        assert not set(r0.positions) & set(r1.positions) or len(set(full.positions)) < len(full.positions)
        assert np.concatenate([r0.drop_text, r1.drop_text]).tolist() == full.drop_text.tolist()
        single.advance(full)
        duo.advance(r0)


def test_each_epoch_visits_every_example_once(shards):
    root, _ = shards
    index = ShardIndex.build([root])
    for window in (1, 2, 1000):
        sampler = AGDSampler(index, _cfg(root, shuffle_window=window), 10)
        for gi, g in enumerate(index.groups):
            first = [sampler.member_at(gi, p) for p in range(g.size)]
            second = [sampler.member_at(gi, g.size + p) for p in range(g.size)]
            assert sorted(first) == list(range(g.size)) == sorted(second)
            if g.size > 8:
                assert first != second  # each epoch reshuffles


def test_condition_dropout_zeroes_the_text_mask_at_the_configured_rate(shards):
    root, rows = shards
    p = 0.3
    loader = AGDLoader(_cfg(root, tasks=["t2i", "t2v"], cond_dropout=p), total_steps=200)
    by_key = {r["key"]: r for r in rows}
    dropped = total = 0
    for _ in range(120):
        plan = loader.sampler.plan(loader.sampler.step)
        batch = loader.batch_for(plan)
        loader.sampler.advance(plan)
        for i, pos in enumerate(plan.positions):
            key = loader.store.get(*pos)["key"]
            row_mask = by_key[key]["text_mask"]
            if plan.drop_text[i] or row_mask is None:
                assert not batch.text_mask[i].any() and not batch.text_emb[i].any()
            else:
                assert batch.text_mask[i].numpy().tolist() == list(row_mask)
                assert np.allclose(batch.text_emb[i].numpy(), by_key[key]["text_emb"].astype(np.float32))
            dropped += int(plan.drop_text[i])
            total += 1
        # the layout itself never changes with dropout (same tokens, prefix and text slots)
    sigma = math.sqrt(p * (1 - p) / total)
    assert abs(dropped / total - p) < 5 * sigma, (dropped, total)


# -- loader scaling: lanes, column projection, memory-mapped index, prefetch ------------------------


def _tiled(rows: list[dict], n: int, tag: str) -> list[dict]:
    """n rows cycling through `rows` with fresh keys (cheap large synthetic shards)."""
    return [{**rows[i % len(rows)], "key": f"{tag}{i:06d}"} for i in range(n)]


@pytest.fixture(scope="module")
def big_shards(tmp_path_factory):
    """Image rows and video rows in separate shards (as image and video data sets are tokenized),
    row groups of 8: 2,048 images and 1,024 videos, so 64 lanes own 4 / 2 row groups each."""
    root = tmp_path_factory.mktemp("big")
    images = ts.synthetic_rows(64, 21, text_dim=16, latent_hw=(2, 2), image_fraction=1.0)
    videos = ts.synthetic_rows(64, 22, num_frames=(17,), text_dim=16, latent_hw=(2, 2), image_fraction=0.0,
                               caption_fraction=1.0)
    ts.write_token_shard(root / "images.parquet", _tiled(images, 2048, "img"), row_group_size=8)
    ts.write_token_shard(root / "videos.parquet", _tiled(videos, 1024, "vid"), row_group_size=8)
    return root


def _rank_read_ratio(root, world: int, rank: int, steps: int, **kw) -> tuple[float, int]:
    """Rows read per row used by one simulated rank over `steps` steps (its own reader and cache)."""
    cfg = _cfg(root, tasks=["t2i", "t2v"], tokens_per_step=0, **kw)
    index = ShardIndex.build([root], cfg.tasks)
    lengths = {g.task: g.length for g in index.groups}
    cfg.tokens_per_step = 128 * lengths["t2i"]  # 2 t2i rows per rank at 64 ranks; t2v: 64 x 7 rows
    loader = AGDLoader(cfg, total_steps=steps, index=index, prefetch=False)
    for _ in range(steps):
        b = loader.next_batch(rank, world)
        assert b.tokens.shape[0] == b.global_batch // world
    st = loader.store.stats()
    return st["rows_read_per_row_used"], st["rows_used"]


def test_lanes_read_at_most_two_rows_per_row_used_at_64_ranks(big_shards):
    """Before (one stream, window 16): a rank's 2 rows of a step come from 2 row groups of 8 rows.
    After (64 lanes, window 1): each rank walks its own row groups and uses all of their rows."""
    for rank in (0, 21, 63):
        after, used = _rank_read_ratio(big_shards, 64, rank, 24, lanes=64, shuffle_window=1, batch_multiple=64)
        assert used > 0 and after <= 2.0, (rank, after)
    before, _ = _rank_read_ratio(big_shards, 64, 0, 24, lanes=1, shuffle_window=16, batch_multiple=64)
    assert before > 3.0, before


def test_lanes_give_the_same_global_batches_at_every_world_size_dividing_them(shards):
    root, _ = shards
    index = ShardIndex.build([root])
    cfg = _cfg(root, lanes=4, batch_multiple=4, shuffle_window=1)
    one, two, four = (AGDSampler(index, cfg, 40) for _ in range(3))
    for s in range(20):
        full = one.plan(s, 0, 1)
        assert full.global_batch % 4 == 0
        assert two.plan(s, 0, 2).positions + two.plan(s, 1, 2).positions == full.positions
        assert sum((four.plan(s, r, 4).positions for r in range(4)), []) == full.positions
        for sampler in (one, two, four):
            sampler.advance(full)
    replayed = AGDSampler(index, cfg, 40)
    replayed.replay(20)
    assert replayed.state_dict() == one.state_dict()
    # every lane is an endless sequence of epochs over its own contiguous share of the group
    for gi, g in enumerate(index.groups):
        B = one.global_batch(gi)
        b = B // 4
        for lane in range(4):
            lo, hi = one.lane_range(gi, lane)
            n = hi - lo
            seq = [one.member_at(gi, (q // b) * B + lane * b + q % b, B) for q in range(2 * n)]
            assert sorted(seq[:n]) == list(range(lo, hi)) == sorted(seq[n:])


def test_batches_read_only_the_columns_their_task_needs(shards):
    """Projected rows (no text_emb for tasks without text, no unused conditions) give the same batches."""
    root, _ = shards
    loader = AGDLoader(_cfg(root), total_steps=4, prefetch=False)
    for gi, g in enumerate(loader.index.groups):
        n = min(g.size, 3)
        plan = StepPlan(0, gi, g.task, g.length, n, [g.position(i) for i in range(n)], np.zeros(n, bool))
        full = collate(plan, loader.store.rows(plan.positions, None), g.name)
        part = loader.batch_for(plan)
        assert (part.tokens == full.tokens).all() and part.text_start == full.text_start
        if full.text_emb is not None:
            assert (part.text_emb == full.text_emb).all() and (part.text_mask == full.text_mask).all()
    assert "text_emb" not in task_columns("uncond") and "text_emb" in task_columns("t2v")


def test_index_memory_does_not_grow_with_the_sample_count(tmp_path):
    rows = ts.synthetic_rows(32, 5, num_frames=(17,), text_dim=16, latent_hw=(2, 2), image_fraction=0.3)
    sizes = {}
    for n in (1_000, 10_000):
        folder = tmp_path / f"n{n:06d}"  # same path length: the heap holds the file names
        ts.write_token_shard(folder / "part-0.parquet", _tiled(rows, n, "k"), row_group_size=128)
        index = ShardIndex.build([folder], cache_dir=tmp_path / "cache")
        assert all(isinstance(g.members, np.memmap) for g in index.groups)
        assert sum(g.size for g in index.groups) > n
        sizes[n] = (index.ram_bytes(), index.disk_bytes())
    assert sizes[1_000][0] == sizes[10_000][0]  # in the heap: O(groups + files)
    assert sizes[10_000][1] > 5 * sizes[1_000][1]  # the per-sample arrays are on disk


def _batches(loader, steps, rank=0, world=1):
    out = []
    for _ in range(steps):
        b = loader.next_batch(rank, world)
        out.append((b.group, b.tokens.clone(), None if b.text_mask is None else b.text_mask.clone()))
    return out


def _same(a, b) -> bool:
    return all(x[0] == y[0] and (x[1] == y[1]).all() and ((x[2] is None and y[2] is None) or (x[2] == y[2]).all())
               for x, y in zip(a, b)) and len(a) == len(b)


def test_prefetch_gives_the_same_batches_and_resumes_exactly(shards):
    root, _ = shards
    cfg = _cfg(root, batch_multiple=2)
    sync = _batches(AGDLoader(cfg, 30, prefetch=False), 12, 1, 2)
    ahead = AGDLoader(cfg, 30, prefetch=True)
    assert _same(_batches(ahead, 12, 1, 2), sync)
    ahead.close()
    # resume with prefetch on: a new loader from a state saved at step 5 (a batch for step 5 was in flight)
    first = AGDLoader(cfg, 30, prefetch=True)
    assert _same(_batches(first, 5, 1, 2), sync[:5])
    state = first.state_dict()
    resumed = AGDLoader(cfg, 30, prefetch=True)
    resumed.load_state_dict(state)
    assert _same(_batches(resumed, 7, 1, 2), sync[5:])
    # rewinding the same loader drops its prefetched batch and rebuilds from the saved position
    first.next_batch(1, 2)
    first.load_state_dict(state)
    assert _same(_batches(first, 7, 1, 2), sync[5:])
    assert first.step == 12
