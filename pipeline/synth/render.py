"""Rendering one window: its layers, painted to reflectance, plus sensor noise, the nodata footprint and encoding.

``render_window`` is a pure function of (seed, size) and the window's global pixel
coordinates; a window equals the same region cut out of any larger window.
"""

from __future__ import annotations

import numpy as np

from fcnseg.pipeline.synth.buildings import paint_building
from fcnseg.pipeline.synth.cropland import paint_cropland
from fcnseg.pipeline.synth.encoding import encode, select_bands
from fcnseg.pipeline.synth.footprint import outside_mask
from fcnseg.pipeline.synth.layers import HALO, Layers, build_layers
from fcnseg.pipeline.synth.noise import hash_coords, stream_key
from fcnseg.pipeline.synth.options import check_pixels
from fcnseg.pipeline.synth.radiometry import Radiometry, apply_sensor, shift_season
from fcnseg.pipeline.synth.roads import paint_road
from fcnseg.pipeline.synth.scene import Scene, plan_scene
from fcnseg.pipeline.synth.spec import (
    BAND_SETS,
    BUILDING,
    CROPLAND,
    ENCODINGS,
    FOREST,
    GRASSLAND,
    LABEL_NODATA,
    ROAD,
    WATER,
)
from fcnseg.pipeline.synth.vegetation import paint_forest, paint_grassland
from fcnseg.pipeline.synth.water import paint_water

_BYTE = np.uint64(0xFF)


def render_window(
    seed: int,
    size: int,
    row_off: int,
    col_off: int,
    height: int,
    width: int,
    collar: int = 0,
    *,
    rotate: float = 0.0,
    bands: int = 4,
    dtype: str = "uint16",
    radiometry: Radiometry | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one window of the ``size`` x ``size`` scene of ``seed``.

    Returns ``image`` (bands, height, width) and ``labels`` (height, width) uint8 class
    ids.  By default the image is 4 bands (``BAND_NAMES``) of uint16 reflectance*10000;
    ``bands`` picks ``BAND_SETS[bands]`` and ``dtype`` one of ``ENCODINGS``.  With
    ``collar`` > 0 pixels outside a slanted footprint, with ``rotate`` > 0 those outside
    a square turned by ``rotate`` degrees (see ``footprint``), are nodata: the
    encoding's nodata value in every band and label 255. ``radiometry`` makes the same land
    cover look like another scene's (gain, offset, haze, season; ``synth.radiometry``).
    """
    check_window(size, row_off, col_off, height, width, collar)
    check_pixels(collar, rotate, bands, dtype)
    rows = np.arange(row_off - HALO, row_off + height + HALO, dtype=np.float64)
    cols = np.arange(col_off - HALO, col_off + width + HALO, dtype=np.float64)
    outside = outside_mask(int(seed), int(size), rows[HALO:-HALO], cols[HALO:-HALO], collar, rotate)
    if outside is not None and outside.all():  # a rotated scene's corner blocks: nothing to paint
        return _nodata_window(height, width, bands, dtype)
    scene = plan_scene(int(seed), int(size))
    layers = build_layers(scene, rows, cols)
    image = _paint(scene, layers, radiometry or Radiometry())
    labels = layers.labels[HALO:-HALO, HALO:-HALO].copy()
    if outside is not None:
        labels[outside] = LABEL_NODATA
    return encode(select_bands(image, bands), outside, dtype), labels


def check_window(size: int, row_off: int, col_off: int, height: int, width: int, collar: int) -> None:
    """Reject windows outside the scene: the scene's content is only defined inside it."""
    if size <= 0:
        raise ValueError(f"scene size must be positive, got {size}")
    if height <= 0 or width <= 0:
        raise ValueError(f"window must be non-empty, got {height}x{width}")
    if row_off < 0 or col_off < 0 or row_off + height > size or col_off + width > size:
        raise ValueError(f"window rows {row_off}+{height}, cols {col_off}+{width} outside a {size}x{size} scene")
    if collar < 0 or (collar > 0 and 2 * collar >= size):
        raise ValueError(f"--collar must be 0 or less than half the scene size {size}, got {collar}")


def _nodata_window(height: int, width: int, bands: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """A window with no valid pixel, as ``render_window`` would return it."""
    image = np.full((len(BAND_SETS[bands]), height, width), ENCODINGS[dtype].nodata, dtype)
    return image, np.full((height, width), LABEL_NODATA, np.uint8)


def _paint(s: Scene, lay: Layers, radiometry: Radiometry) -> np.ndarray:
    """Reflectance image (4, h, w) uint16 of the window's core from its layers."""
    img = np.zeros((4,) + lay.labels.shape, np.float32)
    for cls, painter in (
        (WATER, paint_water), (FOREST, paint_forest), (CROPLAND, paint_cropland),
        (GRASSLAND, paint_grassland), (ROAD, paint_road), (BUILDING, paint_building),
    ):
        idx = np.nonzero(lay.labels == cls)
        if idx[0].size:
            img[:, idx[0], idx[1]] = painter(s, lay, idx)
    img[:, lay.shadow] *= np.float32(0.5)
    shift_season(img, lay.labels, radiometry.season)
    core = (slice(None), slice(HALO, -HALO), slice(HALO, -HALO))
    img = img[core] * (np.float32(1.0) + np.float32(0.08) * lay.fields["illum"][core[1:]])
    if not radiometry.is_identity:
        img = apply_sensor(img, radiometry, s.seed, lay.rows[HALO:-HALO], lay.cols[HALO:-HALO])
    img += _sensor_noise(s.seed, lay.rows[HALO:-HALO], lay.cols[HALO:-HALO], img)
    return np.clip(np.rint(img), 1, 10000).astype(np.uint16)


def _sensor_noise(seed: int, rows: np.ndarray, cols: np.ndarray, img: np.ndarray) -> np.ndarray:
    """Per-band sensor noise: triangular, ~2% of the signal plus a floor, hashed from (seed, row, col)."""
    h = hash_coords(stream_key(seed, "sensor"), rows.astype(np.int64)[:, None], cols.astype(np.int64)[None, :])
    out = np.empty_like(img)
    for band in range(img.shape[0]):
        bits = h >> np.uint64(16 * band)
        lo = (bits & _BYTE).astype(np.float32)
        hi = ((bits >> np.uint64(8)) & _BYTE).astype(np.float32)
        tri = (lo + hi) / np.float32(255.0) - np.float32(1.0)  # triangular in [-1, 1]
        out[band] = tri * (np.float32(0.04) * img[band] + np.float32(20.0))
    return out
