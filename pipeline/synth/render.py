"""Rendering one window: its layers, painted to reflectance, plus sensor noise and the nodata collar.

``render_window`` is a pure function of (seed, size) and the window's global pixel
coordinates; a window equals the same region cut out of any larger window.
"""

from __future__ import annotations

import numpy as np

from fcnseg.pipeline.synth.buildings import paint_building
from fcnseg.pipeline.synth.cropland import paint_cropland
from fcnseg.pipeline.synth.layers import HALO, Layers, build_layers
from fcnseg.pipeline.synth.noise import hash_coords, stream_key
from fcnseg.pipeline.synth.roads import paint_road
from fcnseg.pipeline.synth.scene import Scene, plan_scene
from fcnseg.pipeline.synth.spec import BUILDING, CROPLAND, FOREST, GRASSLAND, IMAGE_NODATA, LABEL_NODATA, ROAD, WATER
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
) -> tuple[np.ndarray, np.ndarray]:
    """Render one window of the ``size`` x ``size`` scene of ``seed``.

    Returns ``image`` (4, height, width) uint16 reflectance*10000 (bands ``BAND_NAMES``)
    and ``labels`` (height, width) uint8 class ids.  With ``collar`` > 0, pixels outside
    the scene's slanted footprint are nodata (image 0 in all bands, label 255).
    """
    check_window(size, row_off, col_off, height, width, collar)
    scene = plan_scene(int(seed), int(size))
    rows = np.arange(row_off - HALO, row_off + height + HALO, dtype=np.float64)
    cols = np.arange(col_off - HALO, col_off + width + HALO, dtype=np.float64)
    layers = build_layers(scene, rows, cols)
    image = _paint(scene, layers)
    labels = layers.labels[HALO:-HALO, HALO:-HALO].copy()
    if collar > 0:
        outside = ~_footprint_mask(_collar_quad(scene.seed, scene.size, collar), rows[HALO:-HALO], cols[HALO:-HALO])
        image[:, outside] = IMAGE_NODATA
        labels[outside] = LABEL_NODATA
    return image, labels


def check_window(size: int, row_off: int, col_off: int, height: int, width: int, collar: int) -> None:
    """Reject windows outside the scene: the scene's content is only defined inside it."""
    if size <= 0:
        raise ValueError(f"scene size must be positive, got {size}")
    if height <= 0 or width <= 0:
        raise ValueError(f"window must be non-empty, got {height}x{width}")
    if row_off < 0 or col_off < 0 or row_off + height > size or col_off + width > size:
        raise ValueError(f"window rows {row_off}+{height}, cols {col_off}+{width} outside a {size}x{size} scene")
    if collar < 0 or (collar > 0 and 2 * collar >= size):
        raise ValueError(f"collar must be 0 or less than half the scene size {size}, got {collar}")


def _paint(s: Scene, lay: Layers) -> np.ndarray:
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
    core = (slice(None), slice(HALO, -HALO), slice(HALO, -HALO))
    img = img[core] * (np.float32(1.0) + np.float32(0.08) * lay.fields["illum"][core[1:]])
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


def _collar_quad(seed: int, size: int, collar: int) -> np.ndarray:
    """Footprint corners (row, col), clockwise from top-left, each inset 0..collar px."""
    rng = np.random.default_rng([seed, 0xC011A2])
    inset = rng.uniform(0, collar, (4, 2))
    last = size - 1.0
    return np.array([
        (inset[0, 0], inset[0, 1]),
        (inset[1, 0], last - inset[1, 1]),
        (last - inset[2, 0], last - inset[2, 1]),
        (last - inset[3, 0], inset[3, 1]),
    ])


def _footprint_mask(quad: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """True inside the convex footprint (each edge's inner half-plane)."""
    inside = np.ones((rows.size, cols.size), bool)
    for (r0, c0), (r1, c1) in zip(quad, np.roll(quad, -1, axis=0)):
        cross = (c1 - c0) * (rows[:, None] - r0) - (r1 - r0) * (cols[None, :] - c0)
        inside &= cross >= 0
    return inside
