"""The ingest job's config (`IngestConfig`) and its recipes (`default`, `tiny`); torch-free."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from videopoet.config import RecipeRegistry
from videopoet.jobs.config import EngineConfig
from videopoet.pipeline.media import MediaConfig


@dataclass
class IngestConfig(EngineConfig):
    """Ingest job settings. Recipes: `default` (`videopoet ingest --config default --input ...`),
    `tiny` (the demo's and the tests' small settings). Engine keys (engine, progress, track, beam.*,
    ray.*): videopoet.jobs.config.EngineConfig."""

    input: str = ""
    output: str = ""
    media: MediaConfig = field(default_factory=MediaConfig)
    batch_size: int = 16  # inputs per work unit (the unit of commit and of resume)
    shard_max_bytes: int = 256 * 2**20  # shards are cut below this (a single larger clip gets its own)
    images_require_caption: bool = True  # an image without caption is useless for text-to-image

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be >= 1")
        if self.shard_max_bytes < 2**16:
            raise ValueError(f"shard_max_bytes={self.shard_max_bytes}: must be >= 65536")


INGEST_RECIPES: RecipeRegistry[IngestConfig] = RecipeRegistry(IngestConfig)


@INGEST_RECIPES.register
def default() -> IngestConfig:
    """videopoet ingest --config default --engine beam --input DIR --output OUT"""
    return IngestConfig()


@INGEST_RECIPES.register
def tiny() -> IngestConfig:
    """videopoet ingest --config tiny --engine beam --input DIR --output OUT  (few clips per input, small units)"""
    cfg = IngestConfig(batch_size=4, shard_max_bytes=16 * 2**20)
    cfg.media = dataclasses.replace(cfg.media, clips_per_video=2)
    return cfg
