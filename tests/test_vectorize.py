"""Polygons: valid, exact areas, one polygon per region across chunks, chunk-size independent, no nodata."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from peak_memory import step_extra_mb
from rasterio.crs import CRS
from rasterio.features import rasterize
from stores import TRANSFORM, store_from_array

from fcnseg.pipeline.analysis.areas import row_pixel_areas_m2
from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.products.vectorize import VectorizeOptions, vectorize_store
from fcnseg.pipeline.store import NODATA

NAMES = ["water", "forest", "cropland", "grassland", "road", "building"]
COLORS = [(30, 100, 200), (20, 110, 40), (220, 200, 80), (140, 200, 90), (120, 120, 120), (200, 60, 50)]


@pytest.fixture(scope="module")
def scene_labels(tmp_path_factory) -> np.ndarray:
    """Synthetic classes (regions span many 64-px chunks) with a nodata collar and a nodata hole."""
    from fcnseg.pipeline.synth import write_scene

    _, labels_tif = write_scene(tmp_path_factory.mktemp("vec"), 300, seed=5, collar=12)
    with rasterio.open(labels_tif) as src:
        labels = src.read(1)
    labels[140:150, 100:180] = NODATA  # a nodata strip crossing chunk borders inside the scene
    return labels


def vectorize(tmp_path, labels, chunk, options=VectorizeOptions(), client=None, **store_kwargs) -> gpd.GeoDataFrame:
    store = store_from_array(tmp_path / f"labels-{chunk}.zarr", labels, chunk=chunk, class_names=NAMES,
                             class_colors=COLORS, **store_kwargs)
    parquet, gpkg = tmp_path / f"p-{chunk}-{options.cell}.parquet", tmp_path / f"p-{chunk}-{options.cell}.gpkg"
    vectorize_store(store, parquet, gpkg, options, client=client)
    frame = gpd.read_parquet(parquet)
    from_gpkg = pyogrio.read_dataframe(gpkg, layer="polygons")
    assert len(from_gpkg) == len(frame) and from_gpkg.crs == frame.crs
    assert sorted(from_gpkg["area"].round(6)) == sorted(frame["area"].round(6))
    return frame


def test_polygons_are_valid_exact_and_merged_across_chunks(tmp_path, scene_labels):
    frame = vectorize(tmp_path, scene_labels, 64)
    assert frame.crs == CRS.from_epsg(32633)
    assert list(frame.columns) == ["class_id", "class_name", "region_id", "pixels", "area", "area_m2", "geometry"]
    assert shapely.is_valid(frame.geometry.values).all()
    assert (frame.geom_type == "Polygon").all()
    pixel_area = abs(TRANSFORM.a * TRANSFORM.e)
    for class_id, name in enumerate(NAMES):
        rows = frame[frame.class_id == class_id]
        count = int((scene_labels == class_id).sum())
        assert (rows.class_name == name).all()
        assert rows.pixels.sum() == count
        assert abs(rows.area.sum() - count * pixel_area) <= 1e-6 * count * pixel_area
        assert abs(rows.area_m2.sum() - count * pixel_area) <= 1e-6 * count * pixel_area
    # one polygon per region: polygons of one class never share an edge (a point is allowed: 4-connectivity)
    index = shapely.STRtree(frame.geometry.values)
    left, right = index.query(frame.geometry.values, predicate="intersects")
    pairs = [(a, b) for a, b in zip(left, right) if a < b and frame.class_id.iat[a] == frame.class_id.iat[b]]
    for a, b in pairs:
        shared = frame.geometry.iat[a].intersection(frame.geometry.iat[b])
        assert shared.length == 0 and shared.area == 0, (a, b, shared)
    # regions that span many chunks exist (so merging was exercised)
    assert (frame.geometry.bounds.eval("maxx - minx") > 64 * 0.5 * 3).any()


def test_polygons_never_cover_nodata_and_keep_holes(tmp_path, scene_labels):
    frame = vectorize(tmp_path, scene_labels, 64)
    covered = rasterize(((g, 1) for g in frame.geometry), out_shape=scene_labels.shape, transform=TRANSFORM, fill=0, dtype="uint8")
    assert not covered[scene_labels == NODATA].any()
    assert covered[scene_labels != NODATA].all()
    assert any(len(g.interiors) for g in frame.geometry)  # holes are kept


def test_same_polygons_for_any_chunk_size(tmp_path, scene_labels):
    small = canonical(vectorize(tmp_path, scene_labels, 64))
    assert canonical(vectorize(tmp_path, scene_labels, 100)) == small  # chunks not on a power of two
    assert canonical(vectorize(tmp_path, scene_labels, 512)) == small  # one chunk: nothing to merge


def test_region_spanning_every_chunk_is_one_polygon_with_its_holes(tmp_path):
    labels = np.ones((200, 200), np.uint8)  # one forest over 16 chunks of 50 px
    labels[45:55, 45:155] = 0  # a lake across chunk borders: one hole
    labels[120:130, 120:130] = NODATA
    frame = vectorize(tmp_path, labels, 50)
    forest = frame[frame.class_id == 1]
    assert len(forest) == 1 and len(forest.geometry.iat[0].interiors) == 2
    assert forest.pixels.iat[0] == (labels == 1).sum()


def test_geographic_store_gets_true_square_metres(tmp_path):
    labels = np.zeros((120, 90), np.uint8)
    labels[:, 45:] = 1
    transform = Affine(0.001, 0, 10.0, 0, -0.001, 60.0)
    frame = vectorize(tmp_path, labels, 32, crs=CRS.from_epsg(4326), transform=transform)
    per_row = row_pixel_areas_m2(CRS.from_epsg(4326), transform, 0, 120)
    for class_id in (0, 1):
        expected = (labels == class_id).sum(axis=1) @ per_row
        assert frame[frame.class_id == class_id].area_m2.sum() == pytest.approx(expected, rel=1e-6)


def test_simplify_and_min_area(tmp_path, scene_labels):
    for name in ("exact", "s"):
        (tmp_path / name).mkdir()
    exact = vectorize(tmp_path / "exact", scene_labels, 64)
    simple = vectorize(tmp_path / "s", scene_labels, 64, VectorizeOptions(simplify=1.0, min_area=20.0))
    assert simple.area_m2.min() >= 20.0 and len(simple) < len(exact)
    assert shapely.is_valid(simple.geometry.values).all()
    assert shapely.get_num_coordinates(simple.geometry.values).sum() < shapely.get_num_coordinates(exact.geometry.values).sum()
    covered = rasterize(((g, 1) for g in simple.geometry), out_shape=scene_labels.shape, transform=TRANSFORM, fill=0, dtype="uint8")
    assert not covered[scene_labels == NODATA].any()  # simplified edges stay out of nodata


def test_empty_map_writes_empty_files(tmp_path):
    frame = vectorize(tmp_path, np.full((64, 64), NODATA, np.uint8), 32)
    assert len(frame) == 0 and frame.crs == CRS.from_epsg(32633)


def test_vectorize_memory_stays_flat_where_a_class_percolates(tmp_path):
    small = step_extra_mb(tmp_path / "small", 2048, "vectorize", "percolating")
    large = step_extra_mb(tmp_path / "large", 8192, "vectorize", "percolating")
    # 16x the pixels, one region through the whole map with 16x the holes (held whole, as before
    # cells, it took +58 MB at 1024² and +293 MB at 4096²). Measured: 60 -> 83 MB
    assert large < small + 32, (small, large)


def canonical(frame) -> list[tuple[int, bytes]]:
    """(class, geometry) of each polygon, sorted: the same map whatever order and vertex count."""
    geometries = shapely.normalize(shapely.simplify(frame.geometry.values, 0))
    return sorted(zip(frame.class_id, shapely.to_wkb(geometries)))


def rows(frame) -> list[tuple]:
    """Every row as written, in order."""
    return list(zip(frame.class_id, frame.region_id, frame.pixels, shapely.to_wkb(frame.geometry.values)))


def test_regions_cut_at_cells_dissolve_into_the_whole_regions(tmp_path, scene_labels):
    whole = vectorize(tmp_path, scene_labels, 64)  # one cell: every region is one polygon
    cut = vectorize(tmp_path, scene_labels, 64, VectorizeOptions(cell=70))
    assert len(cut) > len(whole) and cut.region_id.nunique() == len(whole) == whole.region_id.nunique()
    dissolved = cut.dissolve(by="region_id", aggfunc={"class_id": "first", "pixels": "sum"})
    assert canonical(dissolved) == canonical(whole)
    assert sorted(dissolved.pixels) == sorted(whole.pixels)
    for geometry in cut.geometry:  # no polygon is larger than its cell of 70 x 70 pixels (0.5 m)
        minx, miny, maxx, maxy = geometry.bounds
        col, row = (minx - TRANSFORM.c) / 0.5, (TRANSFORM.f - maxy) / 0.5
        assert (maxx - minx) / 0.5 <= 70 - col % 70 and (maxy - miny) / 0.5 <= 70 - row % 70


def test_same_rows_for_any_chunk_size_and_in_parallel(tmp_path, scene_labels):
    from fcnseg.pipeline.cluster import dask_client

    cells = VectorizeOptions(cell=70)
    serial = rows(vectorize(tmp_path, scene_labels, 64, cells))
    assert rows(vectorize(tmp_path, scene_labels, 100, cells)) == serial
    with dask_client(workers=2, device="cpu") as client:  # real worker processes
        assert rows(vectorize(tmp_path, scene_labels, 48, cells, client=client)) == serial


def test_min_area_judges_whole_regions_across_cells(tmp_path):
    labels = np.zeros((200, 200), np.uint8)  # 0.5 m pixels: 0.25 m² each
    labels[35:65, 35:65] = 1  # 900 px = 225 m², in four cells of 50 px (four parts of 56 m²)
    labels[110:120, 110:120] = 2  # 100 px = 25 m², inside one cell
    labels[46:54, 146:154] = 3  # 64 px = 16 m², across two cells
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=64, class_names=NAMES, class_colors=COLORS)
    report = vectorize_store(store, tmp_path / "p.parquet", None, VectorizeOptions(min_area=100.0, cell=50))
    frame = gpd.read_parquet(tmp_path / "p.parquet")
    assert sorted(frame.class_id.unique()) == [0, 1]
    kept = frame[frame.class_id == 1]
    assert len(kept) == 4 and kept.region_id.nunique() == 1 and kept.pixels.sum() == 900
    assert report.dropped == 2 and report.regions == 2


def test_an_incomplete_store_makes_no_polygons(tmp_path):
    """Polygons of an interrupted run would look complete: refused, and no file is left behind."""
    labels = np.random.default_rng(4).integers(0, 3, (64, 64), dtype=np.uint8)
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=32, class_names=NAMES, class_colors=COLORS,
                             complete=False)
    with pytest.raises(InputError, match=r"labels.zarr: the label store is incomplete .*--partial"):
        vectorize_store(store, tmp_path / "polygons.parquet", tmp_path / "polygons.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]
