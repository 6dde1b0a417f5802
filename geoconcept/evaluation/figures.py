"""The evaluation's figures, as PNG bytes: error map, accuracy curves, concept maps, explanation grid.

Drawn with matplotlib's object API (no pyplot state, safe in worker processes) and saved without
the "Software" tag, so the same inputs give the same bytes. Maps are plate carrée over the world
with the bundled 1 km land mask (resampled) as background.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from functools import cache

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from geoconcept.evaluation.explain import Explanation
from geoconcept.evaluation.faithfulness import ConceptMap
from geoconcept.evaluation.metrics import THRESHOLDS_KM, haversine_km
from geoconcept.layers import builtin

DPI = 110
WORLD = (-180.0, 180.0, -90.0, 90.0)
LAND_COLORS = ListedColormap(["#dbe9f4", "#e8e2d0"])  # ocean, land
ERROR_CMAP = "plasma_r"
THUMBNAIL = 160


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


@cache
def land_background(width: int = 720) -> np.ndarray:
    """(width/2, width) 0/1 land mask over the world, rows north → south."""
    return np.ma.filled(builtin.land_mask().window(-90.0, 90.0, -180.0, 180.0, width // 2, width), 0)


def _world_axes(fig: Figure, rect: tuple[float, float, float, float], land: bool = True):
    ax = fig.add_axes(rect)
    if land:
        ax.imshow(land_background(), extent=WORLD, cmap=LAND_COLORS, interpolation="nearest", aspect="auto")
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-90, 91, 30))
    ax.tick_params(labelsize=7)
    return ax


def _segments(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Truth→prediction segments in plate carrée; a segment whose short way crosses the dateline is
    drawn twice, shifted by ±360°, so both halves show inside the map. Returns segments and row ids."""
    lon_to = pred[:, 1].copy()
    wrap = np.abs(lon_to - true[:, 1]) > 180
    lon_to[wrap] -= 360 * np.sign(lon_to[wrap] - true[wrap, 1])
    base = np.stack([np.stack([true[:, 1], true[:, 0]], 1), np.stack([lon_to, pred[:, 0]], 1)], axis=1)
    rows = np.arange(len(true))
    shifted = base[wrap].copy()
    shifted[:, :, 0] -= 360 * np.sign(shifted[:, 1:2, 0] - shifted[:, 0:1, 0]).repeat(2, axis=1)
    return np.concatenate([base, shifted]), np.concatenate([rows, rows[wrap]])


