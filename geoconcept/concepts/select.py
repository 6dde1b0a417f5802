"""Choose a bank of k concepts from candidates and their scores (`geoconcept concepts select`).

1. Near-duplicates merge: two concepts with the same rule are one concept; so are two whose mean
   prompt embeddings have cosine >= `duplicate_cosine` (the scores' `similar` pairs) if they can
   mean the same thing (at least one is text-only: two different rules measure different places,
   so they stay apart and the redundancy penalty handles them). The group keeps its pinned member, else a measured
   one, else the highest `mi`, else the earliest; the others' prompts join its prompts (up to the
   bank's maximum) and their ids go into its provenance (`merged`). Pinned concepts are never merged away.
2. Pinned concepts (`pinned: true` in the candidates or `pins`) are chosen first.
3. Greedy: each step adds the concept with the highest gain
       gain(c | S) = mi(c) · (1 − alpha · max_{s ∈ S} |r(c, s)|)
   where mi is the score's mean mutual information with location cells (bits; 0 for text-only
   concepts and without scores) and r the labels' correlation (the scores' `correlated` pairs; 0
   for pairs not listed): with alpha = 1 a concept whose labels are a chosen one's is worth nothing,
   and the penalty keeps the scale of mi whatever the number of cells. First every category (in the
   candidates' order) is filled up to `per_category` concepts, then the rest of k from all
   categories. Ties go to the earlier candidate, so the result is deterministic.
4. The bank lists the chosen concepts by category (in the candidates' order), then candidate order;
   each carries its provenance and its scores (rounded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from geoconcept.concepts.bank import MAX_PROMPTS, ConceptBank
from geoconcept.concepts.candidates import concept_entry
from geoconcept.errors import ConfigError

SCORE_COLUMNS = (
    "labelled",
    "coverage",
    "spread",
    "mi",
    "redundancy",
    "redundant_with",
    "duplicate_cosine",
    "duplicate_of",
)
DEFAULT_ALPHA = 1.0
DEFAULT_DUPLICATE_COSINE = 0.99


@dataclass
class Selection:
    """The chosen bank's document (bank format) and what happened: ids merged into others, pins."""

    document: dict[str, Any]
    merged: dict[str, list[str]]
    pinned: list[str]


