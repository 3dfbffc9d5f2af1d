"""Water: the meandering rivers drawn once per scene, and the painting of the water class.

Lakes are where the low-frequency lake field exceeds the scene's threshold (see
``fields`` and ``scene``); rivers are strokes from one scene edge to the opposite one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fcnseg.pipeline.synth.noise import lerp
from fcnseg.pipeline.synth.strokes import Strokes, polyline

if TYPE_CHECKING:
    from fcnseg.pipeline.synth.layers import Layers
    from fcnseg.pipeline.synth.scene import Scene

_WATER_DEEP = np.array((380, 450, 260, 110), np.float32)
_WATER_TURBID = np.array((620, 780, 560, 240), np.float32)
_WATER_SHALLOW = np.array((700, 880, 700, 520), np.float32)


def make_river(rng: np.random.Generator, size: int) -> Strokes:
    """A meandering river from one scene edge to the opposite one, 15-60 px wide."""
    pad = 200.0
    a, b = rng.uniform(0.2, 0.8, 2) * size
    start, end = ((-pad, a), (size + pad, b)) if rng.integers(2) else ((a, -pad), (b, size + pad))
    start, end = np.array(start), np.array(end)
    length = float(np.hypot(*(end - start)))
    direction = (end - start) / length
    normal = np.array([-direction[1], direction[0]])
    t = np.arange(0.0, length + 8.0, 8.0)
    offset = np.zeros_like(t)
    for _ in range(3):
        wavelength = rng.uniform(350, 1400)
        offset += rng.uniform(0.04, 0.1) * wavelength * np.sin(2 * np.pi * t / wavelength + rng.uniform(0, 2 * np.pi))
    points = start + t[:, None] * direction + offset[:, None] * normal
    swell = np.sin(2 * np.pi * t / rng.uniform(600, 2000) + rng.uniform(0, 2 * np.pi))
    width = rng.uniform(22, 42) * (1 + 0.35 * swell)
    return polyline(points, np.clip(width, 15, 60) / 2)


def paint_water(s: Scene, lay: Layers, idx) -> np.ndarray:
    """Smooth, dark, low NIR; murkier in places, lighter in the shallows by the banks."""
    turbid = np.clip(0.5 + lay.fields["turbid"][idx], 0, 1)
    color = lerp(_WATER_DEEP, _WATER_TURBID, turbid)
    depth = np.maximum(-lay.river[idx] / 5.0, lay.lake[idx] / 0.03)
    shallow = np.clip(1.0 - depth, 0, 1) * np.float32(0.6)
    return color + (_WATER_SHALLOW[:, None] - color) * shallow[None, :]
