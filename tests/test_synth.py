"""Tests for the procedural synthetic scene (fcnseg.pipeline.synth)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Compression

from fcnseg.pipeline.synth import (
    BAND_NAMES,
    CLASSES,
    CRS,
    IMAGE_NODATA,
    LABEL_NODATA,
    PIXEL_SIZE,
    render_window,
    scene,
    write_scene,
    writer,
)

NAMES = [c.name for c in CLASSES]
# rasterio.transform.from_origin(500000, 5400000, 1, 1), spelled out (from_origin warns on new affine)
TRANSFORM = Affine(PIXEL_SIZE, 0.0, 500000.0, 0.0, -PIXEL_SIZE, 5400000.0)


@pytest.fixture(scope="module")
def scenes_1024() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Whole 1024 px scenes of three seeds, rendered once for the module."""
    return {seed: render_window(seed, 1024, 0, 0, 1024, 1024) for seed in (0, 1, 2)}


def test_classes_are_the_six_documented_ones_in_order():
    assert NAMES == ["water", "forest", "cropland", "grassland", "road", "building"]
    assert CLASSES[0].color == (30, 100, 200) and CLASSES[5].color == (200, 40, 40)
    assert BAND_NAMES == ("blue", "green", "red", "nir")


def test_render_is_deterministic_per_seed():
    first = render_window(3, 512, 128, 64, 200, 300)
    scene.plan_scene.cache_clear()  # recompute the scene parameters too, not just the pixels
    second = render_window(3, 512, 128, 64, 200, 300)
    assert first[0].dtype == np.uint16 and first[0].shape == (4, 200, 300)
    assert first[1].dtype == np.uint8 and first[1].shape == (200, 300)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_different_seeds_give_different_scenes(scenes_1024):
    (img0, lab0), (img1, lab1) = scenes_1024[0], scenes_1024[1]
    assert (lab0 != lab1).mean() > 0.3
    assert np.abs(img0.astype(np.int32) - img1.astype(np.int32)).mean() > 100


@pytest.mark.parametrize("seed, size, collar", [(4, 1024, 0), (9, 2500, 40)])
def test_window_equals_crop_of_larger_window(seed, size, collar):
    r0, c0, h, w = 96, 160, 640, 704
    big_img, big_lab = render_window(seed, size, r0, c0, h, w, collar=collar)
    assert len(np.unique(big_lab)) >= 4, "the reference window should hold several classes to be a real test"
    windows = [(96, 160, 256, 256), (131, 277, 97, 211), (500, 601, 236, 263), (407, 863, 1, 1), (97, 161, 639, 3)]
    for r, c, hh, ww in windows:
        img, lab = render_window(seed, size, r, c, hh, ww, collar=collar)
        np.testing.assert_array_equal(img, big_img[:, r - r0 : r - r0 + hh, c - c0 : c - c0 + ww])
        np.testing.assert_array_equal(lab, big_lab[r - r0 : r - r0 + hh, c - c0 : c - c0 + ww])


def test_window_at_the_scene_edge_equals_crop():
    img, lab = render_window(2, 1024, 768, 768, 256, 256, collar=30)
    small_img, small_lab = render_window(2, 1024, 1000, 1003, 24, 21, collar=30)
    np.testing.assert_array_equal(small_img, img[:, 232:, 235:])
    np.testing.assert_array_equal(small_lab, lab[232:, 235:])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_classes_present_with_plausible_shares(scenes_1024, seed):
    img, lab = scenes_1024[seed]
    share = dict(zip(NAMES, np.bincount(lab.ravel(), minlength=len(CLASSES)) / lab.size))
    assert set(np.unique(lab)) == set(range(len(CLASSES))), share
    bounds = {  # loose versions of the design targets
        "water": (0.03, 0.25), "forest": (0.10, 0.40), "cropland": (0.15, 0.50),
        "grassland": (0.08, 0.42), "road": (0.02, 0.10), "building": (0.015, 0.09),
    }
    for name, (lo, hi) in bounds.items():
        assert lo <= share[name] <= hi, (name, share)


def test_classes_have_distinct_spectral_signatures(scenes_1024):
    img, lab = scenes_1024[0]
    red, nir = img[2].astype(np.float64), img[3].astype(np.float64)
    ndvi = (nir - red) / (nir + red)
    med = {name: float(np.median(ndvi[lab == i])) for i, name in enumerate(NAMES)}
    assert med["water"] < 0.0 < med["road"] < 0.2
    assert min(med["forest"], med["grassland"]) > 0.6
    nir_med = {name: float(np.median(nir[lab == i])) for i, name in enumerate(NAMES)}
    assert nir_med["water"] < 600 < nir_med["road"] < 2000 < nir_med["grassland"]
    # forest canopy is strongly textured, water is smooth
    roughness = {name: _neighbour_difference(img[3], lab, i) for i, name in enumerate(NAMES)}
    assert roughness["forest"] > 3 * max(roughness["water"], roughness["grassland"]), roughness
    assert img.min() >= 1 and img.max() <= 10000


