"""quicklook.png for analysts: classes told apart over the image, a title and a scale bar (issue 13, item 9)."""

from __future__ import annotations

import math
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from stores import store_from_array

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.products.quicklook import (
    BOUNDARY_RGB, GREY_RANGE, SHADE_RGBA, ScaleBar, _font, class_boundaries, draw_scale_bar, draw_title,
    ground_metres_per_pixel, image_scale_bar, model_label, overlay, round_length, scale_bar, scene_name, title_text,
    write_quicklook,
)
from fcnseg.pipeline.synth import CLASSES, CROPLAND, GRASSLAND, write_scene

DAY = date(2025, 3, 4)
NAMES = [c.name for c in CLASSES]
COLORS = np.array([c.color for c in CLASSES], np.float32)


def write_image(path: Path, width: int, height: int, *, crs: str | None, transform: Affine | None) -> Path:
    """A 3-band uint8 GeoTIFF (no CRS and no transform: a raster in pixel coordinates)."""
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8")
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    ramp = (np.arange(width) % 256).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # wanted here
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.broadcast_to(ramp, (3, height, width)))
    return path


def white_run(row: np.ndarray) -> int:
    """The longest run of opaque white pixels in an RGBA row."""
    best = run = 0
    for white in np.all(row == (255, 255, 255, 255), axis=-1):
        run = run + 1 if white else 0
        best = max(best, run)
    return best


def changed_width(row: np.ndarray, plain: np.ndarray) -> int:
    """How far from the left edge a drawing changed this row."""
    return int(np.nonzero(np.any(row != plain, axis=-1))[0].max()) + 1


# --------------------------------------------------------------------------- classes over the image


def test_a_class_pixel_next_to_another_class_gets_the_boundary_colour():
    rgb = np.full((3, 6, 3), 120, np.uint8)
    labels = np.array([[0, 0, 0, 1, 1, 1]] * 3, np.uint8)
    out = overlay(rgb, labels, COLORS[:2], 0.55)
    assert (out[:, 2] == BOUNDARY_RGB).all()  # class 0's last column, before class 1
    boundary = np.all(out == BOUNDARY_RGB, axis=-1)
    assert boundary.sum() == 3  # one pixel wide: class 1's first column is not outlined
    assert not boundary[:, [0, 1, 3, 4, 5]].any()


def test_nodata_and_unknown_values_stay_the_plain_image_and_their_edge_falls_on_the_class():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    labels = np.array([[0, 0, 255, 255, 9, 9]] * 4, np.uint8)  # 9: no class of 2
    out = overlay(rgb, labels, COLORS[:2], 0.55)
    assert np.array_equal(out[:, 2:], rgb[:, 2:])  # nodata and the unknown value: the image, in colour
    assert (out[:, 1] == BOUNDARY_RGB).all()  # the class's edge on nodata is outlined on the class's side
    assert not np.all(out[:, 0] == BOUNDARY_RGB, axis=-1).any()


def test_boundaries_follow_every_edge_of_a_region_once():
    labels = np.full((7, 7), 3, np.uint8)
    labels[2:5, 2:5] = 1  # a 3x3 square of class 1 in class 3
    edge = class_boundaries(labels, 4)
    expected = np.zeros_like(edge)
    expected[2:5, 2:5] = True
    expected[3, 3] = False  # the square's ring: its pixels touch class 3, the centre does not
    assert np.array_equal(edge, expected)


def test_close_class_colours_are_told_apart_by_the_outline():
    """Two classes 4 levels apart in red: their tints cannot be told apart, the line between them can."""
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)  # a textured image
    labels = np.zeros((16, 16), np.uint8)
    labels[:, 8:] = 1
    colors = np.array([[100, 160, 90], [104, 160, 90]], np.float32)
    out = overlay(rgb, labels, colors, 0.55)
    assert (out[:, 7] == BOUNDARY_RGB).all()  # a continuous dark line along the whole edge
    lightness = out.astype(int).sum(axis=-1)
    assert lightness[:, [6, 8]].min() - lightness[:, 7].max() >= 3 * GREY_RANGE[0]  # darker than either side


