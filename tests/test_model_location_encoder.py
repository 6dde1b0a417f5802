"""LocationEncoder: GeoCLIP's architecture and published weights, checked against GeoCLIP's own code."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings

import numpy as np
import pytest
import torch

import geoconcept
from geoconcept import bundled
from geoconcept.model.location_encoder import LocationEncoder, equal_earth, flush_subnormals_


def _geoclip_location_module() -> types.ModuleType:
    """geoclip/model/location_encoder.py without running geoclip's package __init__ (which needs
    transformers and a hub download path): its folder is mounted as a bare package."""
    spec = importlib.util.find_spec("geoclip")
    assert spec is not None and spec.submodule_search_locations
    folder = next(iter(spec.submodule_search_locations)) + "/model"
    package = types.ModuleType("_geoclip_model")
    package.__path__ = [folder]
    sys.modules["_geoclip_model"] = package
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script deprecation inside geoclip's rff module
        return importlib.import_module("_geoclip_model.location_encoder")


def _points(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lat = torch.rand(n, generator=g) * 180 - 90
    lon = torch.rand(n, generator=g) * 360 - 180
    edges = torch.tensor([[90.0, 180.0], [-90.0, -180.0], [0.0, 0.0], [45.0, 179.999], [-33.9, 151.2]])
    return torch.cat([torch.stack([lat, lon], 1), edges])


def test_exported_at_package_top_level():
    assert geoconcept.LocationEncoder is LocationEncoder


def test_pretrained_encoder_matches_geoclip_own_forward():
    reference = _geoclip_location_module().LocationEncoder()  # loads the same published .pth
    reference.eval()
    ours = LocationEncoder.from_geoclip()
    x = _points(2000)
    with torch.inference_mode():
        expected = reference(x)
        got = ours.embed(x, batch_size=512)
        projected = _geoclip_location_module().equal_earth_projection(x)
    assert got.shape == (x.shape[0], 512)
    assert (got - expected).abs().max().item() <= 1e-5
    assert torch.equal(equal_earth(x), projected)
    # not trivially equal because both are zero/constant
    assert expected.std().item() > 1e-3


def test_embed_is_batched_inference_and_accepts_numpy():
    encoder = LocationEncoder.from_geoclip()
    x = _points(300, seed=1)
    pieces = encoder.embed(x, batch_size=7)
    with torch.inference_mode():
        by_hand = torch.cat([encoder(chunk) for chunk in x.split(7)])
    # Same chunks, same GEMM shapes, same kernels: equal bit for bit, from a tensor or from numpy.
    assert torch.equal(pieces, by_hand)
    assert torch.equal(encoder.embed(x.numpy(), batch_size=7), pieces)
    assert not pieces.requires_grad and pieces.is_inference()
    # Another batch size means other GEMM shapes, whose kernels sum the K-term dot products in
    # another order: the results then differ by float32 rounding, not bit for bit. Each layer's dot
    # products (K <= 1025) carry a relative error of order K·u = 1025·2⁻²⁴ ≈ 6e-5 of Σ|w·h|, over 5
    # layers and with cancellation in the sums (measured here: up to 7e-5 of a row's norm; the
    # worst-case bound carried through the layers is vacuous, larger than the embeddings). 1e-3 of
    # the norm leaves room for other CPUs' kernels, yet any batching bug (a row shifted, dropped or
    # mixed with another chunk's) moves a row by the distance between two points' embeddings (here at
    # least 0.15, for rows of mean norm 0.34).
    whole = encoder.embed(x.numpy(), batch_size=10_000)
    relative = (whole - pieces).norm(dim=1) / whole.norm(dim=1)
    assert relative.max() < 1e-3
    assert encoder.embed(np.zeros((0, 2))).shape == (0, 512)


def test_call_keeps_autograd_for_training():
    encoder = LocationEncoder(sigmas=[1.0, 8.0])
    out = encoder(_points(4))
    out.sum().backward()
    assert encoder.branches[0].mlp[0].weight.grad is not None
    assert encoder.branches[0].rff.frequencies.grad is None  # Fourier features stay fixed


def test_configurable_sigmas_set_fourier_scale():
    torch.manual_seed(0)
    encoder = LocationEncoder(sigmas=[1.0, 100.0])
    stds = [b.rff.frequencies.std().item() for b in encoder.branches]
    assert 0.8 < stds[0] < 1.2 and 80 < stds[1] < 120
    assert encoder(_points(3)).shape == (8, 512)


def test_published_weights_hold_subnormals_that_loading_flushes():
    state = torch.load(bundled.GEOCLIP_LOCATION_WEIGHTS.path(), map_location="cpu", weights_only=True)
    tiny = torch.finfo(torch.float32).tiny
    raw = sum(int(((t.abs() < tiny) & (t != 0)).sum()) for t in state.values())
    assert raw > 1000
    encoder = LocationEncoder.from_geoclip()
    assert flush_subnormals_(encoder) == 0  # already flushed at load


@pytest.mark.parametrize("bad", [np.zeros((3, 3)), np.array([[91.0, 0.0]]), np.array([[0.0, np.nan]])])
def test_embed_rejects_bad_coordinates(bad):
    with pytest.raises(ValueError):
        LocationEncoder(sigmas=[1.0]).embed(bad)


def test_from_geoclip_rejects_other_weight_files(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not GeoCLIP location weights"):
        LocationEncoder.from_geoclip(str(path))
