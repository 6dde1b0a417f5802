"""Trainer inputs are checked against each other before training starts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _model_inputs import CONCEPTS, concept_values, train_args, write_dataset, write_embeddings

from geoconcept.errors import ConfigError, InputError
from geoconcept.train.data import load_training_data
from geoconcept.train.params import parse_args


def config(paths, tmp_path, **overrides):
    return parse_args(train_args(paths, tmp_path / "run", **overrides))


def test_loads_splits_features_coordinates_and_labels(tmp_path):
    paths = write_dataset(tmp_path, n=60)
    data = load_training_data(config(paths, tmp_path))
    assert len(data.train) == 42 and len(data.val) == 12  # test rows are left out
    assert data.feature_dim == 16 and data.backbone == "test-backbone__none"
    assert data.concepts is not None and data.concepts.info.concept_ids == CONCEPTS
    assert data.labelled_concepts == ["tropical", "northern", "polar"]
    labels = data.train.labels
    assert labels is not None and labels.shape == (42, 4)
    assert np.isnan(labels[:, 3].numpy()).all()  # text-only concept: never measured
    assert np.isnan(labels[:, 0].numpy()).any()  # missing values stay NaN, not 0
    expected = concept_values(data.train.latlon.double().numpy())["northern"]
    known = ~np.isnan(labels[:, 1].numpy())
    assert np.array_equal(labels[known, 1].numpy(), expected[known])


def test_labels_in_another_row_order_are_aligned_by_key(tmp_path):
    paths = write_dataset(tmp_path, n=40)
    reference = load_training_data(config(paths, tmp_path))
    path = paths["labels"] / "shard-000000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.take(np.arange(table.num_rows)[::-1]), path)
    shuffled = load_training_data(config(paths, tmp_path))
    assert np.array_equal(shuffled.train.labels.numpy(), reference.train.labels.numpy(), equal_nan=True)


def test_features_and_labels_with_different_keys_name_both_files(tmp_path):
    paths = write_dataset(tmp_path, n=40)
    path = paths["labels"] / "shard-000001.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 2), path)
    with pytest.raises(
        InputError,
        match=r"features .*shard-000001\.safetensors \(20 samples\) and labels .*shard-000001\.parquet "
        r"\(18 samples\).*2 only in the features",
    ):
        load_training_data(config(paths, tmp_path))


def test_missing_label_file(tmp_path):
    paths = write_dataset(tmp_path, n=40)
    (paths["labels"] / "shard-000000.parquet").unlink()
    with pytest.raises(InputError, match=r"no labels for features .*shard-000000\.safetensors"):
        load_training_data(config(paths, tmp_path))


def test_feature_keys_missing_from_the_split(tmp_path):
    paths = write_dataset(tmp_path, n=40)
    pq.write_table(pa.table({"key": ["k00000"], "split": ["train"]}), paths["split"])
    with pytest.raises(InputError, match=r"19 samples of .*shard-000000.* are not in the split file"):
        load_training_data(config(paths, tmp_path))
    pq.write_table(pa.table({"key": ["k00000"], "split": ["holdout"]}), paths["split"])
    with pytest.raises(InputError, match="unknown split values"):
        load_training_data(config(paths, tmp_path))


def test_concept_bank_changed_since_the_embeddings(tmp_path):
    paths = write_dataset(tmp_path, n=40)
    paths["bank"].write_text(paths["bank"].read_text() + "  - id: desert\n")
    with pytest.raises(
        ConfigError,
        match=r"concept bank .*bank\.yaml changed since the concept embeddings .*embeddings\.safetensors were built",
    ):
        load_training_data(config(paths, tmp_path))


def test_labels_for_concepts_the_embeddings_do_not_know(tmp_path):
    paths = write_dataset(tmp_path, n=40)
    import torch

    write_embeddings(paths["embeddings"], ["tropical", "northern"], torch.eye(2, 512), "x")
    with pytest.raises(
        ConfigError,
        match=r"labels .*shard-000000\.parquet have concepts that the concept embeddings do not \(\['polar'\]\)",
    ):
        load_training_data(config(paths, tmp_path, concept_bank=None))


def test_feature_files_from_different_backbones(tmp_path):
    paths = write_dataset(tmp_path / "a", n=40)
    other = write_dataset(tmp_path / "b", n=40, dim=8, model="other")
    (other["features"] / "shard-000000.safetensors").rename(paths["features"] / "shard-000009.safetensors")
    with pytest.raises(InputError, match="different backbones"):
        load_training_data(config(paths, tmp_path, labels=[], variant="concept"))


def test_label_values_outside_unit_interval(tmp_path):
    paths = write_dataset(tmp_path, n=40)
    path = paths["labels"] / "shard-000000.parquet"
    table = pq.read_table(path)
    column = table.column("concept__polar").to_numpy().copy()
    column[1] = 3.0
    pq.write_table(
        table.set_column(table.schema.get_field_index("concept__polar"), "concept__polar", pa.array(column)), path
    )
    with pytest.raises(InputError, match=r"concept__polar has values outside \[0, 1\]"):
        load_training_data(config(paths, tmp_path))


def test_empty_or_missing_feature_folder(tmp_path):
    paths = write_dataset(tmp_path, n=40)
    with pytest.raises(InputError, match="no feature files"):
        load_training_data(config(paths, tmp_path, features=str(tmp_path / "nothing"), labels=[], variant="concept"))
