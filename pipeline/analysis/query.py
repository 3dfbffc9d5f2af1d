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

A label store with a confidence band (``segment --confidence``) also gives each class's mean
confidence (``mean_confidence``, a probability: the mean of its pixels' top-class probability);
other rasters leave the key out.

A raster without a CRS (a scan, a microscopy mosaic) is counted in pixels: selections are in its
own (transform) coordinates, ``area_m2`` is null throughout and ``units`` says "pixels" — the keys
stay the same, so a consumer never mistakes pixels for square metres.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from fcnseg.pipeline.analysis.areas import row_pixel_areas_m2
from fcnseg.pipeline.analysis.confidence import ConfidenceReader, confidence_reader, mean_confidence
from fcnseg.pipeline.analysis.label_raster import LabelRaster, is_store, open_labels, query_windows
from fcnseg.pipeline.analysis.selection import (
    bbox_polygon,
    footprint,
    parse_crs,
    pixel_bounds,
    read_aoi,
    reproject_geometry,
    selection_mask,
)
from fcnseg.pipeline.io import InputError, crs_name

log = logging.getLogger(__name__)

#: Values above this are not classes (a DEM or a count raster was given by mistake). A raster from
#: elsewhere may use codes beyond a model's ids (CORINE's 111..523): this is not the model's class
#: limit, which is ``models.checkpoint.MAX_CLASSES`` (ids 0..254 in fcnseg's own outputs).
MAX_CLASS_ID = 65535


@dataclass(frozen=True, kw_only=True)
class ClassArea:
    """One class's pixels, true area and share of the valid pixels: a row of ``fcnseg query``'s
    table and of a run's class areas (run.json, the CLI's table, the flow's artifacts)."""

    class_id: int
    class_name: str
    pixels: int
    area_m2: float | None  # None without a CRS: no metres to measure in
    share: float
    mean_confidence: float | None = None  # a store with a confidence band, a class with pixels; else None

    def to_json(self) -> dict[str, Any]:
        """The row as run.json and ``query --json`` write it (these keys, in this order;
        ``mean_confidence`` only where there is one)."""
        row = asdict(self)
        if row["mean_confidence"] is None:
            del row["mean_confidence"]
        return row

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClassArea:
        """A row as run.json recorded it."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name != "mean_confidence"},
                   mean_confidence=data.get("mean_confidence"))


@dataclass
class QueryResult:
    """Per-class pixels, true area and share of the valid pixels in the selection."""

    raster: str
    crs: str | None
    selection: dict[str, Any]
    classes: list[ClassArea]
    valid_pixels: int
    nodata_pixels: int
    area_m2: float | None
    point: dict[str, Any] | None = None
    nodata: bool | None = None

    @property
    def units(self) -> str:
        """What the areas are in: "m2", or "pixels" for a raster without a CRS (``area_m2`` null)."""
        return "pixels" if self.crs is None else "m2"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "raster": self.raster, "crs": self.crs, "units": self.units, "selection": self.selection,
            "valid_pixels": self.valid_pixels, "nodata_pixels": self.nodata_pixels, "area_m2": self.area_m2,
            "classes": [c.to_json() for c in self.classes],
        }
        if self.point is not None:
            out["point"] = self.point
            out["nodata"] = bool(self.nodata)
        return out


@dataclass
class Tally:
    """Running per-class pixel counts and areas (arrays indexed by class id)."""

    pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    area: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.float64))
    nodata: int = 0
    confidence: np.ndarray | None = None  # summed confidence codes per class (a store with the band)

    def add(self, path: str, values: np.ndarray, weights: np.ndarray | None) -> None:
        if values.size == 0:
            return
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > MAX_CLASS_ID:
            raise InputError(f"{path}: holds the value {low if low < 0 else high}, not a class id (0..{MAX_CLASS_ID})")
        self._grow(high + 1)
        n = len(self.pixels)
        self.pixels += np.bincount(values, minlength=n)
        if weights is not None:
            self.area += np.bincount(values, weights=weights, minlength=n)

    def add_counts(self, pixels: Sequence[int], area_m2: Sequence[float] | None) -> None:
        """Add counts already taken per class (a chunk's histogram), and their areas when given."""
        self._grow(len(pixels))
        self.pixels[: len(pixels)] += np.asarray(pixels, dtype=np.int64)
        if area_m2 is not None:
            self.area[: len(area_m2)] += np.asarray(area_m2, dtype=np.float64)

    def add_confidence(self, values: np.ndarray, codes: np.ndarray | Sequence[int]) -> None:
        """Add confidence codes: per pixel (``values`` its class ids), or summed per class (``values`` None)."""
        if self.confidence is None:
            self.confidence = np.zeros(len(self.pixels), dtype=np.int64)
        sums = np.asarray(codes, dtype=np.int64) if values is None else \
            np.bincount(values, weights=codes, minlength=len(self.pixels)).astype(np.int64)  # exact below 2**53
        self._grow(len(sums))
        self.confidence[: len(sums)] += sums

    def uniform_areas(self, crs: CRS | None, transform: Affine) -> None:
        """Areas as pixels x the one pixel area of a projected CRS: exact products, no float sums."""
        if crs is not None and not crs.is_geographic:
            self.area = self.pixels * float(row_pixel_areas_m2(crs, transform, 0, 1)[0])

    def _grow(self, size: int) -> None:
        if size > len(self.pixels):
            size = max(size, 2 * len(self.pixels))
            self.pixels = np.pad(self.pixels, (0, size - len(self.pixels)))
            self.area = np.pad(self.area, (0, size - len(self.area)))
            if self.confidence is not None:
                self.confidence = np.pad(self.confidence, (0, size - len(self.confidence)))


def count_classes(raster: LabelRaster, geom: shapely.Geometry | None, *,
                  confidence: ConfidenceReader | None | str = "open") -> Tally:
    """Per-class counts and areas over the pixels whose centre is in ``geom`` (None: the whole raster).
    ``confidence``: the reader of the store's confidence band, or "open" to find it here (a caller
    counting 10⁴ features passes the one it holds: opening the store costs more than a feature's count)."""
    bounds = Window(0, 0, raster.width, raster.height) if geom is None else pixel_bounds(raster, geom)
    tally = Tally()
    if bounds is None:
        return tally
    if geom is not None:
        shapely.prepare(geom)
    geographic = raster.crs is not None and raster.crs.is_geographic
    if confidence == "open":
        confidence = confidence_reader(raster.path, (raster.height, raster.width), is_store(raster.path))
    if confidence is not None:
        tally.add_confidence(None, [])
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
        if confidence is not None:
            tally.add_confidence(values[keep].astype(np.intp, copy=False), confidence(window)[keep])
    log.debug("%s: read %d windows of %s", raster.path, windows, bounds)
    tally.uniform_areas(raster.crs, raster.transform)  # one pixel area everywhere (projected)
    return tally


def class_table(raster: LabelRaster, tally: Tally) -> list[ClassArea]:
    """Every named class (0 pixels included: stable tables) and every id found, by class id."""
    valid = int(tally.pixels.sum())
    ids = sorted(set(range(len(raster.classes.names))) | {int(i) for i in np.flatnonzero(tally.pixels)})
    return [
        ClassArea(
            class_id=i, class_name=raster.classes.name(i), pixels=int(tally.pixels[i]) if i < len(tally.pixels) else 0,
            area_m2=None if raster.crs is None else float(tally.area[i]) if i < len(tally.area) else 0.0,
            share=float(tally.pixels[i] / valid) if valid and i < len(tally.pixels) else 0.0,
            mean_confidence=None if tally.confidence is None or i >= len(tally.pixels) else
            mean_confidence(int(tally.confidence[i]), int(tally.pixels[i])),
        )
        for i in ids
    ]


def _point_result(raster: LabelRaster, x: float, y: float, point_crs: CRS) -> QueryResult:
    """The class of the pixel that contains the point (its edges belong to the pixel right/below)."""
    px, py = shapely.get_coordinates(reproject_geometry(shapely.Point(x, y), point_crs, raster.crs))[0]
    col, row = ~raster.transform @ (px, py)
    if not (math.isfinite(col) and math.isfinite(row) and 0 <= col < raster.width and 0 <= row < raster.height):
        raise InputError(f"--point ({x}, {y}) in {crs_name(point_crs) or 'its pixel grid'} is outside {raster.path}")
    col, row = int(math.floor(col)), int(math.floor(row))
    values, valid = raster.read(Window(col, row, 1, 1))
    selection = {"type": "point", "x": x, "y": y, "crs": crs_name(point_crs)}
    point = {"x": x, "y": y, "row": row, "col": col}
    common = dict(raster=raster.path, crs=crs_name(raster.crs), selection=selection, point=point)
    if not valid[0, 0]:
        return QueryResult(classes=[], valid_pixels=0, nodata_pixels=1, area_m2=None if raster.crs is None else 0.0,
                           nodata=True, **common)
    class_id = int(values[0, 0])
    area = None if raster.crs is None else float(row_pixel_areas_m2(raster.crs, raster.transform, row, 1)[0])
    confidence = confidence_reader(raster.path, (raster.height, raster.width), is_store(raster.path))
    code = None if confidence is None else int(confidence(Window(col, row, 1, 1))[0, 0])
    entry = ClassArea(class_id=class_id, class_name=raster.classes.name(class_id), pixels=1, area_m2=area, share=1.0,
                      mean_confidence=None if code is None else mean_confidence(code, 1))
    return QueryResult(classes=[entry], valid_pixels=1, nodata_pixels=0, area_m2=area, nodata=False, **common)


def query_classes(
    raster: str | Path,
    *,
    bbox: Sequence[float] | None = None,
    bbox_crs: str | CRS | None = None,
    aoi: str | Path | None = None,
    point: Sequence[float] | None = None,
    point_crs: str | CRS | None = None,
    allow_partial: bool = False,
) -> QueryResult:
    """Pixels, true area (m²) and share of each class in a selection of a class raster.

    Selection (at most one): ``bbox`` (MINX MINY MAXX MAXY in ``bbox_crs``, default the raster's
    CRS), ``aoi`` (a vector file in any CRS: the union of its polygons), ``point`` (X Y in
    ``point_crs``: the class of the one pixel there), or none (the whole raster).

    Pixel rule: a pixel is in a box or AOI when its centre is inside the polygon (GDAL rasterisation,
    ``all_touched=False``); nodata pixels are counted apart and never belong to a class. ``share`` is
    a class's pixels over the valid pixels of the selection. A raster without a CRS is counted in
    pixels (``area_m2`` None, ``units`` "pixels"); its selections are in its own coordinates.

    Raises InputError (one line naming the file) for unreadable or non-class rasters, an
    incomplete label store (unless ``allow_partial``), bad selections, a selection that does not
    overlap the raster, and a point outside it.
    """
    given = [name for name, value in (("bbox", bbox), ("aoi", aoi), ("point", point)) if value is not None]
    if len(given) > 1:
        raise InputError(f"choose one selection: {', '.join(given)} given together")
    with open_labels(raster, allow_partial=allow_partial) as labels:
        if labels.crs is None and (bbox_crs is not None or point_crs is not None):
            raise InputError(f"{labels.path}: has no CRS (pixel coordinates), so --crs cannot be placed on it; "
                             "give --bbox or --point in the raster's own coordinates")
        if point is not None:
            if len(point) != 2:
                raise InputError(f"--point has 2 coordinates (X Y), got {len(point)}")
            return _point_result(labels, float(point[0]), float(point[1]), parse_crs(point_crs, labels.crs))
        geom, selection = None, {"type": "raster"}
        if bbox is not None:
            box_crs = parse_crs(bbox_crs, labels.crs)
            geom = bbox_polygon(bbox, box_crs, labels.crs)
            selection = {"type": "bbox", "bbox": [float(v) for v in bbox], "crs": crs_name(box_crs)}
        elif aoi is not None:
            geom, selection = read_aoi(aoi, labels.crs)
        whole = footprint(labels.transform, Window(0, 0, labels.width, labels.height))
        if geom is not None and not geom.intersects(whole):
            what = f"--bbox {selection['bbox']}" if bbox is not None else f"area of interest --aoi {aoi}"
            raise InputError(f"{what} does not overlap {labels.path}")
        return _result(labels, selection, count_classes(labels, geom))


def _result(labels: LabelRaster, selection: dict[str, Any], tally: Tally) -> QueryResult:
    classes = class_table(labels, tally)
    return QueryResult(
        raster=labels.path, crs=crs_name(labels.crs), selection=selection, classes=classes,
        valid_pixels=int(tally.pixels.sum()), nodata_pixels=tally.nodata,
        area_m2=None if labels.crs is None else float(sum(c.area_m2 for c in classes)),
    )


def summed_classes(raster: str | Path,
                   histograms: Iterable[tuple[Sequence[int], Sequence[float] | None]],
                   confidence: Iterable[Sequence[int]] | None = None) -> QueryResult | None:
    """``query_classes(raster)`` (the whole raster) from per-class counts taken chunk by chunk when
    the chunks were written (and, for a geographic CRS, their areas): no pixel is read again.

    ``histograms`` must cover every chunk once; ``confidence``: the chunks' summed confidence per
    class (a store with the band). None when a geographic raster's counts come without areas
    (markers of another version): count the raster instead.
    """
    with open_labels(raster) as labels:
        geographic = labels.crs is not None and labels.crs.is_geographic
        tally = Tally()
        for pixels, area_m2 in histograms:
            if geographic and area_m2 is None:
                return None
            tally.add_counts(pixels, area_m2)
        for sums in confidence or ():
            tally.add_confidence(None, sums)
        tally.uniform_areas(labels.crs, labels.transform)
        tally.nodata = labels.height * labels.width - int(tally.pixels.sum())
        return _result(labels, {"type": "raster"}, tally)
