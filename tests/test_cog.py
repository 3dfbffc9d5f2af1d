"""labels.tif / probabilities.tif: valid COGs, exact geo metadata, mode overviews, colours, names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from peak_memory import step_extra_mb
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate
from stores import store_from_array

from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.products.cog import export_labels_cog, export_probabilities_cog

NAMES = ["water", "forest", "road"]
COLORS = [(30, 100, 200), (20, 110, 40), (120, 120, 120)]
TRANSFORM = Affine(0.5, 0, 500000.0, 0, -0.5, 5400000.0)


def make_store(path: Path, labels: np.ndarray, chunk: int = 256, probabilities: bool = False) -> Path:
    return store_from_array(path, labels, chunk=chunk, class_names=NAMES, class_colors=COLORS, transform=TRANSFORM,
                            probabilities=probabilities)


def test_labels_cog_is_valid_and_carries_everything(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (1100, 900), dtype=np.uint8)
    labels[:40] = 255
    store = make_store(tmp_path / "labels.zarr", labels)
    cog = export_labels_cog(store, tmp_path / "labels.tif")
    valid, errors, _ = cog_validate(str(cog))
    assert valid, errors
    with rasterio.open(cog) as src:
        assert (src.width, src.height, src.count, src.dtypes[0]) == (900, 1100, 1, "uint8")
        assert src.crs == CRS.from_epsg(32633) and src.transform == TRANSFORM
        assert src.nodata == 255 and src.compression.name == "deflate" and src.block_shapes[0] == (512, 512)
        assert np.array_equal(src.read(1), labels)
        assert src.overviews(1) == [2, 4, 8]  # down to about 128 px
        assert json.loads(src.tags()["class_names"]) == NAMES
        assert src.colormap(1)[2][:3] == COLORS[2] and src.colormap(1)[255][3] == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_overviews_take_the_mode_never_an_average(tmp_path):
    # 2x2 blocks of (0, 0, 0, 2): the mode is 0; an average would invent class 1 (0.5 -> 0 or 1)
    block = np.array([[0, 0], [0, 2]], dtype=np.uint8)
    labels = np.tile(block, (512, 512))
    cog = export_labels_cog(make_store(tmp_path / "l.zarr", labels), tmp_path / "l.tif")
    with rasterio.open(cog) as src:
        overview = src.read(1, out_shape=(512, 512))
    assert (overview == 0).all()


def test_probabilities_cog_has_one_band_per_class(tmp_path):
    labels = np.random.default_rng(1).integers(0, 3, (300, 400), dtype=np.uint8)
    store = make_store(tmp_path / "p.zarr", labels, probabilities=True)
    cog = export_probabilities_cog(store, tmp_path / "probabilities.tif")
    assert cog_validate(str(cog))[0]
    with rasterio.open(cog) as src:
        assert src.count == 3 and list(src.descriptions) == NAMES
        assert np.array_equal(src.read(2), (labels == 1) * 254)


def test_cog_export_memory_stays_flat(tmp_path):
    small = step_extra_mb(tmp_path / "small", 2048, "cog")
    large = step_extra_mb(tmp_path / "large", 8192, "cog")
    # 16x the pixels: the large map alone is 64 MB as uint8, so holding it would show. Measured:
    # 26 -> 49 MB, GDAL's capped block cache filling up (4096 -> 8192 adds only 3 MB)
    assert large < small + 32, (small, large)


def test_an_incomplete_store_makes_no_cog(tmp_path):
    """A product of an interrupted run would look complete: refused, and nothing is left behind."""
    labels = np.random.default_rng(3).integers(0, 3, (96, 80), dtype=np.uint8)
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=32, class_names=NAMES, class_colors=COLORS,
                             transform=TRANSFORM, probabilities=True, complete=False)
    with pytest.raises(InputError, match=r"labels.zarr: the label store is incomplete .*--partial"):
        export_labels_cog(store, tmp_path / "labels.tif")
    with pytest.raises(InputError, match="the label store is incomplete"):
        export_probabilities_cog(store, tmp_path / "probabilities.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]
