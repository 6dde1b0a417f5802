"""Partitions of the pipeline.

Ingest chunks are dynamic: `raw_dataset` (and the raw-folder sensor) register one key per chunk
of input rows, `<source>-<index>` (e.g. `train-00003`), so a new input file adds partitions
without a code change. Shards, labels and features share these keys.
"""

from __future__ import annotations

import os

from dagster import BackfillPolicy, DynamicPartitionsDefinition, StaticPartitionsDefinition

CHUNKS = DynamicPartitionsDefinition(name="ingest_chunks")

# Partition keys avoid "+" (it means a space in URLs); `variant_name` maps them to the trainer's names.
VARIANTS = {"geoclip": "geoclip", "concept": "concept", "concept_supervised": "concept+supervised"}
variant_partitions = StaticPartitionsDefinition(list(VARIANTS))


def variant_name(partition_key: str) -> str:
    return VARIANTS[partition_key]


def chunk_backfill_policy() -> BackfillPolicy:
    """One run per chunk by default: each chunk gets its own run, retries and data version, and a
    backfill fans out over the run launcher (Kubernetes pods, dask workers). GEOCONCEPT_CHUNKS_PER_RUN=N
    groups N chunks per run; 0 makes a whole range one run (the library parallelises inside it)."""
    per_run = int(os.environ.get("GEOCONCEPT_CHUNKS_PER_RUN", "1"))
    return BackfillPolicy.multi_run(per_run) if per_run > 0 else BackfillPolicy.single_run()
