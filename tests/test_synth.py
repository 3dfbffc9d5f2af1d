"""Tests for the procedural synthetic scene (fcnseg.pipeline.synth)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Compression
from rasterio.warp import transform as warp_transform
from typer.testing import CliRunner

from fcnseg.cli import app
from fcnseg.pipeline.synth import (
    BAND_NAMES,
    Radiometry,
    BAND_SETS,
    CLASSES,
    CRS,
    IMAGE_NODATA,
    LABEL_NODATA,
    PIXEL_SIZE,
    ROTATE_STEP,
    STRIP_ROWS,
    footprint,
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


@pytest.mark.parametrize("seed, size, look", [
    (4, 1024, {}),
    (9, 2500, dict(collar=40)),
    (4, 1024, dict(rotate=30, bands=1, dtype="int16")),
    (9, 2500, dict(rotate=12.5, bands=3, dtype="float32")),
    (5, 1024, dict(rotate=45, bands=2)),
    (6, 2500, dict(collar=40, radiometry=Radiometry(gain=(1.2, 1.1, 0.9, 0.8), offset=0.01, haze=0.05, season=-0.6))),
], ids=["default", "collar", "rotate30-pan-int16", "rotate12.5-rgb-float32", "rotate45-red-nir", "radiometry"])
def test_window_equals_crop_of_larger_window(seed, size, look):
    r0, c0, h, w = 96, 160, 640, 704
    big_img, big_lab = render_window(seed, size, r0, c0, h, w, **look)
    assert len(np.unique(big_lab)) >= 4, "the reference window should hold several classes to be a real test"
    windows = [(96, 160, 256, 256), (131, 277, 97, 211), (500, 601, 236, 263), (407, 863, 1, 1), (97, 161, 639, 3),
               (96, 160, 24, 24)]
    if look.get("rotate"):  # the last window is wholly outside a rotated footprint, the reference is not
        assert (big_lab[:24, :24] == LABEL_NODATA).all() and (big_lab != LABEL_NODATA).mean() > 0.5
    for r, c, hh, ww in windows:
        img, lab = render_window(seed, size, r, c, hh, ww, **look)
        assert img.dtype == big_img.dtype and img.shape[0] == big_img.shape[0]
        np.testing.assert_array_equal(img, big_img[:, r - r0 : r - r0 + hh, c - c0 : c - c0 + ww])  # NaN == NaN
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


def _peak_rss_mb_of_write_scene(out: Path, size: int, layout: str = "tiled") -> float:
    """Peak resident memory of a fresh process that writes one scene (imports included)."""
    import subprocess
    import sys

    code = (
        "import resource, sys; from pathlib import Path; from fcnseg.pipeline.synth import write_scene; "
        f"write_scene(Path(sys.argv[1]), {size}, 3, layout={layout!r}, block=256); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layout", ["tiled", "stripped"])
def test_memory_does_not_grow_with_the_scene(tmp_path: Path, layout):
    """16x the pixels, same peak memory: the scene is written block by block (band of rows by band of rows)."""
    small = _peak_rss_mb_of_write_scene(tmp_path / "small", 512, layout)
    large = _peak_rss_mb_of_write_scene(tmp_path / "large", 2048, layout)
    # holding the large scene whole would take > 40 MB as uint16 alone, far more as float
    assert large - small < 25, (small, large)


# --- delivery shapes (issue 21): rotated footprint, bands, dtype, CRS, layout ---


def _read(image_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict, dict]:
    """Pixels, labels, GDAL's dataset mask and both profiles, through rasterio."""
    with rasterio.open(image_path) as img, rasterio.open(labels_path) as lab:
        return img.read(), lab.read(1), img.dataset_mask(), img.profile, lab.profile


