"""--simplify and --min-area keep the polygons a coverage: GEOS's checks on the files as written.

A rotated footprint (nodata corners, stair-stepped edges) and a nodata strip, cut into 25 polygon
cells of 70 px, so that shared edges run inside cells, along cell borders and against nodata.
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from stores import store_from_array

from fcnseg.pipeline.products.vectorize import VectorizeOptions, vectorize_store
from fcnseg.pipeline.store import NODATA

NAMES = ["water", "forest", "cropland", "grassland", "road", "building"]
COLORS = [(30, 100, 200), (20, 110, 40), (220, 200, 80), (140, 200, 90), (120, 120, 120), (200, 60, 50)]
PIXEL_M2 = 0.25  # stores.TRANSFORM: 0.5 m pixels


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> np.ndarray:
    from fcnseg.pipeline.synth import write_scene

    _, labels_tif = write_scene(tmp_path_factory.mktemp("coverage-scene"), 320, seed=5, rotate=20.0)
    with rasterio.open(labels_tif) as src:
        labels = src.read(1)
    labels[140:150, 100:180] = NODATA  # a nodata strip across cell borders, inside the footprint
    return labels


@pytest.fixture(scope="module")
def written(tmp_path_factory, labels) -> dict:
    """Each option set's report and its GeoParquet and GeoPackage as read back by geopandas."""
    folder = tmp_path_factory.mktemp("coverage")
    store = store_from_array(folder / "labels.zarr", labels, chunk=64, class_names=NAMES, class_colors=COLORS)
    runs = {}
    for name, options in {"exact": VectorizeOptions(cell=70), "simplify": VectorizeOptions(simplify=1.5, cell=70),
                          "min_area": VectorizeOptions(simplify=1.5, min_area=20.0, cell=70)}.items():
        parquet, gpkg = folder / f"{name}.parquet", folder / f"{name}.gpkg"
        report = vectorize_store(store, parquet, gpkg, options)
        runs[name] = (report, gpd.read_parquet(parquet), pyogrio.read_dataframe(gpkg, layer="polygons"))
    return runs


def overlaps(geometries: np.ndarray) -> np.ndarray:
    """The area shared by each pair of polygons whose outlines meet (STRtree pairs, each once)."""
    a, b = shapely.STRtree(geometries).query(geometries, predicate="intersects")
    pair = a < b
    return shapely.area(shapely.intersection(geometries[a[pair]], geometries[b[pair]]))


@pytest.mark.parametrize("name", ["simplify", "min_area"])
def test_simplified_polygons_are_a_valid_coverage_across_cells(written, name):
    _, parquet, gpkg = written[name]
    for frame in (parquet, gpkg):
        geometries = frame.geometry.values
        assert len(geometries) > 80 and shapely.is_valid(geometries).all() and (frame.geom_type == "Polygon").all()
        assert shapely.coverage_is_valid(geometries)
        assert shapely.is_empty(shapely.coverage_invalid_edges(geometries)).all()
        shared = overlaps(geometries)
        assert len(shared) > 80 and (shared == 0).all()  # neighbours touch, never overlap


@pytest.mark.parametrize("name", ["simplify", "min_area"])
def test_no_gaps_beyond_nodata(written, labels, name):
    _, frame, _ = written[name]
    geometries = frame.geometry.values
    valid_m2 = np.count_nonzero(labels != NODATA) * PIXEL_M2
    exact = written["exact"][1].geometry.values  # pixel edges: the valid area exactly
    assert shapely.area(shapely.union_all(exact)) == valid_m2
    assert shapely.area(geometries).sum() == pytest.approx(valid_m2, rel=1e-12)
    assert shapely.area(shapely.union_all(geometries)) == pytest.approx(valid_m2, rel=1e-12)
    assert shapely.area(shapely.difference(shapely.union_all(geometries), shapely.union_all(exact))) == 0


def test_the_simplified_outlines_are_simpler(written):
    exact, simple = written["exact"][1], written["simplify"][1]
    assert len(simple) == len(exact) and (simple.pixels.values == exact.pixels.values).all()
    assert shapely.get_num_coordinates(simple.geometry.values).sum() < 0.8 * shapely.get_num_coordinates(exact.geometry.values).sum()


def test_the_area_error_of_simplification_is_reported(written):
    assert written["exact"][0].simplify_area_error == 0.0
    report, frame, _ = written["simplify"]
    moved = np.abs(frame.area.values - frame.pixels.values * PIXEL_M2).sum() / (frame.pixels.sum() * PIXEL_M2)
    assert 0 < report.simplify_area_error == pytest.approx(moved, rel=1e-9)
    assert report.simplify_area_error < 0.05


def test_min_area_merges_small_regions_into_their_largest_neighbour(tmp_path):
    labels = np.zeros((200, 200), np.uint8)  # 0.5 m pixels: 0.25 m² each
    labels[:, 100:] = 4  # the right half: a second large region
    labels[35:65, 35:65] = 1  # 900 px = 225 m², in four cells of 50 px: kept
    labels[110:120, 110:120] = 2  # 100 px = 25 m², inside one cell, in class 4: merged into it
    labels[46:54, 146:154] = 3  # 64 px = 16 m², across two cells, in class 4: merged into it
    labels[150:155, 20:25] = 5  # 25 px, inside class 0: merged into it
    labels[0:6, 0:6] = NODATA  # in the corner, nodata all round it: a small region with no neighbour,
    labels[0:4, 0:4] = 2  # 16 px, dropped
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=64, class_names=NAMES, class_colors=COLORS)
    for simplify in (0.0, 1.0):
        parquet = tmp_path / f"p{simplify}.parquet"
        report = vectorize_store(store, parquet, None, VectorizeOptions(simplify=simplify, min_area=100.0, cell=50))
        frame = gpd.read_parquet(parquet)
        assert report.dropped == 4 and report.regions == 3
        assert frame.groupby("class_id").pixels.sum().to_dict() == {
            0: 100 * 200 - 900 - 36, 1: 900, 4: 100 * 200}  # of the small regions, only the isolated one is gone
        assert (overlaps(frame.geometry.values) == 0).all()
        assert shapely.area(frame.geometry.values).sum() == pytest.approx((40000 - 36) * PIXEL_M2, rel=1e-12)


def test_a_run_records_and_prints_the_area_error(scene, tmp_path, capsys):
    """Through the whole pipeline (in this process: a small scene): the polygons written are a
    coverage, and run.json and ``fcnseg segment``'s summary carry the vectorize report's error."""
    import fcnseg
    from fcnseg.tables import print_report

    image, _ = scene
    report = fcnseg.segment(image, tmp_path / "out", simplify=1.0, polygon_cell=128, quicklook=False, stac=False)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert 0 < record["simplify_area_error"] == report.simplify_area_error < 0.05
    geometries = gpd.read_parquet(tmp_path / "out" / "polygons.parquet").geometry.values
    assert shapely.coverage_is_valid(geometries) and (overlaps(geometries) == 0).all()
    print_report(report)  # the summary goes to stderr (stdout is for --json)
    assert f"{report.polygons} polygons, simplified: {report.simplify_area_error:.3%} of their area moved" in capsys.readouterr().err
