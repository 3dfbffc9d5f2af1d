"""Polygons streamed into GeoParquet and GeoPackage, table by table, published atomically.

``GeoDataFrame.to_parquet`` wants every row at once; here tables of rows arrive cell by cell while
the label map is being vectorised, so the GeoParquet file is written with pyarrow's
``ParquetWriter`` (WKB geometry plus the GeoParquet 1.1 ``geo`` metadata, which geopandas, GDAL and
QGIS read) and the GeoPackage by appending each table with ``pyogrio.write_arrow`` (no geopandas
round trip). Both are written under hidden names and renamed into place only when complete
(``atomic_write``).
"""

from __future__ import annotations

import json
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
from rasterio.crs import CRS

from fcnseg.pipeline.io import atomic_write

LAYER = "polygons"


def geoparquet_schema(crs: CRS | None, geometry_types: list[str]) -> pa.Schema:
    """Arrow schema with GeoParquet 1.1 metadata (WKB encoding, PROJJSON CRS; ``"crs": null`` for
    pixel coordinates: an absent key would mean OGC:CRS84)."""
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {
            "encoding": "WKB", "geometry_types": geometry_types, "crs": None if crs is None else json.loads(pyproj_json(crs)),
            "orientation": "counterclockwise", "edges": "planar",
        }},
    }
    fields = [
        pa.field("class_id", pa.uint8()), pa.field("class_name", pa.string()), pa.field("region_id", pa.int64()),
        pa.field("pixels", pa.int64()),
        pa.field("area", pa.float64()), pa.field("area_m2", pa.float64()), pa.field("geometry", pa.binary()),
    ]
    return pa.schema(fields, metadata={b"geo": json.dumps(geo).encode()})


def pyproj_json(crs: CRS) -> str:
    from pyproj import CRS as ProjCRS

    return ProjCRS.from_wkt(crs.to_wkt()).to_json()


@dataclass
class PolygonWriter:
    """Writes tables of polygons (the columns of ``geoparquet_schema``) to ``parquet_path`` and/or ``gpkg_path``."""

    crs: CRS | None
    parquet_path: Path | None
    gpkg_path: Path | None
    geometry_types: list[str] = field(default_factory=lambda: ["Polygon"])
    rows: int = 0
    _parquet: pq.ParquetWriter | None = None
    _gpkg_started: bool = False

    def __enter__(self) -> PolygonWriter:
        self._files = ExitStack()  # each file is written under a partial name, renamed when complete
        self._partial = {final: self._files.enter_context(atomic_write(final))
                         for final in (self.parquet_path, self.gpkg_path) if final is not None}
        self._schema = geoparquet_schema(self.crs, self.geometry_types)
        if self.parquet_path is not None:
            self._parquet = pq.ParquetWriter(self._partial[self.parquet_path], self._schema, compression="zstd")
        return self

    def write(self, table: pa.Table) -> None:
        table = table.cast(self._schema)
        self.rows += table.num_rows
        if self._parquet is not None and table.num_rows:
            self._parquet.write_table(table)
        if self.gpkg_path is not None and (table.num_rows or not self._gpkg_started):
            self._write_gpkg(table)

    def _write_gpkg(self, table: pa.Table) -> None:
        table = table.set_column(0, "class_id", table["class_id"].cast(pa.int16()))  # GeoPackage has no unsigned bytes
        with warnings.catch_warnings():  # pixel coordinates (no CRS) are what the raster has
            warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
            pyogrio.write_arrow(
                table, self._partial[self.gpkg_path], layer=LAYER, driver="GPKG", geometry_name="geometry",
                geometry_type="Unknown" if len(self.geometry_types) > 1 else self.geometry_types[0],
                crs=None if self.crs is None else self.crs.to_wkt(), append=self._gpkg_started,
            )
        self._gpkg_started = True

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self.gpkg_path is not None and not self._gpkg_started:
                self._write_gpkg(self._schema.empty_table())  # an empty map still gets its (empty) layer
        except BaseException as error:
            exc_type, exc, tb = type(error), error, error.__traceback__
            raise
        finally:
            if self._parquet is not None:
                self._parquet.close()
            self._files.__exit__(exc_type, exc, tb)  # renames on success; on error removes the partial files
