"""The concept bank: one versioned YAML file of geographic concepts (`bank.yaml` is the default).

    version: "1.0.0"                      # required; recorded with labels and embeddings
    description: ...                      # optional
    categories: [climate, land_cover]     # optional; if given, every concept's category must be one
    concepts:
      - id: tropical_rainforest_climate   # lowercase letters, digits, _; the label column is concept__<id>
        name: Tropical rainforest climate
        category: climate
        prompts: [a photo of a tropical rainforest, ...]   # 1 to 5 distinct texts
        rule:                             # optional: concepts without one are text-only
          layer: koppen_geiger            # any layer of the registry
          classes: [Af]                   # class symbols of a categorical layer, or
          # threshold: {op: "<=", value: 10}   # for a continuous layer (op: <, <=, >, >=)
          radius_km: 25                   # optional: share of the disc of this radius, else at the point
        provenance: {source: layer, layer: koppen_geiger, classes: [Af]}   # optional: where it came from
        scores: {coverage: 0.04, mi: 0.12}  # optional: measured value (see geoconcept.concepts.scores)
        pinned: true                        # optional: `concepts select` always keeps it

The optional keys are written by `geoconcept concepts build/select`; a hand-written bank needs none.

A rule turns a point into a label in [0, 1]: at the point, 1 if the layer's class is one of
`classes` (or the value passes the threshold) else 0; with `radius_km`, the share of the disc
that does (see geoconcept.layers.neighbourhood). Where the layer has no value the label is
missing (NaN), never 0.

The file is read with `yaml.safe_load` and validated against a layer registry; every problem is
reported at once, naming the file and the concept.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from geoconcept.errors import ConfigError

if TYPE_CHECKING:
    from geoconcept.layers.registry import Registry

DEFAULT_BANK = Path(__file__).with_name("bank.yaml")
CONCEPT_ID = re.compile(r"^[a-z][a-z0-9_]*$")
COLUMN_PREFIX = "concept__"
MAX_PROMPTS = 5
MAX_RADIUS_KM = 500.0
OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
TOP_KEYS = {"version", "description", "categories", "concepts"}
CONCEPT_KEYS = {"id", "name", "category", "prompts", "rule", "provenance", "scores", "pinned"}
RULE_KEYS = {"layer", "classes", "threshold", "radius_km"}
THRESHOLD_KEYS = {"op", "value"}


@dataclass(frozen=True)
class Threshold:
    op: str
    value: float

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return OPERATORS[self.op](values, self.value)

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


def member_of(codes: list[int]) -> Callable[[np.ndarray], np.ndarray]:
    """values → bool array: is each value one of `codes`."""
    codes_array = np.asarray(codes, dtype=np.int64)

    def predicate(values: np.ndarray) -> np.ndarray:
        if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
            # Small unsigned rasters (uint8 class codes): a lookup table beats np.isin ~5x.
            table = np.zeros(np.iinfo(values.dtype).max + 1, dtype=bool)
            table[codes_array[(codes_array >= 0) & (codes_array < table.size)]] = True
            return table[values]
        return np.isin(values, codes_array)

    return predicate


@dataclass(frozen=True)
class Rule:
    """How a layer measures a concept: classes (categorical) or a threshold (continuous)."""

    layer: str
    classes: tuple[str, ...] = ()
    threshold: Threshold | None = None
    radius_km: float | None = None

    def predicate(self, registry: Registry) -> Callable[[np.ndarray], np.ndarray]:
        """values → bool array, for values sampled from this rule's layer of `registry`."""
        if self.threshold is not None:
            return self.threshold
        return member_of(registry[self.layer].codes_of(self.classes))

    def __str__(self) -> str:
        what = f"in {list(self.classes)}" if self.classes else str(self.threshold)
        where = f" within {self.radius_km:g} km" if self.radius_km else ""
        return f"{self.layer} {what}{where}"


@dataclass(frozen=True)
class Concept:
    id: str
    name: str
    category: str
    prompts: tuple[str, ...]
    rule: Rule | None = None
    # Bookkeeping of built banks: not part of a concept's identity (equality and hashing ignore it).
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    scores: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    pinned: bool = field(default=False, compare=False, hash=False)

    @property
    def column(self) -> str:
        """Its label column: `concept__<id>`."""
        return COLUMN_PREFIX + self.id


