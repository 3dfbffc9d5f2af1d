"""item.json (STAC 1.1.0: projection, classification, file, processing) and quicklook.png, on real
output folders (tests/test_stac.py: footprint, time, id, MLM, schemas, catalog)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import stac_pydantic
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from shapely.geometry import Point, Polygon
from stores import store_from_array

from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.products.cog import export_labels_cog
from fcnseg.pipeline.products.quicklook import GREY_RANGE, class_boundaries, write_quicklook
from fcnseg.pipeline.products.scene_id import scene_id
from fcnseg.pipeline.products.stac import ZARR_MEDIA_TYPE, build_stac_item, class_entries, write_stac_item
from fcnseg.pipeline.products.stac_checks import (
    CLASSIFICATION_EXTENSION,
    FILE_EXTENSION,
    PROCESSING_EXTENSION,
    PROJECTION_EXTENSION,
    RASTER_EXTENSION,
    validate_stac_item,
)
from fcnseg.pipeline.synth import CLASSES, write_scene

COG = "image/tiff; application=geotiff; profile=cloud-optimized"
CREATED = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, Path]:
    """A 640 px synthetic scene: (image.tif, the true labels.tif)."""
    return write_scene(tmp_path_factory.mktemp("scene"), 640, seed=3)


def make_output(out: Path, labels: np.ndarray, crs: CRS, transform: Affine, names, colors, chunk: int = 256) -> Path:
    """An output folder as `fcnseg segment` leaves it (labels.zarr + labels.tif), without the model."""
    out.mkdir(parents=True, exist_ok=True)
    store_from_array(out / "labels.zarr", labels, chunk=chunk, class_names=names, class_colors=colors, crs=crs,
                     transform=transform, attrs={"model_sha256": "0" * 64})
    export_labels_cog(out / "labels.zarr", out / "labels.tif")
    return out


@pytest.fixture
def output(scene, tmp_path) -> Path:
    with rasterio.open(scene[1]) as src:
        labels, crs, transform = src.read(1), src.crs, src.transform
    labels[:32, :48] = 255  # some nodata
    return make_output(tmp_path / "out", labels, crs, transform,
                       [c.name for c in CLASSES], [list(c.color) for c in CLASSES])


@pytest.fixture
def full_output(scene, tmp_path) -> Path:
    """The scene's labels without any nodata: the footprint is the raster's rectangle."""
    with rasterio.open(scene[1]) as src:
        labels, crs, transform = src.read(1), src.crs, src.transform
    return make_output(tmp_path / "full", labels, crs, transform,
                       [c.name for c in CLASSES], [list(c.color) for c in CLASSES])


# --------------------------------------------------------------------------- item.json


def test_item_validates_and_carries_the_input_grid(scene, output):
    item = build_stac_item(output, input_path=scene[0], created=CREATED)
    stac_pydantic.Item.model_validate(item)
    assert item["stac_version"] == "1.1.0"
    assert set(item["stac_extensions"]) == {PROJECTION_EXTENSION, CLASSIFICATION_EXTENSION, FILE_EXTENSION,
                                            PROCESSING_EXTENSION, RASTER_EXTENSION}  # no model path: no MLM
    props = item["properties"]
    with rasterio.open(scene[0]) as src:
        assert props["proj:code"] == f"EPSG:{src.crs.to_epsg()}" == "EPSG:32633"
        assert props["proj:shape"] == [src.height, src.width]
        assert props["proj:transform"] == list(src.transform)[:6]
        assert props["proj:bbox"] == list(array_bounds(src.height, src.width, src.transform))
    assert "proj:wkt2" not in props
    assert props["datetime"] == props["created"] == "2025-03-04T05:06:07Z"  # the input has no acquisition time
    assert props["fcnseg:model_sha256"] == "0" * 64  # from the store when there is no run.json


def test_bbox_contains_the_footprint_and_is_lon_lat(scene, full_output):
    item = build_stac_item(full_output, input_path=scene[0])
    west, south, east, north = item["bbox"]
    assert -180 <= west < east <= 180 and -90 <= south < north <= 90
    assert 14.9 < west < 15.1 and 48.6 < south < 48.8  # UTM 33N, x 500000, y 5400000
    ring = item["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 4 * 20 + 1
    polygon = Polygon(ring)
    assert polygon.is_valid and polygon.exterior.is_ccw
    # every pixel-edge point of the raster, reprojected independently, lies in the bbox and the polygon
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    with rasterio.open(scene[0]) as src:
        t, n = src.transform, src.width
    for col, row in [(0, 0), (n, 0), (n, n), (0, n), (n / 2, 0), (0, n / 3), (n, 7 * n / 11)]:
        lon, lat = to_lonlat.transform(*(t @ (col, row)))
        assert west <= lon <= east and south <= lat <= north
        assert polygon.buffer(1e-9).contains(Point(lon, lat))


def test_label_assets_carry_classes_colours_and_nodata(scene, output):
    item = build_stac_item(output, input_path=scene[0])
    for key in ("labels", "labels_zarr"):
        classes = item["assets"][key]["classification:classes"]
        by_value = {c["value"]: c for c in classes}
        assert [by_value[k]["name"] for k in range(len(CLASSES))] == [c.name for c in CLASSES]
        assert by_value[0]["color_hint"] == "1E64C8"  # water (30, 100, 200)
        assert by_value[5]["color_hint"] == "C82828"  # building (200, 40, 40)
        assert by_value[255]["nodata"] is True and "color_hint" not in by_value[255]
    assert "classification:classes" not in item["properties"]


def test_class_names_fit_the_extension_pattern():
    classes = class_entries(["bare soil", "road/rail", "nodata", "bare_soil"], [(1, 2, 3)] * 4)
    assert [c["name"] for c in classes] == ["bare_soil", "road_rail", "nodata", "bare_soil_2", "nodata_2"]
    assert classes[0]["description"] == classes[0]["title"] == "bare soil"
    assert classes[0]["color_hint"] == "010203"
    assert classes[-1] == {"value": 255, "name": "nodata_2", "title": "no data",
                           "description": "No data: input nodata or outside the scene", "nodata": True}


def test_assets_only_for_files_that_exist_with_their_media_types(scene, output):
    assert set(build_stac_item(output, input_path=scene[0])["assets"]) == {"labels", "labels_pam", "labels_style", "labels_zarr"}

    run = {"input": str(scene[0]), "model_sha256": "ab" * 32, "parameters": {"tile": 512, "stitch": "crop"}}
    (output / "run.json").write_text(json.dumps(run))
    write_quicklook(scene[0], output / "labels.tif", output / "quicklook.png")
    polygons = gpd.GeoDataFrame({"class": [1]}, geometry=[Point(500010, 5399990).buffer(5)], crs="EPSG:32633")
    polygons.to_parquet(output / "polygons.parquet")
    polygons.to_file(output / "polygons.gpkg", driver="GPKG")

    path = write_stac_item(output, input_path=scene[0])
    assert path == output / "item.json"
    validate_stac_item(path)
    item = json.loads(path.read_text())
    stac_pydantic.Item.model_validate(item)
    types = {key: asset["type"] for key, asset in item["assets"].items()}
    assert types == {
        "labels": COG, "labels_pam": "application/xml", "labels_style": "application/xml", "labels_zarr": ZARR_MEDIA_TYPE, "run": "application/json", "quicklook": "image/png",
        "polygons_parquet": "application/vnd.apache.parquet", "polygons_gpkg": "application/geopackage+sqlite3",
    }
    assert ZARR_MEDIA_TYPE.startswith("application/vnd.zarr")
    for asset in item["assets"].values():
        assert asset["href"].startswith("./") and (output / asset["href"]).exists()
    assert item["assets"]["quicklook"]["roles"] == ["overview", "visual"]
    assert item["assets"]["quicklook"]["proj:shape"] == [640, 640]
    assert item["assets"]["run"]["roles"] == ["metadata"]
    assert item["properties"]["fcnseg:model_sha256"] == "ab" * 32  # run.json wins over the store
    assert item["properties"]["fcnseg:parameters"] == run["parameters"]
    assert [link["rel"] for link in item["links"]] == ["derived_from"]
    assert [p.name for p in output.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_rerun_gives_the_same_id_and_arguments_override_run_json(scene, output):
    (output / "run.json").write_text(json.dumps({"model_sha256": "cd" * 32, "parameters": {"tile": 256}}))
    first = json.loads(write_stac_item(output, input_path=scene[0]).read_text())
    second = json.loads(write_stac_item(output, input_path=str(scene[0]), model_sha256="ef" * 32,
                                        parameters={"tile": 1024}).read_text())
    assert first["id"] == second["id"] == scene_id(scene[0])
    assert first["id"].startswith("image-")
    assert second["properties"]["fcnseg:model_sha256"] == "ef" * 32
    assert second["properties"]["fcnseg:parameters"] == {"tile": 1024}


def test_datetime_comes_from_the_input_acquisition_tag(scene, output, tmp_path):
    image = tmp_path / "scene 2023.tif"
    shutil.copy(scene[0], image)
    with rasterio.open(image, "r+") as dst:
        dst.update_tags(ACQUISITIONDATETIME="2023:06:01 10:20:30")
    item = build_stac_item(output, input_path=image, created=CREATED)
    assert item["properties"]["datetime"] == "2023-06-01T10:20:30Z"
    assert item["properties"]["created"] == "2025-03-04T05:06:07Z"
    assert item["id"] == scene_id(image) and item["id"].startswith("scene_2023-")


def test_geographic_output_from_the_cog_alone_validates(tmp_path):
    labels = np.random.default_rng(0).integers(0, 3, (300, 400), dtype=np.uint8)
    transform = Affine(0.001, 0, 10.0, 0, -0.001, 50.0)
    out = make_output(tmp_path / "geo", labels, CRS.from_epsg(4326), transform,
                      ["open water", "tree cover", "built-up"], [(0, 0, 255), (0, 128, 0), (255, 0, 0)])
    shutil.rmtree(out / "labels.zarr")  # the item is built from labels.tif then
    acquired = datetime(2024, 7, 1, 12, tzinfo=UTC)  # given: the (remote) input is not opened
    path = write_stac_item(out, input_path="s3://bucket/scenes/geo_scene.tif", acquired=acquired)
    validate_stac_item(path)
    item = json.loads(path.read_text())
    assert item["id"] == scene_id("s3://bucket/scenes/geo_scene.tif") and item["id"].startswith("geo_scene-")
    assert item["properties"]["datetime"] == "2024-07-01T12:00:00Z"
    assert item["properties"]["proj:code"] == "EPSG:4326"
    assert item["properties"]["proj:transform"] == [0.001, 0.0, 10.0, 0.0, -0.001, 50.0]
    assert item["bbox"] == pytest.approx([10.0, 49.7, 10.4, 50.0])
    assert item["bbox"] == pytest.approx(item["properties"]["proj:bbox"])
    assert set(item["assets"]) == {"labels", "labels_pam", "labels_style"}
    names = [c["name"] for c in item["assets"]["labels"]["classification:classes"]]
    assert names == ["open_water", "tree_cover", "built-up", "nodata"]
    assert item["links"] == [{"rel": "derived_from", "href": "s3://bucket/scenes/geo_scene.tif",
                              "title": "segmented input raster"}]


def test_crs_without_an_epsg_code_gets_proj_code_null_and_wkt2(tmp_path):
    crs = CRS.from_proj4("+proj=laea +lat_0=52 +lon_0=10.5 +x_0=0 +y_0=0 +ellps=GRS80 +units=m +no_defs")
    labels = np.zeros((128, 160), np.uint8)
    out = make_output(tmp_path / "laea", labels, crs, Affine(10, 0, -5000, 0, -10, 8000), ["a"], [(9, 9, 9)])
    item = build_stac_item(out, input_path=tmp_path / "missing.tif")
    assert item["properties"]["proj:code"] is None
    assert CRS.from_wkt(item["properties"]["proj:wkt2"]) == crs
    assert item["links"] == []  # an input that is neither a URL nor an existing file gets no link
    west, south, east, north = item["bbox"]
    assert 10.3 < west < east < 10.8 and 51.9 < south < north < 52.2


def test_validation_failures_are_value_errors_with_the_reason(scene, output):
    path = write_stac_item(output, input_path=scene[0])
    item = json.loads(path.read_text())

    def check(broken: dict, reason: str) -> None:
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=reason):
            validate_stac_item(path)

    check({**item, "bbox": None}, "bbox")
    bad_class = json.loads(json.dumps(item))
    bad_class["assets"]["labels"]["classification:classes"][0]["name"] = "open water"
    check(bad_class, "does not match")
    bad_code = json.loads(json.dumps(item))
    del bad_code["properties"]["proj:code"]
    bad_code["properties"]["proj:code"] = None
    check(bad_code, "proj:wkt2")
    missing = json.loads(json.dumps(item))
    missing["assets"]["polygons_gpkg"] = {"href": "./polygons.gpkg", "type": "application/geopackage+sqlite3"}
    check(missing, "does not exist")


# --------------------------------------------------------------------------- quicklook.png


def test_quicklook_of_a_small_raster_keeps_its_size_and_tints_toward_the_class(scene, output):
    plain = write_quicklook(scene[0], output / "labels.tif", output / "plain.png", alpha=0.0)
    tinted = write_quicklook(scene[0], output / "labels.tif", output / "quicklook.png")
    with Image.open(tinted) as img:
        assert img.format == "PNG" and img.size == (640, 640) and img.mode == "RGBA"
        q = np.asarray(img).astype(int)
    q0 = np.asarray(Image.open(plain)).astype(int)
    with rasterio.open(output / "labels.tif") as src:
        labels = src.read(1)
    top = np.zeros(labels.shape, bool)
    top[32:400] = True  # the title sits in the upper-left corner, the legend in the lower-left
    top &= ~class_boundaries(labels, len(CLASSES))  # outlined, not tinted
    low, high = GREY_RANGE
    grey = (low + (q0[..., :3] @ [0.299, 0.587, 0.114]) * ((high - low) / 255)).round()  # the image, greyed
    for k, cls in enumerate(CLASSES):
        at = np.nonzero(top & (labels == k))
        assert at[0].size > 0, cls.name
        color = np.array(cls.color)
        expected = (0.45 * grey[at][:, None] + 0.55 * color).round()
        assert np.abs(q[at][:, :3] - expected).max() <= 1, cls.name
    nodata = labels == 255
    assert np.array_equal(q[nodata], q0[nodata])  # label nodata: the image as it is


def test_quicklook_draws_a_legend_with_the_class_colours(scene, output):
    path = write_quicklook(scene[0], output / "labels.tif", output / "quicklook.png")
    q = np.asarray(Image.open(path))
    corner = q[q.shape[0] // 2:, : q.shape[1] // 2]
    for cls in CLASSES:
        exact = np.all(corner == (*cls.color, 255), axis=-1)
        assert exact.sum() >= 25, cls.name  # a swatch
    assert np.all(corner == (255, 255, 255, 255), axis=-1).sum() > 50  # white outlines and text


def write_strip(folder: Path, width: int, height: int, bands: int) -> tuple[Path, Path]:
    """A wide image + labels.tif pair with overviews, made with rasterio (no scene renderer needed)."""
    folder.mkdir()
    transform = Affine(2.0, 0, 600000.0, 0, -2.0, 5500000.0)
    base = dict(driver="GTiff", width=width, height=height, crs="EPSG:32633", transform=transform, tiled=True,
                blockxsize=256, blockysize=256, compress="deflate")
    cols = np.arange(width)
    ramp = (100 + 50 * (cols % 200)).astype(np.uint16)
    image = np.broadcast_to(ramp, (bands, height, width)).copy()
    image[:, :, 3000:3200] = 0  # an input-nodata block
    labels = np.where(cols < width // 2, 0, 2).astype(np.uint8)[None, :].repeat(height, 0)
    labels[:, 3000:3200] = 255
    image_path, labels_path = folder / "image.tif", folder / "labels.tif"
    with rasterio.open(image_path, "w", count=bands, dtype="uint16", nodata=0, **base) as dst:
        dst.write(image)
        dst.build_overviews([2, 4, 8], Resampling.average)
    with rasterio.open(labels_path, "w", count=1, dtype="uint8", nodata=255, **base) as dst:
        dst.write(labels, 1)
        dst.write_colormap(1, {0: (0, 0, 255, 255), 1: (0, 255, 0, 255), 2: (255, 0, 0, 255)})
        dst.update_tags(class_names=json.dumps(["sea", "land", "city"]),
                        class_colors=json.dumps([[0, 0, 255], [0, 255, 0], [255, 0, 0]]))
        dst.build_overviews([2, 4, 8], Resampling.mode)
    return image_path, labels_path


def test_quicklook_of_a_wide_raster_is_2048_long_and_keeps_the_aspect(tmp_path):
    image, labels = write_strip(tmp_path / "strip", 4096, 300, bands=3)
    path = write_quicklook(image, labels, tmp_path / "strip" / "quicklook.png")
    with Image.open(path) as img:
        assert img.size[0] == 2048 and abs(img.size[1] - 300 * 2048 / 4096) <= 1
        q = np.asarray(img).astype(int)
    assert (q[:, 1500:1600, 3] == 0).all()  # input nodata: transparent (pixels 3000..3200 of 4096)
    assert (q[:, 1500:1600, :3] < 32).all()  # ... and dark
    assert (q[:20, 100:1000, 3] == 255).all()
    assert q[:20, 200:900, 2].mean() > q[:20, 200:900, 0].mean()  # "sea" (blue) on the left half
    assert q[:20, 1100:1400, 0].mean() > q[:20, 1100:1400, 2].mean()  # "city" (red) on the right


def test_quicklook_max_size_and_one_band_grey(tmp_path):
    image, labels = write_strip(tmp_path / "grey", 1000, 700, bands=1)
    path = write_quicklook(image, labels, tmp_path / "grey" / "q.png", max_size=500, alpha=0.0)
    q = np.asarray(Image.open(path)).astype(int)
    assert q.shape[:2] == (350, 500)
    top = q[:150]
    assert (top[..., 0] == top[..., 1]).all() and (top[..., 1] == top[..., 2]).all()
    assert top[..., 0].min() < 30 and top[..., 0].max() > 225  # stretched to the full range


def test_quicklook_refuses_labels_of_another_image(scene, tmp_path):
    _, labels = write_strip(tmp_path / "other", 300, 200, bands=3)
    with pytest.raises(ValueError, match="labels"):
        write_quicklook(scene[0], labels, tmp_path / "q.png")
    assert not (tmp_path / "q.png").exists()


def test_quicklook_reads_the_overviews_when_there_are_some(tmp_path):
    image, labels = write_strip(tmp_path / "stale", 4096, 300, bands=3)
    with rasterio.open(labels, "r+") as dst:  # full resolution all "land"; the overviews still say sea/city
        dst.write(np.ones((300, 4096), np.uint8), 1)
    q = np.asarray(Image.open(write_quicklook(image, labels, tmp_path / "q.png"))).astype(int)
    assert q[:20, 200:900, 2].mean() > q[:20, 200:900, 1].mean()  # blue "sea" from the 2x overview, not green


def test_no_item_for_an_incomplete_store(tmp_path):
    """An item would present an interrupted run's outputs as finished: refused, nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    labels = np.zeros((64, 64), np.uint8)
    store_from_array(out / "labels.zarr", labels, chunk=32, class_names=["a"], class_colors=[(1, 2, 3)],
                     complete=False)
    with pytest.raises(InputError, match="the label store is incomplete"):
        write_stac_item(out, input_path="scene.tif", created=CREATED)
    assert not (out / "item.json").exists()
