"""Per-feature answers: how much of each class lies in each feature of an area-of-interest file.

``fcnseg query OUT --aoi FILE --by FIELD`` asks "how much forest in each parcel": one row per
feature and class. Features are streamed from the vector file in batches of ``BATCH`` (GDAL's
Arrow stream: one fixed schema for every batch, whatever the driver) and counted one at a time
with the same pixel rule as ``query_classes`` (a pixel belongs to a feature when its centre is
inside, ``count_classes``): only that feature's window of the label store is read, so memory is
bounded by a batch of geometries and one window, never by the store or by the number of features.

Each feature is counted in full: overlapping features both get the pixels they share. Every
feature of the file gets its rows, in file order, so the table joins back to the parcels one to
one. What cannot be counted is not dropped but counted as zero valid pixels, with a warning that
names the feature (``GeometryNote``): a feature outside the raster or over nodata only; a missing
(null) or empty geometry; a point or a line (no pixel centre lies inside a zero-area shape). An
invalid polygon (a self-intersecting bow-tie, a ring that touches itself) is repaired with
shapely's ``make_valid`` (the bow-tie's two triangles; what QGIS's "Fix geometries" gives) and
counted, also with a warning: the count is of the repaired polygon.
"""

from __future__ import annotations

import datetime
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import shapely
from rasterio.crs import CRS
from rasterio.windows import Window

from fcnseg.pipeline.analysis.confidence import ConfidenceReader, confidence_reader
from fcnseg.pipeline.analysis.label_raster import LabelRaster, is_store, open_labels
from fcnseg.pipeline.analysis.query import ClassArea, Tally, class_table, count_classes
from fcnseg.pipeline.analysis.selection import (
    DENSIFY,
    _polygonal,
    check_aoi_crs,
    reading_aoi,
    reproject_geometry,
)
from fcnseg.pipeline.io import InputError

log = logging.getLogger(__name__)

#: Features read from the vector file at a time (bounded memory for files of 10⁵ parcels).
BATCH = 1000
#: Decoded chunks of a label store kept for the next features (``ChunkCache``): a 2 x 2 neighbourhood.
CACHE_CHUNKS = 4
#: Geometry warnings logged one by one; the rest are counted in one line at the end.
WARN_FEATURES = 20


@dataclass(frozen=True, kw_only=True)
class FeatureClassArea(ClassArea):
    """One class in one feature: the feature's ``--by`` value, then a ClassArea's fields.
    ``share`` is of the feature's valid pixels; ``valid_pixels`` and ``nodata_pixels`` are the
    feature's (the same on each of its rows)."""

    feature: Any
    valid_pixels: int
    nodata_pixels: int

    def to_json(self) -> dict[str, Any]:
        """The row as ``query --json --by`` writes it: feature first, then the class's keys
        (``mean_confidence`` only where the store has a confidence band, as ``ClassArea``'s)."""
        row = super().to_json()
        return {"feature": row.pop("feature"), **row}


@dataclass
class FeatureBatch:
    """Up to ``BATCH`` features as the file holds them: their fields (an Arrow table, the file's
    schema), their geometries as WKB (None: a null geometry) and the file's CRS."""

    fields: pa.Table
    wkb: list[bytes | None]
    crs: CRS | None
    geometry_type: str | None
    confidence: bool = False  # the raster has a confidence band: its rows carry mean_confidence


@dataclass
class GeometryNotes:
    """Features whose geometry was repaired or could not be counted: logged, at most
    ``WARN_FEATURES`` lines and then one line with the count of the rest."""

    path: str
    by: str
    count: int = 0

    def add(self, value: Any, note: str) -> None:
        self.count += 1
        if self.count <= WARN_FEATURES:
            log.warning("%s: feature %s=%r: %s", self.path, self.by, value, note)

    def close(self) -> None:
        if self.count > WARN_FEATURES:
            log.warning("%s: %d more features with geometry warnings (%d in all)", self.path,
                        self.count - WARN_FEATURES, self.count)


