"""How much of each class lies in a box, an area of interest or under a point of a class raster.

The raster is a labels GeoTIFF (``labels.tif``, or any single-band integer class raster with a
nodata value or mask) or a ``labels.zarr`` store. Only the windows that meet the selection's bounds
are read, one block-aligned window at a time, and counted with ``np.bincount``: memory is bounded by
a window (at most ``WINDOW`` x ``WINDOW`` pixels), never by the raster.

Pixel rule: a pixel belongs to a box or an area of interest when its **centre** lies inside the
polygon (GDAL's rasterisation with ``all_touched=False``, applied per window). A box in another CRS
is densified into a polygon and reprojected (a reprojected box is not a box), then treated like an
area of interest. Areas are true areas (``fcnseg.pipeline.analysis.areas``): per-row pixel areas on the
ellipsoid for geographic rasters.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.features import geometry_mask
from rasterio.windows import Window

from fcnseg.pipeline.analysis.areas import row_pixel_areas_m2
from fcnseg.pipeline.classes import raster_classes, store_classes
from fcnseg.pipeline.io import InputError, bounded_gdal_cache, open_raster
from fcnseg.pipeline.store import LABELS, NODATA, open_store, store_geometry

log = logging.getLogger(__name__)

#: Side (pixels) of the windows read at once: whole blocks/chunks, grouped up to about this size.
WINDOW = 1024
#: Class ids above this are not classes (a DEM or a count raster was given by mistake).
MAX_CLASS_ID = 65535
#: Vertices added along each side of a box before it is reprojected.
DENSIFY = 64
#: shapely type ids of Polygon and MultiPolygon.
POLYGON_TYPES = (3, 6)


@dataclass(frozen=True)
class ClassArea:
    class_id: int
    class_name: str
    pixels: int
    area_m2: float
    share: float


@dataclass
class QueryResult:
    """Per-class pixels, true area and share of the valid pixels in the selection."""

    raster: str
    crs: str
    selection: dict[str, Any]
    classes: list[ClassArea]
    valid_pixels: int
    nodata_pixels: int
    area_m2: float
    point: dict[str, Any] | None = None
    nodata: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "raster": self.raster, "crs": self.crs, "selection": self.selection,
            "valid_pixels": self.valid_pixels, "nodata_pixels": self.nodata_pixels, "area_m2": self.area_m2,
            "classes": [asdict(c) for c in self.classes],
        }
        if self.point is not None:
            out["point"] = self.point
            out["nodata"] = bool(self.nodata)
        return out


# --- the class raster: GeoTIFF or Zarr store, read window by window --------------------------


class LabelRaster:
    """A single-band class raster: geometry, block grid, class names and windowed reads."""

    path: str
    crs: CRS
    transform: Affine
    height: int
    width: int
    block: tuple[int, int]
    class_names: list[str]

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Class ids and validity (False = nodata) of one window."""
        raise NotImplementedError


class _TiffLabels(LabelRaster):
    def __init__(self, path: str, src: rasterio.io.DatasetReader) -> None:
        self.path, self.src = path, src
        if src.count != 1:
            raise InputError(f"{path}: has {src.count} bands; a class raster has one")
        if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise InputError(f"{path}: holds {src.dtypes[0]} values; a class raster holds integer class ids")
        self.crs, self.transform, self.height, self.width = src.crs, src.transform, src.height, src.width
        self.block = tuple(src.block_shapes[0])
        # a fractional nodata value can never equal an integer class id: no nodata then
        self.nodata = int(src.nodata) if src.nodata is not None and float(src.nodata).is_integer() else None
        flags = src.mask_flag_enums[0]
        self.mask_band = self.nodata is None and (MaskFlags.per_dataset in flags or MaskFlags.alpha in flags)
        self.class_names = raster_classes(src).names

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        values = self.src.read(1, window=window)
        if self.nodata is not None:
            valid = values != self.nodata
        elif self.mask_band:
            valid = self.src.read_masks(1, window=window) > 0
        else:
            valid = np.ones(values.shape, dtype=bool)
        return values, valid


