"""The command line end to end on small synthetic scenes: train, evaluate, init-model, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from fcnseg.models.checkpoint import load_checkpoint, read_card

FCNSEG = [sys.executable, "-m", "fcnseg"]


def fcnseg(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*FCNSEG, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"fcnseg {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, scene) -> Path:
    image, labels = scene
    out = tmp_path_factory.mktemp("model") / "m.safetensors"
    fcnseg(
        "train", "--image", image, "--labels", labels, "--val-image", image, "--val-labels", labels,
        "--out", out, "--steps", 40, "--chip", 128, "--batch-size", 4, "--val-every", 20, "--lr", 2e-3,
    )
    return out


def test_train_writes_a_checkpoint_with_card_and_provenance(trained, scene):
    card = read_card(trained)
    assert card.arch == "fcn8s" and card.bands == 4 and card.num_classes == 6
    assert card.class_names[:2] == ["water", "forest"]
    assert card.band_names == ["blue", "green", "red", "nir"]
    assert card.nodata.input == 0 and card.nodata.label == 255
    assert all(s > 0 for s in card.normalization.std)
    assert card.training.steps == 40 and card.training.image == str(scene[0])
    assert [h["step"] for h in card.training.history if "mean_iou" in h] == [20, 40]
    assert 0 < card.metrics["mean_iou"] <= 1
    from fcnseg.models.metrics import class_ious, metrics_from_confusion

    per_class = card.metrics["per_class_iou"]  # by name, as evaluate --json prints it
    assert [(c["class_id"], c["class"]) for c in per_class] == list(enumerate(card.class_names))
    assert class_ious(card.metrics) == metrics_from_confusion(card.metrics["confusion"])["per_class_iou"]


def test_train_off_a_terminal_logs_its_progress_instead_of_drawing_a_bar(tmp_path, scene):
    image, labels = scene
    result = fcnseg("train", "--image", image, "--labels", labels, "--out", tmp_path / "m.safetensors",
                    "--steps", 10, "--chip", 64, "--batch-size", 2, "--holdout", 0)
    steps = [line for line in result.stderr.splitlines() if "train: step" in line]
    assert len(steps) == 10 and "step 10 of 10 (100 %), loss" in steps[-1], result.stderr
    assert "\r" not in result.stderr and "step/s" not in result.stderr  # no tqdm bar in a log


def test_evaluate_json_is_one_object_with_the_four_metrics(trained, scene):
    image, labels = scene
    result = fcnseg("evaluate", "--model", trained, "--image", image, "--labels", labels, "--json", "--tile", 128)
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"pixel_acc", "mean_acc", "mean_iou", "fw_iou", "per_class_iou", "confusion"}
    with rasterio.open(labels) as src:
        assert np.sum(metrics["confusion"]) == np.sum(src.read(1) != 255)
    # tiling does not change the result much: the default halo covers the receptive field
    whole = json.loads(fcnseg("evaluate", "--model", trained, "--image", image, "--labels", labels, "--json", "--tile", 512).stdout)
    assert whole["confusion"] == metrics["confusion"]


def test_staged_training_carries_weights_from_fcn32s_to_fcn16s(tmp_path, scene):
    image, labels = scene
    s32 = tmp_path / "s32.safetensors"
    s16 = tmp_path / "s16.safetensors"
    common = ["--image", image, "--labels", labels, "--chip", 96, "--batch-size", 2]
    fcnseg("train", *common, "--arch", "fcn32s", "--out", s32, "--steps", 3)
    fcnseg("train", *common, "--arch", "fcn16s", "--init", s32, "--out", s16, "--steps", 1, "--lr", 1e-9)
    m32, _ = load_checkpoint(s32)
    m16, card16 = load_checkpoint(s16)
    assert card16.arch == "fcn16s" and card16.training.init["path"] == str(s32)
    assert np.allclose(m16.backbone.convs()[0].weight.detach(), m32.backbone.convs()[0].weight.detach(), atol=1e-6)
    assert not m16.score_pool4.weight.detach().abs().gt(1e-3).any()  # new skip starts near zero


def test_training_on_vector_labels(tmp_path, scene):
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape

    image, labels = scene
    with rasterio.open(labels) as src:
        names = json.loads(src.tags()["class_names"])
        rows = [
            {"geometry": shape(geom), "landcover": names[int(value)]}
            for geom, value in shapes(src.read(1), transform=src.transform) if value != 255
        ]
        crs = src.crs
    vectors = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame(rows, crs=crs).to_crs("EPSG:4326").to_file(vectors)  # another CRS on purpose
    out = tmp_path / "v.safetensors"
    fcnseg("train", "--image", image, "--labels", vectors, "--label-field", "landcover",
           "--classes", ",".join(names), "--out", out, "--steps", 2, "--chip", 96, "--batch-size", 2)
    assert read_card(out).class_names == names
    result = fcnseg("evaluate", "--model", out, "--image", image, "--labels", vectors, "--label-field", "landcover", "--json")
    metrics = json.loads(result.stdout)
    with rasterio.open(labels) as src:
        expected = np.bincount(src.read(1).ravel(), minlength=256)[: len(names)]
    # reprojection to 4326 and back moves a few edge pixels, never many
    assert np.abs(np.sum(metrics["confusion"], axis=1) - expected).sum() < 0.01 * expected.sum()


def test_init_model_writes_a_loadable_random_checkpoint(tmp_path):
    out = tmp_path / "init.safetensors"
    fcnseg("init-model", out, "--arch", "fcn16s", "--bands", 13, "--classes", 5, "--width", 0.125)
    model, card = load_checkpoint(out)
    assert (card.arch, card.bands, card.num_classes, card.width) == ("fcn16s", 13, 5, 0.125)
    assert card.class_names == [f"class_{i}" for i in range(5)]


def test_bad_inputs_give_one_clear_error_line(tmp_path, scene, trained):
    image, labels = scene
    missing = fcnseg("evaluate", "--model", trained, "--image", tmp_path / "nope.tif", "--labels", labels, check=False)
    assert missing.returncode == 1 and len(error_lines(missing)) == 1 and "nope.tif" in missing.stderr
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    bad = fcnseg("evaluate", "--model", trained, "--image", text, "--labels", labels, check=False)
    assert bad.returncode == 1 and len(error_lines(bad)) == 1 and "notes.tif" in bad.stderr
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(trained.read_bytes()[:1000])
    broken = fcnseg("evaluate", "--model", corrupt, "--image", image, "--labels", labels, check=False)
    assert broken.returncode == 1 and len(error_lines(broken)) == 1 and "corrupt.safetensors" in broken.stderr
    three = tmp_path / "three.safetensors"
    fcnseg("init-model", three, "--bands", 3, "--classes", 6, "--width", 0.125)
    mismatch = fcnseg("evaluate", "--model", three, "--image", image, "--labels", labels, check=False)
    assert mismatch.returncode == 1 and "has 4 bands, the model takes 3" in mismatch.stderr
    out = tmp_path / "never.safetensors"
    failed = fcnseg("train", "--image", image, "--labels", text, "--out", out, "--steps", 1, check=False)
    assert failed.returncode == 1 and len(error_lines(failed)) == 1 and not out.exists()


def test_synth_command_writes_a_scene_and_refuses_a_tiny_size(tmp_path):
    result = fcnseg("synth", tmp_path / "s", "--size", 200, "--seed", 3)
    assert result.stdout.split() == [str(tmp_path / "s" / "image.tif"), str(tmp_path / "s" / "labels.tif")]
    with rasterio.open(tmp_path / "s" / "image.tif") as src:
        assert (src.width, src.height, src.count) == (200, 200, 4)
    tiny = fcnseg("synth", tmp_path / "t", "--size", 8, check=False)
    assert tiny.returncode == 1 and "--size" in tiny.stderr and not (tmp_path / "t" / "image.tif").exists()


def test_bench_model_prints_the_models_throughput():
    result = fcnseg("bench-model", "--tile", 64, "--batch-size", 2, "--iterations", 1, "--device", "cpu")
    report = json.loads(result.stdout)
    assert report["arch"] == "fcn8s" and report["tile"] == 64 and report["device"] == "cpu"
    assert report["megapixels_per_second"] > 0


def test_segment_json_is_one_object_and_progress_is_logged_in_lines_without_a_terminal(scene, tmp_path):
    image, _ = scene
    out = tmp_path / "out"
    result = fcnseg("segment", image, "--out", out, "--tile", 128, "--batch-size", 1, "--workers", 1, "--json")
    report = json.loads(result.stdout)  # the whole of stdout is one object
    assert report["out"] == str(out) and report["skipped"] is False
    record = json.loads((out / "run.json").read_text())
    for key in ("chunks", "class_areas", "polygons", "execution", "started", "finished", "devices", "workers"):
        assert report[key] == record[key], key
    with rasterio.open(image) as src:
        assert sum(c["pixels"] for c in report["class_areas"]) == src.width * src.height
    # not a terminal: a log line each time another 10 % are done, not a bar's redraws
    total = report["chunks"]["total"]
    expected, decade = [], -1
    for done in range(1, total + 1):
        if (100 * done // total) // 10 > decade:
            decade = (100 * done // total) // 10
            expected.append(f"{done} of {total} chunks ({100 * done // total} %)")
    lines = [line.split("segment:")[1].strip() for line in result.stderr.splitlines() if "segment:" in line]
    assert lines == expected and expected[-1].endswith("(100 %)")
    assert "chunk/s" not in result.stderr and "it/s" not in result.stderr
    assert "WARNING" not in result.stderr  # e.g. GDAL computing overviews on a palette band: the COG copies the store's levels
