"""Frozen-backbone image features, computed once per shard (training and evaluation read the cache)."""

import dagster as dg

from assets import metadata as md
from assets.partitions import CHUNKS, chunk_backfill_policy
from assets.resources import FeatureResource, StorageResource
from geoconcept.features import ShardJob, extract_shards
from geoconcept.ingest import partition_manifests
from geoconcept.model.backbone import Backbone

from .ingest import shards

GROUP = "features"
OWNERS = ["team:geoconcept-ml"]


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "safetensors"},
    code_version="2",
    partitions_def=CHUNKS,
    backfill_policy=chunk_backfill_policy(),
    deps=[shards],
    description="open_clip image features of every sample of one chunk (frozen backbone, the model's own "
    "preprocessing, on one device), one safetensors file per shard with the sample keys and coordinates.",
)
def image_features(
    context: dg.AssetExecutionContext, storage: StorageResource, features: FeatureResource
) -> dg.MaterializeResult:
    backbone = Backbone.create(
        features.model,
        features.pretrained or None,
        device=features.device,
        precision=features.precision or None,
        compile=features.compile,
    )
    if backbone.warning:
        context.log.warning(backbone.warning)
    jobs = [
        ShardJob.beside_manifest(
            manifest.with_suffix(".tar"),
            storage.layout.features(storage.dataset, backbone.tag, manifest.parent.name)
            / f"{manifest.stem}.safetensors",
        )
        for key in context.partition_keys
        for manifest in partition_manifests(storage.data_root, storage.dataset, key)
    ]
    # One streaming pass over all the chunk's shards (the device does not wait between shards).
    results = extract_shards(jobs, backbone, batch_size=features.batch_size, workers=features.workers)
    return dg.MaterializeResult(
        metadata={
            "samples": sum(r.count for r in results),
            "backbone": backbone.tag,
            "precision": backbone.precision,
            "dim": backbone.dim,
            "reused_shards": sum(r.skipped for r in results),
            "seconds": round(sum(r.seconds for r in results), 2),
            "warning": backbone.warning or "",
        },
        data_version=md.files_version([r.path for r in results]),
    )
