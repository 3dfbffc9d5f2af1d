"""Large images without georeferencing (scans, microscopy mosaics, PNGs): segmented in pixel
coordinates, every output without a CRS, areas in pixels, no STAC item."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.analysis.query import query_classes
from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.segment import SegmentOptions, segment
from fcnseg.pipeline.synth import write_scene

FCNSEG = str(Path(sys.executable).with_name("fcnseg"))


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


def test_a_raster_without_crs_is_segmented_in_pixel_coordinates(scan, tmp_path):
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        report = segment(scan, DEMO_MODEL, out, SegmentOptions(tile=96), workers=1, progress=False)
    assert report.files == ["labels.zarr", "labels.tif", "quicklook.png", "polygons.parquet", "polygons.gpkg"]
    assert not (out / "item.json").exists()  # a STAC item needs a place on the Earth
    labels = xr.open_zarr(out / "labels.zarr").labels
    assert labels.shape == (192, 192) and (labels.values != 255).all()
    assert float(labels.x[0]) == 0.5 and float(labels.y[0]) == 0.5  # pixel centres, rows going down
    with rasterio.open(out / "labels.tif") as cog:
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


def test_query_of_a_raster_without_crs_counts_pixels(scan, tmp_path):
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
    assert rasterio.open(labels).transform == Affine.identity()
    with pytest.raises(InputError, match="has no CRS, so --crs cannot be placed on it"):
        query_classes(labels, bbox=(0, 0, 10, 20), bbox_crs="EPSG:4326")
    shown = subprocess.run([FCNSEG, "query", str(labels)], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr


def test_a_png_is_segmented(tmp_path):
    image, _ = write_scene(tmp_path / "scene", 128, seed=13)
    with rasterio.open(image) as src:
        rgb = (src.read([3, 2, 1]) // 8).clip(0, 255).astype(np.uint8)
    png = tmp_path / "photo.png"
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
    with rasterio.open(tmp_path / "out" / "labels.tif") as cog:
        assert cog.crs is None and cog.shape == (128, 128) and set(np.unique(cog.read(1))) <= {0, 1}
