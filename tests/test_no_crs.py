"""Large images without georeferencing (scans, microscopy mosaics, PNGs): segmented in pixel
coordinates, every output without a CRS, areas in pixels, no STAC item.

The product tests build a CRS-less store directly (``store_from_array(crs=None)``), so they check
each product on its own; the end-to-end tests at the bottom run ``segment`` on such inputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
import xarray as xr
from affine import Affine
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from stores import UTM, store_from_array

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.analysis.query import query_classes
from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.products.cog import export_labels_cog
from fcnseg.pipeline.products.quicklook import write_quicklook
from fcnseg.pipeline.products.stac import build_stac_item, write_stac_item
from fcnseg.pipeline.products.vectorize import VectorizeOptions, vectorize_store
from fcnseg.pipeline.orchestrator import SegmentOptions, segment
from fcnseg.pipeline.store import has_crs, open_store, store_geometry
from fcnseg.pipeline.synth import write_scene

FCNSEG = str(Path(sys.executable).with_name("fcnseg"))


NAMES = ["cell", "membrane", "background"]
COLORS = [(200, 40, 40), (240, 220, 60), (30, 30, 30)]
#: What rasterio gives a file without georeferencing: rows go down, one unit per pixel.
PIXELS = Affine.identity()


def pixel_labels(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Blocks of classes 0..2 (regions across chunk borders) with scattered nodata and a nodata strip."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 3, (height // 20 + 1, width // 20 + 1))
    labels = np.kron(blocks, np.ones((20, 20), dtype=np.int64))[:height, :width].astype(np.uint8)
    labels[rng.random(labels.shape) < 0.02] = 255
    labels[:, 70:74] = 255
    return labels


@pytest.fixture(scope="module")
def pixel_store(tmp_path_factory) -> tuple[np.ndarray, Path]:
    """(labels, labels.zarr without CRS, identity transform, 64 px chunks) in an output folder."""
    out = tmp_path_factory.mktemp("pixels")
    labels = pixel_labels(150, 170)
    return labels, store_from_array(out / "labels.zarr", labels, chunk=64, class_names=NAMES, class_colors=COLORS,
                                    crs=None, transform=PIXELS)


@contextlib.contextmanager
def strict() -> Iterator[None]:
    """Warnings that fcnseg must not emit while it handles outputs without a CRS become errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotGeoreferencedWarning)
        warnings.filterwarnings("error", message=".*crs.*", category=UserWarning)
        yield


def quiet_open(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def test_store_without_crs_opens_in_xarray_in_pixel_coordinates(pixel_store):
    labels, store = pixel_store
    ds = xr.open_zarr(store, consolidated=False)
    assert np.array_equal(ds.labels.values, labels)
    assert float(ds.x[0]) == 0.5 and float(ds.y[0]) == 0.5 and float(ds.y[1]) == 1.5  # centres, rows going down
    for name in ("x", "y"):
        assert ds[name].attrs["units"] == "pixel" and "standard_name" not in ds[name].attrs
    assert ds.labels.attrs["grid_mapping"] == "spatial_ref"
    grid_mapping = dict(open_store(store, mode="r")["spatial_ref"].attrs)
    assert "crs_wkt" not in grid_mapping and "spatial_ref" not in grid_mapping
    assert grid_mapping["GeoTransform"].split() == ["0.0", "1.0", "0.0", "0.0", "0.0", "1.0"]
    assert store_geometry(open_store(store, mode="r")) == (None, PIXELS)
    assert has_crs(store) is False


def test_any_transform_is_kept_without_a_crs(tmp_path):
    """A world file without a CRS (0.25 units per pixel, y up) keeps its transform; areas in its units²."""
    transform = Affine(0.25, 0, 100.0, 0, -0.25, 50.0)
    labels = pixel_labels(70, 90, seed=2)
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=32, class_names=NAMES, class_colors=COLORS,
                             crs=None, transform=transform)
    assert store_geometry(open_store(store, mode="r")) == (None, transform)
    with strict():
        vectorize_store(store, tmp_path / "p.parquet", None)
    frame = gpd.read_parquet(tmp_path / "p.parquet")
    valid = int((labels != 255).sum())
    assert frame.crs is None and frame.area.sum() == pytest.approx(valid * 0.0625) and frame.pixels.sum() == valid
    assert frame.total_bounds == pytest.approx([100.0, 50.0 - 70 * 0.25, 100.0 + 90 * 0.25, 50.0])


