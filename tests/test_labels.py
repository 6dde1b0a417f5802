"""`label_points`' output contract, per-shard labels from an ingest manifest, and `geoconcept label`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import REPO

from geoconcept.cli import main
from geoconcept.concepts.bank import load_bank
from geoconcept.concepts.labels import (
    POINT_COLUMNS,
    InvalidPointsError,
    concept_coverage,
    label_columns,
    label_points,
    label_shard,
    write_labels,
)
from geoconcept.errors import InputError
from geoconcept.layers.registry import Registry

# Sahara, Amazon, Greenland interior, open ocean, Paris, the dateline twice, the South Pole
LAT = np.array([23.5, -3.5, 72.5, -30.0, 48.85, 65.0, 65.0, -90.0])
LON = np.array([12.0, -62.0, -40.0, -140.0, 2.35, 180.0, -180.0, 0.0])


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.builtin()


@pytest.fixture(scope="module")
def bank(registry):
    return load_bank(registry=registry)


@pytest.fixture(scope="module")
def labels(bank, registry) -> pd.DataFrame:
    return label_points(LAT, LON, bank, registry)


def test_columns_and_types(labels, bank):
    assert list(labels.columns) == label_columns(bank)
    assert list(labels.columns[: len(POINT_COLUMNS)]) == list(POINT_COLUMNS)
    assert [c for c in labels.columns if c.startswith("concept__")] == [c.column for c in bank.measured]
    dtypes = labels.dtypes
    assert str(dtypes["igbp"]) == "Int16" and pd.api.types.is_bool_dtype(dtypes["land"])
    assert dtypes["coast_km"] == np.float32 and dtypes["lat"] == np.float64
    assert all(dtypes[c.column] == np.float32 for c in bank.measured)
    for column in ("koppen_geiger", "koppen_group", "igbp_name", "country", "continent"):
        assert pd.api.types.is_string_dtype(dtypes[column]), column


def test_known_points(labels):
    sahara, amazon, greenland, ocean, paris = (labels.iloc[i] for i in range(5))
    assert (sahara["koppen_geiger"], sahara["igbp_name"], sahara["continent"]) == ("BWh", "Barren", "Africa")
    assert sahara["concept__hot_desert_climate"] == 1.0 and sahara["concept__barren_land"] > 0.9
    assert (amazon["koppen_geiger"], amazon["igbp"], amazon["country"]) == ("Af", 2, "BR")
    assert amazon["concept__tropical_rainforest_climate"] == 1.0 and amazon["concept__evergreen_broadleaf_forest"] > 0.9
    assert (greenland["koppen_group"], greenland["igbp"]) == ("E", 15)
    assert greenland["concept__polar_zone"] == 1.0 and greenland["concept__snow_and_ice"] > 0.9
    assert ocean["igbp"] == 0 and not ocean["land"] and ocean["coast_km"] > 200
    assert pd.isna(ocean["koppen_geiger"]) and pd.isna(ocean["country"]) and pd.isna(ocean["continent"])
    assert (paris["koppen_geiger"], paris["country"], paris["continent"]) == ("Cfb", "FR", "Europe")
    assert paris["concept__urban_area"] > 0.5 and paris["concept__in_europe"] == 1.0


def test_missing_is_nan_not_zero(labels):
    ocean = labels.iloc[3]
    assert np.isnan(ocean["concept__hot_desert_climate"])  # no climate over the ocean
    assert np.isnan(ocean["concept__in_europe"])  # no continent at sea
    assert ocean["concept__at_sea"] == 1.0 and ocean["concept__surrounded_by_sea"] == 1.0
    assert ocean["concept__far_inland"] == 0.0
    south_pole = labels.iloc[7]
    assert pd.isna(south_pole["igbp"]) and np.isnan(south_pole["concept__snow_and_ice"])  # MODIS nodata cap


def test_labels_are_in_unit_interval(labels, bank):
    values = labels[[c.column for c in bank.measured]].to_numpy()
    known = values[~np.isnan(values)]
    assert known.size and known.min() >= 0.0 and known.max() <= 1.0


def test_dateline_rows_agree_and_input_lon_is_kept(labels):
    east, west = labels.iloc[5].drop("lon"), labels.iloc[6].drop("lon")
    pd.testing.assert_series_equal(east, west, check_names=False)
    assert labels["lon"].tolist()[5:7] == [180.0, -180.0]


def test_row_order_is_input_order(labels, bank, registry):
    order = np.array([4, 0, 7, 2, 6, 1, 3, 5])
    shuffled = label_points(LAT[order], LON[order], bank, registry)
    pd.testing.assert_frame_equal(shuffled, labels.iloc[order].reset_index(drop=True))


def test_invalid_points_are_an_error_listing_them(bank, registry):
    lat = np.array([10.0, np.nan, 95.0, 20.0, -91.0])
    lon = np.array([10.0, 5.0, 0.0, 181.0, 0.0])
    with pytest.raises(InvalidPointsError) as info:
        label_points(lat, lon, bank, registry)
    assert info.value.indices.tolist() == [1, 2, 3, 4]
    assert "4 of 5 points" in str(info.value) and "index 1, index 2" in str(info.value)
    with pytest.raises(InputError, match="differ in length"):
        label_points([1.0, 2.0], [1.0], bank, registry)


def test_empty_input(bank, registry):
    empty = label_points([], [], bank, registry)
    assert empty.empty and list(empty.columns) == label_columns(bank)


def test_coverage(labels, bank):
    coverage = concept_coverage(labels, bank)
    assert coverage["id"].tolist() == [c.id for c in bank.measured]
    row = coverage.set_index("id").loc["hot_desert_climate"]
    assert row["labelled"] == pytest.approx(labels["koppen_geiger"].notna().mean())  # no climate at sea
    assert row["present"] == pytest.approx(1 / 8)  # the Sahara
    assert row["mean"] == pytest.approx(1 / labels["koppen_geiger"].notna().sum())


def write_manifest(path: Path) -> Path:
    pd.DataFrame(
        {
            "key": ["k0", "k1", "k2", "k3"],
            "img_id": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
            "lat": [48.85, np.nan, -3.5, 23.5],
            "lon": [2.35, 0.0, -62.0, 12.0],
            "status": ["ok", "bad_coordinates", "ok", "ok"],
        }
    ).to_parquet(path)
    return path


def test_label_shard(tmp_path, bank, registry):
    manifest = write_manifest(tmp_path / "shard-000000.parquet")
    out = tmp_path / "labels" / "shard-000000.parquet"
    result = label_shard(manifest, out, bank, registry)
    assert (result.rows, result.labelled, result.skipped) == (4, 3, 1)
    table = pq.read_table(out)
    frame = table.to_pandas()
    assert frame.columns[0] == "key" and list(frame.columns[1:]) == label_columns(bank)
    assert frame["key"].tolist() == ["k0", "k2", "k3"]
    assert frame["koppen_geiger"].tolist() == ["Cfb", "Af", "BWh"]
    lineage = json.loads(table.schema.metadata[b"geoconcept"])
    assert lineage["bank_sha256"] == bank.sha256 and lineage["layers"]["igbp"] == registry["igbp"].version
    before = out.read_bytes()
    label_shard(manifest, out, bank, registry)  # a re-run gives the same bytes
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["shard-000000.parquet"]


def test_label_shard_bad_manifests(tmp_path, bank, registry):
    out = tmp_path / "out.parquet"
    with pytest.raises(InputError, match="not found"):
        label_shard(tmp_path / "missing.parquet", out, bank, registry)
    pd.DataFrame({"key": ["a"], "lat": [1.0]}).to_parquet(tmp_path / "partial.parquet")
    with pytest.raises(InputError, match=r"lacks column\(s\) \['lon', 'status'\]"):
        label_shard(tmp_path / "partial.parquet", out, bank, registry)
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="not a readable Parquet"):
        label_shard(tmp_path / "garbage.parquet", out, bank, registry)
    pd.DataFrame({"key": ["a", "b"], "lat": [1.0, 99.0], "lon": [1.0, 1.0], "status": ["ok", "ok"]}).to_parquet(
        tmp_path / "liar.parquet"
    )
    with pytest.raises(InputError, match=r"liar\.parquet.*keys b"):
        label_shard(tmp_path / "liar.parquet", out, bank, registry)
    assert not out.exists()


def test_a_failing_write_leaves_nothing(tmp_path, labels):
    out = tmp_path / "labels.parquet"

    def frames():
        yield labels
        raise RuntimeError("crash while labelling the second chunk")

    with pytest.raises(RuntimeError):
        write_labels(frames(), out, {})
    assert list(tmp_path.iterdir()) == []


def test_cli_label(tmp_path, capsys, bank):
    points = tmp_path / "points.csv"
    points.write_text("id,Lat,LON,note\n007,48.85,2.35,paris\n008,-30,-140,\n")
    out = tmp_path / "out" / "labels.parquet"
    assert main(["label", "--points", str(points), "--out", str(out), "--no-progress"]) == 0
    assert "2 points" in capsys.readouterr().out
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["id", "note", *label_columns(bank)]
    assert frame["id"].tolist() == ["007", "008"]  # passed through as text
    assert frame["note"].tolist()[0] == "paris" and pd.isna(frame["note"].iloc[1])
    assert frame["country"].tolist()[0] == "FR"


def test_cli_label_chunks_and_empty_input(tmp_path, bank):
    points = tmp_path / "points.csv"
    points.write_text("lat,lon\n" + "".join(f"{la},{lo}\n" for la, lo in zip(LAT, LON, strict=True)))
    out = tmp_path / "labels.parquet"
    assert main(["label", "--points", str(points), "--out", str(out), "--chunk-rows", "3", "--no-progress"]) == 0
    assert pq.ParquetFile(out).num_row_groups == 3
    assert pd.read_parquet(out)["koppen_geiger"].tolist()[:3] == ["BWh", "Af", "EF"]
    points.write_text("LAT,LON,name\n")
    assert main(["label", "--points", str(points), "--out", str(out), "--no-progress"]) == 0
    empty = pd.read_parquet(out)
    assert empty.empty and list(empty.columns) == ["name", *label_columns(bank)]


@pytest.mark.parametrize(
    ("csv", "expected"),
    [
        ("LAT,LON\n1,2\nx,3\n95,0\n4,5\n", "2 of 4 rows have invalid coordinates"),
        ("latitude,longitude\n1,2\n", "no LAT column"),
        ("lat,LAT,lon\n1,1,2\n", "2 (['lat', 'LAT']) LAT column"),
        ("lat,lon,country\n1,2,FR\n", "would clash with output columns"),
    ],
)
def test_cli_label_bad_input(tmp_path, capsys, csv, expected):
    points = tmp_path / "points.csv"
    points.write_text(csv)
    out = tmp_path / "labels.parquet"
    assert main(["label", "--points", str(points), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geoconcept label: error:") and expected in err and str(points) in err
    assert not out.exists()


def test_cli_label_line_numbers_and_missing_files(tmp_path, capsys):
    points = tmp_path / "points.csv"
    points.write_text("LAT,LON\n1,2\nx,3\n95,0\n")
    out = tmp_path / "labels.parquet"
    main(["label", "--points", str(points), "--out", str(out), "--no-progress"])
    assert "line(s) 3, 4" in capsys.readouterr().err
    assert main(["label", "--points", str(tmp_path / "none.csv"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    bad_bank = tmp_path / "bank.yaml"
    bad_bank.write_text("version: 1\nconcepts: [{id: x, name: X, category: c, prompts: []}]\n")
    assert main(["label", "--points", str(points), "--out", str(out), "--bank", str(bad_bank)]) == 2
    assert "bank.yaml" in capsys.readouterr().err


def test_cli_concepts_and_layers_listing(capsys, bank):
    assert main(["concepts", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{len(bank)} concepts, {len(bank.measured)} measured" in out and "tuk_tuk" in out
    assert main(["concepts", "list", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(bank)
    assert main(["layers"]) == 0
    assert "koppen_geiger" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_label_as_a_subprocess(tmp_path):
    points = tmp_path / "points.csv"
    points.write_text("LAT,LON\n48.85,2.35\n")
    out = tmp_path / "labels.parquet"
    command = [sys.executable, "-m", "geoconcept", "label", "--points", str(points), "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert pd.read_parquet(out)["country"].tolist() == ["FR"]
    points.write_text("LAT,LON\n100,0\n")
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "invalid coordinates" in done.stderr
