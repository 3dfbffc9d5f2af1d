"""Nodata by GDAL's dataset-mask convention: a pixel is nodata when all its selected bands are
(compared in numpy, no mask reads), or when the dataset's mask band or alpha band says so."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from fcnseg.models.checkpoint import ClassInfo, ModelCard, Normalization
from fcnseg.pipeline.io import InputError, read_model_input, read_pixels, valid_mask
from fcnseg.pipeline.training.chips import band_statistics
from fcnseg.pipeline.training.labels import RasterLabels

SIZE = 64
WHOLE = Window(0, 0, SIZE, SIZE)


def profile(count: int, dtype: str = "uint8", **extra) -> dict:
    return dict(
        driver="GTiff", width=SIZE, height=SIZE, count=count, dtype=dtype, crs="EPSG:32633",
        transform=Affine(1, 0, 500000, 0, -1, 5400000), tiled=True, blockxsize=32, blockysize=32, **extra,
    )


def card(bands: int) -> ModelCard:
    return ModelCard(
        arch="fcn8s", width=0.125, bands=bands, classes=[ClassInfo("a", (0, 0, 0)), ClassInfo("b", (9, 9, 9))],
        normalization=Normalization(mean=[0.0] * bands, std=[1.0] * bands),
    )


class CountingReader:
    """A dataset that counts mask reads (the nodata comparison must not need any)."""

    def __init__(self, src):
        self.src, self.mask_reads = src, 0

    def read_masks(self, *args, **kwargs):
        self.mask_reads += 1
        return self.src.read_masks(*args, **kwargs)

    def dataset_mask(self, *args, **kwargs):
        self.mask_reads += 1
        return self.src.dataset_mask(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.src, name)


@pytest.fixture
def rgb_255(tmp_path) -> Path:
    """uint8 RGB with nodata 255: a bright pixel with one saturated band is data; all three 255 is not."""
    pixels = np.full((3, SIZE, SIZE), 100, np.uint8)
    pixels[0, 5, 5] = 255  # saturated red: data
    pixels[:2, 6, 6] = 255  # saturated red and green: data
    pixels[:, 7, 7] = 255  # all three: nodata
    pixels[:, 40:, :] = 255  # a nodata collar
    path = tmp_path / "rgb.tif"
    with rasterio.open(path, "w", nodata=255, **profile(3)) as dst:
        dst.write(pixels)
    return path


def test_one_band_at_the_nodata_value_is_still_data(rgb_255):
    with rasterio.open(rgb_255) as raw:
        src = CountingReader(raw)
        x, valid = read_model_input(src, [1, 2, 3], WHOLE, card(3))
        assert src.mask_reads == 0  # compared in numpy from the pixels read
    assert valid[5, 5] and valid[6, 6] and valid[0, 0]
    assert not valid[7, 7] and not valid[40:].any()
    assert valid.sum() == 40 * SIZE - 1
    assert x[0, 5, 5] == 255.0 and x[0, 7, 7] == 0.0  # data kept, nodata filled


def test_the_selected_bands_decide(rgb_255):
    with rasterio.open(rgb_255) as src:
        pixels, valid = read_pixels(src, [1], WHOLE)
        assert not valid[5, 5] and not valid[6, 6] and valid[0, 0]  # band 1 alone: 255 is nodata
        assert valid_mask(src, [3], WHOLE)[6, 6]  # band 3 alone: data there
        assert np.array_equal(valid_mask(src, [1, 2, 3], Window(0, 0, 8, 8)), read_pixels(src, [1, 2, 3], WHOLE)[1][:8, :8])


def test_internal_mask_band_decides(tmp_path):
    path = tmp_path / "masked.tif"
    mask = np.full((SIZE, SIZE), 255, np.uint8)
    mask[:, :10] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile(3)) as dst:
            dst.write(np.full((3, SIZE, SIZE), 7, np.uint8))
            dst.write_mask(mask)
    assert not list(tmp_path.glob("*.msk"))
    with rasterio.open(path) as src:
        pixels, valid = read_pixels(src, [1, 2, 3], Window(4, 0, 20, 8))
        assert (pixels == 7).all()  # the values are there, the mask says no
    assert not valid[:, :6].any() and valid[:, 6:].all()


def test_alpha_band_decides(tmp_path):
    path = tmp_path / "rgba.tif"
    pixels = np.full((4, SIZE, SIZE), 50, np.uint8)
    pixels[3] = 255
    pixels[3, 20:30, 20:30] = 0
    with rasterio.open(path, "w", photometric="RGB", alpha="YES", **profile(4)) as dst:
        dst.write(pixels)
    with rasterio.open(path) as src:
        _, valid = read_pixels(src, [1, 2, 3], WHOLE)
    assert valid.sum() == SIZE * SIZE - 100 and not valid[20:30, 20:30].any()


def test_nan_nodata_and_non_finite_pixels(tmp_path):
    path = tmp_path / "float.tif"
    pixels = np.ones((2, SIZE, SIZE), np.float32)
    pixels[:, 1, 1] = np.nan  # nodata in both bands
    pixels[0, 2, 2] = np.nan  # one band nodata, the other not: cannot be fed to the model
    pixels[1, 3, 3] = np.inf
    with rasterio.open(path, "w", nodata=float("nan"), **profile(2, "float32")) as dst:
        dst.write(pixels)
    with rasterio.open(path) as src:
        x, valid = read_model_input(src, [1, 2], WHOLE, card(2))
    assert valid.sum() == SIZE * SIZE - 3 and not valid[1, 1] and not valid[2, 2] and not valid[3, 3]
    assert np.isfinite(x).all()


def test_float_nodata_value_compared_in_the_bands_type(tmp_path):
    path = tmp_path / "float.tif"
    pixels = np.ones((1, SIZE, SIZE), np.float32)
    pixels[0, 0, 0] = np.float32(0.1)
    with rasterio.open(path, "w", nodata=0.1, **profile(1, "float32")) as dst:
        dst.write(pixels)
    with rasterio.open(path) as src:
        _, valid = read_pixels(src, [1], WHOLE)
        assert np.array_equal(valid, src.dataset_mask() > 0)  # as GDAL masks it
    assert not valid[0, 0] and valid.sum() == SIZE * SIZE - 1


def test_no_nodata_no_mask_is_all_valid(tmp_path):
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", **profile(2)) as dst:
        dst.write(np.zeros((2, SIZE, SIZE), np.uint8))
    with rasterio.open(path) as src:
        assert read_pixels(src, [1, 2], WHOLE)[1].all()


def test_band_statistics_count_pixels_with_one_band_at_nodata(rgb_255):
    with rasterio.open(rgb_255) as src:
        stats = band_statistics(src, [1, 2, 3], windows=1, size=SIZE)
        _, valid = read_pixels(src, [1, 2, 3], WHOLE)
        expected = src.read(1)[valid].astype(np.float64).mean()
    assert stats.mean[0] == pytest.approx(expected) and stats.mean[0] > 100  # the saturated red counted


def test_label_raster_nodata_becomes_unlabelled(tmp_path, rgb_255):
    path = tmp_path / "labels.tif"
    labels = np.ones((1, SIZE, SIZE), np.uint8)
    labels[0, :4] = 9
    with rasterio.open(path, "w", nodata=9, **profile(1)) as dst:
        dst.write(labels)
    with rasterio.open(rgb_255) as image:
        source = RasterLabels(path, image)
        read = source.read(WHOLE)
        source.close()
    assert (read[:4] == 255).all() and (read[4:] == 1).all()


def test_truncated_geotiff_names_the_file_and_the_window(tmp_path):
    path = tmp_path / "truncated.tif"
    big = 512
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **dict(profile(3, "uint16", compress="deflate"), width=big, height=big)) as dst:
        dst.write(rng.integers(0, 5000, (3, big, big), dtype=np.uint16))
    os.truncate(path, path.stat().st_size // 2)
    window = Window(0, 256, 512, 256)  # the blocks in the second half are gone
    with rasterio.open(path) as src:
        with pytest.raises(InputError) as caught:
            read_model_input(src, [1, 2, 3], window, card(3))
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot read window 0,256,512,256 (")
    assert "\n" not in message
