"""item.json read by the loaders analysts use (issue 25 item 3): odc-stac loads the labels as
uint8 with nodata 255, equal to labels.tif; a copied output folder still resolves every href."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from stores import store_from_array
from test_stac import COLORS, CREATED, MODEL, NAMES, UTM

from fcnseg.models.checkpoint import file_sha256
from fcnseg.pipeline.products.cog import export_labels_cog, export_probabilities_cog
from fcnseg.pipeline.products.stac import build_stac_item, write_stac_item

TRANSFORM = Affine(10.0, 0, 600000.0, 0, -10.0, 5400000.0)


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    """An output folder (labels.zarr, labels.tif) with a nodata corner, its input inside it, and run.json."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, len(NAMES), (300, 420), dtype=np.uint8)
    labels[:60, :90] = 255
    out = tmp_path_factory.mktemp("loaders") / "out"
    out.mkdir()
    store_from_array(out / "labels.zarr", labels, chunk=128, class_names=NAMES, class_colors=COLORS, crs=UTM,
                     transform=TRANSFORM, probabilities=True)
    export_labels_cog(out / "labels.zarr", out / "labels.tif")
    export_probabilities_cog(out / "labels.zarr", out / "probabilities.tif")
    with rasterio.open(out / "input.tif", "w", driver="GTiff", width=420, height=300, count=1, dtype="uint8",
                       crs=UTM, transform=TRANSFORM) as dst:
        dst.write(labels, 1)
    run = {"model": str(MODEL), "model_sha256": file_sha256(MODEL), "parameters": {"bands": [1, 2, 3, 4]}}
    (out / "run.json").write_text(json.dumps(run))
    write_stac_item(out, input_path=out / "input.tif", created=CREATED)
    return out


def test_labels_assets_declare_uint8_and_nodata(output):
    item = json.loads((output / "item.json").read_text())
    for key in ("labels", "labels_zarr"):
        asset = item["assets"][key]
        assert asset["raster:bands"] == [{"data_type": "uint8", "nodata": 255, "spatial_resolution": 10.0,
                                          "sampling": "area"}]
        assert asset["bands"] == [{"name": "labels", "data_type": "uint8", "nodata": 255}]


def test_odc_stac_loads_uint8_labels_equal_to_labels_tif(output):
    odc_stac = pytest.importorskip("odc.stac")
    item = pystac.Item.from_file(str(output / "item.json"))
    loaded = odc_stac.load([item], bands=["labels"], chunks={})  # lazy: as an analyst's dask array
    labels = loaded["labels"].isel(time=0)
    assert labels.dtype == np.uint8 and labels.attrs["nodata"] == 255
    with rasterio.open(output / "labels.tif") as src:
        expected = src.read(1)
    assert np.array_equal(labels.values, expected)


def test_a_copied_folder_resolves_every_href(output, tmp_path):
    copy = tmp_path / "elsewhere" / "scene"
    shutil.copytree(output, copy)
    item = pystac.Item.from_file(str(copy / "item.json"))
    item.make_asset_hrefs_absolute()
    for key, asset in item.assets.items():
        href = asset.get_absolute_href()
        if key == "model":  # the checkpoint is not in the folder: kept absolute, where it is
            assert href == str(MODEL) or href == MODEL.as_uri()
            continue
        path = Path(href)
        assert path.is_relative_to(copy), (key, href)
        assert path.exists(), (key, href)
    (derived,) = [link for link in item.links if link.rel == "derived_from"]
    assert derived.href == "./input.tif" or Path(derived.get_absolute_href()) == copy / "input.tif"
    with rasterio.open(Path(item.assets["labels"].get_absolute_href())) as src:
        assert src.dtypes == ("uint8",) and src.nodata == 255


def test_derived_from_outside_the_folder_is_absolute(output, tmp_path):
    outside = tmp_path / "scene.tif"
    shutil.copy(output / "input.tif", outside)
    item = build_stac_item(output, input_path=outside, created=CREATED)
    (link,) = [link for link in item["links"] if link["rel"] == "derived_from"]
    assert link["href"] == outside.resolve().as_uri()
    assert item["assets"]["model"]["href"] == MODEL.as_uri()


def test_probabilities_declare_their_scale_and_load_as_uint8(output):
    item = json.loads((output / "item.json").read_text())
    bands = item["assets"]["probabilities"]["raster:bands"]
    assert len(bands) == len(NAMES) and item["assets"]["probabilities"]["bands"][0]["name"] == f"p_{NAMES[0]}"
    assert all(b["scale"] == 1 / 254 and b["offset"] == 0 and b["data_type"] == "uint8" and b["nodata"] == 255
               for b in bands)
    with rasterio.open(output / "probabilities.tif") as src:
        stored = src.read(1)
    with rasterio.open(output / "labels.tif") as src:
        labels = src.read(1)
    p = np.where(stored == 255, np.nan, stored * bands[0]["scale"] + bands[0]["offset"])
    assert np.array_equal(p[labels != 255], np.where(labels[labels != 255] == 0, 1.0, 0.0))  # one-hot: p = 1 or 0
