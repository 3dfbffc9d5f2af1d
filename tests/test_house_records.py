"""Issue 23's small records and shared helpers: one rule where there were two (``crs_name``, the
nodata mask), records with typed fields instead of dicts (verify's chunk counts), keyword-only
construction (``ChunkRun``). In-process and fast: no cluster, no model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from fcnseg.pipeline.io import crs_name

#: A Lambert azimuthal equal-area CRS with parameters no registry has a code for.
CUSTOM = "+proj=laea +lat_0=50 +lon_0=11 +x_0=0 +y_0=0 +ellps=GRS80 +units=m +no_defs"


@pytest.mark.parametrize(("crs", "name"), [
    (CRS.from_epsg(32633), "EPSG:32633"),  # projected (UTM 33N)
    (CRS.from_epsg(4326), "EPSG:4326"),  # geographic
    (CRS.from_wkt(CRS.from_epsg(32633).to_wkt().replace('AUTHORITY["EPSG","32633"]', "")), "EPSG:32633"),
    (None, None),  # pixel coordinates: JSON's null
], ids=["projected", "geographic", "projected-wkt-without-its-code", "none"])
def test_a_crs_is_named_by_its_code_or_none(crs, name):
    assert crs_name(crs) == name


def test_a_crs_without_a_code_is_named_by_its_wkt():
    crs = CRS.from_proj4(CUSTOM)
    assert crs_name(crs) == crs.to_wkt()
    assert CRS.from_user_input(crs_name(crs)) == crs


def test_query_and_training_name_a_crs_with_the_one_function():
    from fcnseg.pipeline.analysis import query, selection
    from fcnseg.pipeline.training import labels, vector_labels

    assert {m.crs_name for m in (query, selection, labels, vector_labels)} == {crs_name}


def test_a_chunk_run_is_built_by_keyword_only():
    from fcnseg.pipeline.output.record import ChunkRun

    with pytest.raises(TypeError):
        ChunkRun([], [], {"infer": 0.0}, "cpu fp32")  # type: ignore[misc]
    run = ChunkRun(results=[], worker_peaks_mb=[], seconds={"infer": 0.0}, execution="cpu fp32")
    assert (run.devices, run.workers, run.cluster) == ([], 0, None)


@pytest.fixture(scope="module")
def two_bands(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 2-band float32 GeoTIFF, nodata -9999: pixels nodata in one band, in both, and NaN."""
    pixels = np.arange(2 * 6 * 5, dtype=np.float32).reshape(2, 6, 5)
    pixels[0, 0, :] = pixels[:, 1, :] = -9999  # row 0: one band nodata (data); row 1: both (nodata)
    pixels[1, 2, 2] = np.nan  # non-finite: never valid
    path = tmp_path_factory.mktemp("bands") / "two.tif"
    with rasterio.open(path, "w", driver="GTiff", width=5, height=6, count=2, dtype="float32", nodata=-9999) as dst:
        dst.write(pixels)
    return path, pixels


def test_a_files_window_and_an_array_in_memory_have_one_nodata_rule(two_bands):
    from fcnseg.pipeline.io import bands_valid, valid_mask
    from fcnseg.pipeline.segment import memory_source

    path, pixels = two_bands
    expected = np.ones((6, 5), dtype=bool)
    expected[1, :] = expected[2, 2] = False
    with rasterio.open(path) as src:
        assert np.array_equal(valid_mask(src, [1, 2], Window(0, 0, 5, 6)), expected)
    assert np.array_equal(bands_valid(pixels, [-9999.0, -9999.0]), expected)
    assert np.array_equal(bands_valid(pixels, [None, -9999.0]), expected | (np.arange(6) == 1)[:, None])
    assert memory_source.bands_valid is bands_valid
