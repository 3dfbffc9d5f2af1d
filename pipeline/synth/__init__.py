"""Procedural synthetic land-cover scenes, rendered window by window.

A scene is a pure function of ``(seed, size)`` and global pixel coordinates: every
random quantity comes either from hashing integer lattice coordinates with the seed
(value noise, jittered point sets) or from a handful of per-scene parameters drawn
once from ``np.random.default_rng(seed)`` (rivers, main roads, street grid, class
thresholds).  Nothing depends on the window being rendered, so any window of a
20000 x 20000 scene can be rendered on its own, and equals the same region cut out
of any larger window, bit for bit.  That is what lets ``write_scene`` stream a scene
of any size to disk with memory bounded by the block size.

Floating point is kept deterministic per pixel: only IEEE add/mul/div/sqrt, floor and
min/max act on per-pixel arrays (no transcendental functions, no BLAS reductions), so a
pixel's value cannot depend on how numpy vectorises the array it sits in.

Modules, from the bottom up:

- ``spec``: classes, bands, nodata values, georeferencing (the public constants)
- ``noise``: hashing of integer coordinates, value noise, fbm
- ``fields``: the scene's low-frequency fields (lakes, forest, settlements, farmland, ...)
- ``strokes``: polyline geometry and distance fields of rivers and main roads
- ``water``, ``roads``, ``settlements``, ``buildings``, ``cropland``, ``vegetation``:
  each what it draws, and the painting of its class
- ``scene``: the scene-wide plan (per-scene parameters, calibrated class thresholds)
- ``layers``: a window's label map and the fields painting reuses
- ``footprint``: where a scene is nodata (the slanted collar, the rotated scene)
- ``radiometry``: another scene's radiometry on the same land cover (gain, offset, haze, season)
- ``encoding``: the delivered bands and data type, from the painted reflectance
- ``options``: the checks of the delivery options
- ``render``: ``render_window``
- ``writer``: ``write_scene`` and its GeoTIFF profiles (tiled or stripped)
"""

from __future__ import annotations

from fcnseg.pipeline.synth.radiometry import Radiometry
from fcnseg.pipeline.synth.render import render_window
from fcnseg.pipeline.synth.spec import (
    BAND_NAMES,
    BAND_SETS,
    BUILDING,
    CLASSES,
    CROPLAND,
    CRS,
    ENCODINGS,
    FOREST,
    GRASSLAND,
    GRIDS,
    IMAGE_NODATA,
    LABEL_NODATA,
    LAYOUTS,
    ORIGIN,
    PIXEL_SIZE,
    ROAD,
    ROTATE_STEP,
    STRIP_ROWS,
    TILE,
    WATER,
    LandCoverClass,
)
from fcnseg.pipeline.synth.writer import write_scene

__all__ = [
    "BAND_NAMES", "BAND_SETS", "BUILDING", "CLASSES", "CROPLAND", "CRS", "ENCODINGS", "FOREST", "GRASSLAND", "GRIDS",
    "IMAGE_NODATA", "LABEL_NODATA", "LAYOUTS", "ORIGIN", "PIXEL_SIZE", "ROAD", "ROTATE_STEP", "STRIP_ROWS", "TILE",
    "WATER", "LandCoverClass", "Radiometry", "render_window", "write_scene",
]
