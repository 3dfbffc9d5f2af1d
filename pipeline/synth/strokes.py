"""Polyline strokes: the geometry of rivers and main roads, and their distance fields.

A stroke set is a list of segments whose half-width varies linearly along each
segment; a pixel is inside when its distance to a segment is less than the local
half-width.  Fields are evaluated only where a segment can reach, so they are exact
for any window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Strokes:
    """Polyline segments with a half-width that varies linearly along each segment."""

    ay: np.ndarray
    ax: np.ndarray
    by: np.ndarray
    bx: np.ndarray
    hw0: np.ndarray
    hw1: np.ndarray
    reach: np.ndarray  # max half-width of each segment


def _strokes(ay, ax, by, bx, hw0, hw1) -> Strokes:
    return Strokes(ay, ax, by, bx, hw0, hw1, np.maximum(hw0, hw1))


def polyline(points: np.ndarray, half_width: np.ndarray) -> Strokes:
    """Segments between consecutive (row, col) points."""
    return _strokes(points[:-1, 0], points[:-1, 1], points[1:, 0], points[1:, 1], half_width[:-1], half_width[1:])


def concat(parts: list[Strokes]) -> Strokes:
    return _strokes(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("ay", "ax", "by", "bx", "hw0", "hw1")))


def _near(s: Strokes, y0: float, y1: float, x0: float, x1: float, margin: float) -> np.ndarray:
    """Indices of segments that can come within ``margin`` of the box [y0, y1] x [x0, x1]."""
    m = s.reach + margin
    hit = (
        (np.minimum(s.ay, s.by) - m <= y1) & (np.maximum(s.ay, s.by) + m >= y0)
        & (np.minimum(s.ax, s.bx) - m <= x1) & (np.maximum(s.ax, s.bx) + m >= x0)
    )
    return np.flatnonzero(hit)


def _segment_value(s: Strokes, k: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Distance to segment k minus its local half-width (negative inside the stroke)."""
    ey, ex = s.by[k] - s.ay[k], s.bx[k] - s.ax[k]
    dy, dx = yy - s.ay[k], xx - s.ax[k]
    t = np.clip((dy * ey + dx * ex) / (ey * ey + ex * ex), 0.0, 1.0)
    qy, qx = dy - t * ey, dx - t * ex
    return np.sqrt(qy * qy + qx * qx) - (s.hw0[k] + t * (s.hw1[k] - s.hw0[k]))


def stroke_field(s: Strokes, rows: np.ndarray, cols: np.ndarray, margin: float) -> np.ndarray:
    """min over segments of (distance - half-width), clamped at ``margin``, on a pixel grid.

    Each segment is only evaluated on the patch it can reach; beyond the patch its
    value exceeds ``margin``, so the clamped result is exact for any window.
    """
    out = np.full((rows.size, cols.size), margin, np.float64)
    r0, c0 = rows[0], cols[0]
    for k in _near(s, rows[0], rows[-1], cols[0], cols[-1], margin):
        m = s.reach[k] + margin
        i0 = max(0, int(math.floor(min(s.ay[k], s.by[k]) - m - r0)))
        i1 = min(rows.size, int(math.ceil(max(s.ay[k], s.by[k]) + m - r0)) + 1)
        j0 = max(0, int(math.floor(min(s.ax[k], s.bx[k]) - m - c0)))
        j1 = min(cols.size, int(math.ceil(max(s.ax[k], s.bx[k]) + m - c0)) + 1)
        if i0 >= i1 or j0 >= j1:
            continue
        patch = out[i0:i1, j0:j1]
        np.minimum(patch, _segment_value(s, k, rows[i0:i1, None], cols[None, j0:j1]), out=patch)
    return out.astype(np.float32)


def stroke_points(s: Strokes, py: np.ndarray, px: np.ndarray, margin: float) -> np.ndarray:
    """Same as ``stroke_field`` but at scattered points (e.g. block or building centres)."""
    out = np.full(py.shape, margin, np.float64)
    if py.size == 0:
        return out
    for k in _near(s, py.min(), py.max(), px.min(), px.max(), margin):
        np.minimum(out, _segment_value(s, k, py, px), out=out)
    return out

