"""Labels as users bring them (issue 14): vector labels in any OGR format (and GeoParquet), footprint
layers without a class field, label rasters named only by a GDAL sidecar or not at all, and one
mapping from label values to class ids, recorded in the card, in training and in evaluation."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.features import shapes
from rasterio.windows import Window

from fcnseg.models.checkpoint import LabelMapping, load_checkpoint, read_card, save_checkpoint
from fcnseg.pipeline.classes import raster_classes
from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.products.styles import labels_pam
from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.training.evaluate import evaluate_raster
from fcnseg.pipeline.training.labels import open_labels, value_key
from fcnseg.pipeline.training.train import TrainRequest, train_model

FCNSEG = [sys.executable, "-m", "fcnseg"]
CLASSES = ["water", "forest", "cropland", "grassland", "road", "building"]
BUILDING = 5
#: driver, suffix, creation options: the formats users bring labels in
FORMATS = [
    ("GPKG", "gpkg", {}),
    ("SQLite", "sqlite", {"SPATIALITE": "YES"}),
    ("FlatGeobuf", "fgb", {}),
    ("GeoJSON", "geojson", {}),
    ("ESRI Shapefile", "shp", {}),
    ("GML", "gml", {}),
    ("parquet", "parquet", {}),
]


def fcnseg(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*FCNSEG, *map(str, args)], capture_output=True, text=True, timeout=300)


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("fcnseg: error:"), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, Path]:
    return write_scene(tmp_path_factory.mktemp("scene"), 256, seed=1)


@pytest.fixture(scope="module")
def truth(scene) -> np.ndarray:
    with rasterio.open(scene[1]) as src:
        return src.read(1)


def polygons(labels: Path, keep=None):
    """The label raster as pixel-exact polygons with the class id in ``cid``."""
    import geopandas as gpd
    from shapely.geometry import shape

    with rasterio.open(labels) as src:
        data, transform, crs = src.read(1), src.transform, src.crs
    mask = None if keep is None else keep(data)
    rows = [(shape(g), int(v)) for g, v in shapes(data, mask=mask, transform=transform)]
    return gpd.GeoDataFrame({"cid": [v for _, v in rows]}, geometry=[g for g, _ in rows], crs=crs)


def write_vectors(frame, path: Path, driver: str, options: dict) -> Path:
    if driver == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_file(path, driver=driver, engine="pyogrio", **options)
    return path


def read_all(path: Path, image: Path, **kwargs) -> np.ndarray:
    with rasterio.open(image) as src:
        source = open_labels(path, src, **kwargs)
        try:
            return source.read(Window(0, 0, src.width, src.height))
        finally:
            source.close()


def small_train(scene_image: Path, labels: Path, out: Path, **kwargs):
    request = TrainRequest(image=scene_image, labels=labels, out=out, steps=2, chip=64, batch_size=2,
                           device="cpu", progress=False, **kwargs)
    return train_model(request)


# --- 1. vector labels in any format, recognised by opening them -------------------------------------


@pytest.mark.parametrize(("driver", "suffix", "options"), FORMATS, ids=[f[1] for f in FORMATS])
def test_vector_labels_in_every_format_burn_exactly_the_label_raster(tmp_path, scene, truth, driver, suffix, options):
    image, labels = scene
    frame = polygons(labels)
    frame["name"] = [CLASSES[i] for i in frame["cid"]]
    path = write_vectors(frame, tmp_path / f"labels.{suffix}", driver, options)
    by_id = read_all(path, image, field="cid", class_names=CLASSES)
    by_name = read_all(path, image, field="name", class_names=CLASSES)
    np.testing.assert_array_equal(by_id, truth)
    np.testing.assert_array_equal(by_name, truth)


def test_spatialite_with_label_field_trains_from_the_command_line(tmp_path, scene):
    image, labels = scene
    frame = polygons(labels)
    frame["class"] = [CLASSES[i] for i in frame["cid"]]
    path = write_vectors(frame, tmp_path / "labels.sqlite", "SQLite", {"SPATIALITE": "YES"})
    out = tmp_path / "m.safetensors"
    result = fcnseg("train", "--image", image, "--labels", path, "--label-field", "class", "--out", out,
                    "--steps", 2, "--chip", 64, "--batch-size", 2, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    card = read_card(out)
    assert card.class_names == sorted(CLASSES)
    assert card.labels == LabelMapping(values=sorted(CLASSES), field="class", outside="unlabelled", kind="vector")


def test_a_vector_file_without_a_known_suffix_is_opened_as_vectors(tmp_path, scene, truth):
    image, labels = scene
    path = write_vectors(polygons(labels), tmp_path / "labels.dat", "GPKG", {})
    np.testing.assert_array_equal(read_all(path, image, field="cid", class_names=CLASSES), truth)


def test_a_file_of_several_layers_needs_label_layer(tmp_path, scene, truth):
    image, labels = scene
    frame = polygons(labels)
    path = tmp_path / "layers.gpkg"
    frame[frame["cid"] == BUILDING].to_file(path, layer="buildings", engine="pyogrio")
    frame.to_file(path, layer="landcover", engine="pyogrio")
    with pytest.raises(InputError, match=r"holds 2 layers with geometries \(buildings, landcover\); name one with --label-layer"):
        read_all(path, image, field="cid", class_names=CLASSES)
    np.testing.assert_array_equal(read_all(path, image, field="cid", class_names=CLASSES, layer="landcover"), truth)
    with pytest.raises(InputError, match=r"no layer 'roads' \(--label-layer; layers: buildings, landcover\)"):
        read_all(path, image, field="cid", class_names=CLASSES, layer="roads")
    line = error_line(fcnseg("train", "--image", image, "--labels", path, "--label-field", "cid", "--out",
                             tmp_path / "m.safetensors", "--steps", 1, "--chip", 64, "--device", "cpu"))
    assert str(path) in line and "--label-layer" in line


def test_a_style_table_beside_the_layer_is_not_a_second_layer(tmp_path, scene, truth):
    """fcnseg's own polygons.gpkg (a layer and QGIS's layer_styles table) reads without --label-layer."""
    from fcnseg.pipeline.products.styles import add_gpkg_style

    image, labels = scene
    path = write_vectors(polygons(labels), tmp_path / "styled.gpkg", "GPKG", {})
    add_gpkg_style(path, "styled", CLASSES, [(i, i, i) for i in range(len(CLASSES))])
    import pyogrio

    assert len(pyogrio.list_layers(path)) == 2
    np.testing.assert_array_equal(read_all(path, image, field="cid", class_names=CLASSES), truth)


# --- 2. footprints: a layer without a class field ----------------------------------------------------


@pytest.fixture(scope="module")
def buildings(scene, tmp_path_factory) -> Path:
    """Building outlines only: a layer with no attribute at all."""
    frame = polygons(scene[1], keep=lambda data: data == BUILDING)[["geometry"]]
    return write_vectors(frame, tmp_path_factory.mktemp("fp") / "buildings.fgb", "FlatGeobuf", {})


def test_footprints_burn_one_class_on_background(scene, truth, buildings):
    expected = (truth == BUILDING).astype(np.uint8)
    np.testing.assert_array_equal(read_all(buildings, scene[0]), expected)


def test_footprints_as_sparse_samples_leave_the_rest_unlabelled(scene, truth, buildings):
    from fcnseg.models.checkpoint import ClassInfo, ModelCard, Normalization

    card = ModelCard("fcn8s", 0.125, 4, [ClassInfo("background", (0, 0, 0)), ClassInfo("buildings", (1, 1, 1))],
                     Normalization([0.0] * 4, [1.0] * 4), labels=LabelMapping(["0", "1"], None, "background", "vector"))
    expected = np.where(truth == BUILDING, 1, 255).astype(np.uint8)
    np.testing.assert_array_equal(read_all(buildings, scene[0], outside="unlabelled", card=card), expected)


def test_footprint_training_records_background_and_the_layer(tmp_path, scene, buildings):
    _, _, card = small_train(scene[0], buildings, tmp_path / "m.safetensors")
    assert card.class_names == ["background", "buildings"]
    assert card.labels == LabelMapping(values=["0", "1"], field=None, outside="background", kind="vector")
    _, _, named = small_train(scene[0], buildings, tmp_path / "n.safetensors", class_name="house")
    assert named.class_names == ["background", "house"]


def test_footprints_refuse_unlabelled_outside_in_training(tmp_path, scene, buildings):
    out = tmp_path / "m.safetensors"
    line = error_line(fcnseg("train", "--image", scene[0], "--labels", buildings, "--out", out, "--outside",
                             "unlabelled", "--steps", 1, "--chip", 64))
    assert str(buildings) in line and "--outside unlabelled" in line and "--label-field" in line
    assert not out.exists()


def test_outside_takes_two_words(tmp_path, scene, buildings):
    line = error_line(fcnseg("train", "--image", scene[0], "--labels", buildings, "--out", tmp_path / "m.st",
                             "--outside", "nothing", "--steps", 1, "--chip", 64))
    assert "--outside must be background or unlabelled, got 'nothing'" in line


def test_field_labels_with_background_put_background_first(tmp_path, scene, truth):
    image, labels = scene
    frame = polygons(labels, keep=lambda data: (data == 0) | (data == BUILDING))
    frame["kind"] = ["lake" if i == 0 else "house" for i in frame["cid"]]
    path = write_vectors(frame, tmp_path / "two.gpkg", "GPKG", {})
    with rasterio.open(image) as src:
        source = open_labels(path, src, "kind", outside="background")
        assert source.class_names == ["background", "house", "lake"]
        assert source.mapping(3) == LabelMapping([None, "house", "lake"], "kind", "background", "vector")
        got = source.read(Window(0, 0, 256, 256))
    np.testing.assert_array_equal(got, np.select([truth == BUILDING, truth == 0], [1, 2], 0).astype(np.uint8))


# --- 3. label rasters named by a GDAL sidecar, or not at all ------------------------------------------


def binary_raster(path: Path, truth: np.ndarray, labels: Path) -> Path:
    """A 0/1 building mask on the scene's grid, with no tags."""
    with rasterio.open(labels) as src:
        profile = {**src.profile, "nodata": None}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write((truth == BUILDING).astype(np.uint8), 1)
    return path


