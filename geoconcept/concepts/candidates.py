"""Candidate concepts from every source, for `geoconcept concepts build`.

Sources, in the order the candidates file lists them (the first concept with an id wins):

1. `--extend BANK`: the concepts of an existing bank, so a new bank can grow from an old one;
2. the layers of the registry (built-in + `--layers`): one candidate per class of each categorical
   layer (Köppen classes and groups, IGBP classes, land/ocean, countries, continents, user GeoTIFF
   classes and vector attribute values) and one per threshold of each continuous layer that the
   templates give thresholds for (coast distance; user layers only if listed). A templates file
   with `layer_concepts:` (a list of bank-format concepts with rules) replaces this enumeration with
   exactly those concepts: that is how a build spec fixes "which classes and thresholds";
3. each `--vocabulary FILE`: text-only concepts.

Templates (YAML; defaults in `templates.yaml` beside this module, a user file overrides them key by
key and layer by layer) give each layer's category, prompt templates, `radius_km` and thresholds.

A vocabulary file is either a plain list (one concept name per line; blank lines and `#` comments
skipped) or, if it ends in `.csv`, a CSV with a header and the columns `name` (required), `id`,
`category` and `prompts` (several joined by " | "). A bad line is one error naming file:line.

Every candidate records where it came from in `provenance`: {source: layer, layer, classes |
threshold} / {source: spec, file, layer, ...} / {source: vocabulary, file, line} / {source: bank,
file, version}. The candidates file has the bank format (geoconcept.concepts.bank), so it is
validated by the same code and `concepts select` reads it as a bank.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geoconcept import atomic
from geoconcept.concepts.bank import MAX_PROMPTS, Concept, ConceptBank, load_bank, parse_bank
from geoconcept.errors import ConfigError
from geoconcept.layers.registry import Registry
from geoconcept.yaml_files import read_yaml

DEFAULT_TEMPLATES = Path(__file__).with_name("templates.yaml")
TEMPLATE_KEYS = {"version", "description", "categories", "pin_all", "text", "default_layer", "layers", "layer_concepts"}
LAYER_TEMPLATE_KEYS = {"category", "prompts", "radius_km", "thresholds"}
VOCABULARY_COLUMNS = {"id", "name", "category", "prompts"}
PROMPT_SEPARATOR = " | "
OP_WORDS = {"<": "less than", "<=": "at most", ">": "more than", ">=": "at least"}
DEFAULT_VERSION = "0.1.0"


@dataclass
class Candidates:
    """The candidate concepts (bank-format entries, in source order) and the ids dropped as repeats."""

    entries: list[dict[str, Any]]
    version: str = DEFAULT_VERSION
    description: str = ""
    categories: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """The candidates file's content (bank format); categories: those used, template order first."""
        used = list(dict.fromkeys(e["category"] for e in self.entries))
        categories = [c for c in self.categories if c in used] + [c for c in used if c not in self.categories]
        doc: dict[str, Any] = {"version": self.version}
        if self.description:
            doc["description"] = self.description
        return doc | {"categories": categories, "concepts": self.entries}


def slug(text: str) -> str:
    """A concept id from free text: lowercase letters, digits and _ ("North America" → north_america)."""
    out = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return f"c_{out}" if out[:1].isdigit() else out


def load_templates(path: str | Path | None = None) -> dict[str, Any]:
    """The default templates, with a user templates file's keys over them (layer entries key by key)."""
    templates = _read_templates(DEFAULT_TEMPLATES)
    if path is not None:
        user = _read_templates(Path(path))
        layers = dict(templates["layers"])
        for name, entry in user.pop("layers", {}).items():
            layers[name] = layers.get(name, {}) | entry
        templates = templates | user | {"layers": layers}
    return templates


def _read_templates(path: Path) -> dict[str, Any]:
    doc = read_yaml(path, "templates file")
    if not isinstance(doc, dict):
        raise ConfigError(f"templates file {path}: expected a mapping")
    unknown = sorted(set(doc) - TEMPLATE_KEYS)
    if unknown:
        raise ConfigError(f"templates file {path}: unknown key(s) {unknown} (allowed: {sorted(TEMPLATE_KEYS)})")
    layers = doc.get("layers") or {}
    if not isinstance(layers, dict):
        raise ConfigError(f"templates file {path}: `layers` must be a mapping of layer name to templates")
    entries = [(f"layer {name!r}", entry) for name, entry in layers.items()]
    if "default_layer" in doc:
        entries.append(("`default_layer`", doc["default_layer"]))
    for where, entry in entries:
        problem = _layer_template_problem(entry)
        if problem:
            raise ConfigError(f"templates file {path}: {where}: {problem}")
    if "layer_concepts" in doc:
        doc["spec_file"] = str(path)
    return doc


