"""The packaged concept bank, and the validation of bank files (each kind of mistake)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from geoconcept.concepts.bank import DEFAULT_BANK, MAX_PROMPTS, load_bank
from geoconcept.errors import ConfigError
from geoconcept.layers.registry import Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.builtin()


@pytest.fixture(scope="module")
def bank(registry):
    return load_bank(registry=registry)


def test_default_bank_size_and_categories(bank):
    assert len(bank) >= 60
    counts = bank.category_counts()
    assert set(counts) == set(bank.categories)
    assert {"climate", "land_cover", "water_terrain", "human_geography", "architecture", "vegetation"} <= set(counts)
    assert all(n >= 5 for n in counts.values())
    assert len(bank.measured) >= 30 and len(bank.measured) < len(bank)  # some concepts are text-only


def test_default_bank_identity(bank):
    assert bank.path == DEFAULT_BANK
    assert bank.sha256 == hashlib.sha256(DEFAULT_BANK.read_bytes()).hexdigest()
    assert bank.version
    assert len(set(bank.ids)) == len(bank.ids)
    for text_only in ("gothic_cathedral", "skyscrapers", "tuk_tuk", "prayer_flags"):  # the paper's examples
        assert bank[text_only].rule is None


def test_every_concept_is_well_formed(bank):
    for concept in bank:
        assert 1 <= len(concept.prompts) <= MAX_PROMPTS, concept.id
        assert all(p.strip() for p in concept.prompts)
        assert concept.column == f"concept__{concept.id}"


def test_every_rule_names_a_real_layer_and_real_classes(bank, registry):
    for concept in bank.measured:
        layer = registry[concept.rule.layer]
        if concept.rule.classes:
            codes = layer.codes_of(concept.rule.classes)
            assert len(codes) == len(concept.rule.classes), concept.id  # none merely inherited
        else:
            assert layer.classes is None, concept.id
        if concept.rule.radius_km is not None:
            assert 0 < concept.rule.radius_km <= 100


def write_bank(tmp_path: Path, concepts: list, **top) -> Path:
    path = tmp_path / "bank.yaml"
    doc = {"version": "test", **top, "concepts": concepts}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def concept(cid: str = "c1", **overrides) -> dict:
    entry = {"id": cid, "name": "C", "category": "climate", "prompts": ["a prompt"]}
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not None}


def bank_error(tmp_path: Path, concepts: list, registry, **top) -> str:
    path = write_bank(tmp_path, concepts, **top)
    with pytest.raises(ConfigError) as info:
        load_bank(path, registry=registry)
    message = str(info.value)
    assert str(path) in message
    return message


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (concept(rule={"layer": "elevation", "classes": ["x"]}), "unknown layer 'elevation'"),
        (concept(rule={"layer": "igbp", "classes": ["urbann"]}), "unknown class(es) ['urbann'] of layer 'igbp'"),
        (concept(prompts=[]), "empty or missing"),
        (concept(prompts=None), "empty or missing"),
        (concept(prompts=["a", ""]), "non-empty text"),
        (concept(prompts=["a", "a"]), "duplicate prompts"),
        (concept(prompts=[f"p{i}" for i in range(6)]), "at most 5"),
        (concept(rule={"layer": "igbp", "classes": ["urban"], "radius_km": 0}), "radius_km 0 must be"),
        (concept(rule={"layer": "igbp", "classes": ["urban"], "radius_km": -5}), "radius_km -5 must be"),
        (concept(rule={"layer": "igbp", "classes": ["urban"], "radius_km": "far"}), "radius_km 'far' must be"),
        (concept(rule={"layer": "igbp", "classes": ["urban"], "radius_km": 5000}), "<= 500"),
        (concept(colour="red"), "unknown key(s) ['colour']"),
        (concept(rule={"layer": "igbp", "classes": ["urban"], "buffer": 3}), "unknown key(s) ['buffer']"),
        (concept(rule={"layer": "igbp"}), "exactly one of `classes`"),
        (
            concept(rule={"layer": "coast_km", "classes": ["x"], "threshold": {"op": "<", "value": 1}}),
            "exactly one of",
        ),
        (concept(rule={"layer": "igbp", "threshold": {"op": "<", "value": 3}}), "is categorical: use `classes`"),
        (concept(rule={"layer": "coast_km", "classes": ["near"]}), "is continuous: use `threshold`"),
        (concept(rule={"layer": "coast_km", "threshold": {"op": "~", "value": 3}}), "op '~' must be one of"),
        (concept(rule={"layer": "coast_km", "threshold": {"op": "<", "value": "ten"}}), "value 'ten' must be"),
        (concept(rule={"layer": "country", "classes": [False]}), 'quote codes like "NO"'),
        (concept(id="Bad-Id"), "id 'Bad-Id' must be lowercase"),
        (concept(name=""), "non-empty `name`"),
        (concept(category=None), "non-empty `category`"),
    ],
)
def test_each_kind_of_mistake_is_named(tmp_path, registry, entry, expected):
    message = bank_error(tmp_path, [concept("ok"), entry], registry)
    assert expected in message
    assert f"concept '{entry.get('id', 'c1')}'" in message or "concept #2" in message


def test_duplicate_ids(tmp_path, registry):
    message = bank_error(tmp_path, [concept("same"), concept("other"), concept("same")], registry)
    assert "concept 'same' (#3): duplicate id (first used by concept #1)" in message


def test_all_problems_are_listed_at_once(tmp_path, registry):
    message = bank_error(
        tmp_path,
        [concept("a", prompts=[]), concept("b", rule={"layer": "nowhere", "classes": ["x"]}), concept("a")],
        registry,
    )
    assert "has 3 problem(s)" in message
    assert "'a' (#1): needs `prompts`" in message
    assert "'b' (#2): rule: unknown layer 'nowhere'" in message
    assert "'a' (#3): duplicate id" in message


def test_top_level_problems(tmp_path, registry):
    path = tmp_path / "bank.yaml"
    path.write_text(yaml.safe_dump({"concepts": [concept()], "extra": 1}))
    with pytest.raises(ConfigError) as info:
        load_bank(path, registry=registry)
    assert "`version:` is required" in str(info.value) and "unknown top-level key(s) ['extra']" in str(info.value)
    message = bank_error(tmp_path, [concept(category="food")], registry, categories=["climate"])
    assert "category 'food' is not one of the bank's categories" in message
    message = bank_error(tmp_path, [], registry)
    assert "non-empty list" in message


def test_invalid_yaml_and_missing_file(tmp_path, registry):
    path = tmp_path / "bank.yaml"
    path.write_text("version: 1\nconcepts: [ {id: a\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_bank(path, registry=registry)
    with pytest.raises(ConfigError, match="not found"):
        load_bank(tmp_path / "missing.yaml", registry=registry)


def test_yaml_is_read_safely(tmp_path, registry):
    path = tmp_path / "bank.yaml"
    path.write_text("version: !!python/object/apply:os.system ['echo hacked']\nconcepts: []\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_bank(path, registry=registry)


def test_a_valid_small_bank(tmp_path, registry):
    path = write_bank(
        tmp_path,
        [
            concept("near_coast", rule={"layer": "coast_km", "threshold": {"op": "<=", "value": 10}}),
            concept("text_only"),
            concept("urban", rule={"layer": "igbp", "classes": ["urban"], "radius_km": 5}),
        ],
    )
    bank = load_bank(path, registry=registry)
    assert bank.ids == ["near_coast", "text_only", "urban"]
    assert [c.id for c in bank.measured] == ["near_coast", "urban"]
    assert str(bank["urban"].rule) == "igbp in ['urban'] within 5 km"
    assert bank.version == "test" and bank.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    table = bank.table()
    assert table.columns.tolist() == ["id", "name", "category", "prompts", "rule"]
    assert table["rule"].tolist() == ["coast_km <= 10", "", "igbp in ['urban'] within 5 km"]