class _ZarrLabels(LabelRaster):
    def __init__(self, path: str, group) -> None:
        self.path = path
        if LABELS not in group or "spatial_ref" not in group:
            raise InputError(f"{path}: not an fcnseg label store (no '{LABELS}' array or no 'spatial_ref')")
        self.array = group[LABELS]
        if self.array.ndim != 2 or not np.issubdtype(self.array.dtype, np.integer):
            raise InputError(
                f"{path}: '{LABELS}' is {self.array.ndim}-D {self.array.dtype}; expected 2-D integer class ids"
            )
        self.crs, self.transform = store_geometry(group)
        self.height, self.width = self.array.shape
        self.block = tuple(self.array.chunks)
        self.nodata = int(self.array.attrs.get("nodata", NODATA))
        self.class_names = store_classes(self.array.attrs).names

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(self.array[window.toslices()])
        return values, values != self.nodata


def is_store(path: str | Path) -> bool:
    """A directory or a ``*.zarr`` name is a Zarr store; anything else goes to GDAL."""
    return Path(path).is_dir() or str(path).rstrip("/").endswith(".zarr")


@contextlib.contextmanager
def open_labels(path: str | Path) -> Iterator[LabelRaster]:
    """Open a labels GeoTIFF (or any single-band class raster) or a labels.zarr store, read-only."""
    path = str(path)
    if is_store(path):
        try:
            group = open_store(path, mode="r")
        except FileNotFoundError as exc:  # zarr's GroupNotFoundError is one too
            reason = "no such file or directory" if not Path(path).exists() else str(exc)
            raise InputError(f"{path}: cannot open as a Zarr label store ({reason})") from None
        except Exception as exc:  # a corrupt zarr.json and the like
            raise InputError(f"{path}: cannot open as a Zarr label store ({exc})") from None
        raster = _ZarrLabels(path, group)
        _check_crs(raster)
        yield raster
        return
    with bounded_gdal_cache(), open_raster(path) as src:
        raster = _TiffLabels(path, src)
        _check_crs(raster)
        yield raster


def _check_crs(raster: LabelRaster) -> None:
    if raster.crs is None:
        raise InputError(f"{raster.path}: has no CRS, so areas and coordinates cannot be placed on it")


# --- selections: everything becomes "a polygon in the raster's CRS" or a point ----------------


def parse_crs(value: str | CRS | None, default: CRS) -> CRS:
    if value is None:
        return default
    if isinstance(value, CRS):
        return value
    try:
        return CRS.from_user_input(value)
    except Exception as exc:
        raise InputError(f"invalid CRS {value!r}: {exc}") from None


def reproject_geometry(geom: shapely.Geometry, src: CRS, dst: CRS) -> shapely.Geometry:
    """``geom`` from ``src`` to ``dst`` coordinates (vertex by vertex: densify first)."""
    if src == dst:
        return geom
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


def bbox_polygon(bbox: Sequence[float], bbox_crs: CRS, raster_crs: CRS) -> shapely.Geometry:
    """The box MINX MINY MAXX MAXY as a polygon in the raster's CRS (densified when reprojected)."""
    if len(bbox) != 4:
        raise InputError(f"a bbox has 4 numbers (MINX MINY MAXX MAXY), got {len(bbox)}")
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if not all(map(math.isfinite, bbox)) or minx >= maxx or miny >= maxy:
        raise InputError(f"bbox {list(bbox)} is empty or inverted: expected MINX MINY MAXX MAXY, MINX < MAXX, MINY < MAXY")
    box = shapely.box(minx, miny, maxx, maxy)
    if bbox_crs != raster_crs:
        box = shapely.segmentize(box, max(maxx - minx, maxy - miny) / DENSIFY)
    return reproject_geometry(box, bbox_crs, raster_crs)