def test_category_names_of_the_sidecar_name_the_classes(tmp_path, scene, truth):
    path = binary_raster(tmp_path / "mask.tif", truth, scene[1])
    Path(f"{path}.aux.xml").write_text(labels_pam(["open", "roof"], [(0, 0, 0), (255, 0, 0)]))
    with rasterio.open(path) as src:
        assert raster_classes(src).names == ["open", "roof"]


def test_attribute_table_of_the_sidecar_names_the_classes(tmp_path, scene, truth):
    path = binary_raster(tmp_path / "mask.tif", truth, scene[1])
    rat = """<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable tableType="thematic">
      <FieldDefn index="0"><Name>Label</Name><Type>2</Type><Usage>2</Usage></FieldDefn>
      <FieldDefn index="1"><Name>VALUE</Name><Type>0</Type><Usage>5</Usage></FieldDefn>
      <Row index="0"><F>roof</F><F>1</F></Row><Row index="1"><F>open</F><F>0</F></Row>
    </GDALRasterAttributeTable></PAMRasterBand></PAMDataset>"""
    Path(f"{path}.aux.xml").write_text(rat)
    with rasterio.open(path) as src:
        assert raster_classes(src).names == ["open", "roof"]


def test_unnamed_binary_raster_trains_as_class_0_and_class_1(tmp_path, scene, truth, caplog):
    path = binary_raster(tmp_path / "mask.tif", truth, scene[1])
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        _, _, card = small_train(scene[0], path, tmp_path / "m.safetensors")
    assert card.class_names == ["class_0", "class_1"]
    assert card.labels == LabelMapping(["0", "1"], None, "unlabelled", "raster")
    assert any("names no classes" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)


