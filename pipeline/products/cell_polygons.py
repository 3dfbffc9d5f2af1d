"""One cell of the label map -> its polygons, on a Dask worker.

A cell is a fixed square of the label map (``CELL`` pixels, whatever the store's chunks), read
from the store and polygonised whole by GDAL (4-connected, exact pixel edges): each polygon is one
connected region of one class *within the cell*. A region that crosses a cell border is written as
one polygon per cell it touches — the *parts* of the region — and the driver gives all parts of a
region the same ``region_id`` (``vectorize.link_cells``), so dissolving by ``region_id`` gives the
exact region. That is the policy for regions too large to hold: no polygon is ever larger than a
cell, so memory is bounded by the cell for any label map, even one where a class percolates
through the whole scene, and ``area = pixels x pixel area`` stays exact part by part.

Polygons are made in *pixel* coordinates (integer vertices: exact), mapped to the CRS once, and
written to a part file (GeoParquet-like Arrow table) the driver streams into the outputs; each
polygon's ``bbox`` (GeoParquet's covering) is computed here too, from the very coordinates written,
so the driver adds nothing per polygon. What the driver needs to link parts across borders comes
back small: the part ids along the cell's edges.

With ``--min-area`` the regions wholly inside the cell are sieved on the labels first (merged into
their largest neighbour) and the cell polygonised again; with ``--simplify`` the cell's polygons
are simplified together as a coverage (``polygon_coverage``), in pixel coordinates, before the map
to the CRS, so that both sides of a cell border get the very same vertices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from affine import Affine
from rasterio.features import rasterize, shapes
from rasterio.windows import Window
from shapely.affinity import affine_transform

from fcnseg.pipeline.analysis.areas import geometries_area_m2, row_pixel_areas_m2
from fcnseg.pipeline.classes import store_classes
from fcnseg.pipeline.options import POLYGON_CELL
from fcnseg.pipeline.products.polygon_coverage import coverage_simplified, sieved
from fcnseg.pipeline.products.polygon_writer import BBOX, bbox_column
from fcnseg.pipeline.store import LABELS, NODATA, open_store, store_geometry
from fcnseg.pipeline.tiles import chunk_windows

log = logging.getLogger(__name__)

#: Side of a cell in pixels: the largest polygon fcnseg writes (``options.POLYGON_CELL``, its one home).
CELL = POLYGON_CELL

#: Columns of a part file, in order: the part's number in its cell, then the output's columns.
PART_SCHEMA = pa.schema([
    pa.field("part", pa.int32()), pa.field("class_id", pa.uint8()), pa.field("class_name", pa.string()),
    pa.field("pixels", pa.int64()), pa.field("area", pa.float64()), pa.field("area_m2", pa.float64()),
    pa.field("geometry", pa.binary()), pa.field("bbox", BBOX),
])


@dataclass(frozen=True)
class CellJob:
    """What every cell task of one store shares."""

    store_path: str
    parts_dir: str
    simplify_px: float  # simplification tolerance in pixels (0: exact pixel edges)
    min_area_m2: float  # a region smaller than this is dropped (needs a CRS)


@dataclass
class Edge:
    """One side of a cell: the class and the part number (+1; 0 = nodata) of each pixel along it."""

    labels: np.ndarray
    parts: np.ndarray


@dataclass
class CellResult:
    """What the driver needs of a finished cell; the polygons themselves are in ``part_file``."""

    row: int
    col: int
    part_file: str | None
    written: int  # parts in the file
    dropped: int  # regions inside the cell smaller than the minimum area (merged into a neighbour, or dropped)
    pixels: int  # valid pixels of the cell
    edges: dict[str, Edge] = field(default_factory=dict)  # "top", "bottom", "left", "right" (inner borders only)
    border_area_m2: dict[int, float] = field(default_factory=dict)  # part number -> m², parts on an edge (--min-area)
    area_moved_px: float = 0.0  # --simplify: the sum of |area change| of the cell's polygons, in pixels


def cell_windows(height: int, width: int, cell: int) -> list[tuple[int, int, Window]]:
    """(cell row, cell col, window) of every cell, row by row."""
    return [(w.row_off // cell, w.col_off // cell, w) for w in chunk_windows(height, width, (cell, cell))]


def vectorize_cell(job: CellJob, row: int, col: int, window: Window) -> CellResult:
    """Polygonise one cell into its part file; the task a worker runs."""
    group = open_store(job.store_path, mode="r")
    crs, transform = store_geometry(group)
    labels = group[LABELS]
    names = store_classes(labels.attrs).names
    height, width = labels.shape
    r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    block = np.asarray(labels[r0 : r0 + h, c0 : c0 + w])
    valid = block != NODATA
    result = CellResult(row, col, None, 0, 0, int(np.count_nonzero(valid)))
    if not result.pixels:
        return result
    sides = {"top": r0 > 0, "bottom": r0 + h < height, "left": c0 > 0, "right": c0 + w < width}
    classes, geometries = polygonize(block, valid, r0, c0)
    if job.min_area_m2 > 0 and crs is not None:  # regions wholly inside the cell are judged (sieved) here
        block, result.dropped = sieve_cell(block, classes, geometries, crs, transform, window, sides, job.min_area_m2)
        if result.dropped:
            classes, geometries = polygonize(block, block != NODATA, r0, c0)
    pixels = np.rint(shapely.area(geometries)).astype(np.int64)

    tree = shapely.STRtree(geometries)
    for side in (s for s, inner in sides.items() if inner):
        result.edges[side] = edge_of(block, tree, side, r0, c0)
    on_border = np.zeros(len(geometries), bool)
    for edge in result.edges.values():
        on_border[edge.parts[edge.parts > 0] - 1] = True

    exact_m2 = crs is not None and crs.is_geographic and job.simplify_px == 0
    area_m2 = pixel_areas_m2(geometries, crs, transform, window) if exact_m2 else None
    if job.simplify_px > 0:
        exact = geometries
        if job.min_area_m2 > 0 and crs is not None:  # the driver judges border regions by their exact m²
            border = np.flatnonzero(on_border)
            result.border_area_m2 = dict(zip((border + 1).tolist(),
                                             exact_areas_m2(geometries[border], crs, transform, window).tolist()))
        geometries = coverage_simplified(geometries, job.simplify_px, labels, window, block)
        result.area_moved_px = float(np.abs(shapely.area(geometries) - shapely.area(exact)).sum())
    a, b, c, d, e, f = transform[:6]
    geometries = shapely.orient_polygons(np.array([affine_transform(g, [a, b, d, e, c, f]) for g in geometries], dtype=object))
    if crs is not None and area_m2 is None:
        area_m2 = geometries_area_m2(geometries, crs)
    keep = ~shapely.is_empty(geometries)
    if area_m2 is not None and not result.border_area_m2:
        result.border_area_m2 = {int(i) + 1: float(area_m2[i]) for i in np.flatnonzero(on_border)}
    index = np.flatnonzero(keep)
    if not len(index):
        return result
    table = pa.table({
        "part": index.astype(np.int32) + 1,
        "class_id": classes[index],
        "class_name": [names[k] for k in classes[index]],
        "pixels": pixels[index],
        "area": shapely.area(geometries[index]).astype(np.float64),
        "area_m2": pa.nulls(len(index), pa.float64()) if area_m2 is None else area_m2[index],
        "geometry": shapely.to_wkb(geometries[index]),
        "bbox": bbox_column(geometries[index]),
    }, schema=PART_SCHEMA)
    path = Path(job.parts_dir) / f"{row}_{col}.parquet"
    if not path.parent.is_dir():  # the stage was abandoned while this cell ran (run_cells): nothing to add to
        log.debug("%s: removed before cell %d,%d was written", job.parts_dir, row, col)
        return result
    pq.write_table(table, path, compression="none")
    result.part_file, result.written = str(path), len(index)
    return result


def polygonize(block: np.ndarray, valid: np.ndarray, row_off: int, col_off: int) -> tuple[np.ndarray, np.ndarray]:
    """Class and polygon (global pixel coordinates, normalised) of every connected region of the block."""
    found = list(shapes(block, mask=valid, connectivity=4, transform=Affine.translation(col_off, row_off)))
    classes = np.array([int(value) for _, value in found], dtype=np.uint8)
    geometries = np.array([shapely.geometry.shape(geojson) for geojson, _ in found], dtype=object)
    return classes, shapely.normalize(geometries)


def pixel_areas_m2(geometries: np.ndarray, crs, transform: Affine, window: Window) -> np.ndarray:
    """The exact m² of each pixel-edge polygon (pixel coordinates) on a geographic CRS: the sum of
    its pixels' areas, row by row, as the class areas are counted. The geodesic area of its outline
    is not: an edge along a parallel is no geodesic (2.8e-6 too large on a 2,272 px polygon at
    48.75 N). Burnt back into the cell, each pixel by its centre, which is exact for such polygons."""
    r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    parts = rasterize(zip(geometries, range(1, len(geometries) + 1)), out_shape=(h, w),
                      transform=Affine.translation(c0, r0), fill=0, dtype="int32")
    row_m2 = row_pixel_areas_m2(crs, transform, r0, h)
    return np.bincount(parts.ravel(), weights=np.repeat(row_m2, w), minlength=len(geometries) + 1)[1:]


def edge_of(block: np.ndarray, tree: shapely.STRtree, side: str, row_off: int, col_off: int) -> Edge:
    """The pixels along one side and the part each lies in. Neighbouring pixels of one class along
    the side are 4-connected, so one pixel per run is looked up (by its centre, which is never on a
    polygon's edge) and its part holds for the whole run."""
    h, w = block.shape
    if side in ("top", "bottom"):
        r = 0 if side == "top" else h - 1
        labels, xs, ys = block[r, :], np.arange(w) + col_off + 0.5, np.full(w, row_off + r + 0.5)
    else:
        c = 0 if side == "left" else w - 1
        labels, xs, ys = block[:, c], np.full(h, col_off + c + 0.5), np.arange(h) + row_off + 0.5
    starts = np.concatenate([[0], np.flatnonzero(np.diff(labels)) + 1])
    run_parts = np.zeros(len(starts), np.int32)
    point_index, part_index = tree.query(shapely.points(xs[starts], ys[starts]), predicate="within")
    run_parts[point_index] = part_index + 1
    return Edge(labels.copy(), np.repeat(run_parts, np.diff(np.append(starts, len(labels)))))


def exact_areas_m2(geometries: np.ndarray, crs, transform: Affine, window: Window) -> np.ndarray:
    """The m² of pixel-edge polygons (pixel coordinates), as ``--min-area`` judges them: before any
    simplification, which moves area between neighbours."""
    if crs.is_geographic:
        return pixel_areas_m2(geometries, crs, transform, window)
    a, b, c, d, e, f = transform[:6]
    return geometries_area_m2([affine_transform(g, [a, b, d, e, c, f]) for g in geometries], crs)


def sieve_cell(block: np.ndarray, classes: np.ndarray, geometries: np.ndarray, crs, transform: Affine,
               window: Window, sides: dict[str, bool], min_area_m2: float) -> tuple[np.ndarray, int]:
    """The block with the regions wholly inside the cell and below ``min_area_m2`` merged into their
    largest neighbour (``polygon_coverage.sieved``); a region on an inner side of the cell is part
    of a region the driver judges whole. Areas are the exact ones of the pixel-edge polygons."""
    area_m2 = exact_areas_m2(geometries, crs, transform, window)
    r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    xmin, ymin, xmax, ymax = shapely.bounds(geometries).T
    on_side = ((sides["left"] & (xmin <= c0)) | (sides["right"] & (xmax >= c0 + w))
               | (sides["top"] & (ymin <= r0)) | (sides["bottom"] & (ymax >= r0 + h)))
    small = (area_m2 < min_area_m2) & ~on_side
    if not small.any():
        return block, 0
    return sieved(block, classes, geometries, area_m2, small, min_area_m2, window)
