"""item.json's footprint, time, id, file/MLM/processing fields, offline schema validation, and the
catalog.json of a flow over many scenes; read back with pystac where it is installed."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.transform import array_bounds
from shapely.geometry import Polygon, box, shape
from stores import store_from_array

from fcnseg.models.checkpoint import file_sha256, read_card
from fcnseg.pipeline.products.cog import export_labels_cog
from fcnseg.pipeline.products.scene_id import scene_id
from fcnseg.pipeline.products.stac import build_stac_item, write_stac_item
from fcnseg.pipeline.products.stac_catalog import write_stac_catalog
from fcnseg.pipeline.products.stac_checks import (
    CLASSIFICATION_EXTENSION,
    FILE_EXTENSION,
    MLM_EXTENSION,
    PROCESSING_EXTENSION,
    PROJECTION_EXTENSION,
    RASTER_EXTENSION,
    check_stac_item,
    schema_registry,
    validate_stac_catalog,
    validate_stac_item,
)
from fcnseg.pipeline.products.stac_footprint import MAX_SIDE, Grid, read_valid_mask, reduce_valid
from fcnseg.pipeline.products.stac_time import parse_datetime
from fcnseg.pipeline.store import open_store
from fcnseg.pipeline.synth import CLASSES, write_scene

MODEL = Path(__file__).resolve().parents[1] / "models" / "weights" / "demo-fcn8s.safetensors"
CREATED = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
UTM = CRS.from_epsg(32633)
NAMES = [c.name for c in CLASSES]
COLORS = [list(c.color) for c in CLASSES]


def make_output(out: Path, labels: np.ndarray, crs: CRS, transform: Affine, chunk: int = 256) -> Path:
    """An output folder as `fcnseg segment` leaves it (labels.zarr + labels.tif), without the model."""
    out.mkdir(parents=True, exist_ok=True)
    store_from_array(out / "labels.zarr", labels, chunk=chunk, class_names=NAMES, class_colors=COLORS, crs=crs,
                     transform=transform, attrs={"model_sha256": "0" * 64})
    export_labels_cog(out / "labels.zarr", out / "labels.tif")
    return out


def to_utm(geometry: dict) -> shapely.Geometry:
    lonlat_to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    return shapely.transform(shape(geometry), lambda xy: np.column_stack(lonlat_to_utm.transform(xy[:, 0], xy[:, 1])))


def pixel_centres(valid: np.ndarray, transform: Affine) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(valid)
    return transform @ (cols + 0.5, rows + 0.5)


@pytest.fixture(scope="module")
def collar_scene(tmp_path_factory) -> tuple[Path, Path]:
    """A 640 px scene whose border is nodata (a tilted quadrilateral of data): (image.tif, labels.tif)."""
    return write_scene(tmp_path_factory.mktemp("collar"), 640, seed=5, collar=150)


@pytest.fixture(scope="module")
def collar_output(collar_scene, tmp_path_factory) -> tuple[Path, np.ndarray, Affine]:
    with rasterio.open(collar_scene[1]) as src:
        labels, transform = src.read(1), src.transform
    out = make_output(tmp_path_factory.mktemp("collar_out") / "out", labels, src.crs, transform)
    return out, labels, transform


@pytest.fixture
def model_output(collar_scene, collar_output, tmp_path) -> Path:
    """A copy of the collar output with run.json naming the demo model, as publish leaves it."""
    out = tmp_path / "out"
    shutil.copytree(collar_output[0], out)
    run = {"model": str(MODEL), "model_sha256": file_sha256(MODEL),
           "parameters": {"input": str(collar_scene[0]), "bands": [1, 2, 3, 4], "tile": 256}}
    (out / "run.json").write_text(json.dumps(run))
    return out


# --------------------------------------------------------------------------- footprint


def test_footprint_of_a_collared_scene_covers_the_valid_pixels_and_little_else(collar_scene, collar_output):
    out, labels, transform = collar_output
    assert 0.3 < (labels == 255).mean() < 0.6  # a wide collar
    item = build_stac_item(out, input_path=collar_scene[0], created=CREATED)
    footprint = to_utm(item["geometry"])
    rectangle = box(*array_bounds(*labels.shape, transform))
    assert footprint.is_valid and item["geometry"]["type"] == "Polygon"
    assert shape(item["geometry"]).exterior.is_ccw
    assert footprint.area < 0.75 * rectangle.area  # clearly less than the rectangle
    valid_area = (labels != 255).sum() * abs(transform.a * transform.e)
    assert footprint.area < valid_area * 1.05  # simplified and grown by a pixel: close to the data
    xs, ys = pixel_centres(labels != 255, transform)
    assert shapely.contains_xy(footprint, xs, ys).all()  # every valid pixel's centre, exactly
    assert len(item["geometry"]["coordinates"][0]) < 200  # simplified, not a staircase of pixels
    west, south, east, north = item["bbox"]
    lon, lat = shapely.get_coordinates(shape(item["geometry"])).T
    assert west == lon.min() and east == lon.max() and south == lat.min() and north == lat.max()


def store_with_collar(path: Path, height: int, width: int) -> tuple[np.ndarray, Affine]:
    """A store larger than MAX_SIDE whose data is a tilted band (nodata above and below it)."""
    rows, cols = np.mgrid[0:height, 0:width]
    labels = ((rows // 97 + cols // 61) % len(NAMES)).astype(np.uint8)
    labels[(rows < 200 + cols * 0.3) | (rows > height - 150 - cols * 0.2)] = 255
    transform = Affine(2.0, 0, 600000.0, 0, -2.0, 5500000.0)
    make_output(path, labels, UTM, transform)
    return labels, transform


@pytest.fixture(scope="module")
def large_output(tmp_path_factory) -> tuple[Path, np.ndarray, Affine]:
    out = tmp_path_factory.mktemp("large") / "out"
    labels, transform = store_with_collar(out, 1536, 2560)
    return out, labels, transform


def test_footprint_of_a_large_store_comes_from_a_coarse_level_in_bounded_memory(large_output):
    out, labels, transform = large_output
    grid = Grid(UTM, transform, *labels.shape)
    valid = read_valid_mask(out, grid)
    assert valid.mask.shape == (384, 640) and max(valid.mask.shape) <= MAX_SIDE  # level 4: the finest that fits
    assert valid.transform == transform @ Affine.scale(4)

    tracemalloc.start()
    item = build_stac_item(out, input_path="scene.tif", created=CREATED)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < labels.size / 2  # a full-resolution read alone would take labels.size bytes

    footprint = to_utm(item["geometry"])
    valid = labels != 255
    padded = np.pad(valid, 1, constant_values=False)
    boundary = valid & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    xs, ys = pixel_centres(boundary, transform)
    assert shapely.contains_xy(footprint, xs, ys).all()  # the outermost valid pixels (and so all)
    rectangle = box(*array_bounds(*labels.shape, transform))
    assert footprint.area < 0.9 * rectangle.area


def test_a_store_without_pyramid_and_a_lone_cog_give_the_same_coarse_validity(large_output, tmp_path):
    out, labels, transform = large_output
    grid = Grid(UTM, transform, *labels.shape)
    from_level = read_valid_mask(out, grid).mask

    bare = tmp_path / "bare"
    shutil.copytree(out, bare)
    group = open_store(bare / "labels.zarr")
    group.attrs.pop("multiscales")  # as a store from before pyramids: reduced window by window
    reduced = read_valid_mask(bare, grid)
    assert np.array_equal(reduced.mask, from_level) and reduced.transform == transform @ Affine.scale(4)

    shutil.rmtree(bare / "labels.zarr")  # labels.tif alone: its mode overview
    from_cog = read_valid_mask(bare, grid)
    assert np.array_equal(from_cog.mask, from_level)


def test_reduce_valid_is_any_valid_per_block_for_ragged_edges():
    rng = np.random.default_rng(1)
    labels = np.where(rng.random((203, 157)) < 0.01, 3, 255).astype(np.uint8)
    got = reduce_valid(lambda w: labels[w.toslices()], *labels.shape, factor=8, block=48)
    padded = np.zeros((26 * 8, 20 * 8), bool)
    padded[:203, :157] = labels != 255
    assert np.array_equal(got, padded.reshape(26, 8, 20, 8).any(axis=(1, 3)))


# --------------------------------------------------------------------------- datetime and id


@pytest.mark.parametrize("tags, expected", [
    ({"ACQUISITIONDATETIME": "2023-06-01T10:20:30.5+02:00"}, "2023-06-01T08:20:30Z"),
    ({"DATE_ACQUIRED": "2015-06-01", "SCENE_CENTER_TIME": '"10:20:30.1234567Z"'}, "2015-06-01T10:20:30Z"),
    ({"acquisition_date": "2021-12-31"}, "2021-12-31T00:00:00Z"),
    ({"TIFFTAG_DATETIME": "2023:06:01 10:20:30", "ACQUISITIONDATETIME": "2022-01-02 03:04:05"},
     "2022-01-02T03:04:05Z"),  # the acquisition key before the TIFF's creation time
])
def test_datetime_is_the_input_acquisition_time(collar_scene, collar_output, tmp_path, tags, expected):
    image = tmp_path / "scene.tif"
    shutil.copy(collar_scene[0], image)
    with rasterio.open(image, "r+") as dst:
        dst.update_tags(**tags)
    props = build_stac_item(collar_output[0], input_path=image, created=CREATED)["properties"]
    assert props["datetime"] == expected and props["fcnseg:datetime_source"] == "acquisition"
    assert props["processing:datetime"] == props["created"] == "2025-03-04T05:06:07Z"


@pytest.mark.parametrize("tags", [{"TIFFTAG_DATETIME": "2023:06:01 10:20:30"}, {"DATETIME": "2023-06-01T10:20:30Z"}])
def test_tiff_creation_time_is_not_the_acquisition_time(collar_scene, collar_output, tmp_path, tags):
    """Issue 25 item 3: TIFFTAG_DATETIME is when the file was written (TIFF spec), not when the
    ground was seen: the item's datetime is then the processing time, and says so."""
    image = tmp_path / "scene.tif"
    shutil.copy(collar_scene[0], image)
    with rasterio.open(image, "r+") as dst:
        dst.update_tags(**tags)
    with rasterio.open(image) as src:
        assert src.tags().items() >= tags.items()  # GDAL keeps the tag: the rule, not a lost tag, decides
    props = build_stac_item(collar_output[0], input_path=image, created=CREATED)["properties"]
    assert props["datetime"] == props["processing:datetime"] == "2025-03-04T05:06:07Z"
    assert props["fcnseg:datetime_source"] == "processing"


