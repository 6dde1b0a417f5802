"""Jobs for the common selections, one per partitioning of the graph.

Dagster runs assets of one partitioning per run, so a full rebuild is a sequence of these jobs in
dependency order (`pipelines.stages`, used by `make demo` and `make rebuild`):
stage_job → chunks_job (per chunk) → dataset_job → train_job (per variant) → evaluate_job.
"""

import dagster as dg

CHUNK_ASSETS = ["shards", "concept_labels", "image_features"]
DATASET_ASSETS = (dg.AssetSelection.groups("concepts") - dg.AssetSelection.assets("concept_labels")) | (
    dg.AssetSelection.assets("manifest", "splits")
)

stage_job = dg.define_asset_job(
    "stage_job", selection=["raw_dataset"], description="Stage the raw tables and register one partition per chunk."
)
chunks_job = dg.define_asset_job(
    "chunks_job",
    selection=CHUNK_ASSETS,
    description="Ingest: shards, concept labels and image features of the selected chunks.",
)
relabel_job = dg.define_asset_job(
    "relabel_job",
    selection=["concept_labels"],
    description="Recompute the concept labels of the selected chunks (after a change of the bank or a layer).",
)
dataset_job = dg.define_asset_job(
    "dataset_job",
    selection=DATASET_ASSETS,
    description="Dataset-wide assets: manifest, splits, layers, concept bank, concept embeddings.",
)
train_job = dg.define_asset_job(
    "train_job",
    selection=["checkpoint", "gallery_index"],
    description="Train one variant (every configured seed, through Dagster Pipes) and build its gallery.",
)

evaluate_job = dg.define_asset_job(
    "evaluate_job",
    selection=["evaluation"],
    description="Evaluate every variant and seed on the test split; write the report.",
)

JOBS = [stage_job, chunks_job, relabel_job, dataset_job, train_job, evaluate_job]
