"""A map PNG of a layer (plate carrée over the layer's bounds: the world for the built-ins), with
a legend from its class table or a colour bar for continuous layers.

Drawn with matplotlib's object API (no pyplot global state, safe in worker processes), written
atomically, without the "Software" PNG tag, so the same layer and size give the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from geoconcept import atomic
from geoconcept.layers.base import Layer

MISSING_COLOR = "#eeeeee"
MAX_LEGEND_ENTRIES = 40
DPI = 100
TITLE_INCHES = 0.4
LEGEND_ROW_INCHES = 0.17
COLORBAR_INCHES = 0.9

# Conventional palettes: Beck et al. (2018)'s Köppen-Geiger legend (plus As, which Beck's scheme
# lacks, between Am and Aw), the MODIS land-cover legend.
PALETTES: dict[str, dict[str, str]] = {
    "koppen_geiger": {
        "Af": "#0000ff",
        "Am": "#0078ff",
        "As": "#5aaafa",
        "Aw": "#46aafa",
        "BWh": "#ff0000",
        "BWk": "#ff9696",
        "BSh": "#f5a500",
        "BSk": "#ffdc64",
        "Csa": "#ffff00",
        "Csb": "#c8c800",
        "Csc": "#969600",
        "Cwa": "#96ff96",
        "Cwb": "#64c864",
        "Cwc": "#329632",
        "Cfa": "#c8ff50",
        "Cfb": "#64ff50",
        "Cfc": "#32c800",
        "Dsa": "#ff00ff",
        "Dsb": "#c800c8",
        "Dsc": "#963296",
        "Dsd": "#966496",
        "Dwa": "#aaafff",
        "Dwb": "#5a78dc",
        "Dwc": "#4b50b4",
        "Dwd": "#320087",
        "Dfa": "#00ffff",
        "Dfb": "#37c8ff",
        "Dfc": "#007d7d",
        "Dfd": "#00465f",
        "ET": "#b2b2b2",
        "EF": "#666666",
    },
    "koppen_group": {"A": "#0078ff", "B": "#ff9600", "C": "#64ff50", "D": "#37c8ff", "E": "#b2b2b2"},
    "igbp": {
        "water": "#1c0dff",
        "enf": "#05450a",
        "ebf": "#086a10",
        "dnf": "#54a708",
        "dbf": "#78d203",
        "mixed_forest": "#009900",
        "closed_shrubland": "#c6b044",
        "open_shrubland": "#dcd159",
        "woody_savanna": "#dade48",
        "savanna": "#fbff13",
        "grassland": "#b6ff05",
        "wetland": "#27ff87",
        "cropland": "#c24f44",
        "urban": "#a5a5a5",
        "cropland_mosaic": "#ff6d4c",
        "snow_ice": "#69fff8",
        "barren": "#f9ffa4",
    },
    "land": {"ocean": "#a6cee3", "land": "#b2a77a"},
}


def _class_colors(layer: Layer) -> dict[int, tuple[float, float, float, float]]:
    """Colour of each class code: the layer's palette where it has one, else tab20 in code order."""
    palette = PALETTES.get(layer.name, {})
    cycle = colormaps["tab20"].colors
    colors = {}
    for i, (code, sym) in enumerate(sorted(layer.classes.symbols.items())):
        colors[code] = to_rgba(palette.get(sym, cycle[i % len(cycle)]))
    return colors


def sample_map(layer: Layer, width: int) -> tuple[np.ma.MaskedArray, tuple[float, float, float, float]]:
    """The layer sampled at the cell centres of a width-wide lat/lon grid over its bounds (rows north→south)."""
    west, south, east, north = layer.bounds()
    if east < west:
        east += 360.0
    height = max(1, round(width * (north - south) / (east - west)))
    lats = north - (np.arange(height) + 0.5) * (north - south) / height
    lons = west + (np.arange(width) + 0.5) * (east - west) / width
    lat2d, lon2d = np.meshgrid(lats, (lons + 180.0) % 360.0 - 180.0, indexing="ij")
    values = layer.sample(lat2d.ravel(), lon2d.ravel()).reshape(height, width)
    return values, (west, east, south, north)


def render_layer_map(layer: Layer, out_png: str | os.PathLike[str], width: int = 1440) -> Path:
    """Write a PNG map of `layer`, `width` map pixels wide; returns the path."""
    if width < 16:
        raise ValueError(f"width must be at least 16 pixels, got {width}")
    values, extent = sample_map(layer, width)
    map_inches = values.shape[0] / DPI
    fig = Figure(dpi=DPI)
    if layer.classes is not None:
        image, handles, unlisted = _class_image(layer, values)
        ncol = max(1, min(len(handles), width // 240))
        bottom = 0.1 + LEGEND_ROW_INCHES * (-(-len(handles) // ncol) + (1 if unlisted else 0))
    else:
        bottom = COLORBAR_INCHES
    height = TITLE_INCHES + map_inches + bottom
    fig.set_size_inches(width / DPI, height)
    ax = fig.add_axes((0.0, bottom / height, 1.0, map_inches / height))
    ax.set_axis_off()
    title = f"{layer.name}: {layer.description}" if layer.description else layer.name
    fig.text(0.01, 1 - TITLE_INCHES / 2 / height, title, fontsize=10, va="center")
    if layer.classes is not None:
        ax.imshow(image, extent=extent, interpolation="nearest", aspect="auto")
        fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(0.01, bottom / height),
            ncol=ncol,
            fontsize=7,
            frameon=False,
            title=f"(+ {unlisted} smaller classes not listed)" if unlisted else None,
            title_fontsize=7,
        )
    else:
        cmap = colormaps["viridis"].with_extremes(bad=MISSING_COLOR)
        shown = ax.imshow(values.astype(np.float64), extent=extent, cmap=cmap, interpolation="nearest", aspect="auto")
        cax = fig.add_axes((0.15, 0.45 / height, 0.7, 0.15 / height))
        fig.colorbar(shown, cax=cax, orientation="horizontal", label=layer.units or layer.name)
    with atomic.atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    return Path(out_png)


def _class_image(layer: Layer, values: np.ma.MaskedArray) -> tuple[np.ndarray, list[Patch], int]:
    """RGBA image of a categorical sample, legend handles (largest classes, code order), and how
    many classes present were left out of the legend."""
    colors = _class_colors(layer)
    image = np.empty((*values.shape, 4))
    image[:] = to_rgba(MISSING_COLOR)
    data, valid = np.ma.getdata(values), ~np.ma.getmaskarray(values)
    codes, counts = np.unique(data[valid], return_counts=True)
    present = [int(c) for c in codes if int(c) in colors]
    for code in present:
        image[valid & (data == code)] = colors[code]
    largest = sorted(present, key=lambda c: -counts[list(codes).index(c)])[:MAX_LEGEND_ENTRIES]
    handles = [
        Patch(facecolor=colors[c], label=_class_label(layer.classes.symbols[c], layer.classes.names.get(c, "")))
        for c in sorted(largest)
    ]
    handles.append(Patch(facecolor=MISSING_COLOR, edgecolor="#999999", label="no value"))
    return image, handles, len(present) - len(largest)


def _class_label(symbol: str, name: str) -> str:
    return symbol if not name or name == symbol else f"{symbol}: {name}"