class ChunkCache:
    """A label store's window reads through its last ``CACHE_CHUNKS`` decoded chunks. zarr
    decodes a whole chunk for any window of it, and the consecutive features of a parcel file are
    mostly neighbours: each chunk is decoded once for all of them instead of once per feature.
    Memory: at most ``CACHE_CHUNKS`` chunks (a chunk is a tile of the run), whatever the features."""

    def __init__(self, read: Callable[[Window], tuple[np.ndarray, ...]], shape: tuple[int, int],
                 block: tuple[int, int]) -> None:
        self._read, self.shape, self.block = read, shape, block
        self._chunks: OrderedDict[tuple[int, int], tuple[np.ndarray, ...]] = OrderedDict()

    def read(self, window: Window) -> tuple[np.ndarray, ...]:
        """The arrays ``read`` gives for ``window`` (views of a cached chunk where it lies in one)."""
        (bh, bw), r0, c0 = self.block, int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        rows, cols = range(r0 // bh, (r1 - 1) // bh + 1), range(c0 // bw, (c1 - 1) // bw + 1)
        if len(rows) == 1 and len(cols) == 1:
            inside = (slice(r0 - rows[0] * bh, r1 - rows[0] * bh), slice(c0 - cols[0] * bw, c1 - cols[0] * bw))
            return tuple(a[inside] for a in self._chunk(rows[0], cols[0]))
        out: tuple[np.ndarray, ...] = ()
        for cr in rows:
            for cc in cols:
                arrays = self._chunk(cr, cc)
                out = out or tuple(np.empty((r1 - r0, c1 - c0), a.dtype) for a in arrays)
                ra, rb, ca, cb = max(r0, cr * bh), min(r1, (cr + 1) * bh), max(c0, cc * bw), min(c1, (cc + 1) * bw)
                for whole, part in zip(out, arrays, strict=True):
                    whole[ra - r0:rb - r0, ca - c0:cb - c0] = part[ra - cr * bh:rb - cr * bh, ca - cc * bw:cb - cc * bw]
        return out

    def _chunk(self, row: int, col: int) -> tuple[np.ndarray, ...]:
        key = (row, col)
        if key in self._chunks:
            self._chunks.move_to_end(key)
            return self._chunks[key]
        (bh, bw), (height, width) = self.block, self.shape
        self._chunks[key] = self._read(Window(col * bw, row * bh, min(bw, width - col * bw), min(bh, height - row * bh)))
        if len(self._chunks) > CACHE_CHUNKS:
            self._chunks.popitem(last=False)
        return self._chunks[key]


class CachedLabels(LabelRaster):
    """A label store (and its confidence band) read through ``ChunkCache``; a GeoTIFF's blocks
    are cached by GDAL already."""

    def __init__(self, raster: LabelRaster, confidence: ConfidenceReader | None) -> None:
        self.path, self.crs, self.transform = raster.path, raster.crs, raster.transform
        self.height, self.width, self.block, self.classes = raster.height, raster.width, raster.block, raster.classes
        shape = (raster.height, raster.width)
        self._labels = ChunkCache(raster.read, shape, raster.block)
        band = None if confidence is None else ChunkCache(lambda w: (confidence(w),), shape, raster.block)
        self.confidence = None if band is None else (lambda window: band.read(window)[0])

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        values, valid = self._labels.read(window)
        return values, valid


def feature_batches(path: str | Path, by: str, raster_crs: CRS | None) -> Iterator[FeatureBatch]:
    """The AOI file's features, ``BATCH`` at a time; checks ``by`` and the CRS first."""
    import pyogrio

    with reading_aoi(path):
        info = pyogrio.read_info(path)
    if by not in list(info["fields"]):
        raise InputError(f"{path}: has no field {by!r} for --by (fields: {', '.join(info['fields']) or 'none'})")
    if info["features"] == 0:
        raise InputError(f"{path}: the area of interest holds no features")
    crs = None if info["crs"] is None else CRS.from_user_input(info["crs"])
    check_aoi_crs(path, crs, raster_crs)
    with reading_aoi(path), pyogrio.open_arrow(path, batch_size=BATCH, use_pyarrow=True) as (meta, reader):
        geometry = meta["geometry_name"] or "wkb_geometry"
        for batch in reader:
            table = pa.Table.from_batches([batch])
            wkb = table[geometry].to_pylist() if geometry in table.column_names else [None] * table.num_rows
            fields = table.drop_columns([geometry]) if geometry in table.column_names else table
            yield FeatureBatch(fields, wkb, crs, info.get("geometry_type"))


def feature_polygons(geom: shapely.Geometry | None) -> tuple[shapely.Geometry, str | None]:
    """A feature's polygons in its own CRS (repaired) and a note when it was repaired or is not
    countable (empty then)."""
    if geom is None:
        return shapely.Polygon(), "no geometry (null): counted as 0 pixels"
    if geom.is_empty:
        return shapely.Polygon(), "an empty geometry: counted as 0 pixels"
    note = None
    if not geom.is_valid:
        note = f"an invalid {geom.geom_type} ({shapely.is_valid_reason(geom)}), repaired with make_valid and counted"
        geom = shapely.make_valid(geom)
    polygons = _polygonal(geom)
    if polygons.is_empty:
        return polygons, f"a {geom.geom_type}, not a polygon (no area, no pixel centre inside): counted as 0 pixels"
    return polygons, note


def batch_geometries(wkb: list[bytes | None], src: CRS | None, dst: CRS | None,
                     ) -> tuple[list[shapely.Geometry], list[str | None]]:
    """A batch's polygons in the raster's CRS and their notes: repaired one by one, then densified
    (a quarter of ``DENSIFY`` steps along each feature's longer side) and reprojected together, with
    one transformer for the batch."""
    pairs = [feature_polygons(g) for g in shapely.from_wkb(np.array(wkb, dtype=object))]
    polygons, notes = [p for p, _ in pairs], [n for _, n in pairs]
    if src == dst:
        return polygons, notes
    todo = [i for i, p in enumerate(polygons) if not p.is_empty]
    if todo:
        parts = np.array([polygons[i] for i in todo], dtype=object)
        bounds = shapely.bounds(parts)
        step = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) / (4 * DENSIFY)
        parts = np.where(step > 0, shapely.segmentize(parts, np.where(step > 0, step, 1.0)), parts)
        for i, part in zip(todo, reproject_geometry(parts, src, dst), strict=True):
            polygons[i] = _polygonal(shapely.make_valid(part))
    return polygons, notes


