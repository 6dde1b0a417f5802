"""GPS gallery: FAISS index of location vectors, searched with image vectors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from geoconcept import gallery
from geoconcept.errors import ConfigError, InputError
from geoconcept.model.checkpoint import load_model, save_model
from geoconcept.model.geoconcept_model import GeoConceptModel


def coords(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-80, 80, n), rng.uniform(-180, 180, n)], axis=1)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> GeoConceptModel:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "final.safetensors"
    save_model(GeoConceptModel(variant="geoclip", feature_dim=8, sigmas=[1.0, 16.0]), path)
    return load_model(path)


def brute_force(model, features, points, k):
    scores = model.retrieval_image_vectors(features) @ model.retrieval_location_vectors(points).T
    return torch.topk(scores, k, dim=1)


def test_exact_gallery_equals_brute_force(model, tmp_path):
    points = coords(500)
    info = gallery.build_gallery(points, model, tmp_path / "g", source="test")
    assert info["count"] == 500 and info["dim"] == 512 and info["factory"] == "Flat"
    assert info["checkpoint_sha256"] == model.checkpoint_sha256
    g = gallery.Gallery.load(tmp_path / "g")
    features = torch.randn(20, 8, generator=torch.Generator().manual_seed(1))
    latlon, scores, ids = g.predict(model, features, k=5)
    expected = brute_force(model, features, points, 5)
    assert np.array_equal(ids, expected.indices.numpy())
    assert np.allclose(scores, expected.values.numpy(), atol=1e-5)
    assert latlon.shape == (20, 5, 2) and np.array_equal(latlon, points[ids])
    rows = pq.read_table(tmp_path / "g" / "rows.parquet")
    assert rows.column_names == ["row", "lat", "lon"] and rows.column("lat").to_numpy()[7] == points[7, 0]


def test_hnsw_recall_and_byte_stable_files(model, tmp_path):
    points = coords(3000, seed=2)
    gallery.build_gallery(points, model, tmp_path / "a", index="hnsw", use_gpu=False)
    gallery.build_gallery(points, model, tmp_path / "b", index="hnsw", use_gpu=False)
    assert (tmp_path / "a/index.faiss").read_bytes() == (tmp_path / "b/index.faiss").read_bytes()
    g = gallery.Gallery.load(tmp_path / "a")
    # queries from the data's own distribution, as a trained model's images would be
    queries = model.retrieval_location_vectors(coords(200, seed=3))
    _, _, ids = g.search(queries.numpy(), k=5)
    exact = torch.topk(queries @ model.retrieval_location_vectors(points).T, 5).indices.numpy()
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ids, exact, strict=True)])
    assert recall >= 0.98


def test_rebuild_is_skipped_only_when_nothing_changed(model, tmp_path):
    points = coords(200)
    gallery.build_gallery(points, model, tmp_path / "g")
    stamp = (tmp_path / "g/index.faiss").stat().st_mtime_ns
    gallery.build_gallery(points, model, tmp_path / "g")
    assert (tmp_path / "g/index.faiss").stat().st_mtime_ns == stamp
    gallery.build_gallery(points[:150], model, tmp_path / "g")
    assert json.loads((tmp_path / "g/gallery.json").read_text())["count"] == 150


def test_concept_space_models_index_concept_vectors(tmp_path):
    torch.manual_seed(0)
    m = GeoConceptModel(variant="concept", feature_dim=8, concept_ids=["a", "b", "c", "d"], sigmas=[1.0])
    info = gallery.build_gallery(coords(50), m, tmp_path / "g", checkpoint_sha256="x" * 64)
    assert info["dim"] == 4 and info["contrastive_space"] == "concept"
    g = gallery.Gallery.load(tmp_path / "g")
    with pytest.raises(ValueError, match=r"gallery vectors are 4-d \(concept space\)"):
        g.search(np.zeros((1, 512), dtype=np.float32), 1)


def test_a_gallery_refuses_another_checkpoint(model, tmp_path):
    gallery.build_gallery(coords(30), model, tmp_path / "g", checkpoint_sha256="0" * 64)
    with pytest.raises(InputError, match="was built with checkpoint 000000000000"):
        gallery.Gallery.load(tmp_path / "g").predict(model, np.zeros((1, 8), dtype=np.float32))


def test_load_errors_name_the_problem(model, tmp_path):
    with pytest.raises(InputError, match=r"gallery\.json is missing"):
        gallery.Gallery.load(tmp_path / "nothing")
    gallery.build_gallery(coords(30), model, tmp_path / "g")
    (tmp_path / "g/index.faiss").write_bytes(b"broken")
    with pytest.raises(InputError, match=r"index\.faiss is unreadable"):
        gallery.Gallery.load(tmp_path / "g")
    gallery.build_gallery(coords(30), model, tmp_path / "g")  # the damaged file is noticed and rebuilt
    assert len(gallery.Gallery.load(tmp_path / "g")) == 30
    with pytest.raises(ValueError, match="k must be between 1 and the gallery size 30"):
        gallery.Gallery.load(tmp_path / "g").search(np.zeros((1, 512), dtype=np.float32), 31)


def test_coordinate_sources(tmp_path):
    geoclip = gallery.geoclip_coordinates()
    assert geoclip.shape == (100_000, 2) and np.abs(geoclip[:, 0]).max() <= 90
    points = coords(1000)
    sample = gallery.sample_coordinates(points, 100, seed=1)
    assert sample.shape == (100, 2) and len({tuple(p) for p in sample}) == 100
    assert np.array_equal(sample, gallery.sample_coordinates(points, 100, seed=1))
    # k-means on the sphere: clusters across the dateline get a centre near the dateline, not at lon 0
    rng = np.random.default_rng(0)
    west = np.stack([rng.normal(10, 1, 200), rng.uniform(-180, -179, 200)], 1)
    east = np.stack([rng.normal(10, 1, 200), rng.uniform(179, 180, 200)], 1)
    centre = gallery.kmeans_coordinates(np.concatenate([west, east]), 1)
    assert centre.shape == (1, 2) and abs(abs(centre[0, 1]) - 180) < 2 and abs(centre[0, 0] - 10) < 1
    csv = tmp_path / "c.csv"
    csv.write_text("LAT,LON\n1.5,2.5\n-3,4\n")
    assert gallery.read_coordinates(csv).tolist() == [[1.5, 2.5], [-3.0, 4.0]]
    csv.write_text("lat,lon\n95,0\n")
    with pytest.raises(InputError, match="rows have invalid coordinates"):
        gallery.read_coordinates(csv)


def _flat_vs_torch(g_faiss, g_torch, queries: np.ndarray, k: int) -> None:
    """The torch search returns FAISS IndexFlatIP's top-k, up to float32 rounding.

    Each backend computes <q, v> in float32 (own GEMM, own summation order). For a d-term dot
    product the rounding error is at most gamma_d * |q| |v| with gamma_d = d u / (1 - d u),
    u = 2^-24 (Higham, Accuracy and Stability, 3.1): `bound`. The r-th largest computed score of
    each backend is then within `bound` of the r-th largest exact score, so the two scores at rank
    r differ by at most 2 bound; and where the ids at a rank differ, both ids' exact scores lie
    within 2 bound of that order statistic: a near-tie within 4 bound, computed here in float64.
    """
    _, f_scores, f_ids = g_faiss.search(queries, k)
    _, t_scores, t_ids = g_torch.search(queries, k)
    vectors = g_faiss.index.reconstruct_n(0, g_faiss.index.ntotal).astype(np.float64)
    d, u = vectors.shape[1], 2.0**-24
    norms = np.linalg.norm(queries.astype(np.float64), axis=1).max() * np.linalg.norm(vectors, axis=1).max()
    bound = d * u / (1 - d * u) * norms
    assert t_scores.dtype == np.float32 and t_ids.dtype == np.int64 and t_ids.shape == (len(queries), k)
    assert np.abs(t_scores.astype(np.float64) - f_scores).max() <= 2 * bound
    exact = queries.astype(np.float64) @ vectors.T
    rows, ranks = np.nonzero(t_ids != f_ids)
    gaps = np.abs(exact[rows, t_ids[rows, ranks]] - exact[rows, f_ids[rows, ranks]])
    assert (gaps <= 4 * bound).all()


def test_torch_backend_on_cpu_equals_the_flat_index(model, tmp_path, monkeypatch):
    base = coords(2900, seed=4)
    points = np.concatenate([base, base[:100]])  # 100 exact ties: either id of a pair may come first
    gallery.build_gallery(points, model, tmp_path / "g", use_gpu=False)
    g_faiss = gallery.Gallery.load(tmp_path / "g", device="cpu")
    g_torch = gallery.Gallery.load(tmp_path / "g", device="cpu", backend="torch")
    assert (g_faiss.backend, g_faiss.device) == ("faiss", "cpu")
    assert (g_torch.backend, g_torch.device) == ("torch", "cpu")
    features = torch.randn(150, 8, generator=torch.Generator().manual_seed(5))
    queries = np.concatenate(
        [model.retrieval_image_vectors(features).numpy(), model.retrieval_location_vectors(coords(150, 6)).numpy()]
    )
    monkeypatch.setattr(gallery, "SCORE_CHUNK_BYTES", 4 * 3000 * 7)  # 7 queries a chunk, the last one short
    _flat_vs_torch(g_faiss, g_torch, queries, k=10)
    queries = model.retrieval_location_vectors(base[:100]).numpy()  # each query's top 2 are a tied pair
    _flat_vs_torch(g_faiss, g_torch, queries, k=2)
    latlon, _, ids = g_torch.predict(model, features[:3], k=1)
    assert latlon.shape == (3, 1, 2) and np.array_equal(latlon[:, 0], points[ids[:, 0]])


def test_torch_backend_on_cuda_equals_the_flat_index(model, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    gallery.build_gallery(coords(3000, seed=4), model, tmp_path / "g", use_gpu=False)
    on_gpu = gallery.Gallery.load(tmp_path / "g", device="cuda", backend="torch")
    assert (on_gpu.backend, on_gpu.device) == ("torch", "cuda")
    queries = model.retrieval_location_vectors(coords(300, 6)).numpy()
    _flat_vs_torch(gallery.Gallery.load(tmp_path / "g", device="cpu"), on_gpu, queries, k=10)


def test_backend_and_device_choices(model, tmp_path):
    gallery.build_gallery(coords(300), model, tmp_path / "flat", use_gpu=False)
    gallery.build_gallery(coords(300), model, tmp_path / "hnsw", index="hnsw", use_gpu=False)
    with pytest.raises(ConfigError, match="torch backend searches exact"):
        gallery.Gallery.load(tmp_path / "hnsw", backend="torch")
    with pytest.raises(ConfigError, match="backend must be"):
        gallery.Gallery.load(tmp_path / "flat", backend="numpy")
    with pytest.raises(ConfigError, match="device must be"):
        gallery.Gallery.load(tmp_path / "flat", device="tpu")
    if gallery._gpus() == 0 and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device cuda asked for"):
            gallery.Gallery.load(tmp_path / "flat", device="cuda")
        # No GPU: the default stays FAISS on the CPU, for every index type.
        for name in ("flat", "hnsw"):
            g = gallery.Gallery.load(tmp_path / name)
            assert (g.backend, g.device) == ("faiss", "cpu")
    elif gallery._gpus() == 0:
        # A GPU but CPU-only faiss: exact galleries search with torch on it, HNSW stays on the CPU.
        g = gallery.Gallery.load(tmp_path / "flat")
        assert (g.backend, g.device) == ("torch", "cuda")
        g = gallery.Gallery.load(tmp_path / "hnsw")
        assert (g.backend, g.device) == ("faiss", "cpu")