def _scores_by_id(candidates: ConceptBank, scores: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    if scores is None:
        return {c.id: {} for c in candidates}
    if "id" not in scores.columns:
        raise ConfigError(f"the scores table has no `id` column (columns: {list(scores.columns)})")
    # Parquet gives list columns back as arrays: make them lists again.
    rows = [
        {k: list(v) if hasattr(v, "tolist") and not np.isscalar(v) else v for k, v in row.items()}
        for row in scores.to_dict(orient="records")
    ]
    by_id = {row["id"]: row for row in rows}
    missing = [c.id for c in candidates if c.id not in by_id]
    if missing:
        raise ConfigError(f"the scores table has no row for {len(missing)} candidate(s), e.g. {missing[:3]}: re-score")
    return {c.id: by_id[c.id] for c in candidates}


def _mergeable(a, b) -> bool:
    return a.rule is None or b.rule is None or a.rule == b.rule


def _merge_groups(candidates: ConceptBank, scores: dict, pinned: set[str], threshold: float) -> dict[str, list[str]]:
    """representative id → ids merged into it (union-find over near-duplicate pairs)."""
    parent = {c.id: c.id for c in candidates}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    by_id = {c.id: c for c in candidates}
    same_rule: dict = {}
    for c in candidates:  # two concepts with one rule measure the same thing: duplicates whatever their text
        if c.rule is not None:
            parent[root(c.id)] = root(same_rule.setdefault(c.rule, c.id))
    for c in candidates:
        row = scores[c.id]
        for other, cosine in zip(row.get("similar", []) or [], row.get("similarities", []) or [], strict=True):
            if other in by_id and cosine >= threshold and _mergeable(c, by_id[other]):
                parent[root(other)] = root(c.id)
    order = {c.id: i for i, c in enumerate(candidates)}
    groups: dict[str, list[str]] = {}
    for c in candidates:
        groups.setdefault(root(c.id), []).append(c.id)
    merged = {}
    for members in groups.values():
        if len(members) == 1:
            continue
        members.sort(key=lambda m: (m not in pinned, by_id[m].rule is None, -_value(scores[m]), order[m]))
        keep = [m for m in members if m in pinned] or members[:1]
        absorbed = [m for m in members if m not in keep]
        if absorbed:
            merged[keep[0]] = absorbed
    return merged


def _value(row: dict[str, Any]) -> float:
    value = row.get("mi")
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def select_bank(
    candidates: ConceptBank,
    scores: pd.DataFrame | None,
    k: int,
    pins: list[str] = (),
    alpha: float = DEFAULT_ALPHA,
    per_category: int = 1,
    duplicate_cosine: float = DEFAULT_DUPLICATE_COSINE,
    version: str | None = None,
) -> Selection:
    """The selected bank (see the module docstring); ConfigError for unknown pins or more pins than k."""
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    unknown = [p for p in pins if p not in candidates.ids]
    if unknown:
        raise ConfigError(f"pinned concept(s) {unknown} are not among the candidates")
    pinned = list(dict.fromkeys([c.id for c in candidates if c.pinned] + list(pins)))
    if len(pinned) > k:
        raise ConfigError(f"{len(pinned)} concepts are pinned but --k is {k}")
    by_id = _scores_by_id(candidates, scores)
    merged = _merge_groups(candidates, by_id, set(pinned), duplicate_cosine)
    absorbed = {m for members in merged.values() for m in members}
    pool = [c for c in candidates if c.id not in absorbed]
    chosen = _greedy(pool, by_id, k, pinned, alpha, per_category, candidates.categories)
    return Selection(_document(candidates, chosen, by_id, merged, version, set(pinned)), merged, pinned)


def _greedy(pool, scores, k, pinned, alpha, per_category, categories) -> list[str]:
    """Pins, then each category up to `per_category`, then the rest, each step by the highest gain."""
    correlation = {}
    for c in pool:
        row = scores[c.id]
        correlation[c.id] = dict(zip(row.get("correlated", []) or [], row.get("correlations", []) or [], strict=True))
    chosen: list[str] = []
    penalty = {c.id: 0.0 for c in pool}  # max |r| with the concepts chosen so far

    def take(concept_id: str) -> None:
        chosen.append(concept_id)
        for other, r in correlation[concept_id].items():
            if other in penalty:
                penalty[other] = max(penalty[other], abs(r))

    for concept_id in pinned:
        take(concept_id)
    order = list(dict.fromkeys([*categories, *(c.category for c in pool)]))
    phases = [([c for c in pool if c.category == cat], per_category) for cat in order] + [(pool, k)]
    for members, limit in phases:
        while len(chosen) < k and sum(c.id in chosen for c in members) < limit:
            left = [c for c in members if c.id not in chosen]
            if not left:
                break
            best = max(left, key=lambda c: (_value(scores[c.id]) * (1.0 - alpha * penalty[c.id]), -pool.index(c)))
            take(best.id)
    return chosen


def _document(candidates, chosen, scores, merged, version, pinned) -> dict[str, Any]:
    order = list(dict.fromkeys([*candidates.categories, *(c.category for c in candidates)]))
    position = {c.id: i for i, c in enumerate(candidates)}
    picked = sorted(chosen, key=lambda cid: (order.index(candidates[cid].category), position[cid]))
    entries = []
    for cid in picked:
        concept = candidates[cid]
        entry = concept_entry(concept)
        if cid in merged:
            prompts = [*concept.prompts, *(p for m in merged[cid] for p in candidates[m].prompts)]
            entry["prompts"] = list(dict.fromkeys(prompts))[:MAX_PROMPTS]
            entry["provenance"] = entry.get("provenance", {}) | {"merged": merged[cid]}
        row = scores[cid]
        kept = {key: _plain(row[key]) for key in SCORE_COLUMNS if key in row and _plain(row[key]) is not None}
        entry.pop("scores", None)
        entry.pop("pinned", None)
        entries.append(entry | ({"scores": kept} if kept else {}) | ({"pinned": True} if cid in pinned else {}))
    used = list(dict.fromkeys(e["category"] for e in entries))
    doc: dict[str, Any] = {"version": version or candidates.version}
    if candidates.description:
        doc["description"] = candidates.description
    return doc | {"categories": [c for c in order if c in used], "concepts": entries}


def _plain(value: Any) -> Any:
    """A score as a plain YAML value: floats rounded to 4 digits, NaN/None dropped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float):
        return round(value, 4)
    return value.item() if hasattr(value, "item") else value
