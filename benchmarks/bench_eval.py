"""Evaluation throughput and predict latency.

(a) Test images/s from cached features, end to end: image embedding, gallery search and the
    metrics (`predict_locations` + `error_summary`) over GeoCLIP's 100K gallery with GeoCLIP's
    published location weights, vs the straightforward way GeoCLIP evaluates: the gallery's
    location vectors in a torch tensor, matmul + argmax per batch of 512 images, the same metrics.
    The evaluation uses the exact (flat) gallery and must give identical predictions. (HNSW is
    benchmarked in bench_model with realistic queries; random image features here lie far off the
    gallery's manifold, HNSW's worst case.) Building the gallery is not timed (once per checkpoint).
(b) `geoconcept predict` latency for one JPEG on CPU, for a concept+supervised model with the
    packaged concept bank (117 concepts) and the demo backbone (ViT-S-32-alt, random weights):
    decode, preprocess, backbone, gallery search, GeoNames places, concept contributions. Against
    GeoCLIP's predict, which re-embeds its 100K gallery on every call; and warm (model, backbone,
    gallery, place index loaded) against a cold start that loads all of them. Latencies are
    reported as predictions/s (higher is better); milliseconds are in the note.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.harness import Result, best_rate
from geoconcept import gallery
from geoconcept.concepts.bank import load_bank
from geoconcept.evaluation import explain
from geoconcept.evaluation.explain import explain_features
from geoconcept.evaluation.metrics import error_summary
from geoconcept.evaluation.predict import predict_locations
from geoconcept.model.backbone import Backbone
from geoconcept.model.checkpoint import load_model, save_model
from geoconcept.model.concept_module import concept_text_basis
from geoconcept.model.geoconcept_model import GeoConceptModel
from geoconcept.model.location_encoder import LocationEncoder

FEATURE_DIM = 768  # ViT-L-14's, GeoCLIP's backbone
BATCH = 512
DEMO_BACKBONE = "ViT-S-32-alt"


def _features(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, FEATURE_DIM)).astype(np.float32)


def _geoclip_model() -> GeoConceptModel:
    torch.manual_seed(0)
    model = GeoConceptModel(variant="geoclip", feature_dim=FEATURE_DIM)
    model.location_encoder.load_state_dict(LocationEncoder.from_geoclip().state_dict())
    model.checkpoint_sha256 = "bench-geoclip"
    return model.eval()


def _torch_way(model: GeoConceptModel, vectors: torch.Tensor, coords: np.ndarray, features: np.ndarray) -> np.ndarray:
    """GeoCLIP's evaluation loop: per batch, image embeddings @ gallery vectors, best row."""
    best = []
    with torch.inference_mode():
        for batch in torch.from_numpy(features).split(BATCH):
            best.append((model.embed_images(batch) @ vectors.T).argmax(dim=1))
    return coords[torch.cat(best).numpy()]


def bench_throughput(quick: bool, tmp: Path) -> Result:
    coords = gallery.geoclip_coordinates()
    if quick:
        coords = coords[:20_000]
    n = 1_000 if quick else 5_000
    features = _features(n, 1)
    true = coords[np.random.default_rng(2).choice(len(coords), n)]
    model = _geoclip_model()
    vectors = model.retrieval_location_vectors(coords)
    exact_pred = _torch_way(model, vectors, coords, features)

    def baseline() -> int:
        error_summary(_torch_way(model, vectors, coords, features), true)
        return n

    gallery.build_gallery(coords, model, tmp / "flat", use_gpu=False, checkpoint_sha256="bench-geoclip")
    g = gallery.Gallery.load(tmp / "flat", use_gpu=False)
    agree = float(np.mean((predict_locations(model, g, features).latlon == exact_pred).all(axis=1)))
    assert agree == 1.0, f"the exact gallery disagrees with torch matmul on {1 - agree:.2%} of images"

    def ours() -> int:
        error_summary(predict_locations(model, g, features).latlon, true)
        return n

    return Result(
        benchmark=f"evaluate from cached features, {n:,} images, {len(coords):,}-GPS gallery (exact)",
        unit="images/s",
        ours=best_rate(ours, 3),
        baseline=best_rate(baseline, 3),
        baseline_name="torch matmul+argmax per batch",
        note="image embedding + FAISS flat search + metrics; predictions identical to the baseline's",
    )


