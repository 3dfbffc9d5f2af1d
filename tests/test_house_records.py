"""Issue 23's small records and shared helpers: one rule where there were two (``crs_name``, the
nodata mask), records with typed fields instead of dicts (verify's chunk counts), keyword-only
construction (``ChunkRun``). In-process and fast: no cluster, no model."""

from __future__ import annotations

import pytest
from rasterio.crs import CRS

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