@dataclass
class ConceptBank:
    concepts: list[Concept]
    version: str
    sha256: str
    path: Path | None = None
    description: str = ""
    categories: list[str] = field(default_factory=list)

    @property
    def measured(self) -> list[Concept]:
        """Concepts with a rule (a layer measures them), in bank order."""
        return [c for c in self.concepts if c.rule is not None]

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.concepts]

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self) -> Iterator[Concept]:
        return iter(self.concepts)

    def __getitem__(self, concept_id: str) -> Concept:
        for concept in self.concepts:
            if concept.id == concept_id:
                return concept
        raise KeyError(concept_id)

    def category_counts(self) -> dict[str, int]:
        return dict(Counter(c.category for c in self.concepts))

    def table(self) -> pd.DataFrame:
        """One row per concept: id, name, category, prompts (joined by " | "), rule ("" if text-only)."""
        return pd.DataFrame(
            {
                "id": [c.id for c in self.concepts],
                "name": [c.name for c in self.concepts],
                "category": [c.category for c in self.concepts],
                "prompts": [" | ".join(c.prompts) for c in self.concepts],
                "rule": [str(c.rule) if c.rule else "" for c in self.concepts],
            }
        )

    def check_layers(self, registry: Registry) -> None:
        """ConfigError listing every rule whose layer or classes `registry` does not have."""
        problems = []
        for i, concept in enumerate(self.concepts):
            if concept.rule is not None:
                problems += [
                    f"concept {concept.id!r} (#{i + 1}): rule: {p}"
                    for p in _rule_layer_problems(concept.rule, registry)
                ]
        if problems:
            raise ConfigError(_problems_message(self.path or "concept bank", problems))


def load_bank(path: str | Path | None = None, registry: Registry | None = None) -> ConceptBank:
    """Read and validate a bank (default: the packaged `bank.yaml`) against `registry` (default: the
    built-in layers)."""
    from geoconcept.layers.registry import Registry  # the registry pulls in rasterio/geopandas

    path = DEFAULT_BANK if path is None else Path(path)
    if path.is_dir():
        raise ConfigError(f"concept bank {path} is a directory, expected a YAML file")
    if not path.is_file():
        raise ConfigError(f"concept bank {path} not found")
    return parse_bank(path.read_bytes(), path, registry if registry is not None else Registry.builtin())


def parse_bank(raw: bytes, path: Path, registry: Registry | None = None) -> ConceptBank:
    """Parse and validate a bank's content: its structure and, given a registry, its rules' layers
    and classes. One ConfigError lists every problem."""
    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"concept bank {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"concept bank {path}: expected a mapping with `version:` and `concepts:`")
    problems = []
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        problems.append(f"unknown top-level key(s) {unknown} (allowed: {sorted(TOP_KEYS)})")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, str | int | float) or not str(version).strip():
        problems.append('`version:` is required (e.g. version: "1.0.0")')
    description = doc.get("description", "")
    if not isinstance(description, str):
        problems.append("`description:` must be a string")
    categories = doc.get("categories", [])
    if not isinstance(categories, list) or not all(isinstance(c, str) and c for c in categories):
        problems.append("`categories:` must be a list of names")
        categories = []
    entries = doc.get("concepts")
    if not isinstance(entries, list) or not entries:
        problems.append("`concepts:` must be a non-empty list")
        entries = []
    concepts = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        label = f"concept #{i + 1}"
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            label = f"concept {entry['id']!r} (#{i + 1})"
            if entry["id"] in seen:
                problems.append(f"{label}: duplicate id (first used by concept #{seen[entry['id']]})")
            seen.setdefault(entry["id"], i + 1)
        concept, concept_problems = _parse_concept(entry, categories)
        if concept is not None and concept.rule is not None and registry is not None:
            concept_problems += [f"rule: {p}" for p in _rule_layer_problems(concept.rule, registry)]
        problems += [f"{label}: {p}" for p in concept_problems]
        if concept is not None:
            concepts.append(concept)
    if problems:
        raise ConfigError(_problems_message(path, problems))
    return ConceptBank(
        concepts=concepts,
        version=str(version),
        sha256=hashlib.sha256(raw).hexdigest(),
        path=path,
        description=description,
        categories=list(categories),
    )


def _problems_message(path: Path | str, problems: list[str]) -> str:
    return f"concept bank {path} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems)


