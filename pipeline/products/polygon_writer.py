"""Polygons streamed into GeoParquet and GeoPackage, table by table, published atomically.

``GeoDataFrame.to_parquet`` wants every row at once; here tables of rows arrive cell by cell while
the label map is being vectorised, so the GeoParquet file is written with pyarrow's
``ParquetWriter`` (WKB geometry plus the GeoParquet 1.1 ``geo`` metadata, which geopandas, GDAL and
QGIS read) and the GeoPackage by appending each table with ``pyogrio.write_arrow`` (no geopandas
round trip). Both are written under hidden names and renamed into place only when complete
(``atomic_write``).

The GeoParquet file carries GeoParquet 1.1's *bbox covering*: a ``bbox`` struct column (each
polygon's bounds, computed on the worker that made the polygon) declared in the ``geo`` metadata,
so readers filter by area without decoding geometries and skip whole row groups by the min/max
statistics of ``bbox.xmin`` ... ``bbox.ymax``. geopandas writes the same covering
(``to_parquet(write_covering_bbox=True)``) but only for a whole GeoDataFrame at once, so it is
written here. For the skipping to pay, a row group holds neighbouring polygons: consecutive cells
of one row of cells, up to ``ROW_GROUP_BYTES``. The GeoPackage gets no ``bbox`` column: its R-tree
spatial index (made by GDAL with the layer) does that job there.
"""

from __future__ import annotations

import json
import logging
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import shapely
from rasterio.crs import CRS

from fcnseg.pipeline.classes import ClassTable
from fcnseg.pipeline.io import atomic_write
from fcnseg.pipeline.products.styles import add_gpkg_style

log = logging.getLogger(__name__)

LAYER = "polygons"
#: The GeoPackage version written: 1.2 reads without a warning in the GDAL of QGIS 3.22 (3.6),
#: which calls GDAL 3.12's default (1.4) "only partially supported"; nothing here needs more.
GPKG_VERSION = "1.2"

#: GeoParquet 1.1's bbox covering column: each row's bounds (the names the spec and geopandas use).
BBOX = pa.struct([pa.field(name, pa.float64()) for name in ("xmin", "ymin", "xmax", "ymax")])

#: Arrow bytes of polygons gathered into one Parquet row group at most (thousands of pixel-edge
#: polygons, a few MB on disk after zstd); the end of a row of cells ends one too. Row groups are
#: what a bbox read skips: larger ones skip less, and the driver holds one in memory to write it.
#: (The benchmark mosaic's row groups and what one holds, measured:
#: docs/benchmarks.md#figures-quoted-in-code-comments.)
ROW_GROUP_BYTES = 32 * 2**20


def bbox_column(geometries: np.ndarray) -> pa.StructArray:
    """Each geometry's bounds as the ``bbox`` covering, from the very coordinates written (exact)."""
    bounds = shapely.bounds(geometries).reshape(-1, 4)
    return pa.StructArray.from_arrays([pa.array(bounds[:, i]) for i in range(4)], fields=list(BBOX))


def geoparquet_schema(crs: CRS | None, geometry_types: list[str]) -> pa.Schema:
    """Arrow schema with GeoParquet 1.1 metadata (WKB encoding, PROJJSON CRS; ``"crs": null`` for
    pixel coordinates: an absent key would mean OGC:CRS84)."""
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {
            "encoding": "WKB", "geometry_types": geometry_types, "crs": None if crs is None else json.loads(pyproj_json(crs)),
            "orientation": "counterclockwise", "edges": "planar",
            "covering": {"bbox": {key: ["bbox", key] for key in BBOX.names}},
        }},
    }
    fields = [
        pa.field("class_id", pa.uint8()), pa.field("class_name", pa.string()), pa.field("region_id", pa.int64()),
        pa.field("pixels", pa.int64()),
        pa.field("area", pa.float64()), pa.field("area_m2", pa.float64()), pa.field("geometry", pa.binary()),
        pa.field("bbox", BBOX),
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
    classes: ClassTable | None = None  # with colours: the GeoPackage's default style draws by class
    rows: int = 0
    row_groups: int = 0
    _parquet: pq.ParquetWriter | None = None
    _gpkg_started: bool = False
    _pending: list[pa.Table] = field(default_factory=list)  # the row group being gathered
    _pending_strip: int | None = None

    def __enter__(self) -> PolygonWriter:
        self._files = ExitStack()  # each file is written under a partial name, renamed when complete
        self._partial = {final: self._files.enter_context(atomic_write(final))
                         for final in (self.parquet_path, self.gpkg_path) if final is not None}
        self._schema = geoparquet_schema(self.crs, self.geometry_types)
        if self.parquet_path is not None:
            self._parquet = pq.ParquetWriter(self._partial[self.parquet_path], self._schema, compression="zstd")
        return self

    def write(self, table: pa.Table, strip: int = 0) -> None:
        """Append ``table``, polygons of one cell in row ``strip`` of cells (tables come row by row)."""
        table = table.cast(self._schema)
        self.rows += table.num_rows
        if self._parquet is not None and table.num_rows:
            self._gather(table, strip)
        if self.gpkg_path is not None and (table.num_rows or not self._gpkg_started):
            self._write_gpkg(table)

    def _gather(self, table: pa.Table, strip: int) -> None:
        """Add to the row group being gathered; a row group never spans two rows of cells, so the
        bbox statistics of each stay within one row of cells."""
        if strip != self._pending_strip:
            self._flush()
        self._pending.append(table)
        self._pending_strip = strip
        if sum(t.nbytes for t in self._pending) >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        """Write the gathered tables as one row group."""
        if not self._pending:
            return
        group = pa.concat_tables(self._pending)
        self._parquet.write_table(group, row_group_size=group.num_rows)
        self._pending, self.row_groups = [], self.row_groups + 1
        log.debug("row group %d: %d polygons, %.1f MB", self.row_groups, group.num_rows, group.nbytes / 1e6)

    def _write_gpkg(self, table: pa.Table) -> None:
        table = table.drop_columns(["bbox"])  # GeoPackage has its R-tree for that
        table = table.set_column(0, "class_id", table["class_id"].cast(pa.int16()))  # GeoPackage has no unsigned bytes
        with warnings.catch_warnings():  # pixel coordinates (no CRS) are what the raster has
            warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
            pyogrio.write_arrow(
                table, self._partial[self.gpkg_path], layer=LAYER, driver="GPKG", geometry_name="geometry",
                geometry_type="Unknown" if len(self.geometry_types) > 1 else self.geometry_types[0],
                crs=None if self.crs is None else self.crs.to_wkt(), append=self._gpkg_started,
                **({} if self._gpkg_started else {"dataset_options": {"VERSION": GPKG_VERSION}}),
            )
        self._gpkg_started = True

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self._parquet is not None:
                self._flush()
            if exc_type is None and self.gpkg_path is not None:
                if not self._gpkg_started:
                    self._write_gpkg(self._schema.empty_table())  # an empty map still gets its (empty) layer
                if self.classes is not None and self.classes.colors is not None:
                    add_gpkg_style(self._partial[self.gpkg_path], LAYER, self.classes.names, self.classes.colors)
        except BaseException as error:
            exc_type, exc, tb = type(error), error, error.__traceback__
            raise
        finally:
            if self._parquet is not None:
                self._parquet.close()
            self._files.__exit__(exc_type, exc, tb)  # renames on success; on error removes the partial files
