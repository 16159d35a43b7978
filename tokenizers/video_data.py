"""The video tokenizer job's data: deterministic per-rank clip batches and the held-out clips.

Data order is a pure function of (seed, epoch, rank), so a checkpoint stores the data position as
(epoch, batches consumed) and a resume replays to it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from videopoet.pipeline.clip_shards import iter_clip_shard, list_shards
from videopoet.tokenizers.magvit2 import video_to_tensor
from videopoet.tokenizers.video_config import DataConfig


class ClipBatches:
    """Deterministic per-rank batches of clips for one phase ('image' or 'video').

    Epoch e: shards in an order shuffled with (seed, e); rank r takes shards r, r+W, ... (or every
    W-th clip when there are fewer shards than ranks), passes them through a shuffle buffer seeded
    with (seed, e, r), drops held-out and too-short clips, and batches them. `batches(e, skip)`
    replays epoch e from its start, skipping `skip` batches: that is how a resume lands on the same
    data position.
    """

    def __init__(self, root: str | Path, cfg: DataConfig, batch_size: int, seed: int,
                 rank: int, world: int, held_out: set[str]):
        self.shards = list_shards(root)
        if not self.shards:
            raise FileNotFoundError(f"--data {root}: no clip shards (*.tar) found")
        self.cfg, self.batch_size, self.seed = cfg, batch_size, seed
        self.rank, self.world, self.held_out = rank, world, held_out

    def _clips(self, epoch: int) -> Iterator[Any]:
        order = list(self.shards)
        random.Random(f"{self.seed}-{epoch}").shuffle(order)
        if len(order) >= self.world:
            for shard in order[self.rank::self.world]:
                yield from iter_clip_shard(shard)
        else:
            i = 0
            for shard in order:
                for clip in iter_clip_shard(shard):
                    if i % self.world == self.rank:
                        yield clip
                    i += 1

    def _shuffled(self, epoch: int) -> Iterator[Any]:
        rng = random.Random(f"{self.seed}-{epoch}-{self.rank}")
        buf: list = []
        for clip in self._clips(epoch):
            if clip.key in self.held_out:
                continue
            buf.append(clip)
            if len(buf) >= max(1, self.cfg.shuffle_buffer):
                yield buf.pop(rng.randrange(len(buf)))
        while buf:
            yield buf.pop(rng.randrange(len(buf)))

    def batches(self, epoch: int, phase: str, skip: int = 0) -> Iterator[Any]:
        group: list = []
        done = 0
        for clip in self._shuffled(epoch):
            if phase == "video" and clip.rgb.shape[0] < self.cfg.frames:
                continue
            group.append(clip)
            if len(group) == self.batch_size:
                if done >= skip:
                    yield torch.stack([clip_tensor(c.rgb, self.cfg, phase) for c in group])
                done += 1
                group = []


def clip_tensor(rgb, cfg: DataConfig, phase: str):
    """uint8 [T, H, W, 3] -> float [3, T', h, w] in [-1, 1]: 1 frame (image) or `frames` frames."""
    frames = 1 if phase == "image" else cfg.frames
    x = video_to_tensor(rgb[:frames])
    if x.shape[-2:] != (cfg.height, cfg.width):
        x = F.interpolate(x, size=(cfg.height, cfg.width), mode="area").clamp(-1, 1)
    return x


def held_out_clips(root: str | Path, cfg: DataConfig) -> list[Any]:
    """The first `eval_clips` clips (long enough for the video phase) of the first shard."""
    shards = list_shards(root)
    out = []
    if cfg.eval_clips <= 0 or not shards:
        return out
    for clip in iter_clip_shard(shards[0]):
        if clip.rgb.shape[0] >= cfg.frames:
            out.append(clip)
        if len(out) >= cfg.eval_clips:
            break
    return out
