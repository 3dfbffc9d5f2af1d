"""Label map -> one polygon per connected region of one class, streamed chunk by chunk.

Each chunk of the Zarr store is polygonised on its own (GDAL's polygonize, 4-connected, exact
pixel edges), in *pixel* coordinates so that the edges two chunks share have bit-identical
coordinates and unions are exact. A piece that touches a border with another chunk may continue
there: comparing the pixel rows (columns) on both sides of the border says which pieces are one
region (union-find). Such pieces wait in an on-disk SQLite table until no unprocessed chunk can
reach their region any more — after each chunk row, only regions on that row's bottom edge can
still grow — and are then unioned into one polygon and written out.

So memory holds one chunk, the pixel strips along the current chunk borders and the union-find of
border pieces: proportional to the border length, not the area. Regions are mapped to the CRS only
when written.

A store without a CRS (pixel coordinates) gives polygons in its transform's units, ``area`` in
those units² and ``area_m2`` null: there are no metres to measure, and none are made up.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize, shapes
from shapely.affinity import affine_transform
from tqdm import tqdm

from fcnseg.pipeline.analysis.areas import geometries_area_m2
from fcnseg.pipeline.products.polygon_writer import PolygonRow, PolygonWriter
from fcnseg.pipeline.store import LABELS, NODATA, open_store, require_complete, store_geometry
from fcnseg.pipeline.tiles import chunk_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VectorizeOptions:
    simplify: float = 0.0  # tolerance in CRS units; 0 keeps the exact pixel edges
    min_area: float = 0.0  # drop regions smaller than this many square metres (needs a CRS)


@dataclass
class VectorizeReport:
    polygons: int
    dropped: int
    pixels: int
    seconds: float

    @property
    def megapixels_per_second(self) -> float:
        return self.pixels / 1e6 / max(self.seconds, 1e-9)


@dataclass
class Piece:
    gid: int
    class_id: int
    geometry: shapely.Geometry  # pixel coordinates (x = column, y = row)


class UnionFind:
    """Union-find over piece ids, with path halving; entries leave with their finished region."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def add(self, item: int) -> None:
        self.parent.setdefault(item, item)

    def find(self, item: int) -> int:
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self, items) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        for item in items:
            found.setdefault(self.find(item), []).append(item)
        return found

    def discard(self, items) -> None:
        for item in items:
            del self.parent[item]


