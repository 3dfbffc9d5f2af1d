"""The item's footprint: where the output holds data, in EPSG:4326, and its bbox.

A catalogue answers "what covers this place" from ``geometry`` and ``bbox``. The raster's
rectangle over-claims a scene with a nodata collar (a rotated or clipped scene can be a quarter
nodata), so the footprint is drawn around the valid labels (!= 255): polygonised on a coarse level
of the store's mode pyramid, whose pixel is nodata only when every pixel under it is, so the
outline covers every valid pixel. Gaps in it up to two level pixels wide (speckled nodata) are
closed first, since the growth below fills them anyway. It is then simplified by about one pixel of
that level and grown by as much again, so the simplification never cuts a valid pixel off, and
clipped to the raster. A labels.tif read without its store places its overview as the store's
level it holds: f x f pixel blocks, the last ones cut by the raster's edge.

Memory is bounded by that level (at most ``MAX_SIDE`` pixels a side), never by the scene: a store
without a pyramid is reduced to that size window by window.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import shapes
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

from fcnseg.pipeline.io import open_raster
from fcnseg.pipeline.output.layout import LABELS_COG, STORE_NAME
from fcnseg.pipeline.pyramid import level_shape
from fcnseg.pipeline.store import LABELS, NODATA, level_path, open_store, store_levels

log = logging.getLogger(__name__)

#: The footprint is drawn on the finest level whose larger side is at most this (pixels).
MAX_SIDE = 1024
#: Points per footprint edge (corners included): a projected edge is curved in lon/lat, so the
#: polygon follows it closely enough that the bbox computed from it contains the raster.
EDGE_POINTS = 21

Footprint = tuple[dict[str, Any], list[float]]  # (GeoJSON geometry in EPSG:4326, bbox)


@dataclass(frozen=True)
class Grid:
    """The output grid: every output shares the input's CRS, transform and shape."""

    crs: CRS | None  # None: pixel coordinates, no item
    transform: Affine
    height: int
    width: int


@dataclass(frozen=True)
class ValidMask:
    """Where a coarse level holds valid labels, and that level's grid (same origin, larger pixels)."""

    mask: np.ndarray  # bool (rows, cols)
    transform: Affine


# --------------------------------------------------------------------------- public API


def data_footprint(out_dir: Path, grid: Grid) -> Footprint:
    """The outline of the valid labels in ``out_dir`` (labels.zarr, else labels.tif) and its bbox.

    A scene without nodata keeps its rectangle; so does one without any valid pixel (there is
    no better outline for it, and it is logged).
    """
    valid = read_valid_mask(out_dir, grid)
    if valid.mask.all():
        return rectangle_footprint(grid)
    if not valid.mask.any():
        log.warning("%s: no valid label at all; the footprint is the raster's rectangle", out_dir)
        return rectangle_footprint(grid)
    outline = valid_outline(valid, grid)
    return lonlat_footprint(outline, grid)


def rectangle_footprint(grid: Grid, edge_points: int = EDGE_POINTS) -> Footprint:
    """The raster's outline in EPSG:4326 (GeoJSON Polygon, counter-clockwise) and its bbox.

    Each edge is densified before reprojection, so the curved edges of a projected grid are
    followed and the bbox (from all points) contains the whole raster, not just its corners.
    """
    t = np.linspace(0.0, 1.0, edge_points)[:-1]
    w, h = grid.width, grid.height
    cols = np.concatenate([np.zeros_like(t), t * w, np.full_like(t, w), (1 - t) * w])
    rows = np.concatenate([t * h, np.full_like(t, h), (1 - t) * h, np.zeros_like(t)])
    xs, ys = grid.transform @ (cols, rows)
    lon, lat = warp_transform(grid.crs, "EPSG:4326", np.asarray(xs).tolist(), np.asarray(ys).tolist())
    ring = [[float(x), float(y)] for x, y in zip(lon, lat)]
    if not all(math.isfinite(v) for p in ring for v in p):
        raise ValueError(f"the raster footprint does not reproject to EPSG:4326 (CRS {grid.crs})")
    if _signed_area(ring) < 0:  # RFC 7946: exterior rings counter-clockwise
        ring.reverse()
    ring.append(ring[0])
    geometry = {"type": "Polygon", "coordinates": [ring]}
    return geometry, _bbox(geometry)


# --------------------------------------------------------------------------- reading validity


