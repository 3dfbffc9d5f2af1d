"""The link step of vectorize, property-tested: any set of empty cells, any arrival order, cells of
any size give the same polygons, and dissolving them by ``region_id`` gives the 4-connected regions
of the label map.

Random label maps with the shapes real scenes have (nodata holes, whole cells empty, a
stair-stepped nodata corner), small cells (3 to 24 pixels) so that a map has many of them, and the
cells' results fed to the driver in shuffled orders, serially and from real Dask workers.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from rasterio.enums import MergeAlg
from rasterio.features import rasterize
from scipy import ndimage
from stores import TRANSFORM, store_from_array

from fcnseg.pipeline.products import vectorize as vectorize_module
from fcnseg.pipeline.products.cell_polygons import cell_windows
from fcnseg.pipeline.products.vectorize import VectorizeOptions, vectorize_store
from fcnseg.pipeline.store import NODATA

NAMES = ["water", "forest", "cropland", "grassland"]
COLORS = [(30, 100, 200), (20, 110, 40), (220, 200, 80), (140, 200, 90)]
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
SEEDS = range(24)


def random_map(seed: int) -> tuple[np.ndarray, int]:
    """A label map of 3 to 7 cells a side (the last cell cut short), its cell size: blocky regions
    that cross cells, speckle, nodata holes, whole cells nodata and a stair-stepped nodata corner."""
    rng = np.random.default_rng(seed)
    cell = int(rng.choice([3, 4, 5, 7, 11, 16, 24]))
    height, width = (int(n) * cell + int(rng.integers(0, cell)) for n in rng.integers(3, 8, 2))
    block = int(rng.integers(1, max(2, cell)))
    coarse = rng.integers(0, len(NAMES), (height // block + 1, width // block + 1))
    labels = np.kron(coarse, np.ones((block, block), np.int64))[:height, :width].astype(np.uint8)
    speckle = rng.random((height, width)) < 0.08
    labels[speckle] = rng.integers(0, len(NAMES), int(speckle.sum()))
    for _ in range(int(rng.integers(0, 4))):  # nodata holes of any size, across cell borders
        r, c = rng.integers(0, height), rng.integers(0, width)
        labels[r : r + rng.integers(1, 2 * cell), c : c + rng.integers(1, 2 * cell)] = NODATA
    windows = cell_windows(height, width, cell)
    for index in rng.choice(len(windows), int(rng.integers(1, len(windows) // 2 + 1)), replace=False):
        labels[windows[index][2].toslices()] = NODATA  # whole cells without a valid pixel
    step = int(rng.integers(1, 5))  # a collar as a reprojected scene has: a staircase from a corner
    rows, cols = np.mgrid[:height, :width] // step
    labels[rows + cols > 0.8 * (height + width) / step] = NODATA
    return labels, cell


def shuffled_cells(monkeypatch, seed: int) -> None:
    """The cells' results reach the driver in a random order, as from workers finishing at random."""
    run_cells = vectorize_module.run_cells

    def in_random_order(job, cells, client):
        results = list(run_cells(job, cells, client))
        np.random.default_rng(seed).shuffle(results)
        yield from results

    monkeypatch.setattr(vectorize_module, "run_cells", in_random_order)


def polygons(folder, labels, cell, options=None, client=None) -> gpd.GeoDataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "labels.zarr"
    if not store.exists():
        store_from_array(store, labels, chunk=int(cell * 1.5) + 1, class_names=NAMES, class_colors=COLORS)
    parquet = folder / f"p-{len(list(folder.glob('p-*.parquet')))}.parquet"
    vectorize_store(store, parquet, None, options or VectorizeOptions(cell=cell), client=client)
    return gpd.read_parquet(parquet)


def rows(frame) -> list[tuple]:
    """Every row as written, in order, geometry to the byte."""
    return list(zip(frame.class_id, frame.region_id, frame.pixels, frame.geometry.to_wkb()))


def assert_regions_are_the_4_connected_regions(frame: gpd.GeoDataFrame, labels: np.ndarray) -> None:
    """The polygons' parts, burnt by region_id, partition the valid pixels exactly as the label
    map's 4-connected regions of one class do (one region_id per region, one region per id)."""
    regions = rasterize(zip(frame.geometry, frame.region_id), out_shape=labels.shape, transform=TRANSFORM,
                        fill=0, dtype="int64")
    covered = rasterize(((g, 1) for g in frame.geometry), out_shape=labels.shape, transform=TRANSFORM,
                        fill=0, dtype="uint8", merge_alg=MergeAlg.add)
    valid = labels != NODATA
    assert np.array_equal(covered, valid.astype(np.uint8))  # every valid pixel once, no nodata pixel
    reference, offset = np.zeros(labels.shape, np.int64), 0
    for class_id in range(len(NAMES)):
        found, count = ndimage.label(labels == class_id, structure=FOUR_CONNECTED)
        reference[found > 0] = found[found > 0] + offset
        offset += count
    pairs = set(zip(regions[valid].tolist(), reference[valid].tolist()))
    assert len(pairs) == len(set(regions[valid].tolist())) == offset  # a bijection of regions
    assert sorted(frame.region_id.unique()) == list(range(1, offset + 1))
    per_region = frame.groupby("region_id").agg(pixels=("pixels", "sum"), classes=("class_id", "nunique"))
    assert (per_region.classes == 1).all()
    assert per_region.pixels.tolist() == np.bincount(regions[valid], minlength=offset + 1)[1:].tolist()


