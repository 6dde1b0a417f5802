"""Batch prediction (`predict_batch`, `geoconcept predict --out`): folders, image tables and shards
give one GeoParquet row per image; the gallery build reports its progress."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from _eval_inputs import coords, save_checkpoint
from _model_inputs import jpeg, write_tar

from geoconcept import gallery
from geoconcept.cli import main
from geoconcept.evaluation import predict
from geoconcept.evaluation.metrics import haversine_km
from geoconcept.model.checkpoint import load_model

DEMO_BACKBONE = {"model": "ViT-S-32-alt", "pretrained": "", "seed": "0"}  # random init, 256-d features
N = 5  # good images; write_tar's sample i is jpeg(i) at (-40 + 20 i, 170 - 80 i)
TRUTH = np.array([[-40.0 + 20 * i, 170.0 - 80 * i] for i in range(N)])
TOP_K = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    run = root / "run"
    save_checkpoint(run / "final.safetensors", "concept", seed=0, feature_dim=256, backbone_spec=DEMO_BACKBONE)
    gallery.build_gallery(coords(60), load_model(run), root / "gallery", use_gpu=False)
    images = root / "images"
    names = [f"g{i}/img{i}.jpg" if i % 2 else f"g{i}.jpg" for i in range(N)]  # nested; sorted = sample order
    for i, name in enumerate([*names, "zbroken/bad.jpg"]):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        (images / name).write_bytes(jpeg(i) if i < N else b"not an image\n")
    table = root / "table.csv"
    rows = [f"{name},{TRUTH[i, 0]},{TRUTH[i, 1]}" for i, name in enumerate(names)]
    table.write_text("IMG_ID,LAT,LON\n" + "\n".join(rows) + "\nzbroken/bad.jpg,1,2\n")
    (root / "shards").mkdir()
    write_tar(root / "shards" / "shard-000000.tar", n=N)
    return {"run": run, "gallery": root / "gallery", "images": images, "table": table, "shards": root / "shards"}


def batch(setup, inputs, **kwargs):
    options = {"gallery": setup["gallery"], "top_k": TOP_K, "workers": 0, "batch_size": 8} | kwargs
    return predict.predict_batch(inputs, setup["run"], **options)


@pytest.fixture(scope="module")
def from_table(setup):
    return batch(setup, setup["table"], images_root=setup["images"])


def test_rows_columns_and_types(setup, from_table, tmp_path):
    frame = from_table
    assert list(frame.columns) == [*predict.BATCH_COLUMNS, "geometry"] and frame.crs.to_epsg() == 4326
    ok = frame[frame["status"] == "ok"]
    assert len(frame) == N + 1 and len(ok) == N and set(ok["variant"]) == {"concept"}
    for column in ("pred_lat", "pred_lon", "score", "error_km", "true_lat", "true_lon"):
        assert frame[column].dtype == np.float64, column
    assert all(len(ok[c].iloc[0]) == TOP_K for c in ("top_lat", "top_lon", "top_score", "top_place", "top_concepts"))
    assert ok["place"].str.len().min() > 0 and ok["concepts"].str.contains(":").all()  # `id:+0.123; ...`
    path = predict.write_predictions([frame], tmp_path / "p.parquet")
    back = gpd.read_parquet(path)
    assert back.crs.to_epsg() == 4326 and list(back.columns) == list(frame.columns)
    good = back[back["status"] == "ok"]
    assert good.geometry.x.tolist() == good["pred_lon"].tolist()
    assert good.geometry.y.tolist() == good["pred_lat"].tolist()
    assert [list(v) for v in good["top_score"]] == [list(v) for v in ok["top_score"]]


def test_top_k_is_best_first_and_top1_is_the_prediction(from_table):
    for row in from_table[from_table["status"] == "ok"].itertuples():
        assert np.all(np.diff(row.top_score) <= 0)
        assert (row.pred_lat, row.pred_lon, row.score) == (row.top_lat[0], row.top_lon[0], row.top_score[0])
        assert row.concepts == row.top_concepts[0] and row.place == row.top_place[0]


def test_distances_are_haversine_to_the_truth(from_table):
    ok = from_table[from_table["status"] == "ok"]
    truth = ok[["true_lat", "true_lon"]].to_numpy()
    assert np.array_equal(truth, TRUTH)
    assert np.array_equal(ok["error_km"].to_numpy(), haversine_km(ok[["pred_lat", "pred_lon"]].to_numpy(), truth))
    for row, true in zip(ok.itertuples(), truth, strict=True):
        guesses = np.stack([row.top_lat, row.top_lon], axis=1)
        assert np.array_equal(row.top_error_km, haversine_km(guesses, true[None]))


def test_a_broken_image_is_a_row_with_its_error(from_table):
    [bad] = from_table[from_table["status"] != "ok"].itertuples()
    assert bad.key == "zbroken/bad.jpg" and bad.status == "corrupt_image"
    assert "bad.jpg" in bad.error and "not a readable image" in bad.error
    assert np.isnan(bad.pred_lat) and bad.geometry is None and list(bad.top_lat) == []
    assert (bad.true_lat, bad.true_lon) == (1.0, 2.0)  # what the table said is kept


def test_folder_table_and_shards_agree(setup, from_table):
    folder = batch(setup, setup["images"])
    shards = batch(setup, setup["shards"])
    table = from_table
    assert folder["key"].tolist() == table["key"].tolist() and folder["status"].tolist() == table["status"].tolist()
    assert np.isnan(folder["true_lat"]).all() and np.isnan(folder["error_km"]).all()  # a folder gives no truth
    assert shards["status"].eq("ok").all() and np.array_equal(shards[["true_lat", "true_lon"]].to_numpy(), TRUTH)
    ok = table[table["status"] == "ok"]
    for other in (folder[folder["status"] == "ok"], shards):
        for a, b in zip(ok.itertuples(), other.itertuples(), strict=True):
            assert (a.top_lat, a.top_lon, a.top_place) == (b.top_lat, b.top_lon, b.top_place)
            # same pixels and batch composition; the shard path stores features and reads them back
            assert a.top_score == pytest.approx(b.top_score, abs=1e-6)


def test_table_ids_without_extension_and_bad_ids(setup, tmp_path):
    table = tmp_path / "yfcc.csv"
    table.write_text("photo_id,lat,lng\ng0,-40,170\n../outside.jpg,0,0\ng2,north,3\ng3,0,0\n")
    frame = batch(setup, table, images_root=setup["images"])
    assert frame["status"].tolist() == ["ok", "bad_id", "ok", "missing_image"]  # g3 is a folder, no g3.jpg
    assert frame["source"].iloc[0].endswith("g0.jpg") and frame["error"].iloc[0] == ""
    assert frame["error_km"].iloc[0] == haversine_km(frame[["pred_lat", "pred_lon"]].iloc[:1], [[-40, 170]])[0]
    assert "'..'" in frame["error"].iloc[1]
    assert frame["error"].iloc[2].startswith("no distance: LAT") and np.isnan(frame["error_km"].iloc[2])


def test_cli_writes_the_geoparquet(setup, tmp_path, capsys):
    out = tmp_path / "out" / "predictions.parquet"
    argv = ["predict", str(setup["table"]), "--images", str(setup["images"]), "--checkpoint", str(setup["run"])]
    argv += ["--gallery", str(setup["gallery"]), "--out", str(out), "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    stdout, stderr = capsys.readouterr()
    assert f"{N} images located, 1 unreadable" in stdout and "1 images could not be read" in stderr
    assert gpd.read_parquet(out)["status"].tolist() == ["ok"] * N + ["corrupt_image"]
    assert main(argv) == 0  # a re-run replaces the file


def test_gallery_build_reports_progress_and_batches_change_nothing(tmp_path):
    model = load_model(save_checkpoint(tmp_path / "m.safetensors", "concept", seed=1))
    seen: list[int] = []
    gallery.build_gallery(coords(50), model, tmp_path / "chunked", use_gpu=False, batch_size=16, on_batch=seen.append)
    gallery.build_gallery(coords(50), model, tmp_path / "whole", use_gpu=False)
    assert seen == [16, 16, 16, 2]
    query = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    chunked = gallery.Gallery.load(tmp_path / "chunked").predict(model, query, k=5)
    whole = gallery.Gallery.load(tmp_path / "whole").predict(model, query, k=5)
    assert np.array_equal(chunked[2], whole[2]) and chunked[1] == pytest.approx(whole[1], abs=1e-6)
