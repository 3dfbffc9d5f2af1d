"""The scene's low-frequency noise fields: lakes, forest, settlements, farmland, light, texture.

Each field is an fbm with its own octaves and stream key.  Over a window they are
evaluated on a coarse node grid (every ``_NODE`` px, globally aligned) and bilinearly
upsampled, which is cheap and still exact per pixel.
"""

from __future__ import annotations

import numpy as np

from fcnseg.pipeline.synth.noise import Octaves, fbm_points, lerp_grid, stream_key

_NODE = 8
LAKE: Octaves = ((700, 1.0), (350, 0.5), (170, 0.25), (85, 0.12))
FOREST_F: Octaves = ((520, 1.0), (260, 0.55), (130, 0.3), (64, 0.16), (32, 0.08))
SETTLE: Octaves = ((900, 1.0), (420, 0.45))
AGRI: Octaves = ((1100, 1.0), (500, 0.5))
_ILLUM: Octaves = ((2600, 1.0), (1200, 0.5))
_GRASS_F: Octaves = ((180, 1.0), (75, 0.5), (30, 0.25))
_TURBID: Octaves = ((320, 1.0), (120, 0.5))
_SPECIES: Octaves = ((160, 1.0), (70, 0.5))
_FIELD_VAR: Octaves = ((90, 1.0), (35, 0.5))
_COARSE_FIELDS: tuple[tuple[str, Octaves], ...] = (
    ("lake", LAKE), ("forest", FOREST_F), ("illum", _ILLUM), ("grass", _GRASS_F),
    ("turbid", _TURBID), ("species", _SPECIES), ("fieldvar", _FIELD_VAR),
)


def coarse_fields(seed: int, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
    """All low-frequency fields of the window, as (h, w) float32 arrays."""
    up = _on_nodes(seed, _COARSE_FIELDS, rows, cols)
    return {name: up[i] for i, (name, _) in enumerate(_COARSE_FIELDS)}


def coarse_field(seed: int, name: str, octaves: Octaves, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """One more low-frequency field (e.g. ``radiometry``'s haze), computed only when asked for."""
    return _on_nodes(seed, ((name, octaves),), rows, cols)[0]


def _on_nodes(seed: int, named: tuple[tuple[str, Octaves], ...], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(fields, h, w): each fbm on the coarse node grid, bilinearly upsampled to the window's pixels."""
    n = _NODE
    iy, fy = np.floor_divide(rows, n).astype(np.int64), ((rows % n) / n).astype(np.float32)
    ix, fx = np.floor_divide(cols, n).astype(np.int64), ((cols % n) / n).astype(np.float32)
    node_r = (np.arange(iy[0], iy[-1] + 2) * n).astype(np.float64)[:, None]
    node_c = (np.arange(ix[0], ix[-1] + 2) * n).astype(np.float64)[None, :]
    nodes = np.stack([fbm_points(stream_key(seed, name), node_r, node_c, octs) for name, octs in named])
    return lerp_grid(nodes, iy - iy[0], fy, ix - ix[0], fx)

