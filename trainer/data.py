"""Alternating Gradient Descent (AGD) over token shards: one (task, length) group per step, no padding.

VideoPoet §4.2 (after IMP, Akbari et al. 2023): tasks are grouped by sequence length and each
optimisation step draws one group, so every sequence in a batch has the same length and the same
prefix layout; nothing is padded. The batch size comes from a tokens-per-step budget
(B = budget // L, rounded down to a multiple of the data-parallel world size, at least one per
rank), so an image step (256 visual tokens) carries ~5x the examples of a 17-frame video step.

How a step is decided (identically on every rank, with no communication):
  * the group: drawn from `group_probabilities(step)` with an RNG seeded by (seed, "group", step).
    Probabilities = modality share of the current stage (paper: 90% image steps for the first 25%
    of steps, then 90% video) x task weight within the modality x the group's share of its task's
    examples. A modality with no data gives its share to the other.
  * the examples: the next B positions of that group's example stream. The stream is a sequence of
    epochs; each epoch permutes the group's Parquet row groups with (seed, group, epoch), then
    shuffles rows inside windows of `shuffle_window` row groups. Reading stays sequential (one or
    two row groups per group in flight) while batches still mix `shuffle_window` row groups; a
    window at least as large as the group is a full shuffle. The stream position of every group
    is the sampler's state (`state_dict`), itself a function of (seed, steps so far):
    `replay(step)` recomputes it from scratch.
  * condition dropout for classifier-free guidance: each example of the global batch has its text
    mask zeroed with probability `cond_dropout`, drawn from (seed, "dropout", step) over the
    *global* batch, so the decision does not depend on the number of ranks.
Data-parallel rank r of W takes the r-th contiguous slice of the step's global batch.

Lanes (`lanes`, default 1 = the single stream above): with M lanes each group's members (sorted in
file order) are split into M contiguous shares, each its own stream of epochs as above (draws keyed
by the lane too), and the global batch B (a multiple of M) is lane-major: positions m*B/M .. (m+1)*B/M
of a step are the next B/M examples of lane m. Rank r of W (W dividing M) therefore takes the lanes
r*M/W .. (r+1)*M/W, and each lane walks its row groups in order across the steps: a rank reads each
row group once and uses all of its group's rows from it (with shuffle_window 1 it holds one row
group per lane and group), instead of a few rows of each of shuffle_window row groups per step.
Batches still mix M regions of the data set; the batches do not depend on W (W dividing M).

Loading (AGDLoader): rows are read with only the columns the task needs (data_reader.task_columns:
no text embeddings for tasks without text) by a bounded row-group cache (cache_row_groups), and the
next step's batch is built on a background thread while the current one trains. The index
(data_index.ShardIndex) is memory-mapped from a per-data-set cache: O(groups) in the rank's heap.

Why not Ray Data: it has no length bucketing (ray-project/ray#49844); AGD needs random access by
(group, position) for exact resume, which a plain reader of Parquet row groups gives directly.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from videopoet.pipeline import token_shards as ts
from videopoet.trainer.data_index import Group, ShardIndex
from videopoet.trainer.data_reader import RowReader, task_columns

RowStore = RowReader  # the former name
__all__ = ["AGDLoader", "AGDSampler", "Batch", "DataConfig", "Group", "RowReader", "RowStore", "ShardIndex",
           "StepPlan", "collate", "describe", "task_columns"]

_TAG_GROUP, _TAG_BLOCKS, _TAG_ROWS, _TAG_DROPOUT = 1, 2, 3, 4


@dataclass
class DataConfig:
    shards: list[str] = field(default_factory=list)  # token-shard directories or files
    tasks: list[str] = field(default_factory=list)  # empty: every task the shards can serve
    task_weights: dict[str, float] = field(default_factory=dict)  # relative step share within a modality (default 1)
    tokens_per_step: int = 16_384  # global token budget of one step (all ranks together)
    # global batch is a multiple of lcm(this, world size): same batches at any world size dividing it
    batch_multiple: int = 1
    stage_ends: list[float] = field(default_factory=lambda: [0.25, 1.0])  # fractions of max_steps
    stage_image_share: list[float] = field(default_factory=lambda: [0.9, 0.1])  # share of image steps per stage
    cond_dropout: float = 0.1  # probability of dropping the text condition (CFG)
    shuffle_window: int = 16  # row groups shuffled together (>= group size: full shuffle)
    cache_row_groups: int = 32  # decoded row groups kept per rank
    # independent read streams per group: rank r of W reads lanes [r*lanes/W, (r+1)*lanes/W) (1: one stream)
    lanes: int = 1
    seed: int = 0

    def validate(self) -> None:
        if self.tokens_per_step < 1:
            raise ValueError(f"tokens_per_step={self.tokens_per_step}: must be >= 1")
        if len(self.stage_ends) != len(self.stage_image_share) or not self.stage_ends:
            raise ValueError("stage_ends and stage_image_share must be non-empty and of equal length")
        if list(self.stage_ends) != sorted(self.stage_ends) or self.stage_ends[-1] < 1.0:
            raise ValueError(f"stage_ends={self.stage_ends}: must increase and end at 1.0 or later")
        if not all(0.0 <= s <= 1.0 for s in self.stage_image_share):
            raise ValueError(f"stage_image_share={self.stage_image_share}: each share must lie in [0, 1]")
        if not 0.0 <= self.cond_dropout <= 1.0:
            raise ValueError(f"cond_dropout={self.cond_dropout}: must lie in [0, 1]")
        if any(w < 0 for w in self.task_weights.values()):
            raise ValueError(f"task_weights={self.task_weights}: weights must be >= 0")
        if min(self.shuffle_window, self.cache_row_groups, self.batch_multiple, self.lanes) < 1:
            raise ValueError("shuffle_window, cache_row_groups, batch_multiple and lanes must be >= 1")


def _rng(seed: int, *words: int) -> np.random.Generator:
    """A generator keyed by (seed, words...): stateless, so any step's draw can be recomputed alone."""
    return np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32, *words])


