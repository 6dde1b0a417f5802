"""The standard test sets' CSV layouts (Im2GPS3k, YFCC4k and the variants in circulation) are read
as they come, by ingest's staging and by batch predict; evaluate prints the published layout."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from geoconcept.errors import InputError
from geoconcept.evaluation import metrics, report
from geoconcept.evaluation.testset import read_image_table
from geoconcept.ingest import staging

PLACES = "S3_Label,S16_Label,S365_Label,Prob_indoor,Prob_natural,Prob_urban"
# (header, two rows) in the exact shapes of the files as distributed; each names Paris then Sydney
LAYOUTS = {
    "im2gps3k_places365": (
        f"IMG_ID,AUTHOR,LAT,LON,{PLACES}",
        [
            "1000269685_e60e9cdfb4_1125_78841376@N00.jpg,78841376@N00,48.8566,2.3522,2,12,353,0.27,0.05,0.68",
            "1001048550_8e4b47d165_1051_78841376@N00.jpg,78841376@N00,-33.8688,151.2093,1,8,36,0.01,0.97,0.02",
        ],
    ),
    "yfcc4k_places365": (
        f"IMG_ID,AUTHOR,LAT,LON,{PLACES}",
        [
            "4f3b9e3fbad2b5d8e1c6.jpg,12345678@N00,48.8566,2.3522,0,4,325,0.41,0.22,0.36",
            "a1c2e3f4b5d6e7f8a9b0.jpg,87654321@N00,-33.8688,151.2093,2,6,273,0.00,0.48,0.52",
        ],
    ),
    "lowercase_lat_lng": ("IMG_ID,lat,lng", ["a.jpg,48.8566,2.3522", "b.jpg,-33.8688,151.2093"]),
    "latitude_longitude": ("img_id,latitude,longitude", ["a.jpg,48.8566,2.3522", "b.jpg,-33.8688,151.2093"]),
    "yfcc_photo_id_no_extension": (
        "photo_id,AUTHOR,LAT,LON",
        ["8513165315,1@N00,48.8566,2.3522", "4493282926,2@N00,-33.8688,151.2093"],
    ),
}


def write_layout(tmp_path, name: str):
    header, rows = LAYOUTS[name]
    path = tmp_path / f"{name}.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path, [row.split(",")[0] for row in rows]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_read_image_table_takes_the_layout(tmp_path, name):
    path, ids = write_layout(tmp_path, name)
    frame = read_image_table(path)
    assert list(frame.columns[:1]) == ["IMG_ID"] and frame["IMG_ID"].tolist() == ids
    assert frame["LAT"].astype(float).tolist() == [48.8566, -33.8688]
    assert frame["LON"].astype(float).tolist() == [2.3522, 151.2093]
    if name.endswith("places365"):  # the extra columns come along, as text
        assert frame["S365_Label"].tolist() == [LAYOUTS[name][1][i].split(",")[6] for i in range(2)]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_ingest_stages_the_layout_with_canonical_columns(tmp_path, name):
    path, ids = write_layout(tmp_path, name)
    staged = staging.stage_source(path, "testset", "test", tmp_path / "data")
    table = pq.read_table(staged.path).to_pandas()
    assert staged.columns[:1] == ("IMG_ID",) and {"LAT", "LON"} <= set(staged.columns)
    assert table["IMG_ID"].tolist() == ids and table["LAT"].tolist() == ["48.8566", "-33.8688"]
    assert table["LON"].tolist() == ["2.3522", "151.2093"]


def test_aliases_never_rename_onto_a_given_name(tmp_path):
    assert staging.canonical_columns(["IMG_ID", "lat", "lng", "AUTHOR"]) == ["IMG_ID", "LAT", "LON", "AUTHOR"]
    # two candidates for LON: neither is renamed, and the table lacks LON
    assert staging.canonical_columns(["IMG_ID", "LAT", "lng", "longitude"]) == ["IMG_ID", "LAT", "lng", "longitude"]
    path = tmp_path / "both.csv"
    path.write_text("IMG_ID,LAT,lng,longitude\na.jpg,1,2,3\n")
    with pytest.raises(InputError, match="missing required column"):
        staging.check_input_table(path)


def test_bad_tables_are_refused_naming_the_problem(tmp_path):
    swapped = tmp_path / "swapped.csv"  # an early im2gps3k_places365.csv: (lat, lon) values under LON,LAT
    rows = ["a.jpg,x,32.325436,-64.764404,2,12,353,0.2,0.1,0.7", "b.jpg,y,-33.861328,151.209039,2,12,273,0,0,1"]
    swapped.write_text("\n".join([f"IMG_ID,AUTHOR,LON,LAT,{PLACES}", *rows]) + "\n")
    with pytest.raises(InputError, match="wrong way round"):
        read_image_table(swapped)
    only_lat = tmp_path / "only_lat.csv"
    only_lat.write_text("IMG_ID,LAT\na.jpg,1\n")
    with pytest.raises(InputError, match="only one of LAT, LON"):
        read_image_table(only_lat)
    no_id = tmp_path / "no_id.csv"
    no_id.write_text("name,LAT,LON\na.jpg,1,2\n")
    with pytest.raises(InputError, match="no IMG_ID column"):
        read_image_table(no_id)
    with pytest.raises(InputError, match="not found"):
        read_image_table(tmp_path / "missing.csv")


def test_ids_only_table_has_no_truth(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("IMG_ID\na.jpg\nb.jpg\n")
    assert read_image_table(path).columns.tolist() == ["IMG_ID"]


def test_published_layout_matches_geoclips_table_1():
    runs = [(10, 30, 50, 70, 80), (12, 32, 52, 72, 82)]  # % within 1 … 2500 km, two seeds
    names = [metrics.metric_name(t) for t in metrics.THRESHOLDS_KM]
    per_run = pd.DataFrame([dict(zip(names, v, strict=True)) | {"seed": s} for s, v in enumerate(runs)])
    per_run = per_run.assign(variant="geoclip", median_km=500.0, mean_km=900.0)
    table = report.published_layout(metrics.accuracy_table(per_run), metrics.published_table())
    columns = ["Method", "Street 1 km", "City 25 km", "Region 200 km", "Country 750 km", "Continent 2500 km"]
    assert table.columns.tolist() == columns
    assert table.iloc[0].tolist() == ["geoclip", "11.00 ± 1.41", "31.00 ± 1.41", "51.00 ± 1.41", "71.00 ± 1.41",
                                      "81.00 ± 1.41"]  # fmt: skip
    published = table.set_index("Method").loc["GeoCLIP (Vivanco et al., NeurIPS 2023), published"]
    assert published.tolist() == ["14.11", "34.47", "50.65", "69.67", "83.82"]
    assert report.markdown_table(table).splitlines()[0] == "| " + " | ".join(columns) + " |"
