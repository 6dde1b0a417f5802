"""Downstream probes: sanity on tasks with a known answer, the shuffled-label control, task marking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geoconcept.concepts.bank import Concept, ConceptBank, Rule
from geoconcept.errors import ConfigError, InputError
from geoconcept.evaluation import downstream
from geoconcept.layers.builtin import IGBP
from geoconcept.layers.places import country_table


def band_table(path, n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(-80, 80, n), rng.uniform(-180, 180, n)
    band = np.where(lat > 23.4, "north", np.where(lat < -23.4, "south", "tropics"))
    pd.DataFrame({"LAT": lat, "LON": lon, "band": band, "lat_value": lat}).to_csv(path, index=False)
    return np.stack([lat, lon], axis=1)


def test_raw_coordinates_predict_a_latitude_band_and_shuffled_labels_do_not(tmp_path):
    band_table(tmp_path / "bands.csv")
    task = downstream.user_task(tmp_path / "bands.csv", column="band")
    assert task.kind == "classification" and task.name == "bands: band" and task.layers == ()
    result = downstream.run_probes([task], {"lat/lon": downstream.latlon_degrees}, seed=0, control="lat/lon").set_index(
        ["representation", "probe"]
    )
    assert result.loc[("lat/lon", "linear"), "test"] > 0.9
    assert result.loc[("lat/lon", "MLP"), "test"] > 0.9
    chance = result.loc[("lat/lon", "linear"), "chance"]
    assert 0.3 < chance < 0.5  # the most frequent band's share of the test points
    for probe in downstream.PROBES:
        control = result.loc[("shuffled-label control", probe), "test"]
        assert control < chance + 0.1  # no better than always answering the majority band
    sizes = result.loc[("lat/lon", "linear"), ["n_train", "n_val", "n_test"]].tolist()
    assert sizes == [300, 150, 150]


def test_regression_probe_and_determinism(tmp_path):
    band_table(tmp_path / "t.csv")
    task = downstream.user_task(tmp_path / "t.csv", name="latitude", column="lat_value")
    assert task.kind == "regression" and task.metric == "R²"
    first = downstream.run_probes([task], {"xyz": downstream.xyz_fourier}, seed=3)
    again = downstream.run_probes([task], {"xyz": downstream.xyz_fourier}, seed=3)
    pd.testing.assert_frame_equal(first, again)
    assert first.set_index("probe").loc["linear", "test"] > 0.95
    assert first["chosen"].str.match(r"^(alpha|hidden)=").all()


def test_split_is_disjoint_and_seeded():
    train, val, test = downstream.split_indices(101, seed=4)
    assert (len(train), len(val), len(test)) == (50, 25, 26)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(101))
    assert np.array_equal(train, downstream.split_indices(101, seed=4)[0])
    assert not np.array_equal(train, downstream.split_indices(101, seed=5)[0])


def test_user_task_errors(tmp_path):
    (tmp_path / "two.csv").write_text("lat,lon,a,b\n" + "1,2,3,4\n" * 30)
    with pytest.raises(ConfigError, match="say which column is the target"):
        downstream.user_task(tmp_path / "two.csv")
    with pytest.raises(ConfigError, match="has no column 'c'"):
        downstream.user_task(tmp_path / "two.csv", column="c")
    (tmp_path / "bad.csv").write_text("lat,lon,v\n" + "1,2,3\n" * 30 + "95,0,1\n")
    with pytest.raises(InputError, match="1 rows have invalid coordinates"):
        downstream.user_task(tmp_path / "bad.csv")
    (tmp_path / "few.csv").write_text("lat,lon,v\n" + "1,2,x\n" * 5)
    with pytest.raises(InputError, match="only 5 usable rows"):
        downstream.user_task(tmp_path / "few.csv")
    with pytest.raises(InputError, match="not found"):
        downstream.user_task(tmp_path / "missing.csv")


def test_builtin_tasks_on_random_land_points():
    points = downstream.random_land_points(150, seed=7)
    assert points.shape == (150, 2) and np.array_equal(points, downstream.random_land_points(150, seed=7))
    tasks = downstream.builtin_tasks(points)
    assert [(t.name, t.kind) for t in tasks] == [
        ("Köppen-Geiger class", "classification"),
        ("IGBP land cover", "classification"),
        ("country", "classification"),
        ("distance to coast (km)", "regression"),
        ("distance to nearest town (km)", "regression"),
    ]
    for task in tasks:
        assert task.latlon is points and len(task.rows) == len(task.target) > 100
        if task.kind == "classification":
            _, counts = np.unique(task.target.astype(str), return_counts=True)
            assert counts.min() >= downstream.MIN_CLASS_POINTS  # singletons cannot be learned and tested
        else:
            assert np.all(task.target >= 0)
    assert set(tasks[1].target) <= set(IGBP.names.values())  # IGBP classes by name
    assert set(tasks[2].target) <= set(country_table()["iso2"])


def test_tasks_sharing_a_layer_with_supervised_concepts():
    bank = ConceptBank(
        concepts=[
            Concept("hot", "Hot", "climate", ("h",), Rule("koppen_group", ("A",))),
            Concept("europe", "Europe", "place", ("e",), Rule("continent", ("Europe",))),
            Concept("forest", "Forest", "land", ("f",), Rule("igbp", ("ebf",))),
            Concept("text", "Text", "x", ("t",)),
        ],
        version="1",
        sha256="",
    )
    layers = downstream.supervision_layers(bank, ["hot", "europe", "text"])  # "forest" was not supervised
    assert layers == {"koppen_group", "koppen_geiger", "continent", "country"}

    def make(task_layers: tuple[str, ...]) -> downstream.ProbeTask:
        return downstream.ProbeTask(
            "t", "classification", np.zeros((1, 2)), np.zeros(1, int), np.array(["x"]), task_layers
        )

    assert downstream.shares_layer(make(("koppen_geiger",)), layers)  # main groups are derived from the classes
    assert downstream.shares_layer(make(("country",)), layers)  # continents are derived from countries
    assert not downstream.shares_layer(make(("igbp",)), layers)
    assert not downstream.shares_layer(make(()), layers)
