"""``fcnseg.predict_array`` against ``fcnseg.segment`` on the same pixels: equal labels and
probabilities, for crop and for blend, on a scene with a stair-stepped nodata collar (synth's
``rotate``) and chunks that hold no valid pixel; numpy in gives numpy out, a DataArray a DataArray.

One scene and one segment run per stitching mode (on real Dask worker processes), shared by the
module; small tiles and halo keep each prediction to seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

import fcnseg
from fcnseg.errors import InputError

#: Small tiles and halo: 16 chunks, of which the four corners lie wholly in the collar (the scene turned by 45°).
TILING = {"tile": 64, "halo": 32}
STORE_ONLY = {"cog": False, "polygons": False, "quicklook": False, "stac": False}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from fcnseg.pipeline.synth import write_scene

    path, _ = write_scene(tmp_path_factory.mktemp("rotated"), 256, seed=3, rotate=45)
    return path


@pytest.fixture(scope="module")
def pixels(image):
    with rasterio.open(image) as src:
        return src.read(), src.nodata


@pytest.fixture(scope="module")
def model():
    return fcnseg.load_model("demo")


@pytest.fixture(scope="module")
def written(image, cluster, tmp_path_factory):
    """What ``segment`` wrote for each stitching mode: labels.zarr's labels and probabilities."""
    import zarr
    from distributed import Client

    stores = {}
    with Client(cluster) as client:
        for stitch in ("crop", "blend"):
            out = tmp_path_factory.mktemp(stitch)
            fcnseg.segment(image, out, client=client, stitch=stitch, probabilities=True, **TILING, **STORE_ONLY)
            group = zarr.open_group(str(out / "labels.zarr"), mode="r")
            stores[stitch] = group["labels"][:], group["probabilities"][:]
    return stores


def chunk_is_empty(labels: np.ndarray, tile: int) -> np.ndarray:
    rows, cols = -(-labels.shape[0] // tile), -(-labels.shape[1] // tile)
    padded = np.full((rows * tile, cols * tile), 255, dtype=labels.dtype)
    padded[: labels.shape[0], : labels.shape[1]] = labels
    return (padded.reshape(rows, tile, cols, tile) == 255).all(axis=(1, 3))


@pytest.mark.parametrize("stitch", ["crop", "blend"])
def test_numpy_in_equals_what_segment_writes(stitch, model, pixels, written):
    array, nodata = pixels
    labels, probabilities = fcnseg.predict_array(model, array, stitch=stitch, nodata=nodata, probabilities=True,
                                                 **TILING)
    expected_labels, expected_probabilities = written[stitch]
    assert isinstance(labels, np.ndarray) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_array_equal(probabilities, expected_probabilities)
    empty = chunk_is_empty(labels, TILING["tile"])
    assert empty.any() and not empty.all()  # the case: whole chunks of nodata beside partly valid ones
    assert (labels == 255).sum() > empty.sum() * TILING["tile"] ** 2  # and the collar's steps inside chunks
    if stitch == "blend":  # blending changed something: the comparison is not crop's again
        assert not np.array_equal(expected_probabilities, written["crop"][1])


def test_data_array_in_gives_a_data_array_on_its_grid(image, model, written):
    """A DataArray read as floats with NaN for nodata (``masked=True``): the same labels, on its
    coordinates, CRS and transform, with the model's class names."""
    import rioxarray

    scene = rioxarray.open_rasterio(image, masked=True)  # lazily read: predict_array reads a tile at a time
    labels = fcnseg.predict_array(model, scene, **TILING)
    np.testing.assert_array_equal(labels.values, written["crop"][0])
    assert labels.dims == ("y", "x")
    np.testing.assert_array_equal(labels.x.values, scene.x.values)
    np.testing.assert_array_equal(labels.y.values, scene.y.values)
    assert labels.rio.crs == scene.rio.crs and labels.rio.transform() == scene.rio.transform()
    assert labels.rio.nodata == 255
    assert labels.attrs["class_names"] == model.class_names


def test_a_2d_array_is_one_band(model):
    with pytest.raises(InputError, match="has 1 bands, the model takes 4"):
        fcnseg.predict_array(model, np.zeros((64, 64), dtype=np.uint16))


def test_complex_pixels_are_refused_in_one_line(model):
    with pytest.raises(InputError, match="array: holds complex64 values; the model takes real pixel values"):
        fcnseg.predict_array(model, np.zeros((4, 64, 64), dtype=np.complex64))


class RecordedReads:
    """An array that records the shape of every window read from it (a stand-in for a lazily read raster)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.reads: list[tuple[int, ...]] = []

    def __getitem__(self, key):
        window = self.array[key]
        self.reads.append(window.shape)
        return window


def test_the_array_is_read_a_tile_window_at_a_time(model, pixels):
    """Memory follows the tile, not the array: each tile's read window once, nothing larger."""
    array, nodata = pixels
    recorded = RecordedReads(array[:, :128, :128])
    labels = fcnseg.predict_array(model, recorded, nodata=nodata, **TILING)
    side = TILING["tile"] + 2 * TILING["halo"]
    assert len(recorded.reads) == 4 and all(r[0] == 4 and r[1] <= side and r[2] <= side for r in recorded.reads)
    assert labels.shape == (128, 128)
