"""Bank building: every candidate concept of the layers and the current bank, with its measured value."""

import dagster as dg

from assets import metadata as md
from assets.resources import ConceptResource, StorageResource
from geoconcept.concepts import bank as concept_bank_lib
from geoconcept.concepts import candidates, scores
from geoconcept.layers.registry import Registry

from .concepts import GROUP, OWNERS, concept_bank

# A small fixed sample keeps the asset to seconds; `geoconcept concepts score` measures on more.
POINTS = 2000
SEED = 0


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "yaml", "parquet"},
    code_version="1",
    deps=[concept_bank],
    description="Candidate concepts (the current bank plus one per class or threshold of every layer) and their "
    "scores on a seeded uniform sample of the globe: coverage, spread, mutual information with location, redundancy.",
)
def concept_candidates(
    context: dg.AssetExecutionContext, storage: StorageResource, concepts: ConceptResource
) -> dg.Output[dict]:
    registry = Registry.from_config(concepts.layers_config or None)
    bank_path = concepts.bank or concept_bank_lib.DEFAULT_BANK
    found = candidates.build_candidates(registry, extend=bank_path)
    folder = storage.layout.concepts()
    bank = candidates.write_candidates(found, folder / "candidates.yaml", registry)
    lat, lon = scores.sphere_points(POINTS, SEED)
    # No text tower here (it takes minutes on a CPU): near-duplicate cosines come from `concepts score`.
    table = scores.score_concepts(bank, registry, lat, lon)
    scores_path = scores.write_scores(table, folder / "candidate_scores.parquet")
    shown = scores.display_table(table).drop(columns=["duplicate_cosine", "duplicate_of"])
    return dg.Output(
        {"candidates": str(folder / "candidates.yaml"), "scores": str(scores_path)},
        metadata={
            "candidates": len(bank),
            "measured": len(bank.measured),
            "points": POINTS,
            "scores": md.table(shown, limit=100),
            "by_source": md.counts_table(_sources(bank), key="source"),
        },
        data_version=md.files_version([folder / "candidates.yaml", scores_path]),
    )


def _sources(bank: concept_bank_lib.ConceptBank) -> dict[str, int]:
    counts: dict[str, int] = {}
    for concept in bank:
        source = str(concept.provenance.get("source", "?"))
        counts[source] = counts.get(source, 0) + 1
    return counts
