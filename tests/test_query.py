"""fcnseg query: per-class pixels, true areas and shares, checked against direct numpy counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import geometry_mask
from rasterio.windows import Window
from stores import store_from_array

from fcnseg.pipeline.analysis.areas import geometries_area_m2, row_pixel_areas_m2
from fcnseg.pipeline.analysis.label_raster import WINDOW, LabelRaster, query_windows
from fcnseg.pipeline.analysis.query import query_classes
from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.products.cog import export_labels_cog
from fcnseg.pipeline.store import COMPLETE, open_store

UTM = CRS.from_epsg(32633)
WGS84 = CRS.from_epsg(4326)
NAMES = ["water", "forest", "road"]
TRANSFORM = Affine(0.5, 0, 500000.0, 0, -0.5, 5400000.0)
PIXEL_AREA = 0.25  # TRANSFORM has 0.5 m pixels


def make_store(path: Path, labels: np.ndarray, chunk: int) -> Path:
    """A labels.zarr holding ``labels``, written chunk by chunk as the pipeline does."""
    return store_from_array(path, labels, chunk=chunk, class_names=NAMES, crs=UTM, transform=TRANSFORM,
                            class_colors=[(0, 0, 255), (0, 128, 0), (128, 128, 128)])


def blocky_labels(height: int, width: int, seed: int = 0) -> np.ndarray:
    """25 px blocks of classes 0..2 (class 2 never in the top-left block), 5% scattered nodata, a nodata band."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 3, (height // 25 + 1, width // 25 + 1))
    blocks[0, 0] = 0
    labels = np.kron(blocks, np.ones((25, 25), dtype=np.int64))[:height, :width].astype(np.uint8)
    labels[rng.random(labels.shape) < 0.05] = 255
    labels[:, 1000:1010] = 255
    return labels


@pytest.fixture(scope="module")
def rasters(tmp_path_factory) -> tuple[np.ndarray, Path, Path]:
    """(labels, labels.zarr, labels.tif) in EPSG:32633, larger than one query window (1024 px)."""
    folder = tmp_path_factory.mktemp("query")
    labels = blocky_labels(1300, 1150)
    store = make_store(folder / "labels.zarr", labels, chunk=256)
    return labels, store, export_labels_cog(store, folder / "labels.tif")


def world(col: float, row: float) -> tuple[float, float]:
    return TRANSFORM @ (col, row)


def expected(values: np.ndarray) -> dict[int, tuple[int, float, float]]:
    """class id -> (pixels, area m², share) by a direct count."""
    valid = values[values != 255]
    counts = np.bincount(valid, minlength=3)
    return {i: (int(n), n * PIXEL_AREA, n / valid.size) for i, n in enumerate(counts)}


def got(result) -> dict[int, tuple[int, float, float]]:
    return {c.class_id: (c.pixels, c.area_m2, c.share) for c in result.classes}


def assert_same(result, values: np.ndarray) -> None:
    want, have = expected(values), got(result)
    assert set(have) == set(want)
    for i, (pixels, area, share) in want.items():
        assert have[i][0] == pixels
        assert have[i][1] == pytest.approx(area, rel=1e-12)
        assert have[i][2] == pytest.approx(share, rel=1e-12)
    assert result.valid_pixels == np.count_nonzero(values != 255)
    assert result.nodata_pixels == np.count_nonzero(values == 255)
    assert result.area_m2 == pytest.approx(result.valid_pixels * PIXEL_AREA)


def test_whole_raster_and_box_equal_a_direct_count(rasters):
    labels, _, tif = rasters
    assert_same(query_classes(tif), labels)
    # box edges on pixel edges: rows 50..1250, cols 100..1100 (crosses the 1024 px window border)
    minx, maxy = world(100, 50)
    maxx, miny = world(1100, 1250)
    result = query_classes(tif, bbox=(minx, miny, maxx, maxy))
    assert_same(result, labels[50:1250, 100:1100])
    assert result.selection == {"type": "bbox", "bbox": [minx, miny, maxx, maxy], "crs": "EPSG:32633"}
    assert [c.class_name for c in result.classes] == NAMES