def test_a_tint_takes_its_hue_from_the_class_not_from_the_image():
    """Cropland over a green field and over a grey one of the same luminance looks the same, and
    cropland and grassland over the same pixels differ by the tint of their colours' difference."""
    rgb = np.array([[[0, 200, 0], [117, 117, 117]]], np.uint8)  # green, and the grey of its luminance (117.4)
    for k in (CROPLAND, GRASSLAND):
        out = overlay(rgb, np.full((1, 2), k, np.uint8), COLORS, 0.55).astype(int)
        assert np.abs(out[0, 0] - out[0, 1]).max() <= 1, NAMES[k]  # the luminance's rounding; the hue: none
    crop = overlay(rgb, np.full((1, 2), CROPLAND, np.uint8), COLORS, 0.55).astype(int)
    grass = overlay(rgb, np.full((1, 2), GRASSLAND, np.uint8), COLORS, 0.55).astype(int)
    expected = 0.55 * (COLORS[CROPLAND] - COLORS[GRASSLAND])  # (49.5, 0, -22)
    assert np.abs(crop - grass - expected).max() <= 1


def test_the_ground_under_a_tint_is_grey_without_black_or_white():
    """Black and white image pixels under a class become GREY_RANGE's ends, then take the tint."""
    rgb = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)
    out = overlay(rgb, np.full((1, 2), CROPLAND, np.uint8), COLORS, 0.55)
    color = COLORS[CROPLAND]
    assert np.array_equal(out[0, 0], (0.45 * GREY_RANGE[0] + 0.55 * color).round())
    assert np.array_equal(out[0, 1], (0.45 * GREY_RANGE[1] + 0.55 * color).round())


def test_alpha_zero_is_the_image_alone():
    rgb = np.random.default_rng(3).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    labels = np.array([[0, 1, 0, 1]] * 4, np.uint8)
    assert np.array_equal(overlay(rgb, labels, COLORS, 0.0), rgb)


# --------------------------------------------------------------------------- title


def test_title_names_the_scene_the_model_and_the_date():
    assert title_text("image.tif", "demo-fcn8s", DAY) == "image.tif · demo-fcn8s · 2025-03-04"
    assert title_text("image.tif", None, DAY) == "image.tif · 2025-03-04"
    assert scene_name("/data/scenes/image.tif") == "image.tif"
    assert scene_name("s3://bucket/scenes/scene%201.tif") == "scene%201.tif"
    assert scene_name(r"C:\scenes\x.tif") == "x.tif"


def test_model_label_is_the_checkpoint_name_and_its_architecture(tmp_path):
    assert model_label(DEMO_MODEL) == "demo-fcn8s"  # the architecture is already in the name
    renamed = tmp_path / "roofs-v2.safetensors"
    renamed.symlink_to(DEMO_MODEL)
    assert model_label(renamed) == "roofs-v2 (fcn8s)"
    assert model_label("buildings v3") == "buildings v3"  # not a file: a name, as given
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    assert model_label(broken) == "broken"


def test_title_is_drawn_in_the_upper_left_corner_only():
    base = Image.new("RGBA", (400, 300), (120, 130, 140, 255))
    short, longer = base.copy(), base.copy()
    draw_title(short, "a.tif · 2025-03-04")
    draw_title(longer, "a.tif · a model with a long name · 2025-03-04")
    font, pad = _font(base)
    box_h = font.size + 2 * pad
    a, b, plain = (np.asarray(i).astype(int) for i in (short, longer, base))
    assert np.array_equal(a[box_h:], plain[box_h:]) and np.array_equal(b[box_h:], plain[box_h:])
    assert (a[:box_h, :, :3] > 200).all(axis=-1).sum() > 50  # white text (anti-aliased) on the dark box
    shaded = np.array([120, 130, 140]) * (1 - SHADE_RGBA[3] / 255)  # the box: SHADE_RGBA's black over the grey
    assert np.abs(a[box_h - 1, 1, :3] - shaded).max() <= 1
    bottom = box_h - 1  # the box's last row, below the text
    assert changed_width(b[bottom], plain[bottom]) > changed_width(a[bottom], plain[bottom])  # it fits its text


