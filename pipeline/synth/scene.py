"""The scene-wide plan: everything global about one scene, drawn once per (seed, size).

Rivers, main roads and the street grid come from ``np.random.default_rng(seed)``; the
class thresholds are then calibrated on coarse samples of the scene itself, which
keeps every class's share near its target in every scene, whatever the seed.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, replace

import numpy as np

from fcnseg.pipeline.synth.cropland import parcel_sites
from fcnseg.pipeline.synth.fields import AGRI, FOREST_F, LAKE
from fcnseg.pipeline.synth.noise import fbm_points, stream_key
from fcnseg.pipeline.synth.roads import make_road
from fcnseg.pipeline.synth.settlements import blocks_inside, urban_score
from fcnseg.pipeline.synth.strokes import Strokes, concat
from fcnseg.pipeline.synth.water import make_river

logger = logging.getLogger(__name__)

_TARGET_LAKE = 0.05  # share of the scene under lakes (rivers come on top)
_TARGET_FOREST = 0.35  # share of the scene where the forest field is on (before others cut it)
_TARGET_URBAN = 0.17  # share of street blocks that are built up
_TARGET_CROP = 0.72  # share of parcels that are cropland (the rest are meadows)


@dataclass(frozen=True)
class Scene:
    """Everything global about one scene; small, computed once per (seed, size)."""

    seed: int
    size: int
    rivers: Strokes
    roads: Strokes
    grid_cos: float  # street grid orientation
    grid_sin: float
    block: float  # street grid spacing (px)
    street_hw: float  # street half-width (px)
    grid_off: tuple[float, float]  # street grid offset in rotated (u, v) coordinates
    parcel: float  # parcel (Voronoi) cell size (px)
    t_lake: float
    t_forest: float
    t_urban: float
    t_crop: float


@functools.lru_cache(maxsize=8)
def plan_scene(seed: int, size: int) -> Scene:
    """Draw a scene's global parameters, then calibrate class thresholds on coarse samples.

    Calibrating thresholds on samples of the scene itself keeps every class's share
    near its target in every scene (even a 1024 px one), whatever the seed.
    """
    rng = np.random.default_rng(seed)
    rivers = concat([make_river(rng, size) for _ in range(1 + size // 5000)])
    roads = concat([make_road(rng, size) for _ in range(2 + size // 2500)])
    angle = math.atan2(roads.by[0] - roads.ay[0], roads.bx[0] - roads.ax[0]) + rng.normal(0, 0.15)
    block = float(rng.uniform(105, 135))
    base = Scene(
        seed=seed, size=size, rivers=rivers, roads=roads,
        grid_cos=math.cos(angle), grid_sin=math.sin(angle), block=block,
        street_hw=float(rng.uniform(4.0, 5.0)), grid_off=(float(rng.uniform(0, block)), float(rng.uniform(0, block))),
        parcel=float(rng.uniform(150, 190)),
        t_lake=math.inf, t_forest=math.inf, t_urban=math.inf, t_crop=math.inf,
    )
    return _calibrate(base)


def _sample_grid(size: int, n_max: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A regular grid of sample points over the scene, for threshold calibration."""
    n = int(min(n_max, max(16, size // 16)))
    p = (np.arange(n) + 0.5) * (size / n)
    return np.repeat(p, n), np.tile(p, n)


def _subsample(*arrays: np.ndarray, n_max: int = 4096) -> tuple[np.ndarray, ...]:
    step = max(1, int(math.ceil(arrays[0].size / n_max)))
    return tuple(a[::step] for a in arrays)


def _calibrate(s: Scene) -> Scene:
    """Pick the thresholds that give each class its target share in this scene."""
    r, c = _sample_grid(s.size)
    t_lake = _threshold(fbm_points(stream_key(s.seed, "lake"), r, c, LAKE), _TARGET_LAKE)
    t_forest = _threshold(fbm_points(stream_key(s.seed, "forest"), r, c, FOREST_F), _TARGET_FOREST)
    s = replace(s, t_lake=t_lake, t_forest=t_forest)

    k, j = _subsample(*blocks_inside(s))
    t_urban = _threshold(urban_score(s, k, j), _TARGET_URBAN)

    n = int(math.ceil(s.size / s.parcel))
    ci, cj = _subsample(np.repeat(np.arange(n), n), np.tile(np.arange(n), n))
    t_crop = _threshold(fbm_points(stream_key(s.seed, "agri"), *parcel_sites(s, ci, cj), AGRI), _TARGET_CROP)
    logger.debug("scene seed=%d size=%d thresholds lake=%.3f forest=%.3f urban=%.3f crop=%.3f",
                 s.seed, s.size, t_lake, t_forest, t_urban, t_crop)
    return replace(s, t_urban=t_urban, t_crop=t_crop)


def _threshold(values: np.ndarray, share: float) -> float:
    """The value that ``share`` of the samples exceed (inf when there are no samples)."""
    return float(np.quantile(values, 1.0 - share)) if values.size else math.inf