def test_classes_without_pixels_are_listed_with_zero(rasters):
    labels, _, tif = rasters
    minx, maxy = world(0, 0)
    maxx, miny = world(25, 25)
    result = query_classes(tif, bbox=(minx, miny, maxx, maxy))
    assert [(c.class_id, c.class_name) for c in result.classes] == list(enumerate(NAMES))
    assert result.classes[2].pixels == 0 and result.classes[2].share == 0.0 and result.classes[2].area_m2 == 0.0
    assert result.classes[0].pixels == np.count_nonzero(labels[:25, :25] == 0) > 0


def test_aoi_in_another_crs_counts_pixel_centres_inside(rasters, tmp_path):
    labels, _, tif = rasters
    # a concave polygon in the raster's CRS spanning several windows; no pixel centre lies within 2e-5 m
    # of its edges (checked), so the ~1e-9 m of a round trip through EPSG:4326 cannot flip one
    utm = shapely.Polygon([world(*p) for p in [(80.31, 60.77), (1130.23, 140.19), (900.61, 700.43),
                                               (1120.97, 1280.29), (300.13, 1100.87), (520.47, 640.37)]])
    # written in EPSG:4326; short edges so that "straight in lon/lat" is "straight in UTM" to well below a mm
    aoi = geopandas.GeoDataFrame(geometry=[shapely.segmentize(utm, 0.5)], crs=UTM).to_crs(WGS84)
    aoi.to_file(tmp_path / "aoi.gpkg")
    result = query_classes(tif, aoi=tmp_path / "aoi.gpkg")
    with rasterio.open(tif) as src:
        inside = geometry_mask([utm], out_shape=labels.shape, transform=src.transform, invert=True)
    assert_same(result, labels[inside])
    assert result.selection["type"] == "aoi" and result.selection["crs"] == "EPSG:4326"


def test_box_in_another_crs_is_reprojected_as_a_polygon(rasters):
    labels, _, tif = rasters
    lon_lat = pyproj.Transformer.from_crs(UTM, WGS84, always_xy=True)
    west, south = lon_lat.transform(*world(200, 1000))
    east, north = lon_lat.transform(*world(900, 300))
    result = query_classes(tif, bbox=(west, south, east, north), bbox_crs="EPSG:4326")
    # the reference: the same lon/lat box, densified, reprojected, rasterised by pixel centre
    box = shapely.segmentize(shapely.box(west, south, east, north), (east - west) / 64)
    utm = shapely.transform(box, lambda xy: np.column_stack(lon_lat.transform(xy[:, 0], xy[:, 1], direction="INVERSE")))
    inside = geometry_mask([utm], out_shape=labels.shape, transform=TRANSFORM, invert=True)
    assert_same(result, labels[inside])
    assert 680 * 680 < inside.sum() < 720 * 720  # nearly the 700 x 700 box, not its bounding box


def test_point_gives_the_class_of_its_pixel(rasters):
    labels, _, tif = rasters
    to_lon_lat = pyproj.Transformer.from_crs(UTM, WGS84, always_xy=True)
    for row, col in [(0, 0), (10, 1149), (700, 640), (1299, 3)]:
        if labels[row, col] == 255:
            continue
        x, y = world(col + 0.3, row + 0.8)
        result = query_classes(tif, point=(x, y))
        assert [c.class_id for c in result.classes] == [labels[row, col]]
        assert result.point == {"x": x, "y": y, "row": row, "col": col} and not result.nodata
        assert result.classes[0].pixels == 1 and result.classes[0].share == 1.0
        assert result.classes[0].area_m2 == pytest.approx(PIXEL_AREA)
        lon, lat = to_lon_lat.transform(x, y)
        by_lon_lat = query_classes(tif, point=(lon, lat), point_crs="EPSG:4326")
        assert (by_lon_lat.point["row"], by_lon_lat.point["col"]) == (row, col)
        assert by_lon_lat.classes == result.classes