# --------------------------------------------------------------------------- scale bar


@pytest.mark.parametrize("limit, length", [
    (1.0, 1.0), (1.99, 1.0), (2.0, 2.0), (4.99, 2.0), (7.3, 5.0), (10.0, 10.0), (409.6, 200.0), (999.9, 500.0),
    (1000.0, 1000.0), (0.034, 0.02), (0.3, 0.2),
])
def test_round_length_is_the_largest_1_2_5_times_a_power_of_ten_not_above_the_limit(limit, length):
    assert round_length(limit) == length


def test_scale_bar_is_its_round_length_over_the_pixel_size():
    assert scale_bar(2.5, 2000, "m") == ScaleBar(1000.0, "m", 400)  # a fifth of 5000 m: 1 km = 400 px of 2.5 m
    assert scale_bar(0.5, 640, "m") == ScaleBar(50.0, "m", 100)
    assert scale_bar(4.0, 500, "px") == ScaleBar(200.0, "px", 50)
    assert [ScaleBar(2000.0, "m", 1).text, ScaleBar(500.0, "m", 1).text, ScaleBar(0.5, "m", 1).text,
            ScaleBar(100.0, "px", 1).text] == ["2 km", "500 m", "0.5 m", "100 px"]


def test_scale_bar_of_a_projected_scene_is_in_metres_at_the_quicklook_resolution(tmp_path):
    image = write_image(tmp_path / "utm.tif", 1000, 400, crs="EPSG:32633",
                        transform=Affine(2.0, 0, 600000.0, 0, -2.0, 5500000.0))
    assert image_scale_bar(image, 500) == ScaleBar(200.0, "m", 50)  # 4 m per quicklook pixel, 2000 m wide
    assert image_scale_bar(image, 1000) == ScaleBar(200.0, "m", 100)
    feet = write_image(tmp_path / "ftus.tif", 1000, 400, crs="EPSG:2263",  # New York Long Island, US survey feet
                       transform=Affine(10.0, 0, 1000000.0, 0, -10.0, 200000.0))
    bar = image_scale_bar(feet, 1000)
    assert bar.unit == "m" and bar.length == 500.0 and bar.pixels == round(500.0 / (10 * 1200 / 3937))


def test_scale_bar_of_a_geographic_scene_uses_the_metres_at_its_centre_latitude(tmp_path):
    def length_of_a_degree(lat: float) -> float:
        """A degree of longitude on WGS 84 along the parallel (closed form, not pyproj)."""
        a, f = 6378137.0, 1 / 298.257223563
        e2 = f * (2 - f)
        phi = math.radians(lat)
        return math.pi * a * math.cos(phi) / (180 * math.sqrt(1 - e2 * math.sin(phi) ** 2))

    for lat, name in ((0.0, "equator"), (60.0, "north")):
        transform = Affine(0.0001, 0, 10.0, 0, -0.0001, lat + 0.02)  # 400 rows: the centre at ``lat``
        metres = ground_metres_per_pixel(rasterio.CRS.from_epsg(4326), transform, 400, 1000)
        assert metres == pytest.approx(0.0001 * length_of_a_degree(lat), rel=1e-6)
        image = write_image(tmp_path / f"{name}.tif", 1000, 400, crs="EPSG:4326", transform=transform)
        bar = image_scale_bar(image, 500)
        assert bar.unit == "m" and bar.pixels == round(bar.length / (2 * metres))
    assert image_scale_bar(tmp_path / "equator.tif", 500) == ScaleBar(2000.0, "m", 90)  # 11.1 km wide
    assert image_scale_bar(tmp_path / "north.tif", 500) == ScaleBar(1000.0, "m", 90)  # 5.6 km: half, at 60° N


def test_a_scene_without_crs_gets_a_bar_in_full_resolution_pixels(tmp_path):
    image = write_image(tmp_path / "scan.tif", 1000, 500, crs=None, transform=None)
    assert image_scale_bar(image, 250) == ScaleBar(200.0, "px", 50)
    assert image_scale_bar(image, 250).text == "200 px"


