"""Buildings: footprints in the built-up blocks, roof shading and shadows, and the painting of the building class.

Each block holds a 3x3 grid of slots with at most one footprint each, decided by
hashing (block, slot) with the seed; footprints that a main road, a river or a lake
would cut are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fcnseg.pipeline.synth.fields import LAKE
from fcnseg.pipeline.synth.noise import fbm_points, rotation, stream_key, uniform
from fcnseg.pipeline.synth.settlements import from_grid
from fcnseg.pipeline.synth.strokes import stroke_points

if TYPE_CHECKING:
    from fcnseg.pipeline.synth.layers import Layers
    from fcnseg.pipeline.synth.scene import Scene

_ROOFS = np.array([  # blue, green, red, nir (reflectance * 10000)
    (620, 720, 1750, 1900),  # red tile
    (560, 640, 1150, 1400),  # brown tile
    (780, 820, 860, 930),  # dark grey
    (1650, 1700, 1760, 1900),  # light grey concrete
    (2500, 2550, 2600, 2700),  # white flat roof
    (470, 500, 540, 620),  # anthracite
], np.float32)
_ROOF_P = np.cumsum([0.34, 0.16, 0.16, 0.14, 0.08, 0.12])
_ROOF_GABLED = np.array([True, True, True, False, False, True])


@dataclass(frozen=True)
class Buildings:
    """Building footprints around a window: one optional footprint per sub-cell of each block.

    Arrays are flat over the table's (k, j, slot row, slot col) index; ``shape`` unflattens it.
    """

    shape: tuple[int, int, int, int]
    exists: np.ndarray
    cu: np.ndarray  # centre in grid coordinates
    cv: np.ndarray
    hx: np.ndarray  # half sizes along the footprint's own axes
    hy: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    roof: np.ndarray  # roof type index into _ROOFS
    tone: np.ndarray  # per-building brightness factor
    k0: int
    j0: int


def _sub_cell(s: Scene) -> tuple[float, float]:
    """(margin from the street centre line, sub-cell size) of the 3x3 building slots in a block."""
    margin = s.street_hw + 3.0
    return margin, (s.block - 2 * margin) / 3


def building_table(s: Scene, urban: np.ndarray, k0: int, j0: int) -> Buildings:
    """Footprints for every sub-cell of the blocks in the table, decided by hashing (k, j, slot)."""
    margin, q = _sub_cell(s)
    nk, nj = urban.shape
    kk = np.arange(k0, k0 + nk)[:, None, None, None]
    jj = np.arange(j0, j0 + nj)[None, :, None, None]
    a = np.arange(3)[None, None, :, None]
    b = np.arange(3)[None, None, None, :]
    key = stream_key(s.seed, "building")

    def rnd(attr: int) -> np.ndarray:
        return uniform(key, kk, jj, a * 3 + b, attr).astype(np.float64)

    rotated = rnd(0) < 0.3
    cos, sin = rotation(np.where(rotated, (rnd(1) - 0.5) * 0.6, 0.0))  # up to +-33 degrees
    limit = q / 2 - 1.5
    hx = 6.0 + rnd(2) * (limit - 6.0)
    hy = 6.0 + rnd(3) * (limit - 6.0)
    ex, ey = hx * np.abs(cos) + hy * np.abs(sin), hx * np.abs(sin) + hy * np.abs(cos)
    shrink = np.minimum(1.0, limit / np.maximum(ex, ey))
    hx, hy, ex, ey = hx * shrink, hy * shrink, ex * shrink, ey * shrink
    cu = kk * s.block + margin + (a + 0.5) * q + (rnd(4) - 0.5) * 2 * (limit - ex)
    cv = jj * s.block + margin + (b + 0.5) * q + (rnd(5) - 0.5) * 2 * (limit - ey)
    centre_slot = (a == 1) & (b == 1)
    exists = (rnd(6) < np.where(centre_slot, 0.4, 0.9)) & urban[:, :, None, None]
    cu, cv = np.broadcast_to(cu, exists.shape), np.broadcast_to(cv, exists.shape)
    exists &= _clear_of_water_and_roads(s, cu, cv, np.hypot(hx, hy))
    roof = np.searchsorted(_ROOF_P, rnd(7) * _ROOF_P[-1], side="right")
    roof = np.minimum(roof, len(_ROOFS) - 1)
    tone = 0.85 + 0.3 * rnd(8)
    def flat(x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(x, exists.shape).ravel()

    return Buildings(exists.shape, *(flat(x) for x in (exists, cu, cv, hx, hy, cos, sin, roof, tone)), k0, j0)


def _clear_of_water_and_roads(s: Scene, cu: np.ndarray, cv: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """False for footprints that a main road, a river or a lake would cut through."""
    r, c = from_grid(s, cu.ravel(), cv.ravel())
    rad = np.broadcast_to(radius, cu.shape).ravel()
    clear = stroke_points(s.roads, r, c, 40.0) > rad + 2.0
    clear &= stroke_points(s.rivers, r, c, 40.0) > rad + 3.0
    clear &= fbm_points(stream_key(s.seed, "lake"), r, c, LAKE) < s.t_lake - 0.03
    return clear.reshape(cu.shape)


def building_ids(s: Scene, b: Buildings, u: np.ndarray, v: np.ndarray, urban_px: np.ndarray):
    """Flat index into the building table for each pixel (-1 where no roof), and roof facet shading."""
    margin, q = _sub_cell(s)
    bid = np.full(u.shape, -1, np.int64)
    facet = np.ones(u.shape, np.float32)
    idx = np.nonzero(urban_px)
    uu, vv = u[idx], v[idx]
    k = np.floor(uu / s.block)
    j = np.floor(vv / s.block)
    sa = np.floor((uu - k * s.block - margin) / q)
    sb = np.floor((vv - j * s.block - margin) / q)
    ok = (sa >= 0) & (sa < 3) & (sb >= 0) & (sb < 3)
    slot = (k - b.k0, j - b.j0, np.clip(sa, 0, 2), np.clip(sb, 0, 2))
    flat = np.ravel_multi_index(tuple(i.astype(np.int64) for i in slot), b.shape)
    du, dv = uu - b.cu[flat], vv - b.cv[flat]
    x = du * b.cos[flat] + dv * b.sin[flat]  # in the footprint's own axes
    y = dv * b.cos[flat] - du * b.sin[flat]
    hx, hy = b.hx[flat], b.hy[flat]
    inside = ok & b.exists[flat] & (np.abs(x) < hx) & (np.abs(y) < hy)
    bid[idx] = np.where(inside, flat, -1)
    facet[idx] = np.where(inside, _roof_shading(x, y, hx, hy, _ROOF_GABLED[b.roof[flat]]), 1.0)
    return bid, facet


def _roof_shading(x: np.ndarray, y: np.ndarray, hx: np.ndarray, hy: np.ndarray, gabled: np.ndarray) -> np.ndarray:
    """Brightness factor on a roof: gabled roofs show two facets either side of the ridge
    (along the long axis), and every roof has slightly darker eaves."""
    across = np.where(hx >= hy, y, x)
    facets = np.where(gabled, np.where(across >= 0, 1.12, 0.86), 1.0)
    eave = (np.abs(x) > hx - 1.0) | (np.abs(y) > hy - 1.0)
    return (facets * np.where(eave, 0.85, 1.0)).astype(np.float32)


def shadow(building: np.ndarray) -> np.ndarray:
    """Pixels shaded by a building: the sun is in the south-west, shadows fall north-east (<= 3 px).

    A pixel is in shadow when a roof lies a few pixels from it towards the sun
    (rows +dr, cols -dc); needs a halo of 3 px around the window to be exact.
    """
    out = np.zeros_like(building)
    h, w = building.shape
    for dr, dc in ((1, 1), (2, 1), (2, 2), (3, 2), (1, 0), (0, 1)):
        out[: h - dr, dc:] |= building[dr:, : w - dc]
    return out & ~building



def paint_building(s: Scene, lay: Layers, idx) -> np.ndarray:
    """Roof colour per building, gabled roofs in two facets, darker eaves."""
    bid = lay.building_id[idx]
    b = lay.buildings
    color = _ROOFS[b.roof[bid]].T * b.tone[bid][None, :].astype(np.float32)
    return color * lay.facet[idx][None, :]
