"""Per-feature answers: how much of each class lies in each feature of an area-of-interest file.

``fcnseg query OUT --aoi FILE --by FIELD`` asks "how much forest in each parcel": one row per
feature and class. Features are read in batches (``BATCH``) and counted one at a time with the
same pixel rule as ``query_classes`` (a pixel belongs to a feature when its centre is inside,
``count_classes``): only that feature's window of the label store is read, so memory is bounded by
a batch of geometries and one window, never by the store or by all features' masks.

Each feature is counted in full: overlapping features both get the pixels they share. A feature
outside the raster, over nodata only, or with an empty or missing geometry gets zero valid pixels
(rows of zeros, not an error: a parcel table keeps every parcel). An invalid geometry (a bow-tie)
is repaired with ``make_valid`` first, as the union query does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio.crs import CRS

from fcnseg.pipeline.analysis.label_raster import LabelRaster, open_labels
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


@dataclass(frozen=True, kw_only=True)
class FeatureClassArea(ClassArea):
    """One class in one feature: the feature's ``--by`` value, then a ClassArea's fields.
    ``share`` is of the feature's valid pixels; ``valid_pixels`` and ``nodata_pixels`` are the
    feature's (the same on each of its rows)."""

    feature: Any
    valid_pixels: int
    nodata_pixels: int

    def to_json(self) -> dict[str, Any]:
        """The row as ``query --json --by`` writes it: feature first, then the class's keys."""
        row = asdict(self)
        return {"feature": row.pop("feature"), **row}


def feature_batches(path: str | Path, by: str, raster_crs: CRS | None) -> Iterator[Any]:
    """The AOI file's features, ``BATCH`` at a time, as GeoDataFrames; checks ``by`` and the CRS first."""
    import pyogrio

    with reading_aoi(path):
        info = pyogrio.read_info(path)
    if by not in list(info["fields"]):
        raise InputError(f"{path}: has no field {by!r} for --by (fields: {', '.join(info['fields']) or 'none'})")
    check_aoi_crs(path, None if info["crs"] is None else CRS.from_user_input(info["crs"]), raster_crs)
    for start in range(0, int(info["features"]), BATCH):
        with reading_aoi(path):
            frame = pyogrio.read_dataframe(path, skip_features=start, max_features=BATCH)
        yield frame


def feature_geometry(geom: Any, src: CRS | None, dst: CRS | None) -> shapely.Geometry:
    """A feature's polygons in the raster's CRS (repaired, densified before reprojection); empty
    for a missing, empty or non-polygonal geometry."""
    if geom is None or shapely.is_empty(geom):
        return shapely.Polygon()
    polygons = _polygonal(shapely.make_valid(geom))
    if polygons.is_empty or src == dst:
        return polygons
    minx, miny, maxx, maxy = polygons.bounds
    step = max(maxx - minx, maxy - miny) / (4 * DENSIFY)
    if step > 0:
        polygons = shapely.segmentize(polygons, step)
    return _polygonal(shapely.make_valid(reproject_geometry(polygons, src, dst)))


def feature_rows(raster: LabelRaster, feature: Any, geom: shapely.Geometry) -> list[FeatureClassArea]:
    """Every class's row for one feature (zeros for an empty geometry or one outside the raster)."""
    tally = Tally() if geom.is_empty else count_classes(raster, geom)
    valid = int(tally.pixels.sum())
    return [FeatureClassArea(feature=feature, valid_pixels=valid, nodata_pixels=tally.nodata, **asdict(c))
            for c in class_table(raster, tally)]


def iter_feature_areas(raster: str | Path, aoi: str | Path, by: str, *,
                       allow_partial: bool = False) -> Iterator[tuple[dict[str, Any], list[FeatureClassArea]]]:
    """Per feature of ``aoi``: (its attributes and geometry in the file's CRS, its class rows),
    one feature at a time, in file order."""
    with open_labels(raster, allow_partial=allow_partial) as labels:
        for frame in feature_batches(aoi, by, labels.crs):
            src = None if frame.crs is None else CRS.from_user_input(frame.crs)
            for record, geom in zip(frame.drop(columns="geometry").to_dict("records"), frame.geometry, strict=True):
                value = _plain(record[by])
                record = {k: _plain(v) for k, v in record.items()}
                yield {**record, "geometry": geom}, feature_rows(labels, value, feature_geometry(geom, src, labels.crs))


def query_features(raster: str | Path, aoi: str | Path, by: str, *,
                   allow_partial: bool = False) -> list[FeatureClassArea]:
    """``fcnseg query --aoi FILE --by FIELD``: one row per feature and class, in file order.

    Raises InputError for an unreadable AOI file, a ``by`` field it lacks, or a CRS mismatch with a
    raster without CRS; a feature outside the raster is a row of zeros."""
    return [row for _, rows in iter_feature_areas(raster, aoi, by, allow_partial=allow_partial) for row in rows]


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones (JSON); missing values as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
