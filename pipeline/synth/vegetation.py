"""Vegetation: the painting of the forest class (round tree crowns) and of the grassland class."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fcnseg.pipeline.synth.noise import lerp, noise_grid, stream_key, uniform

if TYPE_CHECKING:
    from fcnseg.pipeline.synth.layers import Layers
    from fcnseg.pipeline.synth.scene import Scene

_CONIFER = np.array((210, 370, 220, 2300), np.float32)
_BROADLEAF = np.array((330, 580, 340, 3700), np.float32)
_GRASS = np.array((430, 800, 560, 3100), np.float32)
GRASS_DRY = np.array((620, 960, 900, 2650), np.float32)


def paint_forest(s: Scene, lay: Layers, idx) -> np.ndarray:
    """Dark green, high NIR, with sunlit round crowns and shaded gaps between them."""
    species = np.clip(0.5 + 1.2 * lay.fields["species"][idx], 0, 1)
    color = lerp(_CONIFER, _BROADLEAF, species)
    light = _crowns(s.seed, lay.rows[idx[0]], lay.cols[idx[1]])
    return color * (np.float32(0.35) + np.float32(0.95) * light)[None, :]


def _crowns(seed: int, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Illumination of a canopy of round crowns on a jittered 6 px lattice (0 = shadowed gap)."""
    cell = 6.0
    key = stream_key(seed, "crowns")
    ci, cj = np.floor(r / cell).astype(np.int64), np.floor(c / cell).astype(np.int64)
    i0, j0 = ci.min() - 1, cj.min() - 1
    ti, tj = np.meshgrid(np.arange(i0, ci.max() + 2), np.arange(j0, cj.max() + 2), indexing="ij")
    ty = ((ti + 0.2 + 0.6 * uniform(key, ti, tj, 0)) * cell).ravel()
    tx = ((tj + 0.2 + 0.6 * uniform(key, ti, tj, 1)) * cell).ravel()
    tr = (cell * (0.5 + 0.4 * uniform(key, ti, tj, 2))).astype(np.float64).ravel()
    best = np.zeros(r.shape)
    ny = np.zeros(r.shape)
    nx = np.zeros(r.shape)
    for da in (-1, 0, 1):
        for db in (-1, 0, 1):
            t = (ci + da - i0) * ti.shape[1] + (cj + db - j0)
            dy, dx, rad = r - ty[t], c - tx[t], tr[t]
            h2 = rad * rad - dy * dy - dx * dx
            higher = h2 > best * best
            h = np.sqrt(np.maximum(h2, 0.0))
            best = np.where(higher, h, best)
            ny = np.where(higher, dy / rad, ny)
            nx = np.where(higher, dx / rad, nx)
    nz = np.sqrt(np.maximum(1.0 - ny * ny - nx * nx, 0.0))
    sun = 0.45 * ny - 0.45 * nx + 0.77 * nz  # sun from the south-west, 50 deg high
    return np.where(best > 0, 0.25 + 0.75 * np.clip(sun, 0, 1), 0.0).astype(np.float32)


def paint_grassland(s: Scene, lay: Layers, idx) -> np.ndarray:
    """Mid green, high-ish NIR, smooth low-frequency variation and no stripes."""
    dry = np.clip(0.35 + 0.9 * lay.fields["grass"][idx], 0, 1)
    color = lerp(_GRASS, GRASS_DRY, dry)
    fine = noise_grid(stream_key(s.seed, "grass-fine"), lay.rows, lay.cols, 4.0)[idx]
    return color * (np.float32(0.94) + np.float32(0.12) * fine)[None, :]

