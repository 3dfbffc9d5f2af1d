"""``segment --confidence``: the per-pixel confidence band (the top class's probability, uint8 p x 254,
255 = nodata) in labels.zarr, confidence.tif, confidence.png, item.json, the class-area table and
``fcnseg query``.

The scene is what users bring: rotated 45° in a stair-stepped nodata collar, so whole chunks hold
no valid pixel (int16 with -9999 in EPSG:4326, stripped, in the second scene). A tiled run's band
equals a whole-image run's exactly, for crop and for blend, and a run that lost chunks (as a
killed one does) recomputes them to the same bytes. Runs are shared by the module, on the
session's Dask workers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from rio_cogeo.cogeo import cog_validate

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.analysis.query import query_classes
from fcnseg.pipeline.orchestrator import OutputConflict, SegmentOptions, segment
from fcnseg.pipeline.synth import write_scene

#: 4 x 4 chunks of 64 px, the four corners wholly in the collar; the model's full halo.
TILED = {"tile": 64}
#: One chunk: the whole image in one tile.
WHOLE = {"tile": 256}
STORE_ONLY = {"cog": False, "polygons": False, "quicklook": False, "stac": False}


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return write_scene(tmp_path_factory.mktemp("rotated"), 256, seed=3, rotate=45)[0]


@pytest.fixture(scope="module")
def runs(image, cluster, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """OUT of a whole-image and a tiled run, for crop and for blend; the tiled crop run makes every product."""
    outs = {}
    for stitch in ("crop", "blend"):
        for name, tiling in (("whole", WHOLE), ("tiled", TILED)):
            out = tmp_path_factory.mktemp(f"{stitch}-{name}") / "out"
            products = {} if (stitch, name) == ("crop", "tiled") else STORE_ONLY
            options = SegmentOptions(stitch=stitch, confidence=True, probabilities=True, **tiling, **products)
            segment(image, DEMO_MODEL, out, options, scheduler=cluster, progress=False)
            outs[stitch, name] = out
    return outs


def band(out: Path, name: str = "confidence") -> np.ndarray:
    return zarr.open_group(str(out / "labels.zarr"), mode="r")[name][:]


def chunk_is_empty(labels: np.ndarray, tile: int) -> np.ndarray:
    rows, cols = -(-labels.shape[0] // tile), -(-labels.shape[1] // tile)
    return (labels.reshape(rows, tile, cols, tile) == 255).all(axis=(1, 3))


@pytest.mark.parametrize("stitch", ["crop", "blend"])
def test_a_tiled_runs_confidence_equals_a_whole_image_runs(runs, stitch):
    whole, tiled = band(runs[stitch, "whole"]), band(runs[stitch, "tiled"])
    labels = band(runs[stitch, "tiled"], "labels")
    assert whole.dtype == np.uint8 and whole.shape == (256, 256)
    np.testing.assert_array_equal(tiled, whole)
    assert np.array_equal(tiled == 255, labels == 255)  # nodata exactly where the labels have it
    empty = chunk_is_empty(labels, TILED["tile"])
    assert empty.any() and not empty.all()  # whole chunks of nodata beside partly valid ones
    valid = tiled[tiled != 255]
    assert valid.min() >= np.ceil(254 / 6) - 1 and valid.max() <= 254  # a top class of six: p >= 1/6
    assert len(np.unique(valid)) > 20  # a real spread, not a constant


def test_blend_cross_fades_the_band_where_tiles_disagree(image, cluster, tmp_path):
    """With a halo short of the receptive field, neighbouring tiles disagree at their borders: there
    blend's band is the cross-fade of theirs (not the tile's own, crop's), and away from the
    borders it is crop's. (With the full halo the tiles agree, and the equality above holds.)"""
    from fcnseg.pipeline.segment.blend import ramp_width, ring_mask
    from fcnseg.pipeline.tiles import iter_tiles

    short = {"tile": 128, "halo": 32}
    bands = {}
    for stitch in ("crop", "blend"):
        out = tmp_path / stitch
        segment(image, DEMO_MODEL, out, SegmentOptions(stitch=stitch, confidence=True, **short, **STORE_ONLY),
                scheduler=cluster, progress=False)
        bands[stitch] = band(out)
    r = ramp_width(128, 32)
    zone = np.zeros((256, 256), bool)
    for t in iter_tiles(256, 256, 128, 32):
        rows, cols = t.core.toslices()
        zone[rows, cols] = ring_mask(t.core, t.core, 256, 256, r)
    crop, blend = bands["crop"], bands["blend"]
    assert np.array_equal(crop[~zone], blend[~zone])
    valid = crop != 255
    assert np.array_equal(valid, blend != 255)
    assert (crop[zone & valid] != blend[zone & valid]).sum() > 100


