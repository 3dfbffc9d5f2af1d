"""Polygons streamed into GeoParquet and GeoPackage, batch by batch, published atomically.

``GeoDataFrame.to_parquet`` wants every row at once; here rows arrive region by region while the
label map is being vectorised, so the GeoParquet file is written with pyarrow's ``ParquetWriter``
(WKB geometry plus the GeoParquet 1.1 ``geo`` metadata, which geopandas, GDAL and QGIS read) and
the GeoPackage by appending each batch with pyogrio. Both are written under hidden names and
renamed into place only when complete (``atomic_write``).
"""

from __future__ import annotations

import json
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import shapely
from rasterio.crs import CRS

from fcnseg.pipeline.io import atomic_write

LAYER = "polygons"
COLUMNS = ("class_id", "class_name", "pixels", "area", "area_m2")
BATCH_ROWS = 4096


@dataclass
class PolygonRow:
    class_id: int
    class_name: str
    pixels: int
    area: float
    area_m2: float | None  # None without a CRS
    geometry: shapely.Geometry


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
        pa.field("class_id", pa.uint8()), pa.field("class_name", pa.string()), pa.field("pixels", pa.int64()),
        pa.field("area", pa.float64()), pa.field("area_m2", pa.float64()), pa.field("geometry", pa.binary()),
    ]
    return pa.schema(fields, metadata={b"geo": json.dumps(geo).encode()})


def pyproj_json(crs: CRS) -> str:
    from pyproj import CRS as ProjCRS

    return ProjCRS.from_wkt(crs.to_wkt()).to_json()


@dataclass
class PolygonWriter:
    """Collects rows and writes them in batches to ``parquet_path`` and/or ``gpkg_path``."""

    crs: CRS | None
    parquet_path: Path | None
    gpkg_path: Path | None
    geometry_types: list[str] = field(default_factory=lambda: ["Polygon"])
    rows: int = 0
    _batch: list[PolygonRow] = field(default_factory=list)
    _parquet: pq.ParquetWriter | None = None
    _gpkg_started: bool = False

    def __enter__(self) -> PolygonWriter:
        self._files = ExitStack()  # each file is written under a partial name, renamed when complete
        self._partial = {final: self._files.enter_context(atomic_write(final))
                         for final in (self.parquet_path, self.gpkg_path) if final is not None}
        if self.parquet_path is not None:
            self._schema = geoparquet_schema(self.crs, self.geometry_types)
            self._parquet = pq.ParquetWriter(self._partial[self.parquet_path], self._schema, compression="zstd")
        return self

    def add(self, row: PolygonRow) -> None:
        self._batch.append(row)
        if len(self._batch) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._batch and (self._gpkg_started or self.gpkg_path is None):
            return
        batch, self._batch = self._batch, []
        self.rows += len(batch)
        columns = {name: [getattr(r, name) for r in batch] for name in COLUMNS}
        geometries = np.array([r.geometry for r in batch], dtype=object)
        if self._parquet is not None and batch:
            table = pa.table({**columns, "geometry": shapely.to_wkb(geometries)}, schema=self._schema)
            self._parquet.write_table(table)
        if self.gpkg_path is not None:
            frame = gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(geometries, crs=self.crs), crs=self.crs)
            frame["class_id"] = frame["class_id"].astype("int16")  # GeoPackage has no unsigned bytes
            with warnings.catch_warnings():  # pixel coordinates (no CRS) are what the raster has
                warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
                pyogrio.write_dataframe(
                    frame, self._partial[self.gpkg_path], layer=LAYER, driver="GPKG", append=self._gpkg_started,
                    promote_to_multi=False, geometry_type="Unknown" if len(self.geometry_types) > 1 else self.geometry_types[0],
                )
            self._gpkg_started = True

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.flush()
        except BaseException as error:
            exc_type, exc, tb = type(error), error, error.__traceback__
            raise
        finally:
            if self._parquet is not None:
                self._parquet.close()
            self._files.__exit__(exc_type, exc, tb)  # renames on success; on error removes the partial files
