"""Reproducible end-to-end rebuilds through Dagster (issue 6): the same raw inputs into a fresh data
root twice give byte-identical outputs, and changing one input file changes exactly the data
versions downstream of it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from geoconcept.concepts.bank import DEFAULT_BANK
from geoconcept.sample import SampleConfig, build_sample
from pipelines.stages import BUILD_MANIFEST, Settings, build_all

pytestmark = pytest.mark.slow

# What must come out byte-identical (paths relative to the data root). Dagster's own instance and
# the JSON pointers (run ids, timestamps) are bookkeeping, not outputs.
COMPARED = ("shards", "labels", "features", "concepts", "runs", "gallery", "evaluation")
SKIPPED_PARTS = {".locks", "dagster_home", "dagster_io"}
TIMING_FILES = {"metrics.jsonl"}  # the trainer's log lines carry samples/s


def tiny_bank(folder: Path) -> Path:
    """The packaged bank cut to a few concepts (embedding 117 concepts would dominate the test's time)."""
    doc = yaml.safe_load(DEFAULT_BANK.read_text())
    measured = [c for c in doc["concepts"] if c.get("rule")][:6]
    text_only = [c for c in doc["concepts"] if not c.get("rule")][:2]
    doc["concepts"] = measured + text_only
    path = folder / "bank.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_config(folder: Path) -> dict[str, dict]:
    trainer = folder / "trainer.yaml"
    trainer.write_text(yaml.safe_dump({"epochs": 2, "batch_size": 8, "queue_size": 16, "lr": 1e-3, "progress": False}))
    resources = {
        "ingest_settings": {"config": {"samples_per_shard": 24, "image_size": 64}},
        "concepts": {"config": {"bank": str(tiny_bank(folder)), "text_model": "ViT-S-32-alt"}},
        "training": {"config": {"seeds": [0], "settings": str(trainer)}},
        "gallery": {"config": {"max_points": 400}},
        "evaluation_settings": {"config": {"downstream_points": 240, "explain_images": 2}},
    }
    return {
        job: {"resources": resources} for job in ("stage_job", "chunks_job", "dataset_job", "train_job", "evaluate_job")
    }


def digests(root: Path) -> dict[str, str]:
    found = {}
    for top in COMPARED:
        for path in sorted((root / top).rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and not SKIPPED_PARTS & set(relative.parts) and path.name not in TIMING_FILES:
                found[relative.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def data_versions(root: Path) -> dict[str, str]:
    return json.loads((root / BUILD_MANIFEST).read_text())["data_versions"]


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    work = tmp_path_factory.mktemp("rebuild")
    raw = work / "raw"
    build_sample(raw, SampleConfig(n_train=40, n_test=12, seed=5, image_size=64))
    settings = Settings(data_root=work / "data", raw_dir=raw, run_config=run_config(work))
    build_all(settings, log=lambda line: None)
    first = work / "first"
    shutil.move(work / "data", first)  # the second build goes to the same path, fresh
    build_all(settings, log=lambda line: None)
    return settings, first


def test_two_rebuilds_are_byte_identical(two_builds):
    settings, first = two_builds
    a, b = digests(first), digests(settings.data_root)
    for part in (
        "shards/sample/train/shard-000000.tar",
        "labels/",
        "concepts/embeddings.safetensors",
        "gallery/",
        "runs/",
        "evaluation/sample/metrics.json",
    ):
        assert any(name.startswith(part) for name in a), f"no {part} in the build"
    assert a.keys() == b.keys()
    assert [name for name in a if a[name] != b[name]] == []
    manifest = json.loads((settings.data_root / BUILD_MANIFEST).read_text())
    assert manifest["environment"]["packages"]["torch"] and manifest["inputs"]["files"]["train.csv"]["sha256"]
    assert data_versions(first) == data_versions(settings.data_root)


def test_changing_one_input_image_changes_exactly_the_data_versions_downstream(two_builds):
    settings, _ = two_builds
    before = data_versions(settings.data_root)
    test_ids = [line.split(",")[0] for line in (settings.raw_dir / "test.csv").read_text().splitlines()[1:]]
    image = settings.raw_dir / "images" / test_ids[0]
    with Image.open(image) as original:
        original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(image, quality=90)  # same place, other pixels
    build_all(settings, log=lambda line: None)
    after = data_versions(settings.data_root)
    changed = sorted(name for name in after if after[name] != before.get(name))
    # The test image's shard and its features, and what reads them: the evaluation. Its labels depend
    # on coordinates only; the staged table and manifest summary on the CSV; training never sees the
    # test split, so checkpoints and galleries keep their versions.
    assert changed == ["evaluation", "image_features[test-00000]", "shards[test-00000]"]