def _jpeg(seed: int, size: int = 480) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _concept_checkpoint(path: Path, backbone: Backbone) -> None:
    ids = load_bank().ids
    torch.manual_seed(0)
    model = GeoConceptModel(variant="concept+supervised", feature_dim=backbone.dim, concept_ids=ids)
    model.location_encoder.load_state_dict(LocationEncoder.from_geoclip().state_dict())
    text = F.normalize(torch.randn(len(ids), 512, generator=torch.Generator().manual_seed(1)), dim=1)
    with torch.no_grad():
        model.concepts.text_basis.copy_(concept_text_basis(text, model.dim).T)
    spec = {"model": backbone.model_name, "pretrained": "", "seed": "0"}
    save_model(model, path, config={"seed": 0}, backbone=backbone.tag, backbone_spec=spec)


def bench_predict(quick: bool, tmp: Path) -> list[Result]:
    coords = gallery.geoclip_coordinates()
    if quick:
        coords = coords[:20_000]
    backbone = Backbone.create(DEMO_BACKBONE, None)
    checkpoint = tmp / "predict" / "final.safetensors"
    _concept_checkpoint(checkpoint, backbone)
    model = load_model(checkpoint)
    gallery.build_gallery(coords, model, tmp / "predict_gallery", use_gpu=False)
    image = tmp / "image.jpg"
    image.write_bytes(_jpeg(0))

    def features_of(b: Backbone) -> np.ndarray:
        with Image.open(image) as im:
            return b.encode(b.preprocess(im.convert("RGB"))[None]).numpy()

    def warm_predict(g: gallery.Gallery) -> int:
        explain_features(model, g, features_of(backbone), [str(image)], top_k=5)
        return 1

    def cold_predict() -> int:
        explain._geonames.cache_clear()  # the place index is built on first use in a fresh process
        m = load_model(checkpoint)
        b = Backbone.from_metadata(m.checkpoint_metadata)
        explain_features(m, gallery.Gallery.load(tmp / "predict_gallery", use_gpu=False), features_of(b), ["x"])
        return 1

    def geoclip_way() -> int:
        """GeoCLIP's predict: the location encoder runs over the whole gallery on every call."""
        q = model.retrieval_image_vectors(features_of(backbone))
        scores = q @ model.retrieval_location_vectors(coords).T
        torch.topk(scores, 5, dim=1)
        return 1

    loaded = gallery.Gallery.load(tmp / "predict_gallery", use_gpu=False)
    warm_predict(loaded)  # the first call builds the place index
    repeats = 3 if quick else 5
    warm = best_rate(lambda: warm_predict(loaded), repeats)
    cold = best_rate(cold_predict, 2)
    geoclip = best_rate(geoclip_way, 2)
    label = f"predict 1 JPEG, {DEMO_BACKBONE}, {model.num_concepts} concepts, {len(coords):,}-GPS gallery"
    return [
        Result(
            benchmark=label + ", warm",
            unit="predictions/s",
            ours=warm,
            baseline=geoclip,
            baseline_name="GeoCLIP-style: re-embed gallery per call",
            note=f"warm {1000 / warm:.0f} ms vs {1000 / geoclip:.0f} ms; incl. places + concept terms",
        ),
        Result(
            benchmark=label + ", warm vs cold",
            unit="predictions/s",
            ours=warm,
            baseline=cold,
            baseline_name="cold: load model, backbone, gallery",
            note=f"warm {1000 / warm:.0f} ms, cold {1000 / cold:.0f} ms (cold excludes Python imports)",
        ),
    ]


def run(quick: bool) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        return [bench_throughput(quick, Path(tmp)), *bench_predict(quick, Path(tmp))]
