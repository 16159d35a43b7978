"""Alternating Gradient Descent data: grouping, no padding, schedule, determinism, rank slices, CFG dropout.

No model runs here; the engine tests (test_train_engine.py) train on the same kind of shards.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from videopoet.pipeline import tasks as T
from videopoet.pipeline import token_shards as ts
from videopoet.trainer.data import AGDLoader, AGDSampler, DataConfig, ShardIndex


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