@dataclass
class StepPlan:
    """What one step trains on: the group and this rank's slice of the global batch."""

    step: int
    group: int
    task: str
    length: int
    global_batch: int
    positions: list[tuple[int, int, int]]  # (file, row group, row) of this rank's examples
    drop_text: np.ndarray  # bool [local batch]


@dataclass
class Batch:
    task: str
    group: str
    tokens: Any  # torch.LongTensor [B, L]
    prefix_len: int
    text_start: int | None
    text_emb: Any  # torch.FloatTensor [B, 64, D] or None
    text_mask: Any  # torch.BoolTensor [B, 64] or None
    global_batch: int
    real_tokens: int  # tokens that come from layouts (the rest would be padding)
    dropped_text: int

    @property
    def padding_ratio(self) -> float:
        return 1.0 - self.real_tokens / max(1, self.tokens.numel())


class AGDSampler:
    """Decides, for every step, the group and the examples; holds the stream positions (resumable)."""

    def __init__(self, index: ShardIndex, cfg: DataConfig, total_steps: int):
        self.index, self.cfg, self.total_steps = index, cfg, max(1, total_steps)
        self.consumed = np.zeros(len(index.groups), dtype=np.int64)
        self.step = 0
        self._epoch_cache: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray, list]] = OrderedDict()
        self._window_cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._base = self._base_weights()

    # -- group choice ------------------------------------------------------------------------
    def _base_weights(self) -> dict[str, np.ndarray]:
        """Per modality: weights over all groups (task weight x the group's share of its task)."""
        out = {}
        for kind in ("image", "video"):
            w = np.zeros(len(self.index.groups))
            members = [i for i, g in enumerate(self.index.groups) if g.kind == kind]
            tasks = sorted({self.index.groups[i].task for i in members})
            task_w = {t: float(self.cfg.task_weights.get(t, 1.0)) for t in tasks}
            total_task_w = sum(task_w.values())
            for t in tasks:
                if task_w[t] == 0:
                    continue
                in_task = [i for i in members if self.index.groups[i].task == t]
                n = sum(self.index.groups[i].size for i in in_task)
                for i in in_task:
                    w[i] = task_w[t] / total_task_w * self.index.groups[i].size / n
            out[kind] = w
        if not any(w.sum() > 0 for w in out.values()):
            raise ValueError(f"task_weights={self.cfg.task_weights} leave no task with a non-zero weight")
        return out

    def stage(self, step: int) -> int:
        frac = step / self.total_steps
        for i, end in enumerate(self.cfg.stage_ends):
            if frac < end:
                return i
        return len(self.cfg.stage_ends) - 1

    def group_probabilities(self, step: int) -> np.ndarray:
        image_share = self.cfg.stage_image_share[self.stage(step)]
        img, vid = self._base["image"], self._base["video"]
        if img.sum() == 0:
            image_share = 0.0
        elif vid.sum() == 0:
            image_share = 1.0
        p = image_share * img + (1.0 - image_share) * vid
        return p / p.sum()

    def group_for_step(self, step: int) -> int:
        p = self.group_probabilities(step)
        return int(np.searchsorted(np.cumsum(p), _rng(self.cfg.seed, _TAG_GROUP, step).random() * p.sum(),
                                   side="right").clip(0, len(p) - 1))

    def global_batch(self, group: int, world_size: int = 1) -> int:
        """B = budget // L rounded down to a multiple of lcm(batch_multiple, world, lanes), at least that multiple."""
        m = math.lcm(self.cfg.batch_multiple, world_size, self.cfg.lanes)
        b = self.cfg.tokens_per_step // self.index.groups[group].length
        return max(m, b - b % m)

    # -- example stream ----------------------------------------------------------------------
    def lane_range(self, gi: int, lane: int) -> tuple[int, int]:
        """Members [lo, hi) of group gi that lane `lane` streams: a contiguous share of the sorted members
        (a group smaller than `lanes` gives each lane one member, cycling)."""
        n, lanes = self.index.groups[gi].size, self.cfg.lanes
        if n >= lanes:
            return lane * n // lanes, (lane + 1) * n // lanes
        return lane % n, lane % n + 1

    def _words(self, lane: int) -> tuple[int, ...]:
        return () if self.cfg.lanes == 1 else (self.cfg.lanes, lane)  # lanes=1: the single-stream draws

    def _epoch(self, gi: int, lane: int, epoch: int):
        """(window start offsets, window sizes, windows) for one epoch of one lane of group gi."""
        key = (gi, lane, epoch)
        if key in self._epoch_cache:
            self._epoch_cache.move_to_end(key)
            return self._epoch_cache[key]
        g = self.index.groups[gi]
        lo, hi = self.lane_range(gi, lane)
        bs = g.block_starts
        i0 = int(np.searchsorted(bs, lo, side="right")) - 1
        i1 = int(np.searchsorted(bs, hi, side="left"))
        starts = np.array(bs[max(i0, 0):i1], dtype=np.int64)
        starts[0] = lo
        sizes = np.diff(np.r_[starts, hi])
        order = _rng(self.cfg.seed, _TAG_BLOCKS, g.key, epoch, *self._words(lane)).permutation(starts.size)
        w = self.cfg.shuffle_window
        windows = [order[i:i + w] for i in range(0, order.size, w)]
        win_sizes = np.array([sizes[win].sum() for win in windows])
        win_starts = np.r_[0, np.cumsum(win_sizes)[:-1]]
        entry = (win_starts, win_sizes, [(starts[win], sizes[win]) for win in windows])
        self._epoch_cache[key] = entry
        while len(self._epoch_cache) > 4 * len(self.index.groups) + 2 * self.cfg.lanes:
            self._epoch_cache.popitem(last=False)
        return entry

    def member_at(self, gi: int, position: int, batch: int | None = None) -> int:
        """Index into group gi's members of the example at stream `position`.

        lanes=1: the group's single stream. lanes=M: position k*B + m*(B/M) + j (B = `batch`, the
        group's global batch) is the (k*B/M + j)-th example of lane m's stream."""
        g = self.index.groups[gi]
        lane, q = 0, position
        if self.cfg.lanes > 1:
            b = (batch or self.global_batch(gi)) // self.cfg.lanes
            k, rem = divmod(position, b * self.cfg.lanes)
            lane, j = divmod(rem, b)
            q = k * b + j
        lo, hi = self.lane_range(gi, lane)
        epoch, offset = divmod(q, hi - lo)
        win_starts, _, windows = self._epoch(gi, lane, epoch)
        wi = int(np.searchsorted(win_starts, offset, side="right") - 1)
        key = (gi, lane, epoch, wi)
        if key not in self._window_cache:
            b_starts, b_sizes = windows[wi]
            members = np.concatenate([np.arange(s, s + n) for s, n in zip(b_starts, b_sizes)])
            self._window_cache[key] = members[
                _rng(self.cfg.seed, _TAG_ROWS, g.key, epoch, wi, *self._words(lane)).permutation(members.size)
            ]
            while len(self._window_cache) > 2 * len(self.index.groups) + 2 * self.cfg.lanes:
                self._window_cache.popitem(last=False)
        else:
            self._window_cache.move_to_end(key)
        return int(self._window_cache[key][offset - win_starts[wi]])

    # -- steps -------------------------------------------------------------------------------
    def plan(self, step: int, rank: int = 0, world_size: int = 1) -> StepPlan:
        """The plan of `step` given the current stream positions (does not advance them)."""
        gi = self.group_for_step(step)
        g = self.index.groups[gi]
        B = self.global_batch(gi, world_size)
        per_rank = B // world_size
        lo, hi = rank * per_rank, (rank + 1) * per_rank
        start = int(self.consumed[gi])
        idx = [self.member_at(gi, start + k, B) for k in range(lo, hi)]
        drop = _rng(self.cfg.seed, _TAG_DROPOUT, step).random(B) < self.cfg.cond_dropout
        return StepPlan(step, gi, g.task, g.length, B, [g.position(i) for i in idx], drop[lo:hi])

    def advance(self, plan: StepPlan) -> None:
        self.consumed[plan.group] += plan.global_batch
        self.step = plan.step + 1

    def replay(self, step: int, world_size: int = 1) -> None:
        """Set the stream positions to what they are before `step`, from (seed, step) alone."""
        self.consumed[:] = 0
        for s in range(step):
            gi = self.group_for_step(s)
            self.consumed[gi] += self.global_batch(gi, world_size)
        self.step = step

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "consumed": [int(c) for c in self.consumed],
                "groups": [g.name for g in self.index.groups], "fingerprint": self.index.fingerprint,
                "seed": self.cfg.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state.get("groups") != [g.name for g in self.index.groups]
                or state.get("fingerprint") != self.index.fingerprint):
            raise ValueError(
                "data position in the checkpoint was saved for other token shards "
                f"(fingerprint {state.get('fingerprint')} vs {self.index.fingerprint}); "
                "resume with the same data.shards"
            )
        self.consumed[:] = np.asarray(state["consumed"], dtype=np.int64)
        self.step = int(state["step"])


