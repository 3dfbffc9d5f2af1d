"""``fcnseg query --aoi FILE --by FIELD --output TABLE``: the per-feature answers as a file.

Three formats, chosen by the suffix, each for the tool that reads it:

* ``.csv`` and ``.parquet`` (GeoParquet 1.1): the **long** table, one row per feature and class,
  with the feature's fields, then class_id, class_name, pixels, area_m2, share, valid_pixels,
  nodata_pixels (and mean_confidence, where the store has ``segment --confidence``'s band), then
  the feature's geometry (WKT in the CSV). What pandas, DuckDB or R group and pivot: one schema
  whatever the classes.
* ``.gpkg`` (GeoPackage, layer ``class_areas``): the **wide** table, one row per feature: its
  fields, valid_pixels, nodata_pixels, then ``<class>_pixels``, ``<class>_m2`` and
  ``<class>_share`` (and ``<class>_confidence``) for every class. A QGIS user opens it and styles the parcels by
  ``forest_share`` or reads all classes of a parcel with the Identify tool; in the long form each
  parcel would be drawn once per class, stacked, and every map would need a filter first. (QGIS's
  own zonal statistics and exactextract give the same shape: a column per statistic.)

Geometries are the feature's own, in the AOI file's CRS, as the analyst gave them (an invalid one
is counted repaired, but written as given). Every feature of the file has its rows, in file order.

Written in batches of features as they are counted (``features.BATCH``), so memory does not grow
with the number of features: the long tables stream straight to the file (pyarrow's
``ParquetWriter`` and ``CSVWriter``); the wide GeoPackage needs every class's column before its
first row, so the long table goes to a hidden GeoParquet beside it first, and is pivoted from
there row group by row group. Through the one atomic write: a failed or killed query leaves no
half table that looks complete; an existing file is replaced only with ``--overwrite`` (an input
never), checked before the counting starts and again before the rename.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fcnseg.atomic import partial_path, remove_path
from fcnseg.errors import OutputConflict
from fcnseg.pipeline.analysis.features import FeatureBatch, FeatureClassArea, iter_feature_batches
from fcnseg.pipeline.io import InputError, atomic_write
from fcnseg.pipeline.overwrite import check_target

#: Suffix -> format of ``--output``.
FORMATS = {".csv": "csv", ".parquet": "parquet", ".geoparquet": "parquet", ".gpkg": "gpkg"}
#: The GeoPackage's layer.
LAYER = "class_areas"
#: As polygons.gpkg (``products.polygon_writer.GPKG_VERSION``): QGIS 3.22's GDAL reads 1.2 without a warning.
GPKG_VERSION = "1.2"
#: The class columns of the long table, after the feature's fields (a field of the same name is prefixed "aoi_").
CLASS_COLUMNS = ("class_id", "class_name", "pixels", "area_m2", "share", "valid_pixels", "nodata_pixels")
CLASS_TYPES = (pa.int32(), pa.string(), pa.int64(), pa.float64(), pa.float64(), pa.int64(), pa.int64())
#: After them where the raster has a confidence band (``segment --confidence``): the class's mean confidence.
CONFIDENCE = ("mean_confidence", pa.float64())
#: The wide table's columns per feature before the classes'.
FEATURE_COLUMNS = ("valid_pixels", "nodata_pixels")
INDEX = "_feature"  # the feature's number, in the GeoPackage's hidden long table only


@dataclass(frozen=True)
class FeatureTable:
    """What ``--output`` wrote: ``query --by --output`` prints this, not the rows."""

    output: str
    format: str
    features: int
    rows: int
    classes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        shape = "one row per feature" if self.format == "gpkg" else "one row per feature and class"
        return f"{self.output}: {self.features} features, {self.rows} rows ({shape}; classes {', '.join(self.classes)})"


def write_feature_table(raster: str | Path, aoi: str | Path, by: str, output: str | Path, *,
                        overwrite: bool = False, allow_partial: bool = False) -> FeatureTable:
    """Write the per-feature table to ``output`` (.csv, .parquet or .gpkg) and say what it holds."""
    output = Path(output)
    kind = FORMATS.get(output.suffix.lower())
    if kind is None:
        raise InputError(f"{output}: --output must end in .csv, .parquet (GeoParquet) or .gpkg (GeoPackage)")
    check_output(output, raster, aoi, overwrite)
    batches = iter_feature_batches(raster, aoi, by, allow_partial=allow_partial)
    with atomic_write(output) as tmp:
        if kind == "gpkg":
            long_path = partial_path(output.with_suffix(".parquet"))
            try:
                long = no_features(LongTable(long_path, "parquet", index=True).write_all(batches), aoi)
                table = write_wide_gpkg(long_path, tmp, long)
            finally:
                remove_path(long_path)
        else:
            table = no_features(LongTable(tmp, kind).write_all(batches), aoi)
        check_output(output, raster, aoi, overwrite)  # nothing appeared there while counting
    return FeatureTable(str(output), kind, table.features, table.rows, table.class_names())


def no_features(table: LongTable, aoi: str | Path) -> LongTable:
    """A driver that cannot count its features up front (read_info's -1) and gave none: one line."""
    if table.features == 0:
        raise InputError(f"{aoi}: the area of interest holds no features")
    return table


def check_output(output: Path, raster: str | Path, aoi: str | Path, overwrite: bool) -> None:
    """Never an input, a folder, or a file without ``--overwrite``; the folder must exist."""
    check_target(output, option="--output", kind="a table", is_own=lambda _: False,
                 inputs={"RASTER": raster, "--aoi": aoi}, overwrite=overwrite)
    parent = output.absolute().parent
    if not parent.is_dir():
        raise OutputConflict(f"{parent}: no such folder; --output {output} must go into an existing folder")


class LongTable:
    """The long table (one row per feature and class), written batch by batch as CSV or GeoParquet."""

    def __init__(self, path: Path, kind: str, *, index: bool = False) -> None:
        self.path, self.kind, self.index = path, kind, index  # index: the feature's number, for the pivot
        self.features = self.rows = 0
        self.classes: dict[int, str] = {}
        self.crs: Any = None
        self.geometry_type: str | None = None
        self.names: list[str] = []
        self._writer: Any = None

    def write_all(self, batches) -> LongTable:
        try:
            for batch, rows in batches:
                self.write(batch, rows)
        finally:
            if self._writer is not None:
                self._writer.close()
        return self

    def write(self, batch: FeatureBatch, rows: list[list[FeatureClassArea]]) -> None:
        table = self.arrow(batch, rows)
        if self._writer is None:
            self._writer = self._open(table.schema, batch)
        if self.kind == "csv":
            table = table.set_column(table.num_columns - 1, "geometry", wkt(table["geometry"]))
        self._writer.write_table(table)
        self.features += len(rows)
        self.rows += table.num_rows
        for feature in rows:
            self.classes.update((r.class_id, r.class_name) for r in feature)

    def arrow(self, batch: FeatureBatch, rows: list[list[FeatureClassArea]]) -> pa.Table:
        """The batch's rows: each feature's fields repeated on each of its class rows, then the classes, the geometry."""
        take = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        fields = batch.fields.take(pa.array(take, pa.int64()))
        taken = CLASS_COLUMNS + (CONFIDENCE[0], "geometry", INDEX)
        self.names = [f"aoi_{n}" if n in taken else n for n in fields.column_names]
        columns = [fields[n].combine_chunks() for n in fields.column_names]
        flat = [r for feature in rows for r in feature]
        classes = list(zip(CLASS_COLUMNS, CLASS_TYPES, strict=True)) + ([CONFIDENCE] if batch.confidence else [])
        for name, kind in classes:
            columns.append(pa.array([getattr(r, name) for r in flat], kind))
        names = self.names + [name for name, _ in classes]
        if self.index:
            columns.append(pa.array(take + self.features, pa.int64()))
            names.append(INDEX)
        columns.append(pa.array([batch.wkb[i] for i in take], pa.binary()))
        schema = pa.schema([pa.field(n, c.type) for n, c in zip(names + ["geometry"], columns, strict=True)])
        return pa.Table.from_arrays(columns, schema=schema)

    def _open(self, schema: pa.Schema, batch: FeatureBatch) -> Any:
        self.crs, self.geometry_type = batch.crs, batch.geometry_type
        if self.kind == "csv":
            import pyarrow.csv

            return pyarrow.csv.CSVWriter(str(self.path), schema.set(len(schema) - 1, pa.field("geometry", pa.string())))
        import pyarrow.parquet as pq

        return pq.ParquetWriter(str(self.path), schema.with_metadata({b"geo": geo_metadata(batch.crs)}),
                                compression="zstd")

    def class_names(self) -> list[str]:
        return [self.classes[i] for i in sorted(self.classes)]


def geo_metadata(crs: Any) -> bytes:
    """GeoParquet 1.1's ``geo`` key: WKB, the AOI file's CRS as PROJJSON (``null``: no CRS; an
    absent key would mean OGC:CRS84), geometry types not declared (they are the analyst's)."""
    import pyproj

    projjson = None if crs is None else pyproj.CRS.from_wkt(crs.to_wkt()).to_json_dict()
    column = {"encoding": "WKB", "geometry_types": [], "crs": projjson}
    return json.dumps({"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}).encode()


def wkt(column: pa.ChunkedArray) -> pa.Array:
    """WKB geometries as WKT text (null stays null)."""
    import shapely

    return pa.array(shapely.to_wkt(shapely.from_wkb(np.asarray(column.to_pylist(), dtype=object))), pa.string())


def class_keys(classes: dict[int, str]) -> dict[int, str]:
    """Class id -> the wide table's column prefix: the name in lower case, letters, digits and
    ``_`` (``class_<id>`` where that leaves nothing, starts with a digit or is taken)."""
    keys: dict[int, str] = {}
    for class_id in sorted(classes):
        key = re.sub(r"[^0-9a-z]+", "_", classes[class_id].lower()).strip("_")
        if not key or key[0].isdigit() or key in keys.values():
            key = f"class_{class_id}" + (f"_{key}" if key else "")
        keys[class_id] = key
    return keys


def write_wide_gpkg(long_path: Path, path: Path, long: LongTable) -> LongTable:
    """The GeoPackage, one row per feature, pivoted from the long table row group by row group
    (a row group is one batch of whole features)."""
    import pyarrow.parquet as pq
    import pyogrio

    keys = class_keys(long.classes)
    geometry_type = long.geometry_type if long.geometry_type in ("Polygon", "MultiPolygon") else "Unknown"
    reader = pq.ParquetFile(long_path)
    for group in range(reader.num_row_groups):
        table = reader.read_row_group(group)
        wide = pivot(table, long.names, keys)
        pyogrio.write_arrow(
            wide, path, layer=LAYER, driver="GPKG", geometry_name="geometry", geometry_type=geometry_type,
            crs=None if long.crs is None else long.crs.to_wkt(), append=group > 0,
            **({} if group else {"dataset_options": {"VERSION": GPKG_VERSION}}),
        )
    long.rows = long.features
    return long


def pivot(table: pa.Table, fields: list[str], keys: dict[int, str]) -> pa.Table:
    """One batch of the long table as one row per feature: its fields, then each class's columns."""
    feature = table[INDEX].to_numpy()
    numbers, first = np.unique(feature, return_index=True)
    at = np.searchsorted(numbers, feature)
    class_id = table["class_id"].to_numpy()
    pixels, share = table["pixels"].to_numpy(), table["share"].to_numpy()
    area = table["area_m2"]
    metres = area.null_count < len(area)  # a raster without CRS has no m²: null columns
    area = area.to_numpy(zero_copy_only=False)
    confidence = table[CONFIDENCE[0]] if CONFIDENCE[0] in table.column_names else None
    base = table.select(fields + list(FEATURE_COLUMNS)).take(pa.array(first))
    columns, names = list(base.columns), list(base.column_names)
    for class_id_, key in keys.items():
        rows = class_id == class_id_
        values = []
        for source, kind in ((pixels, np.int64), (area, np.float64), (share, np.float64)):
            column = np.zeros(len(numbers), kind)
            column[at[rows]] = source[rows]
            values.append(column)
        columns += [pa.array(values[0]), pa.array(values[1]) if metres else pa.nulls(len(numbers), pa.float64()),
                    pa.array(values[2])]
        names += [f"{key}_pixels", f"{key}_m2", f"{key}_share"]
        if confidence is not None:  # null where the feature has no pixel of the class
            column = [None] * len(numbers)
            for position, value in zip(at[rows], confidence.filter(pa.array(rows)).to_pylist(), strict=True):
                column[position] = value
            columns.append(pa.array(column, pa.float64()))
            names.append(f"{key}_confidence")
    names = [f"aoi_{n}" if i < len(fields) and n in names[len(fields):] else n for i, n in enumerate(names)]
    columns.append(table["geometry"].take(pa.array(first)))
    return pa.Table.from_arrays(columns, names=names + ["geometry"])
