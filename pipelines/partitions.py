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
    """One run for a whole range by default (the library parallelises inside it with `workers`);
    set GEOCONCEPT_CHUNKS_PER_RUN=N on a cluster so a backfill fans out into runs of N chunks each."""
    per_run = int(os.environ.get("GEOCONCEPT_CHUNKS_PER_RUN", "0"))
    return BackfillPolicy.multi_run(per_run) if per_run > 0 else BackfillPolicy.single_run()