def _layer_template_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict) or set(entry) - LAYER_TEMPLATE_KEYS:
        return f"must be a mapping with keys from {sorted(LAYER_TEMPLATE_KEYS)}"
    prompts = entry.get("prompts", ["x"])
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
        return "`prompts` must be a non-empty list of texts"
    thresholds = entry.get("thresholds") or []
    if not isinstance(thresholds, list) or not all(
        isinstance(t, dict) and set(t) == {"op", "value"} and t["op"] in OP_WORDS and _number(t["value"])
        for t in thresholds
    ):
        return f"`thresholds` must be a list of {{op, value}} with op one of {list(OP_WORDS)}"
    if entry.get("radius_km") is not None and not _number(entry["radius_km"]):
        return "`radius_km` must be a number"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def render(template: str, values: dict[str, Any], what: str) -> str:
    try:
        return template.format_map(values)
    except (KeyError, ValueError, IndexError) as exc:
        raise ConfigError(f"template {template!r} ({what}) cannot be filled: {exc!r}") from None


def _entry(concept_id: str, name: str, category: str, prompts: list[str], rule: dict | None, provenance: dict) -> dict:
    prompts = list(dict.fromkeys(prompts))[:MAX_PROMPTS]
    entry: dict[str, Any] = {"id": concept_id, "name": name, "category": category, "prompts": prompts}
    if rule is not None:
        entry["rule"] = rule
    return entry | {"provenance": provenance}


def layer_candidates(registry: Registry, templates: dict[str, Any]) -> list[dict[str, Any]]:
    """One candidate per class (categorical) or listed threshold (continuous) of every layer."""
    entries = []
    for layer in registry:
        spec = templates["default_layer"] | templates["layers"].get(layer.name, {})
        radius = spec.get("radius_km")
        suffix = f"_{radius:g}km".replace(".", "_") if radius else ""
        base = {"layer": layer.name, "units": layer.units}
        category = render(spec["category"], base | {"name": layer.name, "symbol": ""}, f"layer {layer.name}")
        if layer.classes is not None:
            for code, symbol in layer.classes.symbols.items():
                name = layer.classes.names.get(code, symbol)
                values = base | {"name": name, "symbol": symbol}
                rule = {"layer": layer.name, "classes": [symbol]} | ({"radius_km": radius} if radius else {})
                prompts = [render(t, values, f"layer {layer.name}") for t in spec["prompts"]]
                provenance = {"source": "layer", "layer": layer.name, "classes": [symbol]}
                entries.append(
                    _entry(slug(f"{layer.name}_{symbol}") + suffix, name, category, prompts, rule, provenance)
                )
            continue
        for threshold in spec.get("thresholds") or []:
            op, value = threshold["op"], threshold["value"]
            values = base | {"op": op, "op_words": OP_WORDS.get(op, op), "value": value, "symbol": ""}
            name = f"{layer.name} {op} {value:g}"
            values["name"] = name
            rule = {"layer": layer.name, "threshold": {"op": op, "value": value}}
            rule |= {"radius_km": radius} if radius else {}
            prompts = [render(t, values, f"layer {layer.name}") for t in spec["prompts"]]
            provenance = {"source": "layer", "layer": layer.name, "threshold": f"{op} {value:g}"}
            concept_id = slug(f"{layer.name}_{OP_WORDS.get(op, op)}_{value:g}") + suffix
            entries.append(_entry(concept_id, name, category, prompts, rule, provenance))
    return entries