def test_labels_tif_has_no_crs_and_equals_the_store(pixel_store, tmp_path):
    labels, store = pixel_store
    with strict():
        tif = export_labels_cog(store, tmp_path / "labels.tif")
    with quiet_open(tif) as src:
        assert src.crs is None and src.transform == PIXELS
        assert np.array_equal(src.read(1), labels) and src.nodata == 255
        assert src.colormap(1)[0][:3] == COLORS[0] and json.loads(src.tags()["class_names"]) == NAMES
    assert has_crs(tif) is False


def test_polygons_have_no_crs_and_pixel_areas(pixel_store, tmp_path):
    labels, store = pixel_store
    parquet, gpkg = tmp_path / "polygons.parquet", tmp_path / "polygons.gpkg"
    with strict():
        vectorize_store(store, parquet, gpkg)
    geo = json.loads(pq.read_schema(parquet).metadata[b"geo"])["columns"]["geometry"]
    assert "crs" in geo and geo["crs"] is None  # present and null: unknown; absent would mean OGC:CRS84
    frame = gpd.read_parquet(parquet)
    from_gpkg = gpd.read_file(gpkg, layer="polygons")
    assert frame.crs is None and from_gpkg.crs is None and len(from_gpkg) == len(frame)
    valid = int((labels != 255).sum())
    assert int(frame.pixels.sum()) == valid and frame.area.sum() == pytest.approx(valid)
    assert (frame.area == frame.pixels).all()  # one pixel is one unit² of the identity transform
    assert frame.area_m2.isna().all() and from_gpkg.area_m2.isna().all()
    for class_id in range(3):
        assert frame[frame.class_id == class_id].pixels.sum() == (labels == class_id).sum()
    assert shapely.is_valid(frame.geometry.values).all()


