"""Training assets: one checkpoint set per variant (launched through Dagster Pipes) and its GPS gallery."""

import json

import dagster as dg
import pandas as pd

from assets import metadata as md
from assets.partitions import variant_name, variant_partitions
from assets.resources import (
    ConceptResource,
    FeatureResource,
    GalleryResource,
    StorageResource,
    TrainingResource,
)
from geoconcept import gallery as gallery_lib
from geoconcept import plots
from geoconcept.ingest import source_names
from geoconcept.model.backbone import backbone_tag
from geoconcept.train import runs

from .concepts import concept_labels
from .features import image_features

GROUP = "training"
OWNERS = ["team:geoconcept-ml"]
CHECKPOINT_CODE_VERSION = "1"


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "safetensors"},
    code_version=CHECKPOINT_CODE_VERSION,
    partitions_def=variant_partitions,
    deps=[
        dg.AssetDep(image_features, partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep(concept_labels, partition_mapping=dg.AllPartitionMapping()),
    ],
    description="Trained checkpoints of one variant (geoclip | concept | concept+supervised), one per seed. "
    "The trainer runs as a Dagster Pipes subprocess (`python -m pipelines.train_pipes`, or torchrun).",
)
def checkpoint(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    features: FeatureResource,
    concepts: ConceptResource,
    training: TrainingResource,
    pipes_subprocess_client: dg.PipesSubprocessClient,
    splits: dict,
    concept_embeddings: dict,
) -> dg.Output[dict]:
    variant = variant_name(context.partition_key)
    layout = storage.layout
    tag = backbone_tag(features.model, features.pretrained or None)
    sources = source_names(storage.data_root, storage.dataset)
    settings = runs.read_settings(training.settings or None)
    run_dirs = {
        seed: layout.runs() / storage.dataset / context.partition_key / f"seed-{seed}" for seed in training.seeds
    }
    configs = [
        runs.write_run_config(
            run_dir,
            settings=settings,
            variant=variant,
            seed=seed,
            features=[str(layout.features(storage.dataset, tag, s)) for s in sources],
            labels=[str(layout.labels(storage.dataset, s)) for s in sources],
            split=splits["path"],
            concept_embeddings=concept_embeddings["path"],
        )
        for seed, run_dir in run_dirs.items()
    ]
    invocation = pipes_subprocess_client.run(
        context=context, command=[*training.launcher_command(), *map(str, configs)]
    )
    finished = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "final" in m]
    if len(finished) != len(configs):
        raise dg.Failure(f"the trainer reported {len(finished)} finished runs of {len(configs)}")
    results, curves = [], {}
    for (seed, run_dir), done in zip(run_dirs.items(), finished, strict=True):
        results.append(
            {
                "seed": seed,
                "path": done["final"],
                "sha256": done["sha256"],
                "run_dir": str(run_dir),
                "val": done["val"],
                "steps": done["steps"],
            }
        )
        curves[f"seed {seed}"] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = pd.DataFrame([{"seed": r["seed"], "steps": r["steps"], **r["val"]} for r in results])
    return dg.Output(
        {"variant": variant, "runs": results},
        metadata={
            "variant": variant,
            "seeds": len(results),
            "validation": md.table(val),
            "loss_curve": md.image_bytes(
                plots.loss_curves(curves), layout.runs() / storage.dataset / context.partition_key / "loss_curve.png"
            ),
            "checkpoints": md.listing(r["path"] for r in results),
            **{f"val/{k}": float(v) for k, v in val.drop(columns=["seed"]).mean(numeric_only=True).items()},
        },
        data_version=md.data_version(r["sha256"] for r in results),
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"faiss", "parquet"},
    code_version="1",
    partitions_def=variant_partitions,
    description="FAISS index of the GPS gallery's location embeddings under each checkpoint of the variant "
    "(its own upstream checkpoints, never the newest file on disk).",
)
def gallery_index(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    gallery: GalleryResource,
    checkpoint: dict,
    splits: dict,
) -> dg.Output[dict]:
    from geoconcept.model import load_model

    test = pd.read_parquet(splits["path"]).query("split == 'test'")[["lat", "lon"]].to_numpy()
    coords, source = gallery_lib.gallery_coordinates(
        gallery.coordinates, max_points=gallery.max_points, exclude=test, exclude_km=gallery.exclude_test_within_km
    )
    built = []
    for run in checkpoint["runs"]:
        model = load_model(run["path"])
        out = storage.layout.gallery() / storage.dataset / context.partition_key / f"seed-{run['seed']}"
        info = gallery_lib.build_gallery(
            coords, model, out, index=gallery.index, source=source, checkpoint_sha256=run["sha256"]
        )
        built.append(
            {"seed": run["seed"], "dir": str(out), "checkpoint_sha256": run["sha256"], "count": int(info["count"])}
        )
    return dg.Output(
        {"variant": checkpoint["variant"], "galleries": built},
        metadata={
            "entries": len(coords),
            "source": source,
            "index": gallery.index,
            "galleries": len(built),
            "dagster/row_count": len(coords),
        },
        data_version=md.data_version([(b["checkpoint_sha256"], source, len(coords)) for b in built]),
    )


def pipes_client() -> dg.PipesSubprocessClient:
    return dg.PipesSubprocessClient(cwd=None, env={"PYTHONUNBUFFERED": "1"})