def feature_rows(raster: LabelRaster, feature: Any, geom: shapely.Geometry) -> list[FeatureClassArea]:
    """Every class's row for one feature (zeros for an empty geometry or one outside the raster)."""
    confidence = raster.confidence if isinstance(raster, CachedLabels) else "open"
    tally = Tally() if geom.is_empty else count_classes(raster, geom, confidence=confidence)
    valid = int(tally.pixels.sum())
    return [FeatureClassArea(feature=feature, valid_pixels=valid, nodata_pixels=tally.nodata, **asdict(c))
            for c in class_table(raster, tally)]


def iter_feature_batches(raster: str | Path, aoi: str | Path, by: str, *, allow_partial: bool = False,
                         ) -> Iterator[tuple[FeatureBatch, list[list[FeatureClassArea]]]]:
    """Per batch of ``aoi``'s features: the batch as read and each feature's class rows, in file order."""
    notes = GeometryNotes(str(aoi), by)
    with open_labels(raster, allow_partial=allow_partial) as labels:
        band = confidence_reader(labels.path, (labels.height, labels.width), is_store(labels.path))
        labels = CachedLabels(labels, band) if is_store(labels.path) else labels
        for batch in feature_batches(aoi, by, labels.crs):
            batch.confidence = band is not None
            values = [plain(v) for v in batch.fields[by].to_pylist()]
            try:
                geometries, batch_notes = batch_geometries(batch.wkb, batch.crs, labels.crs)
            except InputError as exc:  # a feature outside the CRS's area of use: name it
                raise InputError(f"{aoi}: {unplaceable(values, batch, labels.crs, by) or exc}") from None
            rows = []
            for value, geom, note in zip(values, geometries, batch_notes, strict=True):
                if note is not None:
                    notes.add(value, note)
                rows.append(feature_rows(labels, value, geom))
            yield batch, rows
    notes.close()


def unplaceable(values: list[Any], batch: FeatureBatch, dst: CRS | None, by: str) -> str | None:
    """The first feature of a batch that cannot be reprojected, and why (None: none found alone)."""
    for value, wkb in zip(values, batch.wkb, strict=True):
        try:
            batch_geometries([wkb], batch.crs, dst)
        except InputError as exc:
            return f"feature {by}={value!r}: {exc}"
    return None


def query_features(raster: str | Path, aoi: str | Path, by: str, *,
                   allow_partial: bool = False) -> list[FeatureClassArea]:
    """``fcnseg query --aoi FILE --by FIELD``: one row per feature and class, in file order.

    Raises InputError for an unreadable AOI file, a ``by`` field it lacks, or a CRS mismatch with a
    raster without CRS; a feature outside the raster or without an area is a row of zeros."""
    return [row for _, batch_rows in iter_feature_batches(raster, aoi, by, allow_partial=allow_partial)
            for rows in batch_rows for row in rows]


def plain(value: Any) -> Any:
    """A field's value as JSON has it: numpy scalars as Python ones, dates as ISO text, NaN as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return value
