"""Cropland: the Voronoi parcels of farmland, each parcel's crop, and the painting of the cropland class.

Parcels are the Voronoi cells of a jittered grid of sites; a parcel is cropland when
the farmland field at its site passes the scene's threshold (meadow otherwise).  Its
appearance (crop and soil colour, cover, row stripes) is drawn by hashing its cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fcnseg.pipeline.synth.noise import rotation, smooth, stream_key, uniform
from fcnseg.pipeline.synth.vegetation import GRASS_DRY

if TYPE_CHECKING:
    from fcnseg.pipeline.synth.layers import Layers
    from fcnseg.pipeline.synth.scene import Scene

_CROPS = np.array([  # crop canopy colours
    (320, 700, 370, 4300),  # dense green
    (480, 880, 620, 3500),  # young green
    (720, 1060, 1330, 2800),  # ripe cereal
    (560, 980, 820, 3200),  # rapeseed-ish / mixed
], np.float32)
_SOILS = np.array([
    (720, 880, 1100, 1900),  # brown
    (520, 640, 780, 1450),  # dark, moist
    (980, 1130, 1330, 2250),  # light, dry
], np.float32)


def parcel_sites(s: Scene, ci: np.ndarray, cj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jittered-grid Voronoi site of parcel cell (ci, cj), in pixel coordinates."""
    key = stream_key(s.seed, "parcel")
    jy = uniform(key, ci, cj, 0).astype(np.float64)
    jx = uniform(key, ci, cj, 1).astype(np.float64)
    return (ci + 0.1 + 0.8 * jy) * s.parcel, (cj + 0.1 + 0.8 * jx) * s.parcel


@dataclass(frozen=True)
class Parcels:
    """Nearest parcel site per pixel (as a flat index into the window's site table)."""

    site: np.ndarray  # (h, w) int64
    gap: np.ndarray  # (h, w) float32, approx. distance to the parcel border
    ci: np.ndarray  # site table: parcel cell indices, flattened
    cj: np.ndarray


def partition_parcels(s: Scene, rows: np.ndarray, cols: np.ndarray) -> Parcels:
    """Voronoi partition of the window into parcels (80-300 px), one grid cell at a time."""
    G = s.parcel
    cell_r = np.floor(rows / G).astype(np.int64)
    cell_c = np.floor(cols / G).astype(np.int64)
    i0, j0 = cell_r[0] - 1, cell_c[0] - 1
    ni, nj = cell_r[-1] - i0 + 2, cell_c[-1] - j0 + 2
    ci, cj = np.meshgrid(np.arange(i0, i0 + ni), np.arange(j0, j0 + nj), indexing="ij")
    sy, sx = parcel_sites(s, ci, cj)
    site = np.empty((rows.size, cols.size), np.int64)
    gap = np.empty((rows.size, cols.size), np.float32)
    r_edges = np.searchsorted(cell_r, np.arange(cell_r[0], cell_r[-1] + 2))
    c_edges = np.searchsorted(cell_c, np.arange(cell_c[0], cell_c[-1] + 2))
    for a in range(len(r_edges) - 1):
        rs = slice(r_edges[a], r_edges[a + 1])
        for b in range(len(c_edges) - 1):
            cs = slice(c_edges[b], c_edges[b + 1])
            site[rs, cs], gap[rs, cs] = _nearest_site(rows[rs, None], cols[None, cs], sy, sx, a + 1, b + 1)
    return Parcels(site, gap, ci.ravel(), cj.ravel())


def _nearest_site(yy, xx, sy, sx, a: int, b: int):
    """Nearest of the 3x3 candidate sites around table cell (a, b), and the border distance."""
    d1 = np.full(np.broadcast(yy, xx).shape, np.inf)
    d2 = d1.copy()
    best = np.zeros(d1.shape, np.int64)
    nj = sy.shape[1]
    for da in (-1, 0, 1):
        for db in (-1, 0, 1):
            dy, dx = yy - sy[a + da, b + db], xx - sx[a + da, b + db]
            d = dy * dy + dx * dx
            closer = d < d1
            d2 = np.where(closer, d1, np.minimum(d2, d))
            d1 = np.where(closer, d, d1)
            best = np.where(closer, (a + da) * nj + (b + db), best)
    return best, (0.5 * (np.sqrt(d2) - np.sqrt(d1))).astype(np.float32)


def paint_cropland(s: Scene, lay: Layers, idx) -> np.ndarray:
    """Per-parcel crop and soil colours, mixed along row stripes in a per-parcel direction."""
    t = _crop_table(s.seed, lay.parcels.ci, lay.parcels.cj)
    site = lay.parcels.site[idx]
    r, c = lay.rows[idx[0]], lay.cols[idx[1]]
    phase = (r * t.cos[site] + c * t.sin[site]) * t.freq[site]
    stripe = smooth(np.abs(np.float32(2.0) * (phase - np.floor(phase)).astype(np.float32) - np.float32(1.0)))
    mix = np.clip(t.cover[site] + t.amp[site] * (stripe - 0.5) + 0.15 * lay.fields["fieldvar"][idx], 0, 1)
    soil, crop = t.soil[site].T, t.crop[site].T
    color = (soil + (crop - soil) * mix[None, :]) * t.tone[site][None, :]
    margin = np.clip(1.0 - (lay.parcels.gap[idx] - 1.0) / 1.5, 0, 1) * np.float32(0.8)
    return color + (GRASS_DRY[:, None] - color) * margin[None, :]


@dataclass(frozen=True)
class _CropTable:
    """Per-parcel appearance: canopy and soil colour, cover, row stripes."""

    crop: np.ndarray  # (n, 4)
    soil: np.ndarray  # (n, 4)
    cover: np.ndarray  # crop cover fraction
    amp: np.ndarray  # stripe contrast
    cos: np.ndarray  # row direction
    sin: np.ndarray
    freq: np.ndarray  # 1 / row period (px)
    tone: np.ndarray  # brightness factor


def _crop_table(seed: int, ci: np.ndarray, cj: np.ndarray) -> _CropTable:
    """Appearance of the parcels (ci, cj), drawn by hashing the parcel cell."""
    key = stream_key(seed, "crop")

    def rnd(attr: int) -> np.ndarray:
        return uniform(key, ci, cj, attr)

    crop = _CROPS[np.minimum((rnd(0) * len(_CROPS)).astype(np.int64), len(_CROPS) - 1)]
    soil = _SOILS[np.minimum((rnd(1) * len(_SOILS)).astype(np.int64), len(_SOILS) - 1)]
    bare = rnd(2) < 0.25
    cos, sin = rotation(np.float32(2.0) * rnd(5) - np.float32(1.0))
    return _CropTable(
        crop=crop, soil=soil,
        cover=np.where(bare, 0.0, 0.35 + 0.6 * rnd(3)).astype(np.float32),
        amp=np.where(bare, 0.15, 0.25 + 0.5 * rnd(4)).astype(np.float32),
        cos=cos.astype(np.float64), sin=sin.astype(np.float64),
        freq=1.0 / (5.0 + 7.0 * rnd(6).astype(np.float64)),
        tone=(0.88 + 0.24 * rnd(7)).astype(np.float32),
    )