def test_datetime_falls_back_to_the_processing_time(collar_scene, collar_output, tmp_path, caplog):
    props = build_stac_item(collar_output[0], input_path=collar_scene[0], created=CREATED)["properties"]
    assert props["datetime"] == props["processing:datetime"] == "2025-03-04T05:06:07Z"  # no time in the input
    image = tmp_path / "blank.tif"
    shutil.copy(collar_scene[0], image)
    with rasterio.open(image, "r+") as dst:
        dst.update_tags(TIFFTAG_DATETIME="0000:00:00 00:00:00")  # TIFF's "unknown"
    before = datetime.now(UTC).replace(microsecond=0)
    image_acq = tmp_path / "blank_acq.tif"
    shutil.copy(collar_scene[0], image_acq)
    with rasterio.open(image_acq, "r+") as dst:
        dst.update_tags(ACQUISITIONDATETIME="0000:00:00 00:00:00")  # "unknown"
    props = build_stac_item(collar_output[0], input_path=image_acq)["properties"]  # created: now
    assert props["datetime"] == props["processing:datetime"]
    assert before <= datetime.fromisoformat(props["processing:datetime"]) <= datetime.now(UTC)
    assert "ACQUISITIONDATETIME" in caplog.text


def test_parse_datetime_forms():
    assert parse_datetime("2023:06:01 10:20:30") == datetime(2023, 6, 1, 10, 20, 30, tzinfo=UTC)
    assert parse_datetime("2023-06-01T10:20:30Z") == datetime(2023, 6, 1, 10, 20, 30, tzinfo=UTC)
    assert parse_datetime("2023-06-01 23:30:00-0130") == datetime(2023, 6, 2, 1, 0, tzinfo=UTC)
    for text in ("", "yesterday", "2023-13-01", "0000:00:00 00:00:00", "2023-06-01T25:00"):
        assert parse_datetime(text) is None, text


