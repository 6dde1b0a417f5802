"""Settings of an ingest run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from geoconcept.validate import int_at_least, int_between

# Below Pillow's own decompression-bomb warning threshold (about 89 Mpx), so our check decides.
DEFAULT_MAX_PIXELS = 80_000_000
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
# The settings that decide which rows form each shard and partition, and so what every shard name
# and partition key means: changing them is a rebuild of everything (redo="all").
LAYOUT_SETTINGS = ("samples_per_shard", "shards_per_partition")


@dataclass(frozen=True)
class IngestConfig:
    """How records are cut into shards and how images are normalised.

    samples_per_shard: input rows per shard (shard i holds rows [i*S, (i+1)*S)).
    shards_per_partition: consecutive shards per partition (the unit a re-run or Dagster resumes by).
    image_size: the shorter side of written images, in pixels (never upscaled).
    jpeg_quality: quality of the re-encoded JPEGs (1-95, Pillow's scale).
    max_pixels: images declaring more pixels than this are `too_large` (checked before decoding).
    max_image_bytes: image files larger than this are `too_large` (checked before reading).
    workers: processes that build shards in parallel (1 = in this process).
    """

    samples_per_shard: int = 1000
    shards_per_partition: int = 1
    image_size: int = 256
    jpeg_quality: int = 90
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    workers: int = 1

    def __post_init__(self) -> None:
        for name in ("samples_per_shard", "shards_per_partition", "image_size", "max_pixels", "max_image_bytes"):
            int_at_least(getattr(self, name), name)
        int_at_least(self.workers, "workers")
        int_between(self.jpeg_quality, "jpeg_quality", 1, 95)

    def plan_settings(self) -> dict[str, Any]:
        """The settings a source's shards and partitions are built under (all but `workers`)."""
        return {
            "samples_per_shard": self.samples_per_shard,
            "shards_per_partition": self.shards_per_partition,
            "image_size": self.image_size,
            "jpeg_quality": self.jpeg_quality,
            "max_pixels": self.max_pixels,
            "max_image_bytes": self.max_image_bytes,
        }

    def shard_settings(self) -> dict[str, int]:
        """The settings a shard's bytes depend on (part of its input fingerprint)."""
        return {
            "samples_per_shard": self.samples_per_shard,
            "image_size": self.image_size,
            "jpeg_quality": self.jpeg_quality,
            "max_pixels": self.max_pixels,
            "max_image_bytes": self.max_image_bytes,
        }