def read_aoi(path: str | Path, raster_crs: CRS) -> tuple[shapely.Geometry, dict[str, Any]]:
    """Union of the polygons of a vector file, in the raster's CRS, and how it was read."""
    import geopandas
    import pyogrio.errors

    if not str(path).count("://") and not Path(path).exists():
        raise InputError(f"{path}: cannot read the area of interest (no such file)")
    try:
        frame = geopandas.read_file(path)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the area of interest as a vector file ({exc})") from None
    if frame.crs is None:
        raise InputError(f"{path}: the area of interest has no CRS (add a .prj or write it with one)")
    parts = shapely.get_parts(shapely.make_valid(frame.geometry.dropna().to_numpy()))
    polygons = _polygonal(shapely.union_all(parts[np.isin(shapely.get_type_id(parts), POLYGON_TYPES)]))
    if polygons.is_empty:
        raise InputError(f"{path}: the area of interest holds no polygons ({len(frame)} features)")
    src_crs = CRS.from_user_input(frame.crs)
    if src_crs != raster_crs:
        minx, miny, maxx, maxy = polygons.bounds
        polygons = shapely.segmentize(polygons, max(maxx - minx, maxy - miny) / (4 * DENSIFY))
    geom = _polygonal(shapely.make_valid(reproject_geometry(polygons, src_crs, raster_crs)))
    return geom, {"type": "aoi", "path": str(path), "crs": src_crs.to_string(), "features": len(frame)}


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Only the polygons of a geometry (make_valid and reprojection may leave lines and points)."""
    parts = shapely.get_parts(geom)
    polys = parts[np.isin(shapely.get_type_id(parts), POLYGON_TYPES) & ~shapely.is_empty(parts)]
    return shapely.union_all(polys) if len(polys) else shapely.Polygon()


# --- counting ---------------------------------------------------------------------------------


def _step(block: int) -> int:
    """Whole blocks per window, up to about WINDOW pixels (a block taller than that is cut)."""
    return block * max(1, WINDOW // block) if block <= WINDOW else WINDOW


def query_windows(raster: LabelRaster, bounds: Window) -> Iterator[Window]:
    """Block-aligned windows, clipped to ``bounds``: each read touches whole blocks once."""
    rstep, cstep = _step(raster.block[0]), _step(raster.block[1])
    r_end, c_end = bounds.row_off + bounds.height, bounds.col_off + bounds.width
    for r in range(bounds.row_off // rstep * rstep, r_end, rstep):
        for c in range(bounds.col_off // cstep * cstep, c_end, cstep):
            r0, c0 = max(r, bounds.row_off), max(c, bounds.col_off)
            yield Window(c0, r0, min(c + cstep, c_end) - c0, min(r + rstep, r_end) - r0)


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


@dataclass
class _Tally:
    """Running per-class pixel counts and areas (arrays indexed by class id)."""

    pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    area: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.float64))
    nodata: int = 0

    def add(self, path: str, values: np.ndarray, weights: np.ndarray | None) -> None:
        if values.size == 0:
            return
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > MAX_CLASS_ID:
            raise InputError(f"{path}: holds the value {low if low < 0 else high}, not a class id (0..{MAX_CLASS_ID})")
        if high >= len(self.pixels):
            size = max(high + 1, 2 * len(self.pixels))
            self.pixels = np.pad(self.pixels, (0, size - len(self.pixels)))
            self.area = np.pad(self.area, (0, size - len(self.area)))
        n = len(self.pixels)
        self.pixels += np.bincount(values, minlength=n)
        if weights is not None:
            self.area += np.bincount(values, weights=weights, minlength=n)


def count_classes(raster: LabelRaster, geom: shapely.Geometry | None) -> _Tally:
    """Per-class counts and areas over the pixels whose centre is in ``geom`` (None: the whole raster)."""
    bounds = Window(0, 0, raster.width, raster.height) if geom is None else pixel_bounds(raster, geom)
    tally = _Tally()
    if bounds is None:
        return tally
    if geom is not None:
        shapely.prepare(geom)
    geographic = raster.crs.is_geographic
    windows = 0
    for window in query_windows(raster, bounds):
        inside = True if geom is None else selection_mask(raster, geom, window)
        if inside is False:
            continue
        windows += 1
        values, valid = raster.read(window)
        keep = valid if inside is True else valid & inside
        tally.nodata += int(np.count_nonzero(~valid if inside is True else inside & ~valid))
        weights = None
        if geographic:  # pixel areas change with latitude: weight each pixel by its row's area
            rows = row_pixel_areas_m2(raster.crs, raster.transform, int(window.row_off), int(window.height))
            weights = np.broadcast_to(rows[:, None], values.shape)[keep]
        tally.add(raster.path, values[keep].astype(np.intp, copy=False), weights)
    log.debug("%s: read %d windows of %s", raster.path, windows, bounds)
    if not geographic:  # one pixel area everywhere: exact products, no float sums
        tally.area = tally.pixels * float(row_pixel_areas_m2(raster.crs, raster.transform, 0, 1)[0])
    return tally


def _class_table(raster: LabelRaster, tally: _Tally) -> list[ClassArea]:
    """Every named class (0 pixels included: stable tables) and every id found, by class id."""
    valid = int(tally.pixels.sum())
    ids = sorted(set(range(len(raster.class_names))) | {int(i) for i in np.flatnonzero(tally.pixels)})
    return [
        ClassArea(
            class_id=i, class_name=_class_name(raster, i), pixels=int(tally.pixels[i]) if i < len(tally.pixels) else 0,
            area_m2=float(tally.area[i]) if i < len(tally.area) else 0.0,
            share=float(tally.pixels[i] / valid) if valid and i < len(tally.pixels) else 0.0,
        )
        for i in ids
    ]


def _class_name(raster: LabelRaster, class_id: int) -> str:
    return raster.class_names[class_id] if class_id < len(raster.class_names) else f"class_{class_id}"


def _point_result(raster: LabelRaster, x: float, y: float, point_crs: CRS) -> QueryResult:
    """The class of the pixel that contains the point (its edges belong to the pixel right/below)."""
    px, py = shapely.get_coordinates(reproject_geometry(shapely.Point(x, y), point_crs, raster.crs))[0]
    col, row = ~raster.transform @ (px, py)
    if not (math.isfinite(col) and math.isfinite(row) and 0 <= col < raster.width and 0 <= row < raster.height):
        raise InputError(f"point ({x}, {y}) in {point_crs.to_string()} is outside {raster.path}")
    col, row = int(math.floor(col)), int(math.floor(row))
    values, valid = raster.read(Window(col, row, 1, 1))
    selection = {"type": "point", "x": x, "y": y, "crs": point_crs.to_string()}
    point = {"x": x, "y": y, "row": row, "col": col}
    common = dict(raster=raster.path, crs=raster.crs.to_string(), selection=selection, point=point)
    if not valid[0, 0]:
        return QueryResult(classes=[], valid_pixels=0, nodata_pixels=1, area_m2=0.0, nodata=True, **common)
    class_id = int(values[0, 0])
    area = float(row_pixel_areas_m2(raster.crs, raster.transform, row, 1)[0])
    entry = ClassArea(class_id, _class_name(raster, class_id), 1, area, 1.0)
    return QueryResult(classes=[entry], valid_pixels=1, nodata_pixels=0, area_m2=area, nodata=False, **common)


def query_classes(
    raster: str | Path,
    *,
    bbox: Sequence[float] | None = None,
    bbox_crs: str | CRS | None = None,
    aoi: str | Path | None = None,
    point: Sequence[float] | None = None,
    point_crs: str | CRS | None = None,
) -> QueryResult:
    """Pixels, true area (m²) and share of each class in a selection of a class raster.

    Selection (at most one): ``bbox`` (MINX MINY MAXX MAXY in ``bbox_crs``, default the raster's
    CRS), ``aoi`` (a vector file in any CRS: the union of its polygons), ``point`` (X Y in
    ``point_crs``: the class of the one pixel there), or none (the whole raster).

    Pixel rule: a pixel is in a box or AOI when its centre is inside the polygon (GDAL rasterisation,
    ``all_touched=False``); nodata pixels are counted apart and never belong to a class. ``share`` is
    a class's pixels over the valid pixels of the selection.

    Raises InputError (one line naming the file) for unreadable or non-class rasters, bad selections,
    a selection that does not overlap the raster, and a point outside it.
    """
    given = [name for name, value in (("bbox", bbox), ("aoi", aoi), ("point", point)) if value is not None]
    if len(given) > 1:
        raise InputError(f"choose one selection: {', '.join(given)} given together")
    with open_labels(raster) as labels:
        crs_text = labels.crs.to_string()
        if point is not None:
            if len(point) != 2:
                raise InputError(f"a point has 2 coordinates (X Y), got {len(point)}")
            return _point_result(labels, float(point[0]), float(point[1]), parse_crs(point_crs, labels.crs))
        geom, selection = None, {"type": "raster"}
        if bbox is not None:
            box_crs = parse_crs(bbox_crs, labels.crs)
            geom = bbox_polygon(bbox, box_crs, labels.crs)
            selection = {"type": "bbox", "bbox": [float(v) for v in bbox], "crs": box_crs.to_string()}
        elif aoi is not None:
            geom, selection = read_aoi(aoi, labels.crs)
        whole = footprint(labels.transform, Window(0, 0, labels.width, labels.height))
        if geom is not None and not geom.intersects(whole):
            what = f"bbox {selection['bbox']}" if bbox is not None else f"area of interest {aoi}"
            raise InputError(f"{what} does not overlap {labels.path}")
        tally = count_classes(labels, geom)
        classes = _class_table(labels, tally)
        valid = int(tally.pixels.sum())
        return QueryResult(
            raster=labels.path, crs=crs_text, selection=selection, classes=classes, valid_pixels=valid,
            nodata_pixels=tally.nodata, area_m2=float(sum(c.area_m2 for c in classes)),
        )