def test_id_is_unique_per_input_and_names_the_flow_scene_folder(collar_output):
    a, b = scene_id("/in/a/scene4.tif"), scene_id("/in/b/scene4.tif")
    assert a != b and a.startswith("scene4-") and b.startswith("scene4-") and len(a) == len("scene4-") + 8
    assert scene_id("s3://bucket/x/scene4.tif").startswith("scene4-")
    assert scene_id("my scene (2).tif").startswith("my_scene_2-")
    from fcnseg.pipeline.orchestrator.scenes import scene_folder

    for scene in ("/in/a/scene4.tif", "s3://bucket/x/scene4.tif", "relative/B04.tif"):
        assert scene_id(scene) == scene_folder("/out", scene).name  # item id == the scene's folder
    first = build_stac_item(collar_output[0], input_path="/in/a/scene4.tif", created=CREATED)
    second = build_stac_item(collar_output[0], input_path="/in/b/scene4.tif", created=CREATED)
    assert (first["id"], second["id"]) == (a, b)


# --------------------------------------------------------------------------- file, MLM, processing


def test_file_assets_carry_size_and_sha256_multihash_and_relative_hrefs(collar_scene, model_output):
    path = write_stac_item(model_output, input_path=collar_scene[0], created=CREATED)
    item = json.loads(path.read_text())
    assert set(item["assets"]) == {"labels", "labels_pam", "labels_style", "labels_zarr", "run", "model"}
    for key in ("labels", "run"):
        asset = item["assets"][key]
        file = model_output / asset["href"]
        assert asset["href"] == f"./{file.name}" and file.is_file()
        assert asset["file:size"] == file.stat().st_size
        assert asset["file:checksum"] == "1220" + hashlib.sha256(file.read_bytes()).hexdigest()
    zarr = item["assets"]["labels_zarr"]
    assert zarr["href"] == "./labels.zarr" and "file:checksum" not in zarr and "file:size" not in zarr
    for key, asset in item["assets"].items():  # only the checkpoint, which lives elsewhere, is absolute
        assert (asset["href"].startswith("file://")) == (key == "model"), key
    (model_output / "run.json").unlink()  # as publish writes the item: run.json comes right after it
    pending = build_stac_item(model_output, input_path=collar_scene[0], model_path=MODEL, pending=["run.json"])
    assert pending["assets"]["run"]["href"] == "./run.json" and "file:checksum" not in pending["assets"]["run"]


