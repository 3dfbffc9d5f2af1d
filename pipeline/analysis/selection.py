"""Selections of a class raster: a box or an area of interest becomes a polygon in the raster's
CRS, and each window of the raster gets the mask of the pixels whose centre lies inside it.

A box in another CRS is densified into a polygon and reprojected (a reprojected box is not a
box), then treated like an area of interest. The pixel rule is GDAL's rasterisation with
``all_touched=False``, applied per window.

A raster without a CRS (pixel coordinates) takes selections in its own coordinates only: nothing
is reprojected, and an area of interest that has a CRS is refused (there is no way to place it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import shapely
import shapely.affinity
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import geometry_mask
from rasterio.windows import Window

from fcnseg.pipeline.analysis.label_raster import LabelRaster
from fcnseg.pipeline.io import InputError, crs_name

#: Vertices added along each side of a box before it is reprojected.
DENSIFY = 64
#: shapely type ids of Polygon and MultiPolygon.
POLYGON_TYPES = (3, 6)


def parse_crs(value: str | CRS | None, default: CRS | None) -> CRS | None:
    if value is None:
        return default
    if isinstance(value, CRS):
        return value
    try:
        return CRS.from_user_input(value)
    except Exception as exc:
        raise InputError(f"invalid CRS {value!r}: {exc}") from None


def reproject_geometry(geom: shapely.Geometry, src: CRS | None, dst: CRS | None) -> shapely.Geometry:
    """``geom`` from ``src`` to ``dst`` coordinates (vertex by vertex: densify first); None: pixel coordinates."""
    if src == dst:
        return geom
    if src is None or dst is None:  # the callers refuse this first; never guess a georeferencing
        raise InputError("a selection with a CRS cannot be placed on a raster without one (or the reverse)")
    transformer = pyproj.Transformer.from_crs(
        pyproj.CRS.from_wkt(src.to_wkt()), pyproj.CRS.from_wkt(dst.to_wkt()), always_xy=True
    )

    def project(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    out = shapely.transform(geom, project)
    coords = shapely.get_coordinates(out)
    if coords.size and not np.isfinite(coords).all():
        raise InputError(
            f"the selection cannot be reprojected from {src.to_string()} to {dst.to_string()} (outside its area of use)"
        )
    return out


def bbox_polygon(bbox: Sequence[float], bbox_crs: CRS | None, raster_crs: CRS | None) -> shapely.Geometry:
    """The box MINX MINY MAXX MAXY as a polygon in the raster's CRS (densified when reprojected)."""
    if len(bbox) != 4:
        raise InputError(f"--bbox has 4 numbers (MINX MINY MAXX MAXY), got {len(bbox)}")
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if not all(map(math.isfinite, bbox)) or minx >= maxx or miny >= maxy:
        raise InputError(f"--bbox {list(bbox)} is empty or inverted: expected MINX MINY MAXX MAXY, MINX < MAXX, MINY < MAXY")
    box = shapely.box(minx, miny, maxx, maxy)
    if bbox_crs != raster_crs:
        box = shapely.segmentize(box, max(maxx - minx, maxy - miny) / DENSIFY)
    return reproject_geometry(box, bbox_crs, raster_crs)


def read_aoi(path: str | Path, raster_crs: CRS | None) -> tuple[shapely.Geometry, dict[str, Any]]:
    """Union of the polygons of a vector file, in the raster's CRS, and how it was read.

    For a raster without a CRS the file must have none either: its coordinates are then the
    raster's own (pixel/transform) coordinates."""
    import geopandas

    with reading_aoi(path):
        frame = geopandas.read_file(path)
    check_aoi_crs(path, None if frame.crs is None else CRS.from_user_input(frame.crs), raster_crs)
    parts = shapely.get_parts(shapely.make_valid(frame.geometry.dropna().to_numpy()))
    polygons = _polygonal(shapely.union_all(parts[np.isin(shapely.get_type_id(parts), POLYGON_TYPES)]))
    if polygons.is_empty:
        raise InputError(f"{path}: the area of interest holds no polygons ({len(frame)} features)")
    src_crs = None if frame.crs is None else CRS.from_user_input(frame.crs)
    if src_crs != raster_crs:
        minx, miny, maxx, maxy = polygons.bounds
        polygons = shapely.segmentize(polygons, max(maxx - minx, maxy - miny) / (4 * DENSIFY))
    geom = _polygonal(shapely.make_valid(reproject_geometry(polygons, src_crs, raster_crs)))
    return geom, {"type": "aoi", "path": str(path), "crs": crs_name(src_crs), "features": len(frame)}


@contextmanager
def reading_aoi(path: str | Path) -> Iterator[None]:
    """Around a read of an AOI file: a missing or unreadable file becomes one InputError naming it."""
    import pyogrio.errors

    if not str(path).count("://") and not Path(path).exists():
        raise InputError(f"{path}: cannot read the area of interest (no such file)")
    try:
        yield
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the area of interest as a vector file ({exc})") from None


def check_aoi_crs(path: str | Path, aoi_crs: CRS | None, raster_crs: CRS | None) -> None:
    """An AOI and a raster must both have a CRS or both lack one: never guess a georeferencing."""
    if raster_crs is None and aoi_crs is not None:
        raise InputError(f"{path}: the area of interest is in {aoi_crs.to_string()}, but the raster has no CRS "
                         "(pixel coordinates); give an area of interest without a CRS, in its grid")
    if aoi_crs is None and raster_crs is not None:
        raise InputError(f"{path}: the area of interest has no CRS (add a .prj or write it with one)")


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Only the polygons of a geometry (make_valid and reprojection may leave lines and points)."""
    parts = shapely.get_parts(geom)
    polys = parts[np.isin(shapely.get_type_id(parts), POLYGON_TYPES) & ~shapely.is_empty(parts)]
    return shapely.union_all(polys) if len(polys) else shapely.Polygon()


def footprint(transform: Affine, window: Window) -> shapely.Polygon:
    """A window's outline in world coordinates (a parallelogram for rotated rasters)."""
    c0, r0, c1, r1 = window.col_off, window.row_off, window.col_off + window.width, window.row_off + window.height
    return shapely.Polygon([transform @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])


def pixel_bounds(raster: LabelRaster, geom: shapely.Geometry) -> Window | None:
    """The raster window that holds every pixel centre the polygon may contain (None: no overlap)."""
    inv = ~raster.transform
    pixels = shapely.affinity.affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.xoff, inv.yoff])
    minx, miny, maxx, maxy = pixels.bounds
    c0, r0 = max(0, math.floor(minx)), max(0, math.floor(miny))
    c1, r1 = min(raster.width, math.ceil(maxx)), min(raster.height, math.ceil(maxy))
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def selection_mask(raster: LabelRaster, prepared: shapely.Geometry, window: Window) -> np.ndarray | bool:
    """True where the pixel centre is inside the polygon; ``True``/``False`` for a window all in or all out."""
    outline = footprint(raster.transform, window)
    if not prepared.intersects(outline):
        return False
    if prepared.contains(outline):
        return True
    # clip to the window (a pixel beyond) so that a huge AOI is not rasterised whole for every window
    margin = Window(window.col_off - 1, window.row_off - 1, window.width + 2, window.height + 2)
    minx, miny, maxx, maxy = footprint(raster.transform, margin).bounds
    local = shapely.clip_by_rect(prepared, minx, miny, maxx, maxy)
    if local.is_empty:
        return False
    transform = raster.transform @ Affine.translation(window.col_off, window.row_off)
    shape = (int(window.height), int(window.width))
    return geometry_mask([local], out_shape=shape, transform=transform, invert=True, all_touched=False)