def error_map_png(true: np.ndarray, pred: np.ndarray, title: str) -> bytes:
    """World map: a line from each true location to its prediction and a dot at the truth, both
    coloured by the error (log scale, ticks at the accuracy thresholds)."""
    errors = np.maximum(haversine_km(pred, true), 1.0)
    norm = LogNorm(vmin=1.0, vmax=20_016)
    fig = Figure(figsize=(10, 5.6))
    ax = _world_axes(fig, (0.05, 0.16, 0.9, 0.76))
    segments, rows = _segments(true, pred)
    lines = LineCollection(segments, cmap=ERROR_CMAP, norm=norm, linewidths=0.5, alpha=0.55)
    lines.set_array(errors[rows])
    ax.add_collection(lines)
    ax.scatter(true[:, 1], true[:, 0], c=errors, cmap=ERROR_CMAP, norm=norm, s=6, edgecolors="none", zorder=3)
    ax.set_title(title, fontsize=10)
    cax = fig.add_axes((0.2, 0.07, 0.6, 0.025))
    bar = fig.colorbar(lines, cax=cax, orientation="horizontal")
    bar.set_ticks(list(THRESHOLDS_KM))
    bar.set_ticklabels([f"{t:g}" for t in THRESHOLDS_KM])
    bar.set_label("error km (dot = true location, line to the prediction)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return png_bytes(fig)


def accuracy_curve_png(errors_by_run: Mapping[tuple[str, int], np.ndarray]) -> bytes:
    """Percent of images within d km against d (log axis), per variant: mean over seeds, band = min–max."""
    distances = np.logspace(-1, np.log10(20_016), 200)
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_axes((0.1, 0.13, 0.86, 0.78))
    variants = list(dict.fromkeys(v for v, _ in errors_by_run))
    colors = colormaps["tab10"].colors
    for i, variant in enumerate(variants):
        curves = np.array(
            [
                100 * np.mean(e[:, None] <= distances[None, :], axis=0)
                for (v, _), e in errors_by_run.items()
                if v == variant
            ]
        )
        ax.plot(distances, curves.mean(0), color=colors[i], label=f"{variant} ({len(curves)} seeds)")
        ax.fill_between(distances, curves.min(0), curves.max(0), color=colors[i], alpha=0.2, linewidth=0)
    for t in THRESHOLDS_KM:
        ax.axvline(t, color="#999999", linewidth=0.6, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel("distance d (km)", fontsize=8)
    ax.set_ylabel("% of test images within d", fontsize=8)
    ax.set_ylim(0, 100)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"Accuracy vs distance (dotted: {', '.join(f'{t:g}' for t in THRESHOLDS_KM)} km)", fontsize=9)
    return png_bytes(fig)


def concept_map_png(concept_map: ConceptMap) -> bytes:
    """Two world panels: the model's location-side score and the raster truth, with their correlation."""
    fig = Figure(figsize=(11, 3.3))
    left = _world_axes(fig, (0.04, 0.12, 0.42, 0.74), land=False)
    shown = left.imshow(
        concept_map.score, extent=concept_map.extent, cmap="viridis", interpolation="nearest", aspect="auto"
    )
    left.set_title(f"{concept_map.variant}: location-side score z_loc", fontsize=9)
    fig.colorbar(shown, ax=left, fraction=0.04, pad=0.02).ax.tick_params(labelsize=7)
    right = _world_axes(fig, (0.53, 0.12, 0.42, 0.74), land=False)
    truth_cmap = colormaps["viridis"].with_extremes(bad="#eeeeee")
    truth = np.ma.masked_invalid(concept_map.truth)
    shown = right.imshow(
        truth, extent=concept_map.extent, cmap=truth_cmap, vmin=0, vmax=1, interpolation="nearest", aspect="auto"
    )
    right.set_title("raster truth (label; grey = not measured)", fontsize=9)
    fig.colorbar(shown, ax=right, fraction=0.04, pad=0.02).ax.tick_params(labelsize=7)
    fig.suptitle(
        f"{concept_map.concept}: Pearson {concept_map.pearson:+.3f}, Spearman {concept_map.spearman:+.3f} "
        f"over {concept_map.cells:,} cells",
        fontsize=10,
    )
    return png_bytes(fig)


def _thumbnail(data: bytes | None) -> np.ndarray:
    if data is None:
        return np.full((THUMBNAIL, THUMBNAIL, 3), 220, dtype=np.uint8)
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB").resize((THUMBNAIL, THUMBNAIL)))
    except (UnidentifiedImageError, OSError):
        return np.full((THUMBNAIL, THUMBNAIL, 3), 220, dtype=np.uint8)


def explanation_grid_png(explanations: Sequence[Explanation], images: Mapping[str, bytes], columns: int = 4) -> bytes:
    """A grid of test images, each with its true location, top guesses (place, error) and the top
    concepts of the first guess with their signed contributions."""
    rows = -(-len(explanations) // columns)
    fig = Figure(figsize=(3.2 * columns, 3.6 * rows))
    for i, expl in enumerate(explanations):
        r, c = divmod(i, columns)
        top = 1 - (r + 0.02) / rows
        ax = fig.add_axes((c / columns + 0.01, top - 0.5 / rows, 0.9 / columns, 0.48 / rows))
        ax.imshow(_thumbnail(images.get(expl.key)))
        ax.set_axis_off()
        lines = [expl.key]
        if expl.true_latlon is not None:
            lines.append(f"truth {expl.true_latlon[0]:.2f}, {expl.true_latlon[1]:.2f}")
        for g in expl.guesses[:3]:
            error = ""
            if expl.true_latlon is not None:
                error = f", {haversine_km([[g.lat, g.lon]], [expl.true_latlon])[0]:,.0f} km off"
            lines.append(f"{g.rank}. {g.place.name[:22]}, {g.place.country_code}{error}")
        if expl.guesses and expl.guesses[0].concepts:
            lines.append("concepts (guess 1):")
            lines += [f"  {t.contribution:+.3f} {t.concept[:28]}" for t in expl.guesses[0].concepts]
        fig.text(c / columns + 0.01, top - 0.53 / rows, "\n".join(lines), fontsize=6.5, va="top", family="monospace")
    return png_bytes(fig)