def test_mlm_fields_describe_the_model_from_its_card(collar_scene, model_output):
    item = build_stac_item(model_output, input_path=collar_scene[0], created=CREATED)
    card, props = read_card(MODEL), item["properties"]
    assert item["stac_extensions"] == [PROJECTION_EXTENSION, CLASSIFICATION_EXTENSION, FILE_EXTENSION,
                                       MLM_EXTENSION, PROCESSING_EXTENSION, RASTER_EXTENSION]
    assert props["mlm:name"] == "demo-fcn8s" and props["mlm:architecture"] == "FCN-8s"
    assert props["mlm:tasks"] == ["semantic-segmentation"] and props["mlm:framework"] == "PyTorch"
    torch_version = torch.__version__.split("+")[0]
    assert props["mlm:framework_version"].startswith(torch_version)
    assert props["mlm:total_parameters"] > 1_000_000
    (model_input,) = props["mlm:input"]
    assert model_input["bands"] == card.band_names == ["blue", "green", "red", "nir"]
    assert model_input["input"] == {"shape": [-1, 4, -1, -1], "dim_order": ["batch", "channel", "height", "width"],
                                    "data_type": "float32"}
    assert [(s["type"], s["mean"], s["stddev"]) for s in model_input["value_scaling"]] == [
        ("z-score", m, s) for m, s in zip(card.normalization.mean, card.normalization.std)]
    (output,) = props["mlm:output"]
    assert [c["name"] for c in output["classification:classes"]] == card.class_names
    assert output["result"]["shape"] == [-1, card.num_classes, -1, -1]
    model = item["assets"]["model"]
    assert model["href"] == MODEL.as_uri() and "mlm:model" in model["roles"]
    assert model["mlm:artifact_type"] == "safetensors.torch.save_file"
    assert model["file:checksum"] == "1220" + file_sha256(MODEL) and model["file:size"] == MODEL.stat().st_size
    assert [b["name"] for b in model["raster:bands"]] == card.band_names
    software = props["processing:software"]
    assert {"fcnseg", "torch", "gdal", "zarr"} <= set(software) and software["torch"].startswith(torch_version)
    assert software["gdal"] == rasterio.__gdal_version__
    assert props["processing:datetime"] == "2025-03-04T05:06:07Z"
    assert "FCN-8s" in props["processing:lineage"] and "demo-fcn8s" in props["processing:lineage"]