def test_scale_bar_is_drawn_its_length_in_the_lower_right_corner():
    img = Image.new("RGBA", (400, 300), (120, 130, 140, 255))
    draw_scale_bar(img, ScaleBar(100.0, "m", 77))
    q = np.asarray(img)
    font, pad = _font(img)
    bottom = q[-(font.size + 3 * pad + 8):]
    assert max(white_run(row) for row in bottom) == 77
    assert max(white_run(row) for row in q[:-(font.size + 3 * pad + 8)]) == 0
    assert (q[:, : 400 - 77 - 2 * pad] == (120, 130, 140, 255)).all()  # nothing drawn left of its box


# --------------------------------------------------------------------------- the whole quicklook


def test_quicklook_of_a_scene_has_outlines_title_and_a_bar_at_the_scene_size(tmp_path):
    image, truth = write_scene(tmp_path, 256, seed=1)
    with rasterio.open(truth) as src:
        labels, crs, transform = src.read(1), src.crs, src.transform
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=128, class_names=NAMES,
                             class_colors=COLORS.astype(int).tolist(), crs=crs, transform=transform,
                             attrs={"model_sha256": "ab" * 32})
    titled = write_quicklook(image, store, tmp_path / "q.png", model=DEMO_MODEL, processed=DAY)
    hashed = write_quicklook(image, store, tmp_path / "hashed.png", processed=DAY)
    q, h = np.asarray(Image.open(titled)), np.asarray(Image.open(hashed))
    assert q.shape == (256, 256, 4)  # the title and the bar are drawn on it: still the scene's grid
    font, pad = _font(Image.fromarray(q))
    box_h = font.size + 2 * pad
    differs = np.nonzero(np.any(q != h, axis=-1))
    assert differs[0].size > 0 and differs[0].max() < box_h  # "demo-fcn8s" vs "model abababababab": the title
    assert max(white_run(row) for row in q[-(font.size + 3 * pad + 4):]) == 50  # 1 m pixels: 50 m = 50 px
    edge = class_boundaries(labels, len(NAMES))
    body = edge.copy()
    body[:box_h + 1] = False
    body[-96:] = False  # the legend (6 classes, 81 rows) and the bar
    assert body.sum() > 100 and (q[body][:, :3] == BOUNDARY_RGB).all()


def test_quicklook_without_crs_draws_a_pixel_bar(tmp_path):
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, (200, 500), dtype=np.uint8)
    image = write_image(tmp_path / "scan.tif", 500, 200, crs=None, transform=None)
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=100, class_names=NAMES[:3],
                             class_colors=COLORS[:3].astype(int).tolist(), crs=None)
    q = np.asarray(Image.open(write_quicklook(image, store, tmp_path / "q.png", max_size=250, processed=DAY)))
    assert q.shape == (100, 250, 4)
    assert max(white_run(row) for row in q[-30:]) == 50  # 100 px of the full image = 50 quicklook px


def test_the_image_is_shown_in_the_bands_it_marks_red_green_and_blue(tmp_path):
    """A B, G, R, NIR scene (the synthetic one) is drawn with red from band 3, not band 1."""
    from fcnseg.pipeline.products.quicklook import rgb_bands

    def bands(count: int, descriptions=None, colorinterp=None) -> list[int]:
        path = tmp_path / f"b{len(list(tmp_path.iterdir()))}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=count, dtype="uint8",
                           crs="EPSG:32633", transform=rasterio.transform.from_origin(0, 8, 1, 1)) as dst:
            for i, name in enumerate(descriptions or [], start=1):
                dst.set_band_description(i, name)
            if colorinterp:
                dst.colorinterp = colorinterp
        with rasterio.open(path) as src:
            return rgb_bands(src)

    assert bands(4, ["blue", "green", "red", "nir"]) == [3, 2, 1]
    assert bands(4, ["Red", "Green", "Blue", "NIR"]) == [1, 2, 3]
    ci = rasterio.enums.ColorInterp
    assert bands(3, colorinterp=[ci.blue, ci.green, ci.red]) == [3, 2, 1]
    assert bands(5) == [1, 2, 3] and bands(1) == [1] and bands(2) == [1]