@pytest.mark.parametrize("stitch", ["crop", "blend"])
def test_confidence_is_the_stored_probability_of_the_label(runs, stitch):
    """Outside blend's cross-fade zones (everywhere for crop, the whole image in one tile), the band is
    the probabilities' value of the pixel's label: the largest of them."""
    out = runs[stitch, "whole" if stitch == "blend" else "tiled"]
    confidence, probs, labels = band(out), band(out, "probabilities"), band(out, "labels")
    valid = labels != 255
    assert np.array_equal(confidence[valid], probs.max(axis=0)[valid])
    picked = np.take_along_axis(probs, np.where(valid, labels, 0)[None].astype(np.intp), axis=0)[0]
    assert np.array_equal(confidence[valid], picked[valid])


def test_confidence_tif_is_a_cog_of_the_band(runs):
    out = runs["crop", "tiled"]
    path = out / "confidence.tif"
    assert cog_validate(str(path))[0]
    with rasterio.open(path) as src, rasterio.open(out / "labels.tif") as labels:
        assert (src.count, src.dtypes[0], src.nodata) == (1, "uint8", 255)
        assert (src.crs, src.transform, src.shape) == (labels.crs, labels.transform, labels.shape)
        assert src.scales == (1 / 254,) and src.offsets == (0.0,) and src.descriptions == ("confidence",)
        np.testing.assert_array_equal(src.read(1), band(out))
        assert src.overviews(1)  # average overviews for a glance in QGIS


def test_the_class_area_table_and_query_give_each_classes_mean_confidence(runs):
    out = runs["crop", "tiled"]
    confidence, labels = band(out), band(out, "labels")
    run = json.loads((out / "run.json").read_text())
    assert run["parameters"]["confidence"] is True and "confidence.tif" in run["files"]
    rows = {r["class_id"]: r for r in run["class_areas"]}
    for class_id, row in rows.items():
        mine = labels == class_id
        if mine.any():  # the exact mean of the codes, as a probability
            assert row["mean_confidence"] == float(confidence[mine].sum(dtype=np.int64)) / (254 * mine.sum())
        else:
            assert "mean_confidence" not in row
    assert sum("mean_confidence" in r for r in rows.values()) >= 3
    queried = query_classes(out / "labels.zarr").to_dict()["classes"]
    assert queried == run["class_areas"]  # the store counted again: the same table, to the last bit
    without = query_classes(out / "labels.tif").to_dict()["classes"]
    assert all("mean_confidence" not in r for r in without)  # a GeoTIFF of labels alone has no band


def test_the_stac_item_describes_the_band_and_its_view(runs):
    from fcnseg.pipeline.products.stac_checks import validate_stac_item

    out = runs["crop", "tiled"]
    validate_stac_item(out / "item.json")
    assets = json.loads((out / "item.json").read_text())["assets"]
    confidence = assets["confidence"]
    assert confidence["href"] == "./confidence.tif" and confidence["roles"] == ["data"]
    assert confidence["raster:bands"] == [{"data_type": "uint8", "nodata": 255, "spatial_resolution": 1.0,
                                           "sampling": "area", "scale": 1 / 254, "offset": 0.0}]
    assert confidence["bands"][0]["name"] == "confidence"
    view = assets["confidence_view"]
    assert view["href"] == "./confidence.png" and view["type"] == "image/png" and "overview" in view["roles"]
    assert "file:checksum" in confidence and "file:checksum" in view


def test_the_confidence_view_shows_the_bins_and_leaves_nodata_transparent(runs):
    from PIL import Image

    from fcnseg.pipeline.products.quicklook_confidence import BIN_COLORS, confidence_bins

    out = runs["crop", "tiled"]
    with Image.open(out / "confidence.png") as img, Image.open(out / "quicklook.png") as quicklook:
        rgba = np.asarray(img.convert("RGBA"))
        assert img.size == quicklook.size == (256, 256)  # the scene's size: one picture pixel per pixel
    confidence = band(out)
    body = (slice(40, 200), slice(100, 160))  # inside the footprint, clear of the title and the legend
    assert (confidence[body] != 255).all()
    np.testing.assert_array_equal(rgba[body][..., :3], BIN_COLORS[confidence_bins(confidence[body])])
    assert len(np.unique(confidence_bins(confidence[body]))) >= 2
    corner = (slice(30, 60), slice(226, 256))  # the upper-right corner: the collar, under no annotation
    assert (confidence[corner] == 255).any()
    np.testing.assert_array_equal(rgba[corner][..., 3], np.where(confidence[corner] == 255, 0, 255))


