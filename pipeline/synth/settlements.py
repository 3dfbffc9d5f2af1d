"""Settlements: the rotated street grid, which of its blocks are built up, and the street pixels.

A block is built up when its settlement score (settlement noise plus nearness to a
main road, very low in water) passes the scene's threshold; streets run along the
grid lines that border at least one built-up block.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from fcnseg.pipeline.synth.fields import LAKE, SETTLE
from fcnseg.pipeline.synth.noise import fbm_points, stream_key
from fcnseg.pipeline.synth.strokes import stroke_points

if TYPE_CHECKING:
    from fcnseg.pipeline.synth.scene import Scene

_ROAD_BONUS_REACH = 350.0  # settlements grow along main roads within this distance


def to_grid(s: Scene, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (row, col) -> rotated street-grid coordinates (u along, v across)."""
    u = c * s.grid_cos + r * s.grid_sin + s.grid_off[0]
    v = r * s.grid_cos - c * s.grid_sin + s.grid_off[1]
    return u, v


def from_grid(s: Scene, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotated street-grid coordinates -> pixel (row, col)."""
    u, v = u - s.grid_off[0], v - s.grid_off[1]
    return u * s.grid_sin + v * s.grid_cos, u * s.grid_cos - v * s.grid_sin


def blocks_inside(s: Scene) -> tuple[np.ndarray, np.ndarray]:
    """All street blocks (k, j) whose centre lies inside the scene."""
    k, j = _block_range(s, np.array([0.0, s.size]), np.array([0.0, s.size]))
    kk, jj = np.meshgrid(np.arange(*k), np.arange(*j), indexing="ij")
    r, c = from_grid(s, (kk + 0.5) * s.block, (jj + 0.5) * s.block)
    inside = (r >= 0) & (r < s.size) & (c >= 0) & (c < s.size)
    return kk[inside], jj[inside]


def _block_range(
    s: Scene, rows: np.ndarray, cols: np.ndarray, pad: int = 0
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Half-open ranges of block indices (k, j) covering the pixel box spanned by rows, cols."""
    r = np.array([rows[0], rows[0], rows[-1], rows[-1]])
    c = np.array([cols[0], cols[-1], cols[0], cols[-1]])
    u, v = to_grid(s, r, c)
    k = (int(math.floor(u.min() / s.block)) - pad, int(math.floor(u.max() / s.block)) + 1 + pad)
    j = (int(math.floor(v.min() / s.block)) - pad, int(math.floor(v.max() / s.block)) + 1 + pad)
    return k, j


def urban_score(s: Scene, k: np.ndarray, j: np.ndarray) -> np.ndarray:
    """How strongly a street block wants to be built up: settlement noise + nearness to a main road.

    Blocks whose centre is in a lake or river get a very low score.
    """
    r, c = from_grid(s, (k + 0.5) * s.block, (j + 0.5) * s.block)
    score = fbm_points(stream_key(s.seed, "settle"), r, c, SETTLE).astype(np.float64)
    road = stroke_points(s.roads, r, c, _ROAD_BONUS_REACH)
    score += 0.5 * np.clip(1.0 - road / _ROAD_BONUS_REACH, 0.0, 1.0)
    in_lake = fbm_points(stream_key(s.seed, "lake"), r, c, LAKE) > s.t_lake - 0.04
    wet = in_lake | (stroke_points(s.rivers, r, c, s.block) < 0.25 * s.block)
    return np.where(wet, -10.0, score)


def urban_table(s: Scene, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Built-up flag per street block around the window, with the table's (k, j) origin."""
    (k0, k1), (j0, j1) = _block_range(s, rows, cols, pad=2)
    kk, jj = np.meshgrid(np.arange(k0, k1), np.arange(j0, j1), indexing="ij")
    urban = urban_score(s, kk.ravel(), jj.ravel()).reshape(kk.shape) > s.t_urban
    return urban, k0, j0


def streets(s: Scene, u: np.ndarray, v: np.ndarray, urban: np.ndarray, k0: int, j0: int) -> np.ndarray:
    """Street pixels: grid lines bordering at least one built-up block."""
    P, hw = s.block, s.street_hw
    out = np.zeros(u.shape, bool)
    line = np.floor(u / P + 0.5)  # lines of constant u separate blocks (k-1, j) and (k, j)
    idx = np.nonzero(np.abs(u - line * P) < hw)
    k, j = line[idx].astype(np.int64) - k0, np.floor(v[idx] / P).astype(np.int64) - j0
    out[idx] = urban[k - 1, j] | urban[k, j]
    line = np.floor(v / P + 0.5)  # lines of constant v separate blocks (k, j-1) and (k, j)
    idx = np.nonzero(np.abs(v - line * P) < hw)
    k, j = np.floor(u[idx] / P).astype(np.int64) - k0, line[idx].astype(np.int64) - j0
    out[idx] |= urban[k, j - 1] | urban[k, j]
    return out