def _neighbour_difference(band: np.ndarray, lab: np.ndarray, cls: int) -> float:
    """Mean absolute difference between horizontally adjacent pixels of one class (texture)."""
    both = (lab[:, 1:] == cls) & (lab[:, :-1] == cls)
    diff = np.abs(band[:, 1:].astype(np.float64) - band[:, :-1])
    return float(diff[both].mean())


def test_rejects_windows_outside_the_scene():
    for args in [(0, 512, -1, 0, 10, 10), (0, 512, 500, 0, 20, 10), (0, 512, 0, 0, 0, 10)]:
        with pytest.raises(ValueError):
            render_window(*args)
    with pytest.raises(ValueError):
        render_window(0, 512, 0, 0, 10, 10, collar=256)


def test_write_scene_geotiffs(tmp_path: Path):
    image_path, labels_path = write_scene(tmp_path / "out", 512, seed=5, block=256)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["image.tif", "labels.tif"]
    with rasterio.open(image_path) as img:
        assert img.crs.to_string() == CRS
        assert img.transform == TRANSFORM
        assert (img.count, img.width, img.height) == (4, 512, 512)
        assert img.dtypes == ("uint16",) * 4
        assert img.nodata == IMAGE_NODATA
        assert img.block_shapes == [(256, 256)] * 4
        assert img.compression == Compression.deflate
        assert img.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "2"
        assert img.descriptions == BAND_NAMES
        pixels = img.read()
        window = img.read(window=rasterio.windows.Window(300, 200, 50, 40))
    with rasterio.open(labels_path) as lab:
        assert lab.crs.to_string() == CRS and lab.transform == TRANSFORM
        assert (lab.count, lab.dtypes[0], lab.nodata) == (1, "uint8", LABEL_NODATA)
        assert lab.block_shapes[0] == (256, 256) and lab.compression == Compression.deflate
        cmap = lab.colormap(1)
        assert [cmap[i][:3] for i in range(len(CLASSES))] == [c.color for c in CLASSES]
        assert json.loads(lab.tags()["class_names"]) == NAMES
        assert json.loads(lab.tags()["class_colors"]) == [list(c.color) for c in CLASSES]
        labels = lab.read(1)
    assert pixels.min() >= 1, "collar=0: every pixel is valid, so none may equal the nodata value 0"
    assert set(np.unique(labels)) <= set(range(len(CLASSES)))
    expected_img, expected_lab = render_window(5, 512, 200, 300, 40, 50)
    np.testing.assert_array_equal(window, expected_img)
    np.testing.assert_array_equal(labels[200:240, 300:350], expected_lab)


def test_write_scene_collar_is_consistent_nodata(tmp_path: Path):
    image_path, labels_path = write_scene(tmp_path, 384, seed=8, collar=60, block=256)
    with rasterio.open(image_path) as img, rasterio.open(labels_path) as lab:
        pixels, labels = img.read(), lab.read(1)
        mask = img.dataset_mask()
    empty = (pixels == IMAGE_NODATA).all(axis=0)
    np.testing.assert_array_equal(labels == LABEL_NODATA, empty)
    assert (pixels[:, ~empty] >= 1).all()
    np.testing.assert_array_equal(mask == 0, empty)  # GDAL reads the same mask from the nodata value
    for corner in (empty[:60, :60], empty[:60, -60:], empty[-60:, :60], empty[-60:, -60:]):
        assert corner.any()
    assert not empty[60:-60, 60:-60].any()
    assert 0.01 < empty.mean() < 0.3


def test_interrupted_write_leaves_no_complete_looking_file(tmp_path: Path, monkeypatch):
    calls = []

    def failing_render(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:
            raise RuntimeError("interrupted")
        return render_window(*args, **kwargs)

    monkeypatch.setattr(writer, "render_window", failing_render)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_scene(tmp_path, 512, seed=1, block=256)
    assert list(tmp_path.iterdir()) == []


def _peak_rss_mb_of_write_scene(out: Path, size: int) -> float:
    """Peak resident memory of a fresh process that writes one scene (imports included)."""
    import subprocess
    import sys

    code = (
        "import resource, sys; from pathlib import Path; from fcnseg.pipeline.synth import write_scene; "
        f"write_scene(Path(sys.argv[1]), {size}, 3, block=256); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def test_memory_does_not_grow_with_the_scene(tmp_path: Path):
    """16x the pixels, same peak memory: the scene is written block by block."""
    small = _peak_rss_mb_of_write_scene(tmp_path / "small", 512)
    large = _peak_rss_mb_of_write_scene(tmp_path / "large", 2048)
    # holding the large scene whole would take > 40 MB as uint16 alone, far more as float
    assert large - small < 25, (small, large)