def read_valid_mask(out_dir: Path, grid: Grid) -> ValidMask:
    """Valid labels on a level of at most MAX_SIDE pixels a side: from the store, else labels.tif."""
    store = out_dir / STORE_NAME
    if store.is_dir():
        return _store_valid_mask(store, grid)
    return _cog_valid_mask(out_dir / LABELS_COG, grid)


def reduction_factor(height: int, width: int, max_side: int = MAX_SIDE) -> int:
    """The smallest power of two that brings the larger side to at most ``max_side``."""
    factor = 1
    while max(level_shape(height, width, factor)) > max_side:
        factor *= 2
    return factor


def reduce_valid(read: Callable[[Window], np.ndarray], height: int, width: int, factor: int,
                 block: int) -> np.ndarray:
    """Per ``factor`` x ``factor`` block, whether any pixel is valid, reading ``block``-sized windows
    (rounded up to whole blocks): memory holds one window and the reduced mask."""
    step = -(-max(block, factor) // factor) * factor
    out = np.zeros(level_shape(height, width, factor), dtype=bool)
    for r0 in range(0, height, step):
        for c0 in range(0, width, step):
            window = Window(c0, r0, min(step, width - c0), min(step, height - r0))
            valid = np.asarray(read(window)) != NODATA
            reduced = _any_blocks(valid, factor)
            out[r0 // factor: r0 // factor + reduced.shape[0], c0 // factor: c0 // factor + reduced.shape[1]] = reduced
    return out


def _store_valid_mask(store: Path, grid: Grid) -> ValidMask:
    """The finest pyramid level that fits (a mode level is nodata only where all its pixels are)."""
    group = open_store(store, mode="r")
    labels = group[LABELS]
    height, width = labels.shape
    if max(height, width) <= MAX_SIDE:
        return ValidMask(np.asarray(labels[:]) != NODATA, grid.transform)
    fitting = [lv for lv in store_levels(group) or [] if max(level_shape(height, width, lv.factor)) <= MAX_SIDE]
    if fitting:
        level = fitting[0]
        return ValidMask(np.asarray(group[level_path(level)][:]) != NODATA, grid.transform @ Affine.scale(level.factor))
    factor = reduction_factor(height, width)  # a store from before pyramids
    log.debug("%s has no pyramid: reducing its labels %dx for the footprint", store, factor)
    mask = reduce_valid(lambda w: labels[w.row_off: w.row_off + w.height, w.col_off: w.col_off + w.width],
                        height, width, factor, max(labels.chunks))
    return ValidMask(mask, grid.transform @ Affine.scale(factor))


def _cog_valid_mask(path: Path, grid: Grid) -> ValidMask:
    """From labels.tif: full resolution when small, its (mode) overview that fits, else reduced by windows."""
    with open_raster(path) as src:
        height, width = src.height, src.width
        if max(height, width) <= MAX_SIDE:
            return ValidMask(src.read(1) != NODATA, grid.transform)
        fitting = [f for f in map(_level_factor, src.overviews(1)) if max(level_shape(height, width, f)) <= MAX_SIDE]
        if fitting:
            rows, cols = level_shape(height, width, fitting[0])
            labels = src.read(1, out_shape=(rows, cols), resampling=Resampling.nearest)  # the overview itself
            # its pixels are the store level's f x f blocks (copied as they are): f pixels wide, not
            # width / cols (GDAL's overview convention), which differ when f does not divide the size
            return ValidMask(labels != NODATA, grid.transform @ Affine.scale(fitting[0]))
        factor = reduction_factor(height, width)
        mask = reduce_valid(lambda w: src.read(1, window=w), height, width, factor, max(src.block_shapes[0]))
        return ValidMask(mask, grid.transform @ Affine.scale(factor))


def _level_factor(reported: int) -> int:
    """The power of two a COG overview was made with: rasterio reports round(width / overview width),
    which for an edge-cut last block can be off (a 9 px side's 4x overview, 3 px wide, reads as 3)."""
    return 1 << max(0, round(math.log2(max(1, reported))))


def _any_blocks(valid: np.ndarray, factor: int) -> np.ndarray:
    """Whether each factor x factor block holds a True (blocks cut by the edge: what is inside)."""
    if factor == 1:
        return valid
    rows, cols = level_shape(*valid.shape, factor)
    padded = np.zeros((rows * factor, cols * factor), dtype=bool)
    padded[: valid.shape[0], : valid.shape[1]] = valid
    return padded.reshape(rows, factor, cols, factor).any(axis=(1, 3))


# --------------------------------------------------------------------------- outline


def valid_outline(valid: ValidMask, grid: Grid) -> BaseGeometry:
    """The valid area in the grid's CRS: polygonised, simplified and grown by one level pixel, clipped
    to the raster. It covers every valid pixel of the level (checked; the exact area is added if not)."""
    exact = _polygonise(ValidMask(close_gaps(valid.mask), valid.transform)).intersection(raster_rectangle(grid))
    tolerance = level_pixel_size(valid.transform)
    outline = exact.simplify(tolerance, preserve_topology=True).buffer(tolerance, join_style="mitre")
    outline = outline.intersection(raster_rectangle(grid))
    if not outline.covers(exact):  # not expected: simplify moves edges by at most the tolerance
        log.debug("simplified footprint misses valid pixels; adding them back")
        outline = outline.union(exact)
    return outline


def close_gaps(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every nodata gap at most two pixels wide filled: a morphological closing by a
    3 x 3 square, which contains its input (no valid pixel is lost).

    Growing the outline by one level pixel with mitred corners (the 3 x 3 dilation, for pixel
    edges) fills these gaps anyway, and the dilation of the closing is the dilation itself; but
    polygonised first they are holes by the thousand on speckled nodata, and the simplification
    takes minutes on them (measured: docs/benchmarks.md#figures-quoted-in-code-comments).
    """
    grown = _dilate3(np.pad(mask, 1))  # beyond the raster: no data
    return ~_dilate3(~grown)[1:-1, 1:-1]  # the erosion, as the dilation of the complement


def _dilate3(mask: np.ndarray) -> np.ndarray:
    """Dilation by a 3 x 3 square (rows, then columns); beyond the array counts as False."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def raster_rectangle(grid: Grid) -> Polygon:
    corners = [grid.transform @ (c, r) for c, r in ((0, 0), (grid.width, 0), (grid.width, grid.height),
                                                     (0, grid.height))]
    return Polygon(corners)


def level_pixel_size(transform: Affine) -> float:
    """The larger side of one pixel of a level, in CRS units (rotated grids included)."""
    return max(math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e))


def _polygonise(valid: ValidMask) -> BaseGeometry:
    pieces = [shape(geom) for geom, _ in shapes(valid.mask.view(np.uint8), mask=valid.mask,
                                                 transform=valid.transform, connectivity=8)]
    return shapely.union_all(pieces)


# --------------------------------------------------------------------------- to EPSG:4326


def lonlat_footprint(outline: BaseGeometry, grid: Grid) -> Footprint:
    """``outline`` (grid CRS) in EPSG:4326, its edges densified first so that they follow the curve
    a projected straight line makes in lon/lat; rings counter-clockwise (RFC 7946)."""
    minx, miny, maxx, maxy = raster_rectangle(grid).bounds
    dense = shapely.segmentize(outline, max(maxx - minx, maxy - miny) / (EDGE_POINTS - 1))
    projected = shape(transform_geom(grid.crs, "EPSG:4326", mapping(dense)))
    if not projected.is_valid:
        projected = projected.buffer(0)
    coords = shapely.get_coordinates(projected)
    if coords.size == 0 or not np.isfinite(coords).all():
        raise ValueError(f"the footprint does not reproject to EPSG:4326 (CRS {grid.crs})")
    geometry = _plain(mapping(shapely.orient_polygons(projected, exterior_cw=False)))
    return geometry, _bbox(geometry)


def _bbox(geometry: dict[str, Any]) -> list[float]:
    coords = shapely.get_coordinates(shape(geometry))
    west, south = coords.min(axis=0)
    east, north = coords.max(axis=0)
    if east - west > 180:
        log.warning("footprint spans %.0f degrees of longitude: it may cross the antimeridian, "
                    "which this item does not split", east - west)
    return [float(west), float(south), float(east), float(north)]


def _plain(value: Any) -> Any:
    """GeoJSON from shapely's mapping (tuples) as plain lists and floats."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return float(value) if isinstance(value, int | float | np.floating) else value


def _signed_area(ring: list[list[float]]) -> float:
    x = np.array([p[0] for p in ring])
    y = np.array([p[1] for p in ring])
    return float(0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
