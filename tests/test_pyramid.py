"""The store's overview pyramid: mode levels (per chunk, then after the store is complete), their
layout and grids, xarray, labels.tif assembled from them, and the quicklook read from them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401 - registers the .rio accessor
import xarray as xr
import zarr
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate
from output_checks import block_mode, level_reference
from stores import TRANSFORM, store_from_array

from fcnseg.pipeline.products.cog import export_labels_cog
from fcnseg.pipeline.products.quicklook import read_store_labels
from fcnseg.pipeline.pyramid import block_modes, overview_factors, source_level
from fcnseg.pipeline.store import (
    MULTISCALES,
    finish_pyramid,
    level_path,
    open_store,
    store_levels,
    write_chunk,
)

NAMES = ["water", "forest", "road", "field"]
COLORS = [(30, 100, 200), (20, 110, 40), (120, 120, 120), (230, 200, 60)]


def class_map(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Random classes in patches, with ties (checkerboards of two classes), nodata pixels, and a
    nodata corner whose blocks hold no class at all."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.repeat(rng.integers(0, 4, (shape[0] // 3 + 1, shape[1] // 3 + 1)), 3, 0), 3, 1)
    labels = labels[: shape[0], : shape[1]].astype(np.uint8)
    noise = rng.random(shape) < 0.2
    labels[noise] = rng.integers(0, 4, int(noise.sum()))
    labels[rng.random(shape) < 0.1] = 255
    checker = (np.indices((16, 16)).sum(axis=0) % 2).astype(np.uint8)
    labels[20:36, 40:56] = np.where(checker, 2, 1)  # 2 x 2 ... 16 x 16 blocks tie between 1 and 2: 1 wins
    labels[-40:, -40:] = 255
    return labels


def make_store(path: Path, labels: np.ndarray, chunk: int, **kwargs) -> Path:
    return store_from_array(path, labels, chunk=chunk, class_names=NAMES, class_colors=COLORS, **kwargs)


@pytest.mark.parametrize(("shape", "chunk"), [
    ((600, 530), 50),    # no level fits a chunk: every level is made after the store is complete
    ((700, 530), 64),    # partial edge chunks; 2x per chunk, 4x from it
    ((430, 390), 100),   # 2x per chunk (50 px level chunks)
    ((1100, 900), 256),  # every level per chunk
])
def test_levels_are_the_mode_of_their_blocks(tmp_path, shape, chunk):
    labels = class_map(shape, seed=chunk)
    group = open_store(make_store(tmp_path / "labels.zarr", labels, chunk), mode="r")
    levels = store_levels(group)
    assert [lv.factor for lv in levels] == overview_factors(*shape)
    source = source_level(levels)
    for level in levels:
        stored = group[level_path(level)][:]
        assert not level.per_chunk or level.factor <= chunk // 32
        assert np.array_equal(stored, level_reference(labels, level, source))
    assert (stored[-1:, -1:] == 255).all()  # a block with no class is nodata


def test_block_modes_ties_nodata_and_a_cut_edge():
    labels = np.array([[1, 2, 0, 255, 3],
                       [2, 1, 255, 255, 3],
                       [255, 255, 3, 3, 255]], np.uint8)
    modes = block_modes(labels, [2, 4])
    assert modes[2].tolist() == [[1, 0, 3], [255, 3, 255]]  # 1-2 tie: 1; one pixel of 0: 0; 255 only with no class
    assert modes[4].tolist() == [[1, 3]]  # edge blocks count only the pixels inside
    many = np.random.default_rng(0).integers(0, 40, (96, 70)).astype(np.uint8)  # 40 classes, odd sizes
    assert all(np.array_equal(m, block_mode(many, f)) for f, m in block_modes(many, [2, 4, 8, 16, 32]).items())


def test_layout_follows_the_multiscales_convention_and_each_level_has_its_grid(tmp_path):
    labels = class_map((700, 530), seed=1)
    store = make_store(tmp_path / "labels.zarr", labels, 64)
    group = open_store(store, mode="r")
    layout = group.attrs[MULTISCALES]["layout"]
    assert group.attrs[MULTISCALES]["resampling_method"] == "mode"
    assert [c["name"] for c in group.attrs["zarr_conventions"]] == ["multiscales", "spatial:", "proj:"]
    assert group.attrs["proj:code"] == "EPSG:32633" and CRS.from_wkt(group.attrs["proj:wkt2"]) == CRS.from_epsg(32633)
    assert group.attrs["spatial:transform"] == list(TRANSFORM)[:6] and group.attrs["spatial:shape"] == [700, 530]
    left, top = TRANSFORM.c, TRANSFORM.f
    assert group.attrs["spatial:bbox"] == [left, top + 700 * TRANSFORM.e, left + 530 * TRANSFORM.a, top]
    child = open_store(store, mode="r")["2"]  # each level's group carries its own grid
    assert child.attrs["proj:code"] == "EPSG:32633" and child.attrs["spatial:shape"] == [175, 133]
    assert child.attrs["spatial:transform"] == layout[2]["spatial:transform"]
    assert [e["asset"] for e in layout] == ["labels", "1/labels", "2/labels"]
    assert [e.get("derived_from") for e in layout] == [None, "labels", "1/labels"]  # 4x: the mode of 2x's modes
    assert [e["transform"]["scale"] for e in layout] == [[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]]
    assert layout[2]["spatial:transform"] == list(TRANSFORM @ Affine.scale(4))[:6]
    assert layout[2]["spatial:shape"] == [175, 133]
    level = xr.open_zarr(store, group="2", consolidated=False).labels
    assert level.rio.crs == CRS.from_epsg(32633) and level.rio.transform() == TRANSFORM @ Affine.scale(4)
    assert level.shape == (175, 133) and float(level.x[0]) == TRANSFORM.c + 0.5 * TRANSFORM.a * 4  # a pixel centre


def test_the_root_still_opens_in_xarray_in_one_call(tmp_path):
    labels = class_map((700, 530), seed=2)
    store = make_store(tmp_path / "labels.zarr", labels, 64, probabilities=True)
    zarr.consolidate_metadata(str(store))  # as a finished run leaves it
    ds = xr.open_zarr(store)
    assert sorted(ds.variables) == ["labels", "probabilities", "spatial_ref", "x", "y"]
    assert np.array_equal(ds.labels.values, labels) and ds.labels.rio.transform() == TRANSFORM


def test_finishing_twice_gives_the_same_store(tmp_path):
    labels = class_map((600, 530), seed=3)
    store = make_store(tmp_path / "labels.zarr", labels, 50)
    group = open_store(store, mode="r")
    before = {lv.factor: group[level_path(lv)][:] for lv in store_levels(group)}
    finish_pyramid(store)
    group = open_store(store, mode="r")
    assert {lv.factor: group[level_path(lv)][:] for lv in store_levels(group)}.keys() == before.keys()
    assert all(np.array_equal(group[level_path(lv)][:], before[lv.factor]) for lv in store_levels(group))


def test_a_window_off_the_chunk_grid_is_refused(tmp_path):
    store = make_store(tmp_path / "labels.zarr", class_map((256, 256), seed=4), 128, complete=False)
    with pytest.raises(ValueError, match="chunk grid"):
        write_chunk(open_store(store), Window(3, 0, 128, 128), np.zeros((128, 128), np.uint8))


# --------------------------------------------------------------------------- labels.tif


def cog_levels(path: Path) -> list[np.ndarray]:
    with rasterio.open(path) as src:
        count = len(src.overviews(1))
    out = []
    for i in range(count):
        with rasterio.open(path, overview_level=i) as ovr:
            out.append(ovr.read(1))
    return out


@pytest.mark.parametrize(("shape", "chunk"), [((1100, 900), 256), ((1500, 1300), 64)])
def test_cog_overviews_are_the_store_levels(tmp_path, shape, chunk):
    labels = class_map(shape, seed=5)
    store = make_store(tmp_path / "labels.zarr", labels, chunk)
    cog = export_labels_cog(store, tmp_path / "labels.tif")
    valid, errors, _ = cog_validate(str(cog))
    assert valid, errors
    group = open_store(store, mode="r")
    levels = store_levels(group)
    with rasterio.open(cog) as src:
        assert src.overviews(1) == [lv.factor for lv in levels] and np.array_equal(src.read(1), labels)
        first = group[level_path(levels[0])]
        assert np.array_equal(src.read(1, out_shape=first.shape), first[:])  # GDAL answers from the overview
    assert all(np.array_equal(o, group[level_path(lv)][:]) for o, lv in zip(cog_levels(cog), levels))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.qml", "labels.tif", "labels.tif.aux.xml", "labels.zarr"]  # no staging left


def test_cog_takes_the_levels_as_they_are(tmp_path):
    """Levels that no resampling of the labels would give reach the COG unchanged: its overviews
    are copied from the store, never derived again."""
    store = make_store(tmp_path / "labels.zarr", class_map((1100, 900), seed=6), 256)
    group = open_store(store)
    for i, level in enumerate(store_levels(group)):
        array = group[level_path(level)]
        array[:] = np.full(array.shape, i, np.uint8)
    assert [np.unique(o).tolist() for o in cog_levels(export_labels_cog(store, tmp_path / "l.tif"))] == [[0], [1], [2]]


def test_a_store_from_before_pyramids_exports_as_then(tmp_path):
    labels = class_map((1100, 900), seed=7)
    store = make_store(tmp_path / "labels.zarr", labels, 256)
    group = open_store(store)
    for level in store_levels(group):
        shutil.rmtree(store / level.name)
    for key in (MULTISCALES, "zarr_conventions", "spatial:dimensions", "spatial:transform", "spatial:shape",
                "spatial:bbox", "proj:code", "proj:wkt2"):
        del group.attrs[key]
    assert store_levels(open_store(store, mode="r")) is None
    cog = export_labels_cog(store, tmp_path / "labels.tif")
    assert cog_validate(str(cog))[0]
    with rasterio.open(cog) as src:
        assert src.overviews(1) == [2, 4, 8] and np.array_equal(src.read(1), labels)


# --------------------------------------------------------------------------- quicklook


def test_quicklook_labels_come_from_the_coarsest_level_at_least_its_size(tmp_path):
    labels = class_map((1100, 900), seed=8)
    store = make_store(tmp_path / "labels.zarr", labels, 256)
    group = open_store(store)
    level2 = group[level_path(store_levels(group)[1])][:]  # 4x: 275 x 225, the coarsest >= 250 x 205
    shown, names, colors, shape = read_store_labels(store, 250)
    assert shown.shape == (250, 205) and shape == (1100, 900) and names == NAMES
    assert colors.tolist() == [list(c) for c in COLORS]
    rows = (((np.arange(250) + 0.5) * 1100 / 250) // 4).astype(int)
    cols = (((np.arange(205) + 0.5) * 900 / 205) // 4).astype(int)
    assert np.array_equal(shown, level2[np.ix_(rows, cols)])
    full, *_ = read_store_labels(store, 2048)  # larger than the raster: full resolution, as it is
    assert np.array_equal(full, labels)