def collate(plan: StepPlan, rows: list[dict[str, Any]], group_name: str) -> Batch:
    """Build the layouts of one group's rows and stack them; every layout must have the group's length."""
    from videopoet.pipeline.tasks import build_layout

    layouts = [build_layout(plan.task, r) for r in rows]
    for r, lay in zip(rows, layouts):
        if len(lay.tokens) != plan.length:
            raise ValueError(
                f"task {plan.task}: clip {r.get('key')} has a layout of {len(lay.tokens)} tokens but its "
                f"len_{plan.task} column says {plan.length}; "
                "the token shard was written by another version of pipeline.tasks"
            )
    prefix_len, text_start = layouts[0].prefix_len, layouts[0].text_start
    if any(layout.prefix_len != prefix_len or layout.text_start != text_start for layout in layouts):
        raise ValueError(f"task {plan.task}, length {plan.length}: layouts disagree on prefix_len/text_start")
    tokens = torch.from_numpy(np.stack([np.asarray(layout.tokens, dtype=np.int64) for layout in layouts]))
    text_emb = text_mask = None
    if text_start is not None:
        dims = {int(r["text_dim"]) for r in rows}
        if len(dims) != 1:
            raise ValueError(f"task {plan.task}: rows of one batch have text_dim {sorted(dims)}")
        dim = dims.pop()
        emb = np.zeros((len(rows), ts.TEXT_SLOTS, dim), dtype=np.float32)
        mask = np.zeros((len(rows), ts.TEXT_SLOTS), dtype=bool)
        for i, r in enumerate(rows):
            if r.get("text_emb") is not None and not plan.drop_text[i]:
                emb[i] = r["text_emb"]
                mask[i] = r["text_mask"]
        text_emb, text_mask = torch.from_numpy(emb), torch.from_numpy(mask)
    real = sum(len(layout.tokens) for layout in layouts)
    return Batch(plan.task, group_name, tokens, int(prefix_len), text_start, text_emb, text_mask,
                 plan.global_batch, real, int(plan.drop_text.sum()) if text_start is not None else 0)