@pytest.mark.parametrize("seed", SEEDS)
def test_links_are_total_and_order_independent(tmp_path, monkeypatch, seed):
    labels, cell = random_map(seed)
    assert (labels == NODATA).any() and (labels != NODATA).any()
    serial = polygons(tmp_path, labels, cell)
    assert_regions_are_the_4_connected_regions(serial, labels)
    for order in range(2):
        with monkeypatch.context() as patch:
            shuffled_cells(patch, 1000 * seed + order)
            assert rows(polygons(tmp_path, labels, cell)) == rows(serial)


@pytest.mark.parametrize("seed", SEEDS[:8])
def test_min_area_keeps_the_same_regions_for_any_order(tmp_path, monkeypatch, seed):
    """--min-area judges whole regions (parts summed across cells) and merges the small ones into
    their neighbours: the same regions go, whatever order the cells come back in, and no pixel is
    lost but those of a patch of data smaller than the minimum (no neighbour to merge into)."""
    labels, cell = random_map(seed)
    options = VectorizeOptions(cell=cell, min_area=0.25 * cell)  # 0.25 m² pixels: regions under `cell` px go
    serial = polygons(tmp_path, labels, cell, options)
    patches, _ = ndimage.label(labels != NODATA, structure=FOUR_CONNECTED)
    sizes = np.bincount(patches.ravel())[1:]
    valid = int(sizes.sum())
    assert valid - int(sizes[sizes < cell].sum()) <= int(serial.pixels.sum()) <= valid
    with monkeypatch.context() as patch:
        shuffled_cells(patch, seed)
        assert rows(polygons(tmp_path, labels, cell, options)) == rows(serial)


def test_links_on_a_cluster_equal_the_serial_run(tmp_path, cluster):
    from distributed import Client

    with Client(cluster) as client:  # real worker processes, cells finishing in any order
        for seed in SEEDS[:6]:
            labels, cell = random_map(seed)
            serial = polygons(tmp_path / str(seed), labels, cell)
            assert rows(polygons(tmp_path / str(seed), labels, cell, client=client)) == rows(serial)


def test_the_reported_map_lower_right_triangle_of_nodata(tmp_path, monkeypatch):
    """The issue's reproduction: nodata where x + y > 0.8 (width + height), cells arriving with an
    empty cell before its non-empty neighbours (the KeyError 'left' of the link step)."""
    rng = np.random.default_rng(4711)
    labels = np.kron(rng.integers(0, 4, (20, 20)), np.ones((5, 5), np.int64)).astype(np.uint8)
    rows_, cols = np.mgrid[:100, :100]
    labels[rows_ + cols > 0.8 * 200] = NODATA
    serial = polygons(tmp_path, labels, 10)
    monkeypatch.setattr(vectorize_module, "run_cells", reversed_cells(vectorize_module.run_cells))
    assert rows(polygons(tmp_path, labels, 10)) == rows(serial)
    assert_regions_are_the_4_connected_regions(serial, labels)


def reversed_cells(run_cells):
    def backwards(job, cells, client):
        yield from reversed(list(run_cells(job, cells, client)))

    return backwards


def test_cells_not_yet_run_are_cancelled_when_the_stage_stops_early(tmp_path, cluster):
    """A failed or abandoned vectorize stage removes its part folder: the cells still queued must
    not start on it (they wrote into the removed folder, FileNotFoundError on the workers)."""
    from distributed import Client

    labels = np.random.default_rng(3).integers(0, 4, (96, 96)).astype(np.uint8)
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=32, class_names=NAMES, class_colors=COLORS)
    (tmp_path / "parts").mkdir()
    job = vectorize_module.CellJob(str(store), str(tmp_path / "parts"), 0.0, 0.0)
    with Client(cluster) as client:
        cells = vectorize_module.run_cells(job, cell_windows(96, 96, 4), client)  # 576 cells
        next(cells)
        futures = cells.gi_frame.f_locals["futures"]
        cells.close()  # what an exception in the driver's loop does
        statuses = {f.status for f in futures}
    assert "cancelled" in statuses and "pending" not in statuses


def test_a_cell_whose_part_folder_is_gone_writes_nothing(tmp_path):
    """A cell that was already running when its stage was abandoned finds no folder and adds nothing."""
    labels = np.zeros((8, 8), np.uint8)
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=8, class_names=NAMES, class_colors=COLORS)
    job = vectorize_module.CellJob(str(store), str(tmp_path / "removed"), 0.0, 0.0)
    result = vectorize_module.vectorize_cell(job, 0, 0, cell_windows(8, 8, 8)[0][2])
    assert result.part_file is None and result.pixels == 64 and not (tmp_path / "removed").exists()


@pytest.mark.parametrize("seed", SEEDS[:6])
def test_simplified_random_maps_are_coverages_across_every_cell(tmp_path, seed):
    """--simplify on the random maps (cells of 3 to 24 px, nodata holes, empty cells, staircases):
    GEOS's coverage check holds, no two polygons overlap, and without --min-area the areas sum to
    the valid area (with it, only patches of data below the minimum may go)."""
    labels, cell = random_map(seed)
    valid_m2 = np.count_nonzero(labels != NODATA) * 0.25
    for options in (VectorizeOptions(cell=cell, simplify=1.0), VectorizeOptions(cell=cell, simplify=0.6, min_area=0.25 * cell)):
        geometries = polygons(tmp_path, labels, cell, options).geometry.values
        a, b = shapely.STRtree(geometries).query(geometries, predicate="intersects")
        assert shapely.coverage_is_valid(geometries) and shapely.is_valid(geometries).all()
        assert (shapely.area(shapely.intersection(geometries[a[a < b]], geometries[b[a < b]])) == 0).all()
        if not options.min_area:
            assert shapely.area(geometries).sum() == pytest.approx(valid_m2, rel=1e-12)