@pytest.mark.parametrize("stitch", ["crop", "blend"])
def test_chunks_lost_as_in_a_killed_run_are_recomputed_to_the_same_band(runs, image, cluster, stitch):
    out = runs[stitch, "tiled"]
    before, table = band(out), json.loads((out / "run.json").read_text())["class_areas"]
    for marker in sorted((out / ".fcnseg-run" / "done").iterdir())[5:8]:
        marker.unlink()
    options = SegmentOptions(stitch=stitch, confidence=True, probabilities=True, **TILED,
                             **({} if stitch == "crop" else STORE_ONLY))
    again = segment(image, DEMO_MODEL, out, options, scheduler=cluster, progress=False)
    assert again.chunks.computed + again.chunks.skipped_nodata == 3
    np.testing.assert_array_equal(band(out), before)
    assert [a.to_json() for a in again.class_areas] == table


def test_a_run_without_the_band_is_not_reused_for_one_with_it(runs, image, cluster):
    out = runs["blend", "whole"]
    with pytest.raises(OutputConflict, match=r"--confidence off \(was on\)"):
        segment(image, DEMO_MODEL, out, SegmentOptions(stitch="blend", probabilities=True, **WHOLE, **STORE_ONLY),
                scheduler=cluster, progress=False)


def test_int16_in_epsg_4326_stripped(tmp_path, cluster):
    """Geographic pixels (areas per row), int16 with -9999, a stripped TIFF: the band is 255 exactly
    on nodata and the class table's means are the band's, summed from the chunks' markers."""
    image, _ = write_scene(tmp_path / "scene", 192, seed=5, rotate=30, dtype="int16", crs="EPSG:4326",
                           layout="stripped")
    out = tmp_path / "out"
    report = segment(image, DEMO_MODEL, out, SegmentOptions(confidence=True, **TILED, **STORE_ONLY),
                     scheduler=cluster, progress=False)
    confidence, labels = band(out), band(out, "labels")
    with rasterio.open(image) as src:
        nodata = src.read_masks(1) == 0
    assert nodata.any() and np.array_equal(confidence == 255, nodata) and np.array_equal(labels == 255, nodata)
    for row in report.class_areas:
        mine = labels == row.class_id
        expected = float(confidence[mine].sum(dtype=np.int64)) / (254 * mine.sum()) if mine.any() else None
        assert row.mean_confidence == expected
    counted = [(c.pixels, c.mean_confidence) for c in query_classes(out / "labels.zarr").classes]
    assert counted == [(c.pixels, c.mean_confidence) for c in report.class_areas]  # areas: float sums of rows


def test_a_point_query_gives_the_pixels_confidence(runs):
    out = runs["crop", "tiled"]
    confidence = band(out)
    with rasterio.open(out / "labels.tif") as src:
        x, y = src.xy(128, 128)
    result = query_classes(out / "labels.zarr", point=(x, y))
    assert result.classes[0].mean_confidence == int(confidence[128, 128]) / 254


def test_the_command_line_flag_makes_the_band_and_verify_accepts_the_output(image, cluster, runs, tmp_path):
    """``fcnseg segment --confidence`` (in this process), its report's table and JSON; then ``fcnseg
    verify`` on the output with every product (its item lists confidence.tif and confidence.png)."""
    from typer.testing import CliRunner

    from fcnseg.cli import app
    from fcnseg.pipeline.output.verify import verify_output

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", str(image), "--out", str(out), "--scheduler", cluster, "--tile", "64",
                                      "--confidence", "--no-polygons", "--no-stac", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"confidence.tif", "confidence.png"} <= set(report["files"]) and report["parameters"]["confidence"]
    assert any("mean_confidence" in c for c in report["class_areas"])
    np.testing.assert_array_equal(band(out), band(runs["crop", "tiled"]))
    checked = verify_output(runs["crop", "tiled"])
    assert checked.ok, checked


def test_with_tta_a_tiled_runs_band_still_equals_a_whole_image_runs(image, cluster, tmp_path):
    """``--tta flip``: the band is the softmax of the views' averaged logits, tiled as whole."""
    bands = []
    for name, tiling in (("whole", WHOLE), ("tiled", TILED)):
        segment(image, DEMO_MODEL, tmp_path / name, SegmentOptions(confidence=True, tta="flip", **tiling, **STORE_ONLY),
                scheduler=cluster, progress=False)
        bands.append(band(tmp_path / name))
    np.testing.assert_array_equal(bands[1], bands[0])
    assert (bands[0] != 255).any()