def test_point_on_nodata_and_outside(rasters):
    labels, _, tif = rasters
    row, col = 500, 1005  # in the nodata band
    result = query_classes(tif, point=world(col + 0.5, row + 0.5))
    assert result.classes == [] and result.nodata is True
    data = result.to_dict()
    assert data["nodata"] is True and data["classes"] == [] and data["point"]["row"] == row
    with pytest.raises(InputError, match=r"outside .*labels\.tif"):
        query_classes(tif, point=world(-1, 10))
    with pytest.raises(InputError, match=r"outside .*labels\.tif"):
        query_classes(tif, point=(15.0, 48.7), point_crs="EPSG:4326")


def test_zarr_store_gives_the_same_answers_as_the_cog(rasters, tmp_path):
    _, store, tif = rasters
    minx, maxy = world(333, 17)
    maxx, miny = world(1011, 1299)
    aoi = tmp_path / "aoi.geojson"
    geopandas.GeoDataFrame(geometry=[shapely.Point(world(600, 600)).buffer(200)], crs=UTM).to_file(aoi)
    for kwargs in ({}, {"bbox": (minx, miny, maxx, maxy)}, {"aoi": aoi}, {"point": world(700.5, 20.5)}):
        from_zarr, from_tif = query_classes(store, **kwargs).to_dict(), query_classes(tif, **kwargs).to_dict()
        assert from_zarr.pop("raster") == str(store) and from_tif.pop("raster") == str(tif)
        assert from_zarr == from_tif


def test_selection_errors_name_the_file(rasters, tmp_path):
    _, _, tif = rasters
    with pytest.raises(InputError, match=r"does not overlap .*labels\.tif"):
        query_classes(tif, bbox=(0, 0, 10, 10))
    with pytest.raises(InputError, match="empty or inverted"):
        query_classes(tif, bbox=(500010, 5399000, 500000, 5399100))
    with pytest.raises(InputError, match="choose one selection"):
        query_classes(tif, bbox=(0, 0, 1, 1), point=(0, 0))
    with pytest.raises(InputError, match=r"missing\.gpkg.*no such file"):
        query_classes(tif, aoi=tmp_path / "missing.gpkg")
    far = tmp_path / "far.gpkg"
    geopandas.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)], crs=WGS84).to_file(far)
    with pytest.raises(InputError, match=r"area of interest .*far\.gpkg does not overlap .*labels\.tif"):
        query_classes(tif, aoi=far)
    lines = tmp_path / "lines.geojson"
    geopandas.GeoDataFrame(geometry=[shapely.LineString([world(0, 0), world(9, 9)])], crs=UTM).to_file(lines)
    with pytest.raises(InputError, match=r"lines\.geojson: the area of interest holds no polygons"):
        query_classes(tif, aoi=lines)
    no_crs = tmp_path / "no_crs.shp"
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        geopandas.GeoDataFrame(geometry=[shapely.box(*world(0, 9), *world(9, 0))]).to_file(no_crs)
    with pytest.raises(InputError, match=r"no_crs\.shp: the area of interest has no CRS"):
        query_classes(tif, aoi=no_crs)


def test_bad_rasters_are_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"missing\.tif: cannot open as a raster \(no such file\)"):
        query_classes(tmp_path / "missing.tif")
    with pytest.raises(InputError, match=r"missing\.zarr: cannot open as a Zarr label store"):
        query_classes(tmp_path / "missing.zarr")
    (tmp_path / "text.tif").write_text("not a raster")
    with pytest.raises(InputError, match=r"text\.tif: cannot open as a raster"):
        query_classes(tmp_path / "text.tif")
    profile = dict(driver="GTiff", width=8, height=8, crs=UTM, transform=TRANSFORM)
    with rasterio.open(tmp_path / "float.tif", "w", count=1, dtype="float32", **profile) as dst:
        dst.write(np.zeros((1, 8, 8), dtype=np.float32))
    with pytest.raises(InputError, match=r"float\.tif: holds float32 values"):
        query_classes(tmp_path / "float.tif")
    with rasterio.open(tmp_path / "rgb.tif", "w", count=3, dtype="uint8", **profile) as dst:
        dst.write(np.zeros((3, 8, 8), dtype=np.uint8))
    with pytest.raises(InputError, match=r"rgb\.tif: has 3 bands"):
        query_classes(tmp_path / "rgb.tif")


