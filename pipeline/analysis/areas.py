"""True areas in square metres, for pixels and for geometries, in any CRS.

A projected CRS has one pixel area everywhere (in the projection's plane, converted from the CRS's
linear unit to metres). In a geographic CRS a pixel is a longitude x latitude cell whose area on the
CRS's own ellipsoid shrinks towards the poles; it depends only on the latitude, so it is computed
once per row, exactly (the closed form of the ellipsoid's area between two parallels), never by
assuming a sphere or a constant metres-per-degree.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyproj
import shapely
from affine import Affine
from rasterio.crs import CRS


def row_pixel_areas_m2(crs: CRS | str, transform: Affine, row_off: int, height: int) -> np.ndarray:
    """Area (m²) of one pixel on each of the rows ``row_off .. row_off + height - 1``, shape ``(height,)``.

    Geographic CRS: the exact area, on the CRS's ellipsoid, of the cell bounded by the pixel's two
    meridians and two parallels (for small pixels it equals ``pyproj.Geod.polygon_area_perimeter`` of
    the pixel's four corners to about 1e-10). Projected CRS: ``|det(transform)|`` x (metres per unit)².
    """
    crs = _rasterio_crs(crs)
    if crs.is_geographic:
        if transform.b != 0 or transform.d != 0:
            raise ValueError("pixel areas of rotated or sheared geographic rasters are not supported")
        rows = np.arange(row_off, row_off + height, dtype=np.float64)
        top = transform.f + rows * transform.e
        to_radians = crs.units_factor[1]
        return _cell_areas(_geod(crs), abs(transform.a) * to_radians, top * to_radians, (top + transform.e) * to_radians)
    return np.full(height, abs(transform.determinant) * metres_per_unit(crs) ** 2, dtype=np.float64)


def geometries_area_m2(geoms: Iterable[shapely.Geometry], crs: CRS | str) -> np.ndarray:
    """Area (m²) of each shapely geometry, whose coordinates are in ``crs``.

    Geographic CRS: geodesic area on the CRS's ellipsoid (``Geod.geometry_area_perimeter``, made
    positive whatever the ring orientation). Projected CRS: planar area x (metres per unit)².
    """
    crs = _rasterio_crs(crs)
    geoms = np.asarray(list(geoms), dtype=object)
    if crs.is_geographic:
        geod = _geod(crs)
        areas = [abs(geod.geometry_area_perimeter(g)[0]) if g is not None else 0.0 for g in geoms]
        return np.array(areas, dtype=np.float64)
    return np.nan_to_num(shapely.area(geoms).astype(np.float64)) * metres_per_unit(crs) ** 2


def metres_per_unit(crs: CRS) -> float:
    """Metres in one linear unit of a projected CRS (1 for metres, 0.3048006... for US survey feet)."""
    try:
        return float(crs.linear_units_factor[1])
    except Exception as exc:  # a local or engineering CRS without a defined unit
        raise ValueError(f"CRS {crs.to_string()!r} has no linear unit in metres: {exc}") from None


def _rasterio_crs(crs: CRS | str) -> CRS:
    if crs is None:
        raise ValueError("no CRS: areas in m² need one")
    return crs if isinstance(crs, CRS) else CRS.from_user_input(crs)


def _geod(crs: CRS) -> pyproj.Geod:
    """The ellipsoid of the CRS itself (not WGS 84 unless the CRS says so)."""
    return pyproj.CRS.from_wkt(crs.to_wkt()).get_geod()


def _cell_areas(geod: pyproj.Geod, dlon: float, lat1: np.ndarray, lat2: np.ndarray) -> np.ndarray:
    """Area of cells ``dlon`` radians wide between parallels ``lat1`` and ``lat2`` (radians)."""
    half = np.pi / 2
    return dlon * np.abs(_zone_area(geod, np.clip(lat1, -half, half)) - _zone_area(geod, np.clip(lat2, -half, half)))


def _zone_area(geod: pyproj.Geod, lat: np.ndarray) -> np.ndarray:
    """Area between the equator and ``lat``, per radian of longitude, on the ellipsoid (a, e)."""
    e = np.sqrt(geod.es)
    s = np.sin(lat)
    b2 = geod.b**2
    if e < 1e-12:  # a sphere
        return b2 * s
    return b2 / 2 * (s / (1 - geod.es * s**2) + np.arctanh(e * s) / e)