def spec_candidates(templates: dict[str, Any]) -> list[dict[str, Any]]:
    """The explicit `layer_concepts:` of a build spec, in its order, with their provenance."""
    entries = []
    for i, raw in enumerate(templates["layer_concepts"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("rule"), dict):
            raise ConfigError(f"build spec {templates['spec_file']}: layer_concepts #{i + 1} needs a `rule`")
        rule = raw["rule"]
        provenance = {"source": "spec", "file": templates["spec_file"], "layer": rule.get("layer")}
        provenance |= {k: rule[k] for k in ("classes", "radius_km") if k in rule}
        if "threshold" in rule:
            provenance["threshold"] = f"{rule['threshold'].get('op')} {rule['threshold'].get('value')}"
        entries.append(dict(raw) | {"provenance": provenance})
    return entries


def read_vocabulary(path: str | Path, templates: dict[str, Any]) -> list[dict[str, Any]]:
    """Text-only candidates of a vocabulary file (plain list or CSV); ConfigError naming file:line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"vocabulary {path} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    rows = _csv_rows(path, text) if path.suffix.lower() == ".csv" else _plain_rows(text)
    entries, seen = [], {}
    for line, row in rows:
        where = f"{path}:{line}"
        name = (row.get("name") or "").strip()
        if not name:
            raise ConfigError(f"{where}: empty concept name")
        concept_id = (row.get("id") or "").strip() or slug(name)
        if not re.fullmatch(r"[a-z][a-z0-9_]*", concept_id):
            raise ConfigError(
                f"{where}: id {concept_id!r} must be lowercase letters, digits and _, starting with a letter"
            )
        if concept_id in seen:
            raise ConfigError(f"{where}: concept {concept_id!r} repeats line {seen[concept_id]}")
        seen[concept_id] = line
        category = (row.get("category") or "").strip() or templates["text"]["category"]
        prompts = [p.strip() for p in (row.get("prompts") or "").split("|") if p.strip()]
        if not prompts:
            prompts = [render(t, {"name": name}, "text") for t in templates["text"]["prompts"]]
        if len(prompts) > MAX_PROMPTS or len(set(prompts)) != len(prompts):
            raise ConfigError(f"{where}: 1 to {MAX_PROMPTS} distinct prompts, got {len(prompts)}")
        provenance = {"source": "vocabulary", "file": str(path), "line": line}
        entries.append(_entry(concept_id, name, category, prompts, None, provenance))
    return entries


def _plain_rows(text: str) -> list[tuple[int, dict[str, str]]]:
    lines = enumerate(text.splitlines(), start=1)
    return [(n, {"name": line.strip()}) for n, line in lines if line.strip() and not line.lstrip().startswith("#")]


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, str]]]:
    reader = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(reader, [])]
    if "name" not in header or set(header) - VOCABULARY_COLUMNS or len(set(header)) != len(header):
        raise ConfigError(f"{path}:1: header {header} must name `name` and only {sorted(VOCABULARY_COLUMNS)}")
    rows = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise ConfigError(f"{path}:{reader.line_num}: {len(cells)} fields, the header has {len(header)}")
            rows.append((reader.line_num, dict(zip(header, cells, strict=True))))
    except csv.Error as exc:
        raise ConfigError(f"{path}:{reader.line_num}: {exc}") from None
    return rows


def concept_entry(concept: Concept) -> dict[str, Any]:
    """A concept as a bank-file entry (the keys bank.py reads)."""
    entry: dict[str, Any] = {"id": concept.id, "name": concept.name, "category": concept.category}
    entry["prompts"] = list(concept.prompts)
    if concept.rule is not None:
        rule = concept.rule
        entry["rule"] = {"layer": rule.layer}
        if rule.classes:
            entry["rule"]["classes"] = list(rule.classes)
        else:
            entry["rule"]["threshold"] = {"op": rule.threshold.op, "value": rule.threshold.value}
        if rule.radius_km is not None:
            entry["rule"]["radius_km"] = rule.radius_km
    for key in ("provenance", "scores"):
        if getattr(concept, key):
            entry[key] = dict(getattr(concept, key))
    return entry | ({"pinned": True} if concept.pinned else {})


def bank_candidates(bank: ConceptBank) -> list[dict[str, Any]]:
    """The concepts of an existing bank, as candidates that remember the bank."""
    entries = []
    for concept in bank:
        entry = concept_entry(concept)
        entry["provenance"] = {"source": "bank", "file": str(bank.path), "version": bank.version} | concept.provenance
        entries.append(entry)
    return entries


def build_candidates(
    registry: Registry,
    templates: dict[str, Any] | None = None,
    vocabularies: list[str | Path] = (),
    extend: str | Path | None = None,
) -> Candidates:
    """Candidates from the bank to extend, the layers (or the spec's layer concepts) and vocabularies."""
    templates = templates if templates is not None else load_templates()
    old = load_bank(extend, registry) if extend is not None else None
    sources = bank_candidates(old) if old is not None else []
    sources += spec_candidates(templates) if "layer_concepts" in templates else layer_candidates(registry, templates)
    for path in vocabularies:
        sources += read_vocabulary(path, templates)
    entries, repeated, seen = [], [], set()
    for entry in sources:
        if entry["id"] in seen:
            repeated.append(entry["id"])
            continue
        seen.add(entry["id"])
        entries.append(entry | ({"pinned": True} if templates.get("pin_all") else {}))
    categories = list(templates.get("categories") or []) + (old.categories if old is not None else [])
    return Candidates(
        entries=entries,
        version=str(templates.get("version") or (old.version if old is not None else DEFAULT_VERSION)),
        description=str(templates.get("description") or (old.description if old is not None else "")),
        categories=list(dict.fromkeys(categories)),
        repeated=repeated,
    )


def dump_bank_yaml(doc: dict[str, Any], header: str) -> bytes:
    """A bank-format document as YAML bytes, keys in the bank's order, behind a `# ...` header."""
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)
    return (header + body).encode("utf-8")


def write_bank_yaml(doc: dict[str, Any], out: str | Path, registry: Registry, header: str) -> ConceptBank:
    """Validate a bank-format document against `registry` and write it atomically; the parsed bank."""
    out = Path(out)
    raw = dump_bank_yaml(doc, header)
    bank = parse_bank(raw, out, registry)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(out, raw)
    return bank


def write_candidates(candidates: Candidates, out: str | Path, registry: Registry) -> ConceptBank:
    header = "# Candidate concepts written by `geoconcept concepts build` (bank format; see candidates.py).\n"
    return write_bank_yaml(candidates.document(), out, registry, header)