def test_min_area_needs_a_crs(pixel_store, tmp_path):
    _, store = pixel_store
    message = "--min-area needs a georeferenced input (square metres); this raster has no CRS"
    with pytest.raises(ValueError, match=rf"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        vectorize_store(store, tmp_path / "p.parquet", tmp_path / "p.gpkg", VectorizeOptions(min_area=5.0))
    assert list(tmp_path.iterdir()) == []


def test_query_counts_pixels_in_the_rasters_own_grid(pixel_store, tmp_path):
    labels, store = pixel_store
    tif = export_labels_cog(store, tmp_path / "labels.tif")
    valid = labels != 255
    for raster in (store, tif):
        whole = query_classes(raster)
        data = whole.to_dict()
        assert data["units"] == "pixels" and data["crs"] is None and data["area_m2"] is None
        assert all(c["area_m2"] is None for c in data["classes"])
        assert [c["pixels"] for c in data["classes"]] == [int((labels == k).sum()) for k in range(3)]
        assert whole.valid_pixels == valid.sum() and whole.nodata_pixels == (~valid).sum()
        box = query_classes(raster, bbox=(10, 20, 60, 45))  # x = column, y = row: centres inside
        assert box.selection["crs"] is None and box.area_m2 is None
        assert box.valid_pixels + box.nodata_pixels == 50 * 25 and box.valid_pixels == valid[20:45, 10:60].sum()
        point = query_classes(raster, point=(33.5, 12.5))
        assert point.to_dict()["units"] == "pixels" and point.point == {"x": 33.5, "y": 12.5, "row": 12, "col": 33}
        assert [c.class_id for c in point.classes] == ([] if labels[12, 33] == 255 else [labels[12, 33]])
        assert all(c.area_m2 is None for c in point.classes)
        with pytest.raises(InputError, match="has no CRS .*so --crs cannot be placed on it"):
            query_classes(raster, bbox=(0, 0, 1, 1), bbox_crs="EPSG:4326")
        with pytest.raises(InputError, match="has no CRS .*so --crs cannot be placed on it"):
            query_classes(raster, point=(1, 1), point_crs="EPSG:4326")


def test_query_aoi_without_crs_is_in_pixels_with_a_crs_refused(pixel_store, tmp_path):
    labels, store = pixel_store
    plain, placed = tmp_path / "plain.gpkg", tmp_path / "placed.gpkg"
    with warnings.catch_warnings():  # an AOI without a CRS is what this test is about
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        gpd.GeoDataFrame(geometry=[shapely.box(10, 20, 60, 45)], crs=None).to_file(plain)
    gpd.GeoDataFrame(geometry=[shapely.box(10, 20, 60, 45)], crs=UTM).to_file(placed)
    result = query_classes(store, aoi=plain)
    assert result.selection["crs"] is None and result.valid_pixels == (labels[20:45, 10:60] != 255).sum()
    with pytest.raises(InputError, match=r"placed.gpkg: the area of interest is in EPSG:32633, but the raster has no CRS"):
        query_classes(store, aoi=placed)


def test_query_cli_shows_pixel_areas_and_refuses_a_crs_in_one_line(pixel_store):
    labels, store = pixel_store
    shown = subprocess.run([FCNSEG, "query", str(store)], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "area px²" in shown.stdout and "area m²" not in shown.stdout
    as_json = subprocess.run([FCNSEG, "query", str(store), "--json"], capture_output=True, text=True)
    data = json.loads(as_json.stdout)
    assert data["units"] == "pixels" and data["area_m2"] is None and data["valid_pixels"] == (labels != 255).sum()
    refused = subprocess.run([FCNSEG, "query", str(store), "--bbox", "0", "0", "1", "1", "--crs", "EPSG:4326"],
                             capture_output=True, text=True)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 1 and len(lines) == 1 and "Traceback" not in refused.stderr
    assert lines[0].startswith(f"fcnseg: error: {store}: has no CRS"), lines


def test_no_stac_item_without_a_crs(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    store_from_array(out / "labels.zarr", pixel_labels(40, 40), chunk=32, class_names=NAMES, class_colors=COLORS,
                     crs=None, transform=PIXELS)
    export_labels_cog(out / "labels.zarr", out / "labels.tif")
    with caplog.at_level(logging.INFO, logger="fcnseg.pipeline.products.stac"), strict():
        assert write_stac_item(out, input_path="scan.tif") is None
    assert "no CRS: no STAC item" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["labels.qml", "labels.tif", "labels.tif.aux.xml", "labels.zarr"]
    with pytest.raises(ValueError, match="no CRS"):
        build_stac_item(out, input_path="scan.tif")
    shutil.rmtree(out / "labels.zarr")  # from labels.tif alone, too
    with strict():
        assert write_stac_item(out, input_path="scan.tif") is None
    assert sorted(p.name for p in out.iterdir()) == ["labels.qml", "labels.tif", "labels.tif.aux.xml"]


def test_quicklook_of_a_png_without_crs(pixel_store, tmp_path):
    """A PNG (identity transform, no CRS) as the image, CRS-less labels.tif: a quicklook, no warning."""
    labels, store = pixel_store
    tif = export_labels_cog(store, tmp_path / "labels.tif")
    png = tmp_path / "photo.png"
    rgb = np.stack([np.linspace(0, 255, labels.size).reshape(labels.shape).astype(np.uint8)] * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(png, "w", driver="PNG", width=labels.shape[1], height=labels.shape[0], count=3,
                           dtype="uint8") as dst:
            dst.write(rgb)
    with quiet_open(png) as src:
        assert src.crs is None and src.transform == PIXELS
    with strict():
        write_quicklook(png, tif, tmp_path / "quicklook.png")
    with Image.open(tmp_path / "quicklook.png") as img:
        assert img.size == (labels.shape[1], labels.shape[0]) and img.mode == "RGBA"


def test_a_png_class_map_is_queried_in_pixels(tmp_path):
    """Any single-band class raster rasterio opens, a PNG included: counted in pixels."""
    values = np.random.default_rng(5).integers(0, 4, (48, 64), dtype=np.uint8)
    png = tmp_path / "classes.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(png, "w", driver="PNG", width=64, height=48, count=1, dtype="uint8") as dst:
            dst.write(values, 1)
    with strict():
        result = query_classes(png, bbox=(0, 0, 16, 8))
    assert result.to_dict()["units"] == "pixels" and result.valid_pixels == 16 * 8
    assert [c.pixels for c in result.classes] == [int((values[:8, :16] == k).sum()) for k in range(4)]


def test_query_of_a_raster_without_crs_counts_pixels(tmp_path):
    labels = tmp_path / "labels.tif"
    values = np.random.default_rng(1).integers(0, 3, (64, 80), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(labels, "w", driver="GTiff", width=80, height=64, count=1, dtype="uint8", nodata=255) as dst:
            dst.write(values, 1)
    whole = query_classes(labels)
    assert whole.crs is None and whole.area_m2 is None and whole.valid_pixels == 64 * 80
    assert [c.pixels for c in whole.classes] == [int((values == k).sum()) for k in range(3)]
    box = query_classes(labels, bbox=(0, 0, 10, 20))  # its own grid: x = column, y = row (identity transform)
    assert box.valid_pixels == 200 and box.selection["crs"] is None
    with quiet_open(labels) as src:
        assert src.transform == Affine.identity()
    with pytest.raises(InputError, match="has no CRS .*so --crs cannot be placed on it"):
        query_classes(labels, bbox=(0, 0, 10, 20), bbox_crs="EPSG:4326")
    shown = subprocess.run([FCNSEG, "query", str(labels)], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr


# --- end to end: segment on inputs without CRS ----------------------------------------------


def without_georeferencing(image: Path, out: Path, driver: str = "GTiff") -> Path:
    """The pixels of ``image``, in a file that has no CRS and no transform."""
    with rasterio.open(image) as src:
        data = src.read()
        profile = {"driver": driver, "width": src.width, "height": src.height, "count": src.count,
                   "dtype": src.dtypes[0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(data)
    return out


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scan")
    image, _ = write_scene(folder / "scene", 192, seed=12)
    return without_georeferencing(image, folder / "scan.tif")


def test_a_raster_without_crs_is_segmented_in_pixel_coordinates(scan, tmp_path, cluster):
    out = tmp_path / "out"
    with strict():  # fcnseg's own reads and writes of a raster without CRS warn about nothing
        report = segment(scan, DEMO_MODEL, out, SegmentOptions(tile=96), scheduler=cluster, progress=False)
    assert report.files == ["labels.zarr", "labels.tif", "labels.tif.aux.xml", "labels.qml", "quicklook.png", "polygons.parquet", "polygons.gpkg"]
    assert not (out / "item.json").exists()  # a STAC item needs a place on the Earth
    labels = xr.open_zarr(out / "labels.zarr", consolidated=False).labels
    assert labels.shape == (192, 192) and (labels.values != 255).all()
    assert float(labels.x[0]) == 0.5 and float(labels.y[0]) == 0.5  # pixel centres, rows going down
    with quiet_open(out / "labels.tif") as cog:
        assert cog.crs is None and np.array_equal(cog.read(1), labels.values)
    polygons = gpd.read_parquet(out / "polygons.parquet")
    assert polygons.crs is None and polygons.area_m2.isna().all()
    assert int(polygons.pixels.sum()) == 192 * 192 and polygons.area.sum() == pytest.approx(192 * 192)
    geo = json.loads(pq.read_schema(out / "polygons.parquet").metadata[b"geo"])
    assert "crs" in geo["columns"]["geometry"] and geo["columns"]["geometry"]["crs"] is None  # not CRS84
    assert gpd.read_file(out / "polygons.gpkg").crs is None
    record = json.loads((out / "run.json").read_text())
    assert sum(c["pixels"] for c in record["class_areas"]) == 192 * 192
    assert all(c["area_m2"] is None for c in record["class_areas"])


def test_a_png_is_segmented(tmp_path):
    image, _ = write_scene(tmp_path / "scene", 128, seed=13)
    with rasterio.open(image) as src:
        rgb = (src.read([3, 2, 1]) // 8).clip(0, 255).astype(np.uint8)
    png = tmp_path / "photo.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(png, "w", driver="PNG", width=128, height=128, count=3, dtype="uint8") as dst:
            dst.write(rgb)
    model = tmp_path / "rgb.safetensors"
    made = subprocess.run([FCNSEG, "init-model", str(model), "--bands", "3", "--classes", "2", "--width", "0.125"],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    done = subprocess.run([FCNSEG, "segment", str(png), "--out", str(tmp_path / "out"), "--model", str(model),
                           "--tile", "64", "--workers", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr
    assert not (tmp_path / "out" / "item.json").exists() and (tmp_path / "out" / "run.json").exists()
    with quiet_open(tmp_path / "out" / "labels.tif") as cog:
        assert cog.crs is None and cog.transform == Affine.identity() and cog.shape == (128, 128) and set(np.unique(cog.read(1))) <= {0, 1}
