"""Main roads: the long, nearly straight roads drawn once per scene, and the painting of the road class.

Streets (the road pixels of the town grid) are decided in ``settlements``; they are
painted here too, lighter than main roads.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from fcnseg.pipeline.synth.noise import noise_grid, stream_key
from fcnseg.pipeline.synth.strokes import Strokes, polyline

if TYPE_CHECKING:
    from fcnseg.pipeline.synth.layers import Layers
    from fcnseg.pipeline.synth.scene import Scene

_MAIN_ROAD = np.array((820, 870, 920, 980), np.float32)
_STREET = np.array((1080, 1130, 1180, 1260), np.float32)


def make_road(rng: np.random.Generator, size: int) -> Strokes:
    """A long, nearly straight main road through the scene, 12-14 px wide."""
    centre = rng.uniform(0.2, 0.8, 2) * size
    angle = rng.uniform(0, np.pi)
    direction = np.array([math.sin(angle), math.cos(angle)])
    normal = np.array([-direction[1], direction[0]])
    half_len = size * 1.5 + 200
    t = np.arange(-half_len, half_len + 32.0, 32.0)
    wavelength = rng.uniform(2500, 7000)
    offset = rng.uniform(0, 60) * np.sin(2 * np.pi * t / wavelength + rng.uniform(0, 2 * np.pi))
    points = centre + t[:, None] * direction + offset[:, None] * normal
    return polyline(points, np.full(t.size, rng.uniform(6.0, 7.0)))


def paint_road(s: Scene, lay: Layers, idx) -> np.ndarray:
    """Grey asphalt, low NIR; main roads darker than streets; fine grain."""
    color = np.where(lay.main_road[idx][None, :], _MAIN_ROAD[:, None], _STREET[:, None])
    fine = noise_grid(stream_key(s.seed, "asphalt"), lay.rows, lay.cols, 2.5)[idx]
    return color * (np.float32(0.95) + np.float32(0.1) * fine)[None, :]

