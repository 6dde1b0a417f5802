"""Partitions of the pipeline.

Ingest chunks are dynamic: `raw_dataset` (and the raw-folder sensor) register one key per chunk
of input rows, `<source>-<index>` (e.g. `train-00003`), so a new input file adds partitions
without a code change. Shards, labels and features share these keys.
"""

from __future__ import annotations

from dagster import BackfillPolicy, DynamicPartitionsDefinition, StaticPartitionsDefinition

CHUNKS = DynamicPartitionsDefinition(name="ingest_chunks")

# Partition keys avoid "+" (it means a space in URLs); `variant_name` maps them to the trainer's names.
VARIANTS = {"geoclip": "geoclip", "concept": "concept", "concept_supervised": "concept+supervised"}
variant_partitions = StaticPartitionsDefinition(list(VARIANTS))


def variant_name(partition_key: str) -> str:
    return VARIANTS[partition_key]


def chunk_backfill_policy() -> BackfillPolicy:
    """One run per chunk: each chunk gets its own run, retries and data version, and a backfill fans
    out over the run launcher (Kubernetes pods, dask workers). A constant, not an environment setting:
    the policy is part of the assets' definitions, which must not change with the process that loads
    them (a run re-executed from the UI would no longer match its snapshot)."""
    return BackfillPolicy.multi_run(1)