class AGDLoader:
    """The trainer's data source: `next_batch(rank, world)` gives this rank's batch of the next step.

    With `prefetch` (default) a background thread plans, reads and collates step s+1 while the
    caller trains on step s (queue depth 1, so at most two batches exist). The prefetched batch is
    keyed by (step, rank, world, stream positions) and discarded when those changed (load_state_dict,
    replay), so resuming rebuilds it from the saved position: prefetch never changes what a step gets.
    """

    def __init__(self, cfg: DataConfig, total_steps: int, index: ShardIndex | None = None, *,
                 prefetch: bool = True, index_dir: str | None = None):
        self.cfg = cfg
        self.index = index or ShardIndex.build(cfg.shards, cfg.tasks, cache_dir=index_dir)
        self.sampler = AGDSampler(self.index, cfg, total_steps)
        self.store = RowReader(self.index.files, cfg.cache_row_groups)
        self.prefetch = prefetch
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[tuple, Future] | None = None
        self._lock = threading.Lock()  # sampler caches and the reader are used by one thread at a time
        self.wait_s = 0.0  # time next_batch spent waiting for data (the part of loading not hidden)
        self.load_s = 0.0  # time spent planning, reading and collating (in whichever thread)

    @property
    def step(self) -> int:
        return self.sampler.step

    def batch_for(self, plan: StepPlan) -> Batch:
        rows = self.store.rows(plan.positions, task_columns(plan.task))
        return collate(plan, rows, self.index.groups[plan.group].name)

    def _build(self, step: int, rank: int, world_size: int) -> tuple[StepPlan, Batch]:
        t0 = time.perf_counter()
        with self._lock:
            plan = self.sampler.plan(step, rank, world_size)
            batch = self.batch_for(plan)
        self.load_s += time.perf_counter() - t0
        return plan, batch

    def _key(self, step: int, rank: int, world_size: int) -> tuple:
        return step, rank, world_size, self.sampler.consumed.tobytes()

    def _take_pending(self, key: tuple) -> tuple[StepPlan, Batch] | None:
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        if pending[0] == key:
            return pending[1].result()
        pending[1].exception()  # drain a stale one (its error, if any, belongs to a step not taken)
        return None

    def next_batch(self, rank: int = 0, world_size: int = 1) -> Batch:
        step = self.sampler.step
        t0 = time.perf_counter()
        got = self._take_pending(self._key(step, rank, world_size))
        plan, batch = got if got is not None else self._build(step, rank, world_size)
        self.wait_s += time.perf_counter() - t0
        self.sampler.advance(plan)
        if self.prefetch:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="agd-prefetch")
            nxt = self.sampler.step
            self._pending = (self._key(nxt, rank, world_size), self._pool.submit(self._build, nxt, rank, world_size))
        return batch

    def close(self) -> None:
        self._take_pending(())
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._take_pending(())  # a prefetched batch of the old position is dropped
        self.sampler.load_state_dict(state)

    def text_dims(self) -> set[int]:
        """text_dim values present in the shards (checked against the model's text_dim)."""
        import pyarrow.parquet as pq

        dims: set[int] = set()
        for path in self.index.files:
            dims.update(int(d) for d in
                        pq.read_table(path, columns=["text_dim"]).column("text_dim").unique().to_pylist())
        return dims


def describe(cfg: DataConfig) -> str:
    return ", ".join(f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg))