def test_plain_class_raster_without_names(tmp_path):
    values = np.array([[0, 0, 7], [7, 7, 9], [9, 9, 9]], dtype=np.int16)
    with rasterio.open(tmp_path / "plain.tif", "w", driver="GTiff", width=3, height=3, count=1, dtype="int16",
                       nodata=9, crs=UTM, transform=Affine(10, 0, 0, 0, -10, 0)) as dst:
        dst.write(values, 1)
    result = query_classes(tmp_path / "plain.tif")
    assert [(c.class_id, c.class_name, c.pixels, c.area_m2) for c in result.classes] == [
        (0, "class_0", 2, 200.0), (7, "class_7", 3, 300.0)]
    assert result.nodata_pixels == 4 and result.valid_pixels == 5


# --- true areas -------------------------------------------------------------------------------


def geod_pixel_area(geod: pyproj.Geod, transform: Affine, row: int) -> float:
    """One pixel of ``row``, straight from pyproj's geodesic polygon area."""
    x0, top = transform @ (0, row)
    x1, bottom = transform @ (1, row + 1)
    return abs(geod.polygon_area_perimeter([x0, x1, x1, x0], [top, top, bottom, bottom])[0])


def test_row_pixel_areas_match_pyproj_geod():
    geod = pyproj.CRS.from_epsg(4326).get_geod()
    transform = Affine(0.001, 0, 10.0, 0, -0.001, 60.3)
    areas = row_pixel_areas_m2(WGS84, transform, 100, 50)
    direct = [geod_pixel_area(geod, transform, r) for r in range(100, 150)]
    np.testing.assert_allclose(areas, direct, rtol=1e-9)
    assert areas[0] < areas[-1]  # further south, larger
    # the whole ellipsoid as one pixel: WGS 84's surface area
    world_area = row_pixel_areas_m2(WGS84, Affine(360, 0, -180, 0, -180, 90), 0, 1)[0]
    assert world_area == pytest.approx(5.10065621724e14, rel=1e-10)
    # projected: constant, in metres even when the CRS is in US survey feet
    feet = row_pixel_areas_m2(CRS.from_epsg(2263), Affine(10, 0, 0, 0, -10, 0), 0, 3)
    np.testing.assert_allclose(feet, (10 * 1200 / 3937) ** 2, rtol=1e-12)


def test_geometries_area_m2():
    geod = pyproj.CRS.from_epsg(4326).get_geod()
    box = shapely.box(10, 60, 10.01, 60.01)
    np.testing.assert_allclose(geometries_area_m2([box, box.reverse()], WGS84),
                               abs(geod.geometry_area_perimeter(box)[0]), rtol=1e-12)
    np.testing.assert_allclose(geometries_area_m2([shapely.box(0, 0, 10, 20)], UTM), [200.0])
    np.testing.assert_allclose(geometries_area_m2([shapely.box(0, 0, 1, 1)], "EPSG:2263"), [(1200 / 3937) ** 2])


