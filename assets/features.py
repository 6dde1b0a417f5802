"""Frozen-backbone image features, computed once per shard (training and evaluation read the cache)."""

import dagster as dg

from assets import metadata as md
from assets.partitions import CHUNKS, chunk_backfill_policy
from assets.resources import FeatureResource, StorageResource
from geoconcept.features import extract_shard_features
from geoconcept.ingest import partition_manifests
from geoconcept.model.backbone import Backbone

from .ingest import shards

GROUP = "features"
OWNERS = ["team:geoconcept-ml"]


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "safetensors"},
    code_version="1",
    partitions_def=CHUNKS,
    backfill_policy=chunk_backfill_policy(),
    deps=[shards],
    description="open_clip image features of every sample of one chunk (frozen backbone, the model's own "
    "preprocessing), one safetensors file per shard with the sample keys and coordinates.",
)
def image_features(
    context: dg.AssetExecutionContext, storage: StorageResource, features: FeatureResource
) -> dg.MaterializeResult:
    backbone = Backbone.create(features.model, features.pretrained or None, device=features.device)
    if backbone.warning:
        context.log.warning(backbone.warning)
    results = []
    for key in context.partition_keys:
        for manifest in partition_manifests(storage.data_root, storage.dataset, key):
            tar = manifest.with_suffix(".tar")
            folder = storage.layout.features(storage.dataset, backbone.tag, manifest.parent.name)
            results.append(
                extract_shard_features(
                    tar, folder / f"{manifest.stem}.safetensors", backbone, batch_size=features.batch_size
                )
            )
    return dg.MaterializeResult(
        metadata={
            "samples": sum(r.count for r in results),
            "backbone": backbone.tag,
            "dim": backbone.dim,
            "reused_shards": sum(r.skipped for r in results),
            "seconds": round(sum(r.seconds for r in results), 2),
            "warning": backbone.warning or "",
        },
        data_version=md.files_version([r.path for r in results]),
    )
