"""What changed between two banks (`geoconcept concepts diff A.yaml B.yaml`): concepts added, removed,
and, for concepts in both (same id), changes of name, category, prompts and rule. Provenance and
scores are bookkeeping and not compared."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from geoconcept.concepts.bank import Concept, ConceptBank

COMPARED = ("name", "category", "prompts", "rule")


@dataclass
class BankDiff:
    a: str
    b: str
    a_version: str
    b_version: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # id → field → {"a": old, "b": new}
    changed: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    reordered: bool = False

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed or self.reordered)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"same": self.same}

    def lines(self) -> list[str]:
        """The diff for a person: a header, then `+ id`, `- id` and `~ id field: a -> b` lines."""
        out = [f"--- {self.a} (version {self.a_version})", f"+++ {self.b} (version {self.b_version})"]
        out += [f"+ {cid}" for cid in self.added] + [f"- {cid}" for cid in self.removed]
        for cid, fields in self.changed.items():
            out += [f"~ {cid} {name}: {change['a']} -> {change['b']}" for name, change in fields.items()]
        if self.reordered:
            out.append("  (the concepts common to both are in a different order)")
        counts = f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed"
        return [*out, "identical concepts" if self.same else counts]


def _view(concept: Concept, name: str) -> Any:
    value = getattr(concept, name)
    if name == "prompts":
        return list(value)
    if name == "rule":
        return str(value) if value is not None else "text-only"
    return value


def diff_banks(a: ConceptBank, b: ConceptBank) -> BankDiff:
    """Added/removed ids (in each bank's order) and per-field changes of the common concepts."""
    a_ids, b_ids = set(a.ids), set(b.ids)
    result = BankDiff(
        a=str(a.path), b=str(b.path), a_version=a.version, b_version=b.version,
        added=[cid for cid in b.ids if cid not in a_ids],
        removed=[cid for cid in a.ids if cid not in b_ids],
    )  # fmt: skip
    for cid in (cid for cid in a.ids if cid in b_ids):
        old, new = a[cid], b[cid]
        fields = {n: {"a": _view(old, n), "b": _view(new, n)} for n in COMPARED if _view(old, n) != _view(new, n)}
        if fields:
            result.changed[cid] = fields
    common = [cid for cid in a.ids if cid in b_ids]
    result.reordered = common != [cid for cid in b.ids if cid in a_ids]
    return result
