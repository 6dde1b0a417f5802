"""GeoCLIP's location encoder: (latitude, longitude) in degrees → a 512-d embedding.

Architecture (Vivanco et al., NeurIPS 2023): Equal Earth projection of the point, then for each
sigma a random-Fourier-feature encoding (256 frequencies drawn from N(0, sigma²), cos and sin →
512) followed by an MLP (512 → 1024 → 1024 → 1024, ReLU) and a linear head to 512; the heads'
outputs are summed. The numerics follow GeoCLIP's operation order so that its published weights
give the same embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from geoconcept import bundled

DEFAULT_SIGMAS: tuple[float, ...] = (2.0**0, 2.0**4, 2.0**8)
EMBED_DIM = 512
RFF_FREQUENCIES = 256
HIDDEN = 1024

# Equal Earth projection (Šavrič, Patterson & Jenny 2018), polynomial coefficients and the
# scale GeoCLIP applies so that coordinates land roughly in [-1, 1].
_A1, _A2, _A3, _A4 = 1.340264, -0.081106, 0.000893, 0.003796
_SCALE = 66.50336


def equal_earth(latlon: torch.Tensor) -> torch.Tensor:
    """(N, 2) latitude/longitude in degrees → (N, 2) scaled Equal Earth (x, y)."""
    lat = torch.deg2rad(latlon[:, 0])
    lon = torch.deg2rad(latlon[:, 1])
    sqrt3 = torch.sqrt(torch.tensor(3.0, dtype=latlon.dtype, device=latlon.device))
    theta = torch.asin((sqrt3 / 2) * torch.sin(lat))
    denominator = 3 * (9 * _A4 * theta**8 + 7 * _A3 * theta**6 + 3 * _A2 * theta**2 + _A1)
    x = (2 * sqrt3 * lon * torch.cos(theta)) / denominator
    y = _A4 * theta**9 + _A3 * theta**7 + _A2 * theta**3 + _A1 * theta
    return (torch.stack((x, y), dim=1) * _SCALE) / 180


class FourierFeatures(nn.Module):
    """Random Fourier features γ(v) = [cos 2πBv, sin 2πBv] with B ~ N(0, sigma²), fixed."""

    def __init__(self, sigma: float, in_features: int = 2, frequencies: int = RFF_FREQUENCIES) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.randn(frequencies, in_features) * sigma)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        projected = 2 * np.pi * v @ self.frequencies.T
        return torch.cat((torch.cos(projected), torch.sin(projected)), dim=-1)


class SigmaBranch(nn.Module):
    """One resolution of the hierarchy: Fourier features at one sigma, an MLP and a head."""

    def __init__(self, sigma: float, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.rff = FourierFeatures(sigma)
        self.mlp = nn.Sequential(
            nn.Linear(2 * RFF_FREQUENCIES, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
        )
        self.head = nn.Linear(HIDDEN, dim)

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(self.rff(projected)))


def _geoclip_name(ours: str) -> str:
    """Our parameter name → the name in GeoCLIP's `location_encoder_weights.pth`."""
    parts = ours.split(".")  # branches.<i>.<rff|mlp|head>[.<j>].<tensor>
    i, part = parts[1], parts[2]
    if part == "rff":
        return f"LocEnc{i}.capsule.0.b"
    if part == "mlp":
        return f"LocEnc{i}.capsule.{int(parts[3]) + 1}.{parts[4]}"
    return f"LocEnc{i}.head.0.{parts[3]}"


def flush_subnormals_(module: nn.Module) -> int:
    """Set subnormal float parameters/buffers to zero in place; returns how many were flushed.

    GeoCLIP's published weights hold ~4% subnormal values (weight decay pushed unused weights
    towards zero). CPUs handle subnormals in microcode, which makes the matrix products that
    touch them tens of times slower; values below 1.2e-38 contribute nothing measurable to
    outputs of order 1e-3..1, so zero them once at load time.
    """
    flushed = 0
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                tiny = tensor.abs() < torch.finfo(tensor.dtype).tiny
                subnormal = tiny & (tensor != 0)
                flushed += int(subnormal.sum())
                tensor.masked_fill_(subnormal, 0.0)
    return flushed


class LocationEncoder(nn.Module):
    """GPS → embedding. Call it on an (N, 2) float tensor of (lat, lon) degrees → (N, dim)."""

    def __init__(self, sigmas: Sequence[float] = DEFAULT_SIGMAS, dim: int = EMBED_DIM) -> None:
        super().__init__()
        if not sigmas:
            raise ValueError("LocationEncoder needs at least one sigma")
        self.sigmas = tuple(float(s) for s in sigmas)
        self.dim = dim
        self.branches = nn.ModuleList(SigmaBranch(s, dim) for s in self.sigmas)

    @classmethod
    def from_geoclip(cls, path: str | None = None) -> LocationEncoder:
        """GeoCLIP's pretrained encoder, read from the `geoclip` package's weights (no geoclip import)."""
        source = path or bundled.GEOCLIP_LOCATION_WEIGHTS.path()
        # The published file is a plain state dict of tensors: weights_only=True refuses anything else.
        state = torch.load(source, map_location="cpu", weights_only=True)
        encoder = cls(DEFAULT_SIGMAS)
        ours = encoder.state_dict()
        expected = {_geoclip_name(name) for name in ours}
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(
                f"{source}: not GeoCLIP location weights (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        encoder.load_state_dict({name: state[_geoclip_name(name)] for name in ours})
        flush_subnormals_(encoder)
        return encoder.eval()

    def forward(self, latlon: torch.Tensor) -> torch.Tensor:
        projected = equal_earth(latlon)
        # Summed in branch order from zeros, as GeoCLIP does, so results match bit for bit.
        out = torch.zeros(latlon.shape[0], self.dim, dtype=projected.dtype, device=latlon.device)
        for branch in self.branches:
            out = out + branch(projected)
        return out

    @torch.inference_mode()
    def embed(self, latlon: torch.Tensor | np.ndarray, batch_size: int = 8192) -> torch.Tensor:
        """Embeddings of many points without autograd, in batches to bound memory; (N, 2) → (N, dim)."""
        points = as_latlon_tensor(latlon, device=self.device)
        if points.shape[0] == 0:
            return torch.empty(0, self.dim, device=self.device)
        return torch.cat([self(chunk) for chunk in points.split(batch_size)])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def as_latlon_tensor(latlon: torch.Tensor | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Check an (N, 2) array of (lat, lon) degrees and return it as a float32 tensor."""
    points = torch.as_tensor(np.asarray(latlon) if not isinstance(latlon, torch.Tensor) else latlon)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"expected an (N, 2) array of (lat, lon) degrees, got shape {tuple(points.shape)}")
    points = points.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(points).all()):
        raise ValueError("coordinates must be finite numbers")
    if bool((points[:, 0].abs() > 90).any()) or bool((points[:, 1].abs() > 180).any()):
        raise ValueError("latitudes must lie in [-90, 90] and longitudes in [-180, 180] degrees")
    return points