def _parse_concept(entry: Any, categories: list[str]) -> tuple[Concept | None, list[str]]:
    if not isinstance(entry, dict):
        return None, ["must be a mapping with id, name, category, prompts"]
    problems = []
    unknown = sorted(set(entry) - CONCEPT_KEYS)
    if unknown:
        problems.append(f"unknown key(s) {unknown} (allowed: {sorted(CONCEPT_KEYS)})")
    concept_id = entry.get("id")
    if not isinstance(concept_id, str) or not CONCEPT_ID.match(concept_id):
        problems.append(f"id {concept_id!r} must be lowercase letters, digits and underscores, starting with a letter")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("needs a non-empty `name`")
    category = entry.get("category")
    if not isinstance(category, str) or not category.strip():
        problems.append("needs a non-empty `category`")
    elif categories and category not in categories:
        problems.append(f"category {category!r} is not one of the bank's categories {categories}")
    prompts = entry.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        problems.append(f"needs `prompts`: a list of 1 to {MAX_PROMPTS} texts (empty or missing)")
    elif len(prompts) > MAX_PROMPTS:
        problems.append(f"has {len(prompts)} prompts; at most {MAX_PROMPTS}")
    elif not all(isinstance(p, str) and p.strip() for p in prompts):
        problems.append("every prompt must be a non-empty text")
    elif len(set(prompts)) != len(prompts):
        problems.append("has duplicate prompts")
    rule = None
    if entry.get("rule") is not None:
        rule, rule_problems = _parse_rule(entry["rule"])
        problems += [f"rule: {p}" for p in rule_problems]
    problems += _bookkeeping_problems(entry)
    if problems:
        return None, problems
    return Concept(
        id=concept_id,
        name=name.strip(),
        category=category,
        prompts=tuple(prompts),
        rule=rule,
        provenance=dict(entry.get("provenance") or {}),
        scores=dict(entry.get("scores") or {}),
        pinned=entry.get("pinned", False),
    ), []


def _is_plain(value: Any) -> bool:
    """A YAML scalar or a list of them (what provenance and scores hold)."""
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def _bookkeeping_problems(entry: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("provenance", "scores"):
        value = entry.get(key)
        if value is not None and (
            not isinstance(value, dict) or not all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
        ):
            problems.append(f"`{key}` must be a mapping of names to plain values")
    if not isinstance(entry.get("pinned", False), bool):
        problems.append("`pinned` must be true or false")
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _parse_rule(raw: Any) -> tuple[Rule | None, list[str]]:
    if not isinstance(raw, dict):
        return None, ["must be a mapping {layer, classes | threshold, radius_km?}"]
    problems = []
    unknown = sorted(set(raw) - RULE_KEYS)
    if unknown:
        problems.append(f"unknown key(s) {unknown} (allowed: {sorted(RULE_KEYS)})")
    layer = raw.get("layer")
    if not isinstance(layer, str) or not layer:
        problems.append("needs a `layer`")
    has_classes, has_threshold = "classes" in raw, "threshold" in raw
    if has_classes == has_threshold:
        problems.append("needs exactly one of `classes` (categorical layer) or `threshold` (continuous layer)")
    classes: tuple[str, ...] = ()
    if has_classes:
        values = raw["classes"]
        # YAML reads NO/YES/ON/OFF as booleans: say so rather than look for a class "False".
        if not isinstance(values, list) or not values or any(isinstance(v, bool | None) for v in values):
            problems.append('`classes` must be a non-empty list of class symbols (quote codes like "NO")')
        else:
            classes = tuple(str(v) for v in values)
            if len(set(classes)) != len(classes):
                problems.append("`classes` lists a class twice")
    threshold = None
    if has_threshold:
        spec = raw["threshold"]
        if not isinstance(spec, dict) or set(spec) != THRESHOLD_KEYS:
            problems.append(f"`threshold` must be a mapping {{op, value}} with op one of {list(OPERATORS)}")
        elif spec["op"] not in OPERATORS:
            problems.append(f"threshold op {spec['op']!r} must be one of {list(OPERATORS)}")
        elif not _is_number(spec["value"]):
            problems.append(f"threshold value {spec['value']!r} must be a number")
        else:
            threshold = Threshold(op=spec["op"], value=float(spec["value"]))
    radius = raw.get("radius_km")
    if radius is not None and (not _is_number(radius) or not 0 < radius <= MAX_RADIUS_KM):
        problems.append(f"radius_km {radius!r} must be a number > 0 and <= {MAX_RADIUS_KM:g}")
    if problems:
        return None, problems
    return Rule(
        layer=layer, classes=classes, threshold=threshold, radius_km=None if radius is None else float(radius)
    ), []


def _rule_layer_problems(rule: Rule, registry: Registry) -> list[str]:
    if rule.layer not in registry:
        return [f"unknown layer {rule.layer!r} (known: {', '.join(registry.names)})"]
    layer = registry[rule.layer]
    if rule.classes and layer.classes is None:
        return [f"layer {rule.layer!r} is continuous: use `threshold`, not `classes`"]
    if rule.threshold is not None and layer.classes is not None:
        return [f"layer {rule.layer!r} is categorical: use `classes`, not `threshold`"]
    if rule.classes:
        known = layer.known_symbols
        unknown = [c for c in rule.classes if c not in known]
        if unknown:
            listing = sorted(known)
            shown = ", ".join(listing[:40]) + (", ..." if len(listing) > 40 else "")
            return [f"unknown class(es) {unknown} of layer {rule.layer!r} (its classes: {shown})"]
    return []
