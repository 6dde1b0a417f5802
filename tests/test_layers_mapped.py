"""Rasters read band by band from memory maps: same values as plain indexing, bounded residency,
streamed conversions, and Pillow's decompression-bomb limit left alone."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from geoconcept import bundled
from geoconcept.layers import builtin, grid
from geoconcept.layers.grid import WGS84, Grid, MappedArray


def _mapped(tmp_path, array: np.ndarray) -> MappedArray:
    path = tmp_path / "a.npy"
    np.save(path, array)
    return MappedArray(path)


def _resident_kb(path) -> int:
    """Resident kB of this process's mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                inside = fields[-1] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


def test_cells_equal_plain_indexing_in_input_order(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 250, size=(301, 97), dtype=np.uint8)
    monkeypatch.setattr(grid, "BAND_BYTES", 97 * 7)  # 7 rows a band: 43 bands, the last one short
    mapped = _mapped(tmp_path, array)
    assert mapped.rows_per_band == 7
    row = rng.integers(0, 301, 5000)
    col = rng.integers(0, 97, 5000)
    np.testing.assert_array_equal(mapped.cells(row, col), array[row, col])
    near = row % 20 + 100  # rows 100-119: three bands, read without sorting
    np.testing.assert_array_equal(mapped.cells(near, col), array[near, col])
    assert mapped.cells(row[:0], col[:0]).shape == (0,)
    np.testing.assert_array_equal(mapped.rows(290, 301), array[290:])


def test_grid_over_a_mapped_array_samples_like_one_in_memory(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    array = rng.normal(size=(180, 360)).astype(np.float32)
    array[rng.random(array.shape) < 0.1] = np.nan
    monkeypatch.setattr(grid, "BAND_BYTES", 360 * 4 * 10)
    transform = Affine(1.0, 0.0, -180.0, 0.0, -1.0, 90.0)
    in_memory = Grid(array, transform, WGS84, nodata=-9999.0)
    mapped = Grid(_mapped(tmp_path, array), transform, WGS84, nodata=-9999.0)
    lat, lon = rng.uniform(-90, 90, 3000), rng.uniform(-180, 180, 3000)
    a, b = in_memory.sample(lat, lon), mapped.sample(lat, lon)
    np.testing.assert_array_equal(np.ma.getmaskarray(a), np.ma.getmaskarray(b))
    np.testing.assert_array_equal(a.filled(0), b.filled(0))


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED"), reason="needs madvise")
def test_sampling_everywhere_leaves_a_few_bands_resident(tmp_path, monkeypatch):
    array = np.ones((4096, 4096), dtype=np.uint8)  # 16 MiB
    path = tmp_path / "big.npy"
    np.save(path, array)
    monkeypatch.setattr(grid, "BAND_BYTES", 1 << 20)  # 16 bands of 1 MiB, 4 of them kept mapped
    mapped = MappedArray(path)
    rng = np.random.default_rng(2)
    row, col = rng.integers(0, 4096, 200_000), rng.integers(0, 4096, 200_000)
    assert int(mapped.cells(row, col).sum()) == 200_000
    # Every page was read; without the releases all 16 MiB would stay mapped. What remains is the
    # last RESIDENT_BANDS bands, plus at most the kernel's fault-around (64 kB) at each end.
    assert _resident_kb(path) <= grid.RESIDENT_BANDS * 1024 + 128


def test_land_mask_conversion_streams_the_npz(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    ocean = rng.random((50, 40)) < 0.5
    npz = tmp_path / "mask.npz"
    np.savez_compressed(npz, mask=ocean, lat=np.zeros(50), lon=np.zeros(40))
    monkeypatch.setattr(grid, "BAND_BYTES", 40 * 6)
    monkeypatch.setattr(builtin, "BAND_BYTES", 40 * 6)
    monkeypatch.setenv("GEOCONCEPT_CACHE", str(tmp_path / "cache"))
    converted = builtin.land_mask_blocks(npz)
    assert converted.shape == (50, 40)
    blocks = list(converted.blocks)
    assert len(blocks) == 9  # 6 rows each, then 2
    np.testing.assert_array_equal(np.concatenate(blocks), (~ocean).astype(np.uint8))
    mapped = builtin.cached_array(npz, "mask", builtin.land_mask_blocks)
    np.testing.assert_array_equal(mapped.array, (~ocean).astype(np.uint8))


def test_raster_band_conversion_reads_whole_blocks(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    data = rng.integers(0, 9, size=(100, 64), dtype=np.uint8)
    tif = tmp_path / "tiled.tif"
    profile = {"width": 64, "height": 100, "count": 1, "dtype": "uint8", "crs": "EPSG:4326"}
    tiles = {"tiled": True, "blockxsize": 16, "blockysize": 16}
    with rasterio.open(tif, "w", driver="GTiff", transform=Affine(1, 0, 0, 0, -1, 50), **profile, **tiles) as ds:
        ds.write(data, 1)
    monkeypatch.setattr(builtin, "BAND_BYTES", 64 * 20)  # 20 rows, rounded up to 32 (two tile rows)
    blocks = list(builtin.raster_band_blocks(tif).blocks)
    assert [b.shape[0] for b in blocks] == [32, 32, 32, 4]
    np.testing.assert_array_equal(np.concatenate(blocks), data)


def test_koppen_png_build_leaves_pillows_bomb_limit_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOCONCEPT_CACHE", str(tmp_path))
    builtin.koppen_geiger.cache_clear()
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None
    try:
        koppen = builtin.koppen_geiger()  # converts the PNG: the cache folder is empty
        assert list(tmp_path.glob("koppen_geiger-*.npy"))
        assert limit == Image.MAX_IMAGE_PIXELS
        # Same pixels as Pillow's own decoding (allowed here, for this one trusted file only).
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        with Image.open(bundled.KOPPEN_FULL_PNG.path()) as im:
            np.testing.assert_array_equal(koppen.array.array, np.asarray(im.convert("L")))
    finally:
        builtin.koppen_geiger.cache_clear()  # later tests get a grid from the usual cache
