"""Nodata footprints: where a scene has no data, as a pure function of global pixel coordinates.

Two shapes: the thin slanted collar (``collar``), and a rotated scene (``rotate``): the
valid data is a square turned clockwise by DEG degrees with its four corners on the
raster's four edges, as a Landsat or Sentinel-2 scene sits in its UTM frame.  The
rotated one is decided per ``ROTATE_STEP`` x ``ROTATE_STEP`` cell (inside when the
cell's centre is), so its edges are the staircase a reprojected scene's are.
"""

from __future__ import annotations

import math

import numpy as np

from fcnseg.pipeline.synth.spec import ROTATE_STEP


def outside_mask(seed: int, size: int, rows: np.ndarray, cols: np.ndarray, collar: int, rotate: float) -> np.ndarray | None:
    """True where the window (pixel indices ``rows`` x ``cols``) is nodata; None when the whole scene is valid."""
    if rotate:
        return rotated_outside(size, rotate, rows, cols)
    if collar > 0:
        return ~_footprint_mask(_collar_quad(seed, size, collar), rows, cols)
    return None


def rotated_outside(size: int, degrees: float, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """True outside the rotated square, judged at the centre of each pixel's ROTATE_STEP cell."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    half = size / (2.0 * (cos + sin))  # half side of the largest square with its corners on the edges
    y = _cell_centre(rows) - size / 2.0
    x = _cell_centre(cols) - size / 2.0
    u = x[None, :] * cos + y[:, None] * sin  # along the square's turned top edge
    v = y[:, None] * cos - x[None, :] * sin
    return (np.abs(u) > half) | (np.abs(v) > half)


def rotated_nodata_share(degrees: float) -> float:
    """Share of the raster outside the (smooth) rotated square: 1 - 1 / (1 + sin 2 DEG)."""
    return 1.0 - 1.0 / (1.0 + math.sin(2.0 * math.radians(degrees)))


def _cell_centre(index: np.ndarray) -> np.ndarray:
    """Centre, in pixel-edge coordinates, of the ROTATE_STEP cell that each pixel index falls in."""
    return np.floor(index / ROTATE_STEP) * ROTATE_STEP + ROTATE_STEP / 2.0


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
