"""Training and evaluation refuse nonsense before any work starts: one error line naming the file
or the option, exit status 1, no traceback, no checkpoint written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from fcnseg.pipeline.synth import write_scene

FCNSEG = [sys.executable, "-m", "fcnseg"]
CLASSES = "water,forest,cropland,grassland,road,building"


def fcnseg(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([*FCNSEG, *map(str, args)], capture_output=True, text=True, timeout=300)


def refused(result: subprocess.CompletedProcess, *names: str) -> str:
    """The one error line of a refused command, checked to name everything in ``names``."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("fcnseg: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, Path]:
    return write_scene(tmp_path_factory.mktemp("scene"), 256, seed=3)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A random 4-band checkpoint with the synthetic scene's six classes."""
    out = tmp_path_factory.mktemp("model") / "six.safetensors"
    result = fcnseg("init-model", out, "--bands", 4, "--classes", 6, "--width", 0.125, "--class-names", CLASSES)
    assert result.returncode == 0, result.stderr
    return out


def copy_labels(labels: Path, out: Path, edit=None, **profile_changes) -> Path:
    """labels.tif rewritten with ``edit(array)`` applied and profile entries changed (tags kept)."""
    with rasterio.open(labels) as src:
        data, profile, tags = src.read(1), src.profile, src.tags()
    if edit is not None:
        edit(data)
    with rasterio.open(out, "w", **{**profile, **profile_changes}) as dst:
        dst.write(data, 1)
        dst.update_tags(**tags)
    return out


def unknown_ids(data: np.ndarray) -> None:
    data[10:12, 10:12] = 7
    data[200, 100] = 9
    data[0, 0] = 255  # unlabelled: never a class


@pytest.mark.parametrize(
    ("option", "value"),
    [("--steps", 0), ("--steps", -3), ("--batch-size", 0), ("--chip", 16), ("--lr", 0), ("--val-every", 0),
     ("--width", -0.5)],
)
def test_train_refuses_options_that_cannot_train(tmp_path, option, value):
    out = tmp_path / "m.safetensors"
    missing = tmp_path / "no-such-image.tif"  # the options are refused before any file is opened
    result = fcnseg("train", "--image", missing, "--labels", missing, "--out", out, option, value)
    line = refused(result, option)
    assert "no-such-image" not in line
    assert not out.exists()


def test_train_refuses_labels_in_another_crs(tmp_path, scene):
    image, labels = scene
    other = copy_labels(labels, tmp_path / "labels-3857.tif", crs="EPSG:3857")
    out = tmp_path / "m.safetensors"
    line = refused(fcnseg("train", "--image", image, "--labels", other, "--out", out, "--steps", 1, "--chip", 64),
                   str(other), "EPSG:3857", "EPSG:32633")
    assert "label raster is in EPSG:3857, the image in EPSG:32633" in line
    assert not out.exists()


def test_train_refuses_class_ids_beyond_the_classes(tmp_path, scene):
    image, labels = scene
    bad = copy_labels(labels, tmp_path / "labels.tif", unknown_ids)
    out = tmp_path / "m.safetensors"
    line = refused(fcnseg("train", "--image", image, "--labels", bad, "--out", out, "--steps", 1, "--chip", 64),
                   str(bad))
    assert "holds class ids [7, 9] but the model has 6 classes (water, forest, cropland, grassland, road, building)" in line
    assert not out.exists()


def test_train_refuses_bad_validation_labels_before_training(tmp_path, scene):
    image, labels = scene
    bad = copy_labels(labels, tmp_path / "val-labels.tif", unknown_ids)
    out = tmp_path / "m.safetensors"
    result = fcnseg("train", "--image", image, "--labels", labels, "--val-image", image, "--val-labels", bad,
                    "--out", out, "--steps", 1, "--chip", 64, "--batch-size", 1)
    assert "holds class ids [7, 9]" in refused(result, str(bad))
    assert not out.exists()


def test_train_refuses_vector_class_ids_beyond_the_classes(tmp_path, scene):
    import geopandas as gpd
    from shapely.geometry import box

    image, _ = scene
    with rasterio.open(image) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    vectors = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame(
        {"cls": [1, 8], "geometry": [box(left, bottom, left + 100, top), box(left + 100, bottom, right, top)]}, crs=crs
    ).to_file(vectors)
    out = tmp_path / "m.safetensors"
    result = fcnseg("train", "--image", image, "--labels", vectors, "--label-field", "cls", "--classes", CLASSES,
                    "--out", out, "--steps", 1, "--chip", 64)
    assert "holds class ids [8] but the model has 6 classes" in refused(result, str(vectors))
    assert not out.exists()