def test_geographic_raster_areas_are_true_areas(tmp_path):
    transform = Affine(0.001, 0, 10.0, 0, -0.001, 60.3)
    labels = blocky_labels(600, 700, seed=3)[:, :700]
    with rasterio.open(tmp_path / "geo.tif", "w", driver="GTiff", width=700, height=600, count=1, dtype="uint8",
                       nodata=255, crs=WGS84, transform=transform, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(labels, 1)
    (minx, maxy), (maxx, miny) = transform @ (50, 40), transform @ (650, 590)  # pixel edges
    result = query_classes(tmp_path / "geo.tif", bbox=(minx, miny, maxx, maxy))
    geod = pyproj.CRS.from_epsg(4326).get_geod()
    want = np.zeros(3)
    for row in range(40, 590):
        counts = np.bincount(labels[row, 50:650][labels[row, 50:650] != 255], minlength=3)
        want += counts * geod_pixel_area(geod, transform, row)
    np.testing.assert_allclose([c.area_m2 for c in result.classes], want, rtol=1e-6)
    assert result.area_m2 == pytest.approx(want.sum(), rel=1e-6)
    assert_counts = np.bincount(labels[40:590, 50:650][labels[40:590, 50:650] != 255], minlength=3)
    assert [c.pixels for c in result.classes] == assert_counts.tolist()


# --- the command line -------------------------------------------------------------------------


def fcnseg(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fcnseg", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_cli_json_is_one_object(rasters):
    labels, _, tif = rasters
    minx, maxy = world(100, 50)
    maxx, miny = world(1100, 1250)
    result = fcnseg("query", tif, "--bbox", minx, miny, maxx, maxy, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"raster", "crs", "units", "selection", "valid_pixels", "nodata_pixels", "area_m2", "classes"} <= set(data)
    assert data["units"] == "m2"
    assert [set(c) for c in data["classes"]] == [{"class_id", "class_name", "pixels", "area_m2", "share"}] * 3
    assert [c["pixels"] for c in data["classes"]] == [v[0] for v in expected(labels[50:1250, 100:1100]).values()]


def test_cli_errors_are_one_line(rasters, tmp_path):
    _, _, tif = rasters
    result = fcnseg("query", tmp_path / "nope.tif", "--json")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and result.stdout == ""
    assert len(lines) == 1 and "nope.tif" in lines[0], result.stderr
    result = fcnseg("query", tif, "--bbox", 0, 0, 1, 1, "--point", 0, 0)
    assert result.returncode == 1 and "mutually exclusive" in result.stderr


def test_cli_point_in_lon_lat_with_the_crs_alias(rasters):
    labels, _, tif = rasters
    lon, lat = pyproj.Transformer.from_crs(UTM, WGS84, always_xy=True).transform(*world(640.5, 700.5))
    result = fcnseg("query", tif, "--point", lon, lat, "--crs", "EPSG:4326", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["point"]["row"], data["point"]["col"]) == (700, 640)
    assert [c["class_id"] for c in data["classes"]] == ([] if labels[700, 640] == 255 else [labels[700, 640]])



@pytest.mark.parametrize("block", [(256, 256), (512, 512), (1, 5000), (3000, 5000)])
def test_windows_cover_the_bounds_once_in_whole_blocks(block):
    raster = LabelRaster()
    raster.block = block
    bounds = Window(300, 17, 4000, 2900)
    seen = np.zeros((3000, 5000), dtype=np.uint8)
    for w in query_windows(raster, bounds):
        assert w.width * w.height <= WINDOW * WINDOW
        seen[w.toslices()] += 1
        if block[0] <= WINDOW and w.row_off != bounds.row_off:
            assert w.row_off % block[0] == 0  # starts on a block edge
        if block[1] <= WINDOW and w.col_off != bounds.col_off:
            assert w.col_off % block[1] == 0
    assert (seen[bounds.toslices()] == 1).all() and seen.sum() == bounds.width * bounds.height

# --- bounded memory ---------------------------------------------------------------------------

QUERY_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from fcnseg.pipeline.analysis.label_raster import WINDOW, LabelRaster, query_windows
from fcnseg.pipeline.analysis.query import query_classes
path, side = Path(sys.argv[1]), int(sys.argv[2])
block = np.random.default_rng(0).integers(0, 6, (512, 512), dtype=np.uint8)
with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=1, dtype="uint8", nodata=255,
                   crs=CRS.from_epsg(4326), transform=Affine(0.0001, 0, 10, 0, -0.0001, 60.5),
                   tiled=True, blockxsize=512, blockysize=512) as dst:
    for r in range(0, side, 512):
        for c in range(0, side, 512):
            dst.write(np.roll(block, r + c), 1, window=Window(c, r, 512, 512))
def status_mb(key):
    return int(Path("/proc/self/status").read_text().split(key + ":")[1].split()[0]) / 1024
del block
Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark: measure the query alone
before = status_mb("VmRSS")
result = query_classes(path, bbox=(10.0001, 60.5 - side * 0.0001, 10 + side * 0.0001, 60.4999))
assert result.valid_pixels == (side - 1) ** 2
print(status_mb("VmHWM") - before)
"""


def query_extra_mb(path: Path, side: int) -> float:
    """How far querying a side x side geographic raster raises a fresh process's peak memory (MB)."""
    result = subprocess.run([sys.executable, "-c", QUERY_SCRIPT, str(path), str(side)],
                            capture_output=True, text=True, check=True, timeout=120)
    return float(result.stdout.split()[-1])


def test_query_memory_stays_flat(tmp_path):
    small = query_extra_mb(tmp_path / "small.tif", 2048)
    large = query_extra_mb(tmp_path / "large.tif", 8192)
    # 16x the pixels: the large raster is 64 MB as uint8 (more as class ids or weights), so holding it
    # would show; a window is 1024 x 1024 px and GDAL's cache is capped at 16 MB
    assert large < small + 24, (small, large)


# --- an interrupted run's store -------------------------------------------------------------


def test_an_incomplete_store_is_refused_unless_partial(tmp_path):
    """A store whose run was interrupted would report areas as if complete: refused, named, one line."""
    labels = blocky_labels(100, 120)
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=32, class_names=NAMES, crs=UTM,
                             transform=TRANSFORM, class_colors=[(0, 0, 255)] * 3, complete=False)
    with pytest.raises(InputError, match=r"labels.zarr: the label store is incomplete .*--partial"):
        query_classes(store)
    assert_same(query_classes(store, allow_partial=True), labels)  # read as it is
    refused = fcnseg("query", store)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 1 and refused.stdout == "" and "Traceback" not in refused.stderr
    assert len(lines) == 1 and lines[0].startswith(f"fcnseg: error: {store}: the label store is incomplete"), lines
    read = fcnseg("query", store, "--partial", "--json")
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["valid_pixels"] == int((labels != 255).sum())