@pytest.mark.parametrize("degrees, expected", [(30, 0.464), (15, 0.333)])
def test_rotated_footprint_is_a_stair_stepped_square_with_nodata_corners(tmp_path: Path, degrees, expected):
    size = 1024
    pixels, labels, mask, _, _ = _read(*write_scene(tmp_path, size, seed=2, rotate=degrees, block=512))
    empty = (pixels == IMAGE_NODATA).all(axis=0)
    np.testing.assert_array_equal(labels == LABEL_NODATA, empty)
    np.testing.assert_array_equal(mask == 0, empty)
    assert (pixels[:, ~empty] >= 1).all(), "a valid pixel is valid in every band"
    # the smooth square leaves 1 - 1/(1 + sin 2 DEG) outside; the 4 px staircase moves that by well under 1 %
    assert footprint.rotated_nodata_share(degrees) == pytest.approx(expected, abs=5e-4)
    assert abs(empty.mean() - expected) < 0.005, empty.mean()
    for corner in (empty[:128, :128], empty[:128, -128:], empty[-128:, :128], empty[-128:, -128:]):
        assert corner.all(), "whole 128 px corner blocks are nodata"
    assert not empty[size // 2 - 128 : size // 2 + 128, size // 2 - 128 : size // 2 + 128].any()
    # the footprint is decided per 4x4 cell (ROTATE_STEP, documented as 4): the edge is a staircase, not a line
    step = 4
    assert ROTATE_STEP == step
    cells = empty.reshape(size // step, step, size // step, step)
    assert (cells == cells[:, :1, :, :1]).all()
    first_valid = np.argmax(~empty, axis=1)[:300]  # the left boundary along rows 0..299 (the top-left edge)
    assert (first_valid % step == 0).all()
    steps = np.diff(first_valid)
    assert (steps % step == 0).all() and (steps != 0).sum() <= 300 // step  # it only moves at cell boundaries
    assert (steps < 0).sum() >= 20, "the boundary moves left as the rows go down"


@pytest.mark.parametrize("bands", [1, 2, 3, 4])
def test_bands_are_the_documented_selection(tmp_path: Path, bands):
    with rasterio.open(write_scene(tmp_path, 256, seed=3, bands=bands, block=128)[0]) as img:
        assert img.count == bands and img.descriptions == BAND_SETS[bands]
        pixels = img.read()
    full, _ = render_window(3, 256, 0, 0, 256, 256)
    blue, green, red, nir = full.astype(np.uint32)
    expected = {
        4: full, 3: full[[2, 1, 0]], 2: full[[2, 3]],
        1: ((blue + green + red + 1) // 3)[None].astype(np.uint16),  # panchromatic-like: rounded visible mean
    }[bands]
    np.testing.assert_array_equal(pixels, expected)
    assert pixels.min() >= 1


def test_int16_is_offset_reflectance_with_negative_values_and_nodata_minus_9999(tmp_path: Path):
    pixels, labels, mask, profile, lab_profile = _read(*write_scene(tmp_path, 512, seed=4, rotate=20, dtype="int16",
                                                                    block=256))
    assert profile["dtype"] == "int16" and profile["nodata"] == -9999 and lab_profile["nodata"] == LABEL_NODATA
    with rasterio.open(tmp_path / "image.tif") as img:
        assert img.scales == (1e-4,) * 4 and img.offsets == (0.1,) * 4  # reflectance = value * 1e-4 + 0.1
    empty = labels == LABEL_NODATA
    assert 0.3 < empty.mean() < 0.45
    np.testing.assert_array_equal(mask == 0, empty)
    assert (pixels[:, empty] == -9999).all()
    valid = pixels[:, ~empty]
    assert (valid != -9999).all() and (valid < 0).any() and (valid >= -999).all()
    reference, _ = render_window(4, 512, 0, 0, 512, 512)
    np.testing.assert_array_equal(valid, reference[:, ~empty].astype(np.int32) - 1000)


def test_float32_is_reflectance_with_nan_exactly_at_the_labels_nodata(tmp_path: Path):
    pixels, labels, mask, profile, _ = _read(*write_scene(tmp_path, 512, seed=4, rotate=20, dtype="float32", block=256))
    assert profile["dtype"] == "float32" and math.isnan(profile["nodata"])
    with rasterio.open(tmp_path / "image.tif") as img:
        assert img.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "3"
    empty = labels == LABEL_NODATA
    np.testing.assert_array_equal(np.isnan(pixels), np.broadcast_to(empty, pixels.shape))
    np.testing.assert_array_equal(mask == 0, empty)
    valid = pixels[:, ~empty]
    assert 0 < valid.min() and valid.max() <= 1
    reference, _ = render_window(4, 512, 0, 0, 512, 512)
    np.testing.assert_array_equal(valid, reference[:, ~empty].astype(np.float32) / np.float32(10000))


def test_geographic_crs_places_the_scene_where_the_utm_one_is(tmp_path: Path):
    image_path, labels_path = write_scene(tmp_path, 256, seed=6, crs="EPSG:4326", block=128)
    expected = Affine(1e-5, 0.0, 15.0, 0.0, -1e-5, 48.75)
    with rasterio.open(image_path) as img, rasterio.open(labels_path) as lab:
        assert img.crs.to_string() == lab.crs.to_string() == "EPSG:4326"
        assert img.transform == lab.transform == expected and (img.width, img.height) == (256, 256)
        pixels = img.read()
    np.testing.assert_array_equal(pixels, render_window(6, 256, 0, 0, 256, 256)[0])
    (lon,), (lat,) = warp_transform(CRS, "EPSG:4326", [500000.0], [5400000.0])
    assert abs(lon - 15.0) < 1e-6 and abs(lat - 48.75) < 0.01  # within ~350 m of the UTM scene's corner
    xs, ys = warp_transform("EPSG:4326", CRS, [15.0, 15.001, 15.0], [48.75, 48.75, 48.749])  # 100 pixels each way
    width_m, height_m = math.hypot(xs[1] - xs[0], ys[1] - ys[0]) / 100, math.hypot(xs[2] - xs[0], ys[2] - ys[0]) / 100
    assert 0.70 < width_m < 0.76 and 1.10 < height_m < 1.12, "square in degrees, not in metres"


def test_stripped_layout_is_untiled_uncompressed_strips_with_the_same_pixels(tmp_path: Path, monkeypatch):
    windows = []

    def recording_render(*args, **kwargs):
        windows.append(args[2:6])
        return render_window(*args, **kwargs)

    monkeypatch.setattr(writer, "render_window", recording_render)
    image_path, labels_path = write_scene(tmp_path, 384, seed=7, rotate=10, layout="stripped", block=128)
    with rasterio.open(image_path) as img, rasterio.open(labels_path) as lab:
        for src, count in ((img, 4), (lab, 1)):
            assert src.profile["tiled"] is False and src.compression is None
            assert src.block_shapes == [(STRIP_ROWS, 384)] * count
        pixels, labels = img.read(), lab.read(1)
    expected_img, expected_lab = render_window(7, 384, 0, 0, 384, 384, rotate=10)
    np.testing.assert_array_equal(pixels, expected_img)
    np.testing.assert_array_equal(labels, expected_lab)
    # full-width bands of whole strips, about block x block pixels each: never the whole scene
    assert windows == [(r, 0, 40, 384) for r in range(0, 360, 40)] + [(360, 0, 24, 384)]


BAD_OPTIONS = [
    (dict(rotate=-5), "--rotate"), (dict(rotate=90), "--rotate"), (dict(rotate=float("nan")), "--rotate"),
    (dict(rotate=10, collar=20), "--rotate"), (dict(bands=0), "--bands"), (dict(bands=5), "--bands"),
    (dict(dtype="int8"), "--dtype"), (dict(crs="EPSG:3857"), "--crs"), (dict(layout="cog"), "--layout"),
    (dict(collar=200), "--collar"),
]


@pytest.mark.parametrize("options, option", BAD_OPTIONS, ids=[o for _, o in BAD_OPTIONS])
def test_bad_option_fails_naming_it_before_anything_is_written(tmp_path: Path, options, option):
    with pytest.raises(ValueError, match=re.escape(option)):
        write_scene(tmp_path / "out", 256, **options)
    assert not (tmp_path / "out").exists()


def test_synth_command_takes_the_delivery_options_and_refuses_a_bad_one_in_one_line(tmp_path: Path):
    runner = CliRunner()
    ok = runner.invoke(app, ["synth", str(tmp_path / "s"), "--size", "96", "--rotate", "30", "--bands", "1",
                             "--dtype", "float32", "--crs", "EPSG:4326", "--layout", "stripped"])
    assert ok.exit_code == 0, ok.output
    with rasterio.open(tmp_path / "s" / "image.tif") as img:
        assert (img.count, img.dtypes[0], img.crs.to_string(), img.profile["tiled"]) == (1, "float32", "EPSG:4326", False)
    bad = runner.invoke(app, ["synth", str(tmp_path / "t"), "--size", "96", "--dtype", "int8"])
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.exit_code == 1 and len(lines) == 1 and "--dtype" in lines[0], bad.stderr
    assert not (tmp_path / "t").exists()


# --- radiometry that changes between scenes (issue 27) ---

#: sha256 of render_window(5, 512, 0, 0, 512, 512)'s image and labels bytes and of a 300 px scene's two files
#: (seed 5), measured on the code before radiometry existed (c8fd65f): the default scene stays byte for byte.
DEFAULT_RENDER = "687ef7a52c1888077ca5a79a38f4365c2eb29b1b5504fa728eef55f49c0bcffb"
DEFAULT_FILES = ("829149ae259c38837416ed7465d6bb41ed80b61dae12050ce8d8129f75cfa9f5",
                 "58fb8bd70c6a786f793b3b5b634398a0307a6dfc4623787da75de1b53a19e611")


def test_default_radiometry_leaves_every_byte_as_it_was(tmp_path: Path):
    import hashlib

    for radiometry in (None, Radiometry()):
        img, lab = render_window(5, 512, 0, 0, 512, 512, radiometry=radiometry)
        assert hashlib.sha256(img.tobytes() + lab.tobytes()).hexdigest() == DEFAULT_RENDER
    image, labels = write_scene(tmp_path / "s", 300, 5, radiometry=Radiometry())
    assert tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in (image, labels)) == DEFAULT_FILES


@pytest.fixture(scope="module")
def base_512() -> tuple[np.ndarray, np.ndarray]:
    return render_window(8, 512, 0, 0, 512, 512)


def test_season_changes_only_the_vegetation_and_moves_its_nir_against_its_red(base_512):
    img, lab = base_512
    for season in (0.8, -0.8):
        shifted, same_lab = render_window(8, 512, 0, 0, 512, 512, radiometry=Radiometry(season=season))
        np.testing.assert_array_equal(same_lab, lab)
        veg = np.isin(lab, (1, 2, 3))  # forest, cropland, grassland
        np.testing.assert_array_equal(shifted[:, ~veg], img[:, ~veg])  # water, roads, buildings: every byte
        np.testing.assert_array_equal(shifted[:2], img[:2])  # blue and green untouched
        nir = shifted[3][veg].astype(np.float64).mean() / img[3][veg].mean()
        red = shifted[2][veg].astype(np.float64).mean() / img[2][veg].mean()
        assert nir == pytest.approx(1 + 0.25 * season, abs=0.01) and red == pytest.approx(1 - 0.25 * season, abs=0.01)


def test_gain_and_offset_are_per_band_and_haze_is_smooth_and_thinner_towards_the_nir(base_512):
    img, lab = base_512
    base = img.astype(np.float64)
    sensor = Radiometry(gain=(1.3, 1.0, 0.8, 0.6), offset=(0.02, 0, 0, -0.01))
    gained, _ = render_window(8, 512, 0, 0, 512, 512, radiometry=sensor)
    means = gained.reshape(4, -1).mean(axis=1)
    expected = base.reshape(4, -1).mean(axis=1) * (1.3, 1.0, 0.8, 0.6) + (200, 0, 0, -100)
    np.testing.assert_allclose(means, expected, rtol=0.01)
    hazy, _ = render_window(8, 512, 0, 0, 512, 512, radiometry=Radiometry(haze=0.05))
    added = hazy.astype(np.float64) - base  # plus the noise's change on the brighter signal
    per_band = added.reshape(4, -1).mean(axis=1)
    assert 100 < per_band[0] <= 500 and np.all(np.diff(per_band) < 0)  # 20-100 % of 500 in blue, less to the NIR
    coarse = added[0].reshape(16, 32, 16, 32).mean(axis=(1, 3))  # smooth: 32 px blocks differ by little
    assert np.abs(np.diff(coarse, axis=0)).max() < 40 and coarse.max() - coarse.min() > 5


def test_radiometry_is_recorded_in_the_tag_and_given_on_the_command_line(tmp_path: Path):
    runner = CliRunner()
    ok = runner.invoke(app, ["synth", str(tmp_path / "s"), "--size", "96", "--gain", "1.1,1,1,0.9", "--offset",
                             "0.01", "--haze", "0.03", "--season", "-0.5"])
    assert ok.exit_code == 0, ok.output
    with rasterio.open(tmp_path / "s" / "image.tif") as img:
        made = json.loads(img.tags()[writer.SYNTH_TAG])
    assert made["radiometry"] == {"gain": [1.1, 1.0, 1.0, 0.9], "offset": [0.01] * 4, "haze": 0.03, "season": -0.5}
    asked = Radiometry(gain=(1.1, 1, 1, 0.9), offset=0.01, haze=0.03, season=-0.5)
    expected, _ = render_window(0, 96, 0, 0, 96, 96, radiometry=asked)
    with rasterio.open(tmp_path / "s" / "image.tif") as img:
        np.testing.assert_array_equal(img.read(), expected)
    for args, option in ((["--gain", "1,2"], "--gain"), (["--gain", "0"], "--gain"), (["--offset", "a"], "--offset"),
                         (["--haze", "-1"], "--haze"), (["--season", "2"], "--season")):
        bad = runner.invoke(app, ["synth", str(tmp_path / "t"), "--size", "96", *args])
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert bad.exit_code == 1 and len(lines) == 1 and option in lines[0], bad.stderr
        assert not (tmp_path / "t").exists()