class PieceSpill:
    """Border pieces waiting for the rest of their region, kept on disk (WKB in SQLite)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE pieces (gid INTEGER PRIMARY KEY, class_id INTEGER, wkb BLOB)")

    def put(self, pieces: list[Piece]) -> None:
        wkbs = shapely.to_wkb([p.geometry for p in pieces])
        self.db.executemany("INSERT INTO pieces VALUES (?, ?, ?)", [(p.gid, p.class_id, w) for p, w in zip(pieces, wkbs)])

    def take(self, gids: list[int]) -> tuple[int, list[shapely.Geometry]]:
        """Remove and return the pieces ``gids`` (one region: one class)."""
        rows = []
        for i in range(0, len(gids), 500):
            part = gids[i : i + 500]
            marks = ",".join("?" * len(part))
            rows += self.db.execute(f"SELECT class_id, wkb FROM pieces WHERE gid IN ({marks})", part).fetchall()
            self.db.execute(f"DELETE FROM pieces WHERE gid IN ({marks})", part)
        return rows[0][0], [shapely.from_wkb(wkb) for _, wkb in rows]

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)


def chunk_pieces(block: np.ndarray, row_off: int, col_off: int, first_gid: int) -> tuple[list[Piece], np.ndarray]:
    """Polygonise one chunk: its pieces (pixel coordinates) and an image of their global ids (0 = nodata)."""
    valid = block != NODATA
    offset = Affine.translation(col_off, row_off)
    pieces = [
        Piece(first_gid + i, int(value), shapely.geometry.shape(geojson))
        for i, (geojson, value) in enumerate(shapes(block, mask=valid, connectivity=4, transform=offset))
    ]
    ids = np.zeros(block.shape, dtype=np.int64)
    if pieces:
        local = rasterize(
            ((p.geometry, i + 1) for i, p in enumerate(pieces)), out_shape=block.shape, transform=offset,
            fill=0, dtype="int32",
        )
        ids = np.where(local > 0, local.astype(np.int64) + first_gid - 1, 0)
    return pieces, ids


def join_border(uf: UnionFind, labels_a: np.ndarray, ids_a: np.ndarray, labels_b: np.ndarray, ids_b: np.ndarray) -> None:
    """Pixels facing each other across a border with the same class belong to one region."""
    same = (labels_a == labels_b) & (labels_a != NODATA)
    for a, b in set(zip(ids_a[same].tolist(), ids_b[same].tolist())):
        uf.union(a, b)


def vectorize_store(
    store_path: str | Path,
    parquet_path: str | Path | None,
    gpkg_path: str | Path | None,
    options: VectorizeOptions = VectorizeOptions(),
    *,
    progress: bool = False,
) -> VectorizeReport:
    """Write the regions of ``labels.zarr`` to GeoParquet and/or GeoPackage (either may be None)."""
    started = time.perf_counter()
    group = open_store(store_path, mode="r")
    crs, transform = store_geometry(group)
    if crs is None and options.min_area > 0:  # metres cannot be measured on a pixel grid: refuse, never guess
        raise ValueError("--min-area needs a georeferenced input (square metres); this raster has no CRS")
    require_complete(group, store_path)  # never a product of an interrupted run
    labels = group[LABELS]
    names: list[str] = list(labels.attrs["class_names"])
    height, width = labels.shape
    ch, cw = labels.chunks
    windows = list(chunk_windows(height, width, labels.chunks))
    last_row, last_col = windows[-1].row_off, windows[-1].col_off
    tolerance_px = options.simplify / min(abs(transform.a), abs(transform.e))
    nodata_chunks: set[tuple[int, int]] = set()

    def nodata_near(geometry: shapely.Geometry) -> shapely.Geometry | None:
        """Nodata pixels (as polygons) of the chunks within the tolerance of ``geometry``."""
        x0, y0, x1, y1 = geometry.bounds
        found = [
            nodata_of_chunk(r, c)
            for r, c in nodata_chunks
            if c <= x1 + tolerance_px and c + cw >= x0 - tolerance_px and r <= y1 + tolerance_px and r + ch >= y0 - tolerance_px
        ]
        return shapely.union_all(found) if found else None

    @lru_cache(maxsize=64)
    def nodata_of_chunk(r: int, c: int) -> shapely.Geometry:
        block = labels[r : r + ch, c : c + cw]
        mask = (block == NODATA).astype(np.uint8)
        polygons = [shapely.geometry.shape(g) for g, _ in shapes(mask, mask=mask.astype(bool), transform=Affine.translation(c, r))]
        return shapely.union_all(polygons)

    def to_row(class_id: int, geometry: shapely.Geometry) -> PolygonRow | None:
        pixels = int(round(geometry.area))
        geometry = shapely.normalize(shapely.simplify(geometry, 0))  # same vertices however it was pieced
        if tolerance_px > 0:
            geometry = shapely.simplify(geometry, tolerance_px, preserve_topology=True)
            nodata = nodata_near(geometry)
            if nodata is not None:
                geometry = geometry.difference(nodata)
        a, b, c, d, e, f = transform[:6]
        geometry = shapely.orient_polygons(affine_transform(geometry, [a, b, d, e, c, f]))
        area_m2 = None if crs is None else float(geometries_area_m2([geometry], crs)[0])
        if (area_m2 is not None and area_m2 < options.min_area) or geometry.is_empty:
            return None
        return PolygonRow(class_id, names[class_id], pixels, float(geometry.area), area_m2, geometry)

    polygons = dropped = pixels = 0
    geometry_types = ["Polygon", "MultiPolygon"] if tolerance_px > 0 else ["Polygon"]
    spill = PieceSpill(Path(store_path).parent / f".{Path(store_path).name}.pieces.sqlite")
    uf = UnionFind()  # its items are the border pieces waiting in the spill
    above_labels = np.full(width, NODATA, np.uint8)
    above_ids = np.zeros(width, np.int64)
    left_labels, left_ids = above_labels[:0], above_ids[:0]  # the last column of the chunk to the left
    next_gid = 1
    with closing(spill), PolygonWriter(crs, optional_path(parquet_path), optional_path(gpkg_path), geometry_types) as out, \
            tqdm(total=len(windows), desc="vectorize", unit="chunk", disable=not progress) as bar:

        def emit(class_id: int, geometry: shapely.Geometry) -> None:
            nonlocal polygons, dropped
            row = to_row(class_id, geometry)
            if row is None:
                dropped += 1
            else:
                out.add(row)
                polygons += 1

        for window in windows:
            r0, c0 = window.row_off, window.col_off
            rows, cols = window.toslices()
            block = np.asarray(labels[rows, cols])
            valid_pixels = int(np.count_nonzero(block != NODATA))
            pixels += valid_pixels
            if valid_pixels < block.size:
                nodata_chunks.add((r0, c0))
            pieces, ids = chunk_pieces(block, r0, c0, next_gid)
            next_gid += len(pieces) + 1

            edges = []  # pixel ids along borders shared with another chunk
            if c0 > 0:
                edges.append(ids[:, 0])
            if r0 > 0:
                edges.append(ids[0, :])
            if c0 < last_col:
                edges.append(ids[:, -1])
            if r0 < last_row:
                edges.append(ids[-1, :])
            on_border = set(np.unique(np.concatenate(edges)).tolist()) - {0} if edges else set()
            for piece in pieces:
                if piece.gid not in on_border:
                    emit(piece.class_id, piece.geometry)
            border_pieces = [p for p in pieces if p.gid in on_border]
            spill.put(border_pieces)
            for p in border_pieces:
                uf.add(p.gid)

            if c0 > 0:
                join_border(uf, left_labels, left_ids, block[:, 0], ids[:, 0])
            if r0 > 0:
                join_border(uf, above_labels[c0 : c0 + block.shape[1]], above_ids[c0 : c0 + block.shape[1]], block[0, :], ids[0, :])
            left_labels, left_ids = block[:, -1].copy(), ids[:, -1].copy()
            above_labels[c0 : c0 + block.shape[1]] = block[-1, :]
            above_ids[c0 : c0 + block.shape[1]] = ids[-1, :]
            bar.update(1)

            if window.col_off == last_col:  # a chunk row is done: only regions on its bottom edge can grow
                still_open = {uf.find(g) for g in np.unique(above_ids).tolist() if g} if r0 < last_row else set()
                for root, gids in uf.groups(list(uf.parent)).items():
                    if root in still_open:
                        continue
                    class_id, parts = spill.take(gids)
                    emit(class_id, shapely.union_all(parts) if len(parts) > 1 else parts[0])
                    uf.discard(gids)
    seconds = time.perf_counter() - started
    log.info("vectorised %d regions (%d dropped by --min-area) in %.1f s", polygons, dropped, seconds)
    return VectorizeReport(polygons=polygons, dropped=dropped, pixels=pixels, seconds=seconds)


def optional_path(path: str | Path | None) -> Path | None:
    return None if path is None else Path(path)

