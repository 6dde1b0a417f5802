"""The evaluation asset: every variant × seed on the test split, with the same gallery coordinates."""

from pathlib import Path

import dagster as dg

from assets import metadata as md
from assets.resources import ConceptResource, EvaluationResource, FeatureResource, StorageResource
from geoconcept.evaluation.config import DownstreamSettings, EvaluationConfig, RunSpec
from geoconcept.evaluation.evaluate import evaluate
from geoconcept.ingest import source_names
from geoconcept.model.backbone import backbone_tag

GROUP = "evaluation"
OWNERS = ["team:geoconcept-ml"]
# Tables shown in the UI, in report order.
SHOWN_TABLES = ("accuracy", "published_im2gps3k", "faithfulness_summary", "error_bins", "downstream")
SHOWN_FIGURES = ("accuracy_curves", "explanations")


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "geoparquet", "markdown"},
    code_version="1",
    description="Accuracy within 1/25/200/750/2500 km (mean ± std over seeds) of every variant on the test split, "
    "concept faithfulness, downstream probes, explanations, maps; a Markdown + HTML report.",
)
def evaluation(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    features: FeatureResource,
    concepts: ConceptResource,
    evaluation_settings: EvaluationResource,
    checkpoint: dict,
    gallery_index: dict,
    splits: dict,
) -> dg.Output[dict]:
    layout = storage.layout
    galleries = {(v["variant"], g["seed"]): g for v in gallery_index.values() for g in v["galleries"]}
    runs = [
        RunSpec(
            checkpoint=Path(run["path"]),
            gallery=Path(galleries[(value["variant"], run["seed"])]["dir"]),
            variant=value["variant"],
            seed=run["seed"],
        )
        for value in checkpoint.values()
        for run in value["runs"]
    ]
    tag = backbone_tag(features.model, features.pretrained or None)
    sources = source_names(storage.data_root, storage.dataset)
    config = EvaluationConfig(
        runs=runs,
        features=[layout.features(storage.dataset, tag, s) for s in sources],
        labels=[layout.labels(storage.dataset, s) for s in sources],
        split=Path(splits["path"]),
        split_name="test",
        shards=[layout.shards(storage.dataset, s) for s in sources],
        out=layout.evaluation() / storage.dataset,
        name=f"{storage.dataset} test split",
        bank=Path(concepts.bank) if concepts.bank else None,
        layers=Path(concepts.layers_config) if concepts.layers_config else None,
        downstream=DownstreamSettings(points=evaluation_settings.downstream_points),
        explain_images=evaluation_settings.explain_images,
    )
    result = evaluate(config)
    for warning in result.warnings:
        context.log.warning(warning)
    metadata = {name: md.table_or_none(result.tables[name]) for name in SHOWN_TABLES if name in result.tables}
    metadata |= {name: md.image(result.figures[name]) for name in SHOWN_FIGURES if name in result.figures}
    # floats: the Plots tab charts them across materializations
    metadata |= md.accuracy_headlines(result.tables["accuracy_per_run"])
    metadata |= md.auroc_headlines(result.tables.get("faithfulness_per_run"))
    metadata |= {
        "test_samples": int(result.tables["accuracy_per_run"]["n"].iloc[0]),
        "runs": len(runs),
        "findings": md.listing(result.findings),
        "warnings": md.listing(result.warnings),
        "report": dg.MetadataValue.path(str(result.report_md)),
        "report_html": dg.MetadataValue.path(str(result.report_html)),
        "predictions": dg.MetadataValue.path(str(result.predictions)),
        **md.parquet_table(result.predictions),  # one row per test image and run
    }
    return dg.Output(
        {"report": str(result.report_md), "metrics": str(result.metrics_json)},
        metadata=metadata,
        data_version=md.files_version([result.metrics_json, result.predictions]),
    )
