"""Trainer inputs are checked against each other before training starts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from _model_inputs import CONCEPTS, concept_values, train_args, write_dataset, write_embeddings

from geoconcept.errors import ConfigError, InputError
from geoconcept.features import read_feature_shard, write_feature_shard
from geoconcept.train.data import epoch_order, load_training_data
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
    labels = data.val.labels
    assert labels is not None and labels.shape == (12, 4)
    assert np.isnan(labels[:, 3].numpy()).all()  # text-only concept: never measured
    assert np.isnan(labels[:, 0].numpy()).any()  # missing values stay NaN, not 0
    expected = concept_values(data.val.latlon.double().numpy())["northern"]
    known = ~np.isnan(labels[:, 1].numpy())
    assert np.array_equal(labels[known, 1].numpy(), expected[known])
    assert torch.isnan(data.train.prevalence[3]) and 0 < data.train.prevalence[1].item() < 1


def test_labels_in_another_row_order_are_aligned_by_key(tmp_path):
    paths = write_dataset(tmp_path, n=40)
    reference = load_training_data(config(paths, tmp_path))
    path = paths["labels"] / "shard-000000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.take(np.arange(table.num_rows)[::-1]), path)
    shuffled = load_training_data(config(paths, tmp_path))
    assert np.array_equal(shuffled.val.labels.numpy(), reference.val.labels.numpy(), equal_nan=True)
    assert torch.allclose(shuffled.train.prevalence, reference.train.prevalence, equal_nan=True)


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


def in_ram_reference(data) -> torch.Tensor:
    """The training features read whole, in the split's sample order (shard after shard)."""
    return torch.cat([read_feature_shard(s.features).features[s.rows] for s in data.train.shards])


@pytest.mark.parametrize("buffer", [1, 30, 1000])
def test_epoch_order_shuffles_shards_then_rows_within_windows(buffer):
    counts = (5, 7, 3, 6)
    order, ends = epoch_order(3, 1, counts, buffer)
    assert sorted(order.tolist()) == list(range(21)) and ends[-1] == 21
    shard = np.searchsorted(np.cumsum(counts), order.numpy(), side="right")
    for lo, hi in zip([0, *ends[:-1]], ends, strict=True):  # a window = whole shards, >= buffer samples but the last
        window = set(shard[lo:hi].tolist())
        assert sum(counts[s] for s in window) == hi - lo
        assert hi - lo >= buffer or hi == 21
    assert len(ends) == {1: 4, 30: 1, 1000: 1}[buffer]
    assert not torch.equal(order, epoch_order(3, 2, counts, buffer)[0])  # another epoch, another order


@pytest.mark.parametrize("buffer", [10, 100])
def test_batches_read_the_right_rows_for_every_process_and_resume_in_place(tmp_path, buffer):
    paths = write_dataset(tmp_path, n=96, shards=4)
    data = load_training_data(config(paths, tmp_path))
    reference = in_ram_reference(data)
    whole = list(data.train.batches(seed=0, epoch=2, batch_size=16, buffer=buffer))
    assert len(whole) == len(data.train) // 16
    for step, batch in enumerate(whole):
        assert torch.equal(batch.features, reference[batch.ids])
        halves = [
            next(data.train.batches(seed=0, epoch=2, batch_size=16, buffer=buffer, start=step, rank=r, world=2))
            for r in range(2)
        ]
        assert all(torch.equal(h.ids, batch.ids) for h in halves)
        assert torch.equal(torch.cat([h.features for h in halves]), batch.features)
        for h, rows in zip(halves, batch.ids.tensor_split(2), strict=True):
            known = ~torch.isnan(h.labels[:, 1])
            north = (data.train.latlon[rows][:, 0] > 0).float()
            assert torch.equal(h.labels[known, 1], north[known])  # labels travel with their rows


def test_features_stored_as_float16_are_read_as_float32(tmp_path):
    paths = write_dataset(tmp_path, n=40)
    for path in sorted(paths["features"].iterdir()):
        shard = read_feature_shard(path)
        write_feature_shard(path, shard.keys, shard.features, shard.latlon, shard.metadata | {"precision": "bf16"})
    data = load_training_data(config(paths, tmp_path))
    batch = next(data.train.batches(seed=0, epoch=0, batch_size=8, buffer=10))
    assert batch.features.dtype == torch.float32 and data.val.features.dtype == torch.float32
    assert torch.equal(batch.features, in_ram_reference(data)[batch.ids])