def test_no_model_no_mlm(collar_scene, collar_output, tmp_path, caplog):
    item = build_stac_item(collar_output[0], input_path=collar_scene[0])
    assert MLM_EXTENSION not in item["stac_extensions"] and "model" not in item["assets"]
    assert not any(k.startswith("mlm:") for k in item["properties"])
    item = build_stac_item(collar_output[0], input_path=collar_scene[0], model_path=tmp_path / "gone.safetensors")
    assert "model" not in item["assets"] and "no MLM fields" in caplog.text  # logged, the item still written


# --------------------------------------------------------------------------- offline validation


def test_every_shipped_schema_ref_resolves_locally():
    registry = schema_registry()

    def refs(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    resolved = 0
    for url in list(registry):
        resolver = registry.resolver(base_uri=url)
        for ref in refs(registry[url].contents):
            resolver.lookup(ref)  # raises when a $ref would need the network
            resolved += 1
    assert resolved > 100


def test_real_item_validates_offline_and_broken_ones_fail(collar_scene, model_output, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("validation tried to open a network connection")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    path = write_stac_item(model_output, input_path=collar_scene[0], created=CREATED)
    validate_stac_item(path)
    item = json.loads(path.read_text())

    def fails(reason: str, change) -> None:
        broken = json.loads(json.dumps(item))
        change(broken)
        with pytest.raises(ValueError, match=reason):
            check_stac_item(broken)

    fails("'mlm:architecture' is a required property", lambda i: i["properties"].pop("mlm:architecture"))
    fails("mlm:tasks", lambda i: i["properties"].update({"mlm:tasks": ["painting"]}))
    fails("value_scaling/0: 'stddev' is a required", lambda i: i["properties"]["mlm:input"][0]["value_scaling"][0].pop("stddev"))
    digest = item["assets"]["labels"]["file:checksum"]
    fails("file:checksum", lambda i: i["assets"]["labels"].update({"file:checksum": digest[4:]}))  # no multihash prefix
    fails("file:checksum", lambda i: i["assets"]["labels"].update({"file:checksum": "sha256:" + digest[4:]}))
    fails("file:checksum", lambda i: i["assets"]["labels"].update({"file:checksum": digest.upper()}))
    fails("file:size", lambda i: i["assets"]["labels"].update({"file:size": -1}))
    fails("classification:classes/0/name", lambda i: i["assets"]["labels"]["classification:classes"][0].update(name="open water"))
    fails("processing:datetime", lambda i: i["properties"].update({"processing:datetime": "2025-03-04T07:06:07+02:00"}))
    fails("properties/datetime", lambda i: i["properties"].update({"datetime": "2025-13-04T05:06:07Z"}))
    fails("proj:shape", lambda i: i["properties"].update({"proj:shape": [640]}))
    fails("lacks .*file", lambda i: i["stac_extensions"].remove(FILE_EXTENSION))
    fails("not shipped", lambda i: i["stac_extensions"].append("https://stac-extensions.github.io/eo/v1.1.0/schema.json"))
    fails("bbox", lambda i: i.update({"bbox": None}))

    stale = json.loads(json.dumps(item))
    stale["assets"]["labels"]["file:size"] += 1
    path.write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="file:size"):
        validate_stac_item(path)


# --------------------------------------------------------------------------- catalog.json


def scene_output(root: Path, scene: Path, labels: np.ndarray, transform: Affine) -> Path:
    out = make_output(root / scene_id(scene), labels, UTM, transform)
    return write_stac_item(out, input_path=scene, created=CREATED)


def test_catalog_lists_every_scene_and_merges_on_rerun(collar_output, tmp_path):
    _, labels, transform = collar_output
    root = tmp_path / "nightly"
    first = [scene_output(root, Path(f"/in/{d}/scene.tif"), labels, transform) for d in ("a", "b")]
    snapshot = {p: p.read_bytes() for p in first}
    catalog_path = write_stac_catalog(root, first)
    assert catalog_path == root / "catalog.json"
    validate_stac_catalog(catalog_path)
    catalog = json.loads(catalog_path.read_text())
    assert catalog["type"] == "Catalog" and catalog["stac_version"] == "1.1.0"
    items = [link for link in catalog["links"] if link["rel"] == "item"]
    assert [link["href"] for link in items] == sorted(f"./{p.parent.name}/item.json" for p in first)
    assert {link["title"] for link in items} == {scene_id("/in/a/scene.tif"), scene_id("/in/b/scene.tif")}
    for path in first:  # each item now links back to the catalog, relatively; the rest is as it was
        item, before = json.loads(path.read_text()), json.loads(snapshot[path])
        assert item["links"][:2] == [{"rel": rel, "href": "../catalog.json", "type": "application/json"}
                                     for rel in ("root", "parent")]
        assert item["links"][2:] == before["links"] and item["assets"] == before["assets"]
        validate_stac_item(path)
    again = {p: p.read_bytes() for p in first}
    write_stac_catalog(root, first)
    assert {p: p.read_bytes() for p in first} == again  # already linked: not rewritten

    catalog["title"] = "Nightly segmentations"  # edited by hand: kept
    catalog_path.write_text(json.dumps(catalog))
    third = scene_output(root, Path("/in/c/scene.tif"), labels, transform)
    write_stac_catalog(root, [third])  # the next night: one new scene, the old ones kept
    catalog = json.loads(catalog_path.read_text())
    assert len([link for link in catalog["links"] if link["rel"] == "item"]) == 3
    assert catalog["title"] == "Nightly segmentations"

    shutil.rmtree(first[0].parent)  # a scene folder removed: dropped from the catalog
    write_stac_catalog(root, [])
    hrefs = [link["href"] for link in json.loads(catalog_path.read_text())["links"] if link["rel"] == "item"]
    assert hrefs == sorted([f"./{first[1].parent.name}/item.json", f"./{third.parent.name}/item.json"])
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no temporary file left

    with pytest.raises(FileNotFoundError):
        write_stac_catalog(root, [root / "missing" / "item.json"])


def test_pystac_reads_the_item_and_walks_the_catalog(collar_scene, model_output, tmp_path):
    pystac = pytest.importorskip("pystac")
    from pystac.extensions.file import FileExtension
    from pystac.extensions.mlm import MLMExtension
    from pystac.extensions.projection import ProjectionExtension

    root = tmp_path / "root"
    folder = root / scene_id(collar_scene[0])
    shutil.copytree(model_output, folder)
    path = write_stac_item(folder, input_path=collar_scene[0], created=CREATED)
    item = pystac.Item.from_file(str(path))
    assert item.datetime == CREATED and item.id == folder.name
    assert ProjectionExtension.ext(item).code == "EPSG:32633"
    assert MLMExtension.ext(item).mlm_name == "demo-fcn8s" and MLMExtension.ext(item).architecture == "FCN-8s"
    assert FileExtension.ext(item.assets["labels"]).checksum.startswith("1220")
    assert Path(item.assets["labels"].get_absolute_href()) == folder / "labels.tif"

    catalog = pystac.Catalog.from_file(str(write_stac_catalog(root, [path])))
    walked = list(catalog.get_items(recursive=True))
    assert [i.id for i in walked] == [folder.name]
    assert Path(walked[0].assets["labels"].get_absolute_href()) == folder / "labels.tif"

    moved = tmp_path / "moved"  # the whole root copied: an item walks up to its catalog, by relative links
    shutil.copytree(root, moved)
    copied = pystac.Item.from_file(str(moved / folder.name / "item.json"))
    assert copied.get_root().id == catalog.id and copied.get_parent().id == catalog.id
    assert Path(copied.get_root().get_self_href()) == moved / "catalog.json"


def test_rectangle_stays_for_a_scene_without_nodata(tmp_path):
    labels = np.zeros((300, 400), np.uint8)
    out = make_output(tmp_path / "full", labels, UTM, Affine(1, 0, 500000, 0, -1, 5400000))
    item = build_stac_item(out, input_path="full.tif", created=CREATED)
    ring = item["geometry"]["coordinates"][0]
    assert len(ring) == 4 * 20 + 1 and Polygon(ring).exterior.is_ccw  # the densified rectangle
    rectangle = box(500000, 5399700, 500400, 5400000)
    assert to_utm(item["geometry"]).symmetric_difference(rectangle).area < 1e-3