# --- 4. one mapping from values to ids, in training and evaluation ------------------------------------


def test_value_key_makes_text_and_numbers_one_value():
    assert value_key("1") == value_key(1) == value_key(1.0) == value_key(" 01 ") == value_key(np.int16(1)) == "1"
    assert value_key("water") == "water" and value_key(None) is None and value_key(float("nan")) is None


@pytest.fixture(scope="module")
def text_coded(scene, tmp_path_factory):
    """A model trained on a text field "1" … "6" (class id + 1) and vectors carrying those values."""
    import geopandas as gpd  # noqa: F401 - the fixture's frames

    image, labels = scene
    folder = tmp_path_factory.mktemp("coded")
    frame = polygons(labels)
    frame["code"] = [str(i + 1) for i in frame["cid"]]
    text = write_vectors(frame, folder / "text.gpkg", "GPKG", {})
    frame["code"] = [i + 1 for i in frame["cid"]]
    ints = write_vectors(frame, folder / "ints.fgb", "FlatGeobuf", {})
    with rasterio.open(labels) as src:
        profile, data = src.profile, src.read(1)
    coded = folder / "coded.tif"
    with rasterio.open(coded, "w", **profile) as dst:
        dst.write(data + 1, 1)
    checkpoint, _, card = small_train(image, text, folder / "m.safetensors", label_field="code")
    return checkpoint, card, text, ints, coded