def test_evaluate_refuses_class_ids_the_model_does_not_have(tmp_path, scene, model):
    image, labels = scene
    bad = copy_labels(labels, tmp_path / "labels.tif", unknown_ids)
    result = fcnseg("evaluate", "--model", model, "--image", image, "--labels", bad, "--json", "--device", "cpu")
    assert "holds class ids [7, 9] but the model has 6 classes" in refused(result, str(bad))
    assert result.stdout == ""


def test_evaluate_refuses_labels_with_more_classes_than_the_model(tmp_path, scene):
    image, labels = scene
    small = tmp_path / "three.safetensors"
    assert fcnseg("init-model", small, "--bands", 4, "--classes", 3, "--width", 0.125).returncode == 0
    result = fcnseg("evaluate", "--model", small, "--image", image, "--labels", labels, "--json", "--device", "cpu")
    assert "holds class ids [3, 4, 5] but the model has 3 classes (class_0, class_1, class_2)" in refused(result, str(labels))


def test_evaluate_refuses_labels_in_another_crs(tmp_path, scene, model):
    image, labels = scene
    other = copy_labels(labels, tmp_path / "labels-4326.tif", crs="EPSG:4326")
    result = fcnseg("evaluate", "--model", model, "--image", image, "--labels", other, "--device", "cpu")
    assert "label raster is in EPSG:4326, the image in EPSG:32633" in refused(result, str(other))


def test_valid_labels_still_train_and_evaluate(tmp_path, scene, model):
    image, labels = scene
    out = tmp_path / "m.safetensors"
    trained = fcnseg("train", "--image", image, "--labels", labels, "--out", out, "--steps", 2, "--chip", 64,
                     "--batch-size", 1, "--device", "cpu")
    assert trained.returncode == 0, trained.stderr
    assert out.exists()
    scored = fcnseg("evaluate", "--model", model, "--image", image, "--labels", labels, "--json", "--device", "cpu")
    assert scored.returncode == 0, scored.stderr


@pytest.mark.parametrize(("dtype", "tiled"), [("uint8", False), ("uint16", True), ("int16", False)])
def test_label_scan_finds_every_unknown_id_block_by_block(tmp_path, scene, monkeypatch, dtype, tiled):
    from fcnseg.pipeline.training import labels as label_module
    from fcnseg.pipeline.training.labels import RasterLabels, scan_windows

    monkeypatch.setattr(label_module, "SCAN_PIXELS", 64 * 64)  # many windows on a small raster

    image, labels = scene
    with rasterio.open(labels) as src:
        data = src.read(1).astype(dtype)
        profile = {**src.profile, "dtype": dtype, "tiled": tiled, "nodata": 254}
    if tiled:
        profile.update(blockxsize=64, blockysize=64)
    else:
        profile.pop("blockxsize"), profile.pop("blockysize")
    data[255, 255] = 6  # the last pixel
    data[0, 0] = 254  # nodata: not a label
    data[3, 3] = 255  # unlabelled: not a label
    if dtype != "uint8":
        data[100, 7] = 300
    if dtype == "int16":
        data[101, 7] = -1  # below zero: unlabelled, as the label reader reads it
    path = tmp_path / "labels.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    with rasterio.open(image) as img:
        source = RasterLabels(path, img)
        try:
            windows = list(scan_windows(source.src))
            assert len(windows) >= 4 and sum(w.width * w.height for w in windows) == 256 * 256
            assert source.unknown_ids(6) == ([6] if dtype == "uint8" else [6, 300])
            assert source.unknown_ids(7) == ([] if dtype == "uint8" else [300])
        finally:
            source.close()


def test_train_model_refuses_a_validation_image_without_labels(tmp_path, scene):
    """The library itself, not only the command: one of the pair alone would validate on nothing."""
    from fcnseg.pipeline.training.train import TrainRequest, train_model

    image, labels = scene
    request = TrainRequest(image=image, labels=labels, out=tmp_path / "m.safetensors", val_image=image, steps=1)
    with pytest.raises(ValueError, match="--val-image and --val-labels go together"):
        train_model(request)
    assert not (tmp_path / "m.safetensors").exists()
