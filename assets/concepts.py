"""Concept assets: geographic layers, the concept bank, per-sample concept labels, concept embeddings."""

import dagster as dg

from assets import metadata as md
from assets.partitions import CHUNKS, chunk_backfill_policy
from assets.resources import ConceptResource, StorageResource
from geoconcept import atomic, plots
from geoconcept.concepts import audit, embeddings, labels
from geoconcept.concepts import bank as concept_bank_lib
from geoconcept.concepts import coverage as coverage_lib
from geoconcept.ingest import partition_manifests
from geoconcept.layers import maps, summary
from geoconcept.layers.registry import Registry

from .ingest import shards

GROUP = "concepts"
OWNERS = ["team:geoconcept-geo"]


def layer_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"layer_{name}",
        group_name=GROUP,
        owners=OWNERS,
        kinds={"python", "raster"},
        code_version="1",
        description=f"The `{name}` geographic layer: its source, CRS, resolution, class histogram and a world map.",
    )
    def _layer(
        context: dg.AssetExecutionContext, storage: StorageResource, concepts: ConceptResource
    ) -> dg.Output[dict]:
        layer = Registry.from_config(concepts.layers_config or None)[name]
        info = summary.layer_summary(layer)
        folder = storage.layout.layers()
        png = maps.render_layer_map(layer, folder / f"{name}.png")
        atomic.write_json(folder / f"{name}.json", info)
        meta = {k: info[k] for k in ("kind", "source", "crs", "resolution", "version", "coverage")}
        if "class_histogram" in info:
            meta["class_histogram"] = md.counts_table(info["class_histogram"], key="class", value="share")
        else:
            meta["value_quantiles"] = md.counts_table(info["value_quantiles"], key="quantile", value="value")
        meta["world_map"] = md.image(png)
        return dg.Output(
            {"summary": str(folder / f"{name}.json"), "map": str(png)},
            metadata=meta,
            data_version=dg.DataVersion(layer.version[:24]),
        )

    return _layer


LAYER_NAMES = Registry.builtin().names
layers = [layer_asset(name) for name in LAYER_NAMES]


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "yaml"},
    code_version="1",
    deps=[f"layer_{n}" for n in LAYER_NAMES],
    description="The versioned concept bank (YAML): concepts with prompts and, where a layer measures them, a rule.",
)
def concept_bank(
    context: dg.AssetExecutionContext, storage: StorageResource, concepts: ConceptResource
) -> dg.Output[dict]:
    registry = Registry.from_config(concepts.layers_config or None)
    bank = concept_bank_lib.load_bank(concepts.bank or None, registry=registry)
    table = bank.table()
    return dg.Output(
        {"path": str(bank.path), "sha256": bank.sha256, "version": bank.version},
        metadata={
            "concepts": md.table(table, limit=200),
            "per_category": md.counts_table(bank.category_counts(), key="category"),
            "measured_concepts": len(bank.measured),
            "text_only_concepts": len(bank.concepts) - len(bank.measured),
            "bank_version": bank.version,
        },
        data_version=dg.DataVersion(bank.sha256[:24]),
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "parquet"},
    code_version="1",
    partitions_def=CHUNKS,
    backfill_policy=chunk_backfill_policy(),
    deps=[shards, concept_bank],
    description="Per-sample concept labels of one chunk: raw class codes (Köppen, IGBP, land, coast, country) and "
    "a soft label in [0, 1] per layer-measured concept.",
)
def concept_labels(
    context: dg.AssetExecutionContext, storage: StorageResource, concepts: ConceptResource
) -> dg.MaterializeResult:
    registry = Registry.from_config(concepts.layers_config or None)
    bank = concept_bank_lib.load_bank(concepts.bank or None, registry=registry)
    written = []
    for key in context.partition_keys:
        for manifest in partition_manifests(storage.data_root, storage.dataset, key):
            out = storage.layout.labels(storage.dataset, manifest.parent.name) / manifest.name
            written.append(labels.label_shard(manifest, out, bank, registry))
    coverage = labels.concept_coverage(audit.read_labels([w.path for w in written]), bank)
    return dg.MaterializeResult(
        metadata={
            "labelled": sum(w.labelled for w in written),
            "skipped_not_ok": sum(w.skipped for w in written),
            "dagster/row_count": sum(w.labelled for w in written),
            "coverage": md.table(coverage, limit=200),
            "coverage_chart": md.image_bytes(
                plots.coverage_bar_chart(coverage),
                storage.layout.concepts() / "coverage" / f"{context.partition_key_range.start}.png",
            ),
        },
        data_version=md.files_version([w.path for w in written]),
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "safetensors"},
    code_version="1",
    deps=[concept_bank],
    description="Each concept's prompts encoded by the open_clip text tower (averaged, normalised): a k×d matrix.",
)
def concept_embeddings(
    context: dg.AssetExecutionContext, storage: StorageResource, concepts: ConceptResource
) -> dg.Output[dict]:
    registry = Registry.from_config(concepts.layers_config or None)
    bank = concept_bank_lib.load_bank(concepts.bank or None, registry=registry)
    out = storage.layout.concepts() / "embeddings.safetensors"
    info = embeddings.embed_concepts(bank, concepts.text_model, concepts.text_pretrained or None, out)
    if info.warning:
        context.log.warning(info.warning)
    return dg.Output(
        {"path": str(info.path), "bank_sha256": info.bank_sha256},
        metadata={
            "concepts": len(info.concept_ids),
            "dim": info.dim,
            "model": info.model,
            "pretrained": info.pretrained,
            "pretrained_weights_loaded": info.pretrained_weights_loaded,
            "warning": info.warning or "",
        },
        data_version=md.files_version([info.path]),
    )


@dg.asset_check(
    asset=concept_labels,
    partitions_def=CHUNKS,
    blocking=True,
    description="Every ok sample of the chunk has a label row, and every soft label is within [0, 1].",
)
def labels_complete_and_in_range(
    context: dg.AssetCheckExecutionContext, storage: StorageResource
) -> dg.AssetCheckResult:
    result = audit.audit_partitions(storage.data_root, storage.dataset, context.partition_keys)
    return dg.AssetCheckResult(
        passed=result.unlabelled == 0 and result.out_of_range == 0,
        metadata={"samples": result.samples, "unlabelled": result.unlabelled, "out_of_range": result.out_of_range},
    )


@dg.asset_check(
    asset=concept_labels,
    description="No measured concept has zero coverage where the layers say it should show up: zero positives "
    "among n points is flagged when a photo-like reference sample makes that less likely than 1e-3 "
    "(a warning: the concept may be mis-specified, or the labels broken).",
)
def concept_coverage_nonzero(
    context: dg.AssetCheckExecutionContext, storage: StorageResource, concepts: ConceptResource
) -> dg.AssetCheckResult:
    registry = Registry.from_config(concepts.layers_config or None)
    bank = concept_bank_lib.load_bank(concepts.bank or None, registry=registry)
    frame = audit.read_labels(audit.label_files(storage.data_root, storage.dataset))
    coverage = labels.concept_coverage(frame, bank)
    shares = coverage_lib.reference_shares(bank, registry, cache_dir=storage.layout.concepts())
    surprising = coverage_lib.surprising_zero_coverage(coverage, shares, len(frame))
    return dg.AssetCheckResult(
        passed=surprising.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "points": len(frame),
            "zero_coverage_concepts": dg.MetadataValue.json(coverage.loc[coverage["present"] == 0, "id"].tolist()),
            "unexpected_zero_coverage": md.table_or_none(surprising),
            "reference": coverage_lib.REFERENCE,
        },
    )