def score(checkpoint: Path, image: Path, labels: Path, **kwargs) -> dict:
    import torch

    model, card = load_checkpoint(checkpoint)
    return evaluate_raster(model, card, image, labels, device=torch.device("cpu"), tile=128, **kwargs)


def test_text_codes_train_to_ids_in_their_numeric_order(text_coded):
    _, card, *_ = text_coded
    assert card.class_names == ["1", "2", "3", "4", "5", "6"]
    assert card.labels == LabelMapping(["1", "2", "3", "4", "5", "6"], "code", "unlabelled", "vector")


def test_evaluate_maps_text_integer_and_raster_values_through_the_card(tmp_path, scene, text_coded):
    checkpoint, card, text, ints, coded = text_coded
    image, labels = scene
    by_text = score(checkpoint, image, text)  # the card's field, not given again
    by_int = score(checkpoint, image, ints, label_field="code")
    by_raster = score(checkpoint, image, coded)
    # the same model scored against the ids themselves, the card's mapping left out (identity)
    import torch

    model, legacy = load_checkpoint(checkpoint)
    legacy.labels = None
    by_ids = evaluate_raster(model, legacy, image, labels, device=torch.device("cpu"), tile=128)
    assert int(np.sum(by_ids["confusion"])) == 256 * 256  # every pixel scored, none dropped as unknown
    assert by_text == by_int == by_raster == by_ids


def test_evaluate_refuses_values_the_card_does_not_know(tmp_path, scene, text_coded):
    checkpoint, _, _, _, _ = text_coded
    image, labels = scene
    line = error_line(fcnseg("evaluate", "--model", checkpoint, "--image", image, "--labels", labels,
                             "--device", "cpu", "--json"))
    assert str(labels) in line and "holds values [0]" in line and "maps to no class (1=1, 2=2" in line
    import geopandas as gpd

    frame = gpd.read_file(text_coded[3])
    frame.loc[0, "code"] = 9
    odd = tmp_path / "odd.gpkg"
    frame.to_file(odd)
    line = error_line(fcnseg("evaluate", "--model", checkpoint, "--image", image, "--labels", odd,
                             "--device", "cpu", "--json"))
    assert str(odd) in line and "code values [9] are none of the classes' values (1, 2, 3, 4, 5, 6)" in line