def test_a_store_without_the_completeness_mark_counts_as_complete(tmp_path):
    """A store written by another tool has no ``fcnseg_complete``: it is read like a finished one."""
    labels = blocky_labels(64, 64)
    store = make_store(tmp_path / "labels.zarr", labels, chunk=32)
    del open_store(store).attrs[COMPLETE]
    assert_same(query_classes(store), labels)


def test_json_says_the_areas_are_square_metres(rasters):
    _, store, tif = rasters
    for raster in (store, tif):
        assert query_classes(raster, point=world(3.5, 4.5)).to_dict()["units"] == "m2"


def test_cli_and_library_take_an_output_folder(rasters, tmp_path):
    """``fcnseg query OUT`` reads OUT/labels.zarr (it failed: "cannot open as a Zarr label store");
    a folder without a store names the store it looked for."""
    labels, store, _ = rasters
    result = fcnseg("query", store.parent, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["raster"] == str(store)
    assert [c["pixels"] for c in data["classes"]] == [v[0] for v in expected(labels).values()]
    import fcnseg as fcnseg_api

    assert fcnseg_api.query(store.parent).to_dict() == fcnseg_api.query(store).to_dict()
    result = fcnseg("query", tmp_path)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert f"{tmp_path}/labels.zarr" in result.stderr