def test_card_keeps_the_mapping_and_old_cards_read_without_it(tmp_path, text_coded):
    checkpoint, card, *_ = text_coded
    model, loaded = load_checkpoint(checkpoint)
    assert loaded.labels == card.labels
    loaded.labels = None
    old = save_checkpoint(tmp_path / "old.safetensors", model, loaded)
    assert read_card(old).labels is None
    raw = json.loads(json.dumps(loaded.to_json()))
    raw.pop("labels")
    assert type(loaded).from_json(raw).labels is None


def test_training_on_from_init_maps_values_as_the_init_did(tmp_path, scene, truth, text_coded):
    """Staged training (FCN-32s -> 16s -> 8s) on other labels of the same classes: a raster of the
    text field's values 1 … 6 trains on as ids 0 … 5, not as ids 1 … 6 (the last out of range)."""
    checkpoint, card, _, _, coded = text_coded
    image, _ = scene
    request = TrainRequest(image=image, labels=coded, out=tmp_path / "on.safetensors", init=checkpoint, arch="fcn16s",
                           steps=1, chip=64, batch_size=2, device="cpu", progress=False)
    from fcnseg.pipeline.training.train import open_training_labels

    with rasterio.open(image) as src:
        source = open_training_labels(request, src, card)
        np.testing.assert_array_equal(source.read(Window(0, 0, src.width, src.height)), truth)
        source.close()
    _, _, on = train_model(request)
    assert on.class_names == card.class_names
    assert on.labels == LabelMapping(["1", "2", "3", "4", "5", "6"], None, "unlabelled", "raster")
    assert score(tmp_path / "on.safetensors", image, coded)["mean_iou"] is not None  # evaluates through its card


# --- 5. input checks -----------------------------------------------------------------------------------


def test_vectors_entirely_outside_the_image_are_refused(tmp_path, scene):
    from shapely.affinity import translate

    image, labels = scene
    frame = polygons(labels)
    frame["geometry"] = frame.geometry.apply(lambda g: translate(g, 1e5, 0))
    path = write_vectors(frame, tmp_path / "far.gpkg", "GPKG", {})
    line = error_line(fcnseg("train", "--image", image, "--labels", path, "--label-field", "cid",
                             "--classes", ",".join(CLASSES), "--out", tmp_path / "m.st", "--steps", 1, "--chip", 64))
    assert str(path) in line and "no feature lies within the image image.tif" in line


def test_vectors_in_another_crs_are_reprojected(tmp_path, scene, truth):
    image, labels = scene
    frame = polygons(labels).to_crs("EPSG:4326")
    path = write_vectors(frame, tmp_path / "wgs84.geojson", "GeoJSON", {})
    got = read_all(path, image, field="cid", class_names=CLASSES)
    assert (got == truth).mean() > 0.97  # edges move by reprojection, classes stay


def test_a_missing_field_names_the_fields(tmp_path, scene):
    image, labels = scene
    path = write_vectors(polygons(labels), tmp_path / "l.gpkg", "GPKG", {})
    with rasterio.open(image) as src, pytest.raises(InputError, match=r"no field 'cls' \(--label-field; fields: cid\)"):
        open_labels(path, src, "cls")


def test_a_label_raster_off_the_image_grid_is_refused(tmp_path, scene, truth):
    image, labels = scene
    with rasterio.open(labels) as src:
        profile = {**src.profile, "width": 200, "height": 200}
    small = tmp_path / "small.tif"
    with rasterio.open(small, "w", **profile) as dst:
        dst.write(truth[:200, :200], 1)
    line = error_line(fcnseg("train", "--image", image, "--labels", small, "--out", tmp_path / "m.st",
                             "--steps", 1, "--chip", 64))
    assert f"{small}: label raster is not on the image's grid (size or transform differ)" in line
