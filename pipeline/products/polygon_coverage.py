"""A cell's polygons as one coverage: simplified with shared edges kept shared, small regions sieved.

``--simplify`` used to simplify each polygon on its own, so neighbours moved their common edge
apart and overlapped (330 pairs on a 1536² scene). Here a cell's polygons are simplified together
(``shapely.coverage_simplify``): each edge shared by two polygons is simplified once, for both.
The cell's *outer* boundary — the cell's sides and every edge against nodata — is held fixed
(``simplify_boundary=False``), which is what keeps the result exact across cells with memory
bounded by the cell: both sides of a cell border keep their pixel edges, so neighbouring cells
still meet edge to edge without either seeing the other's polygons, and no polygon moves into
nodata or away from it (no gaps beyond what nodata makes, no nodata covered).

GEOS needs a *noded* coverage: where a vertex of one polygon lies on another's edge, the edge must
have that vertex too. GDAL's polygons have vertices only where their outline turns, so where one
polygon runs straight past the corner two others meet at (a T), it lacks it. Those corners are
found from the labels alone (``junctions``): a 2x2 block of pixels around a corner where one side's
two pixels are one polygon and the other two pixels are two different things (two classes, a
class and nodata, or pixels of the neighbouring cell, which GDAL ran apart). The neighbouring
cells' pixels along the border are read too, so the corners they put on the border are put on this
cell's side as well: the written coverage is noded across cells, as ``coverage_is_valid`` asks.

``--min-area`` sieves as ``gdal_sieve`` does (GRASS's ``v.clean rmarea`` and QGIS's *Eliminate*
likewise): a region smaller than the minimum is merged into its largest neighbour, not cut out, so
no gap opens between neighbours; a small region with no neighbour (nodata all round) is dropped.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import shapely
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window

from fcnseg.pipeline.products.polygon_writer import bbox_column
from fcnseg.pipeline.store import NODATA

#: Key of a nodata pixel in ``junctions`` (a pixel of the neighbouring cell is its class + 256).
NO_PART = -1


def border_keys(labels, window: Window, block: np.ndarray) -> np.ndarray:
    """The cell's pixels (``block``, as polygonised) and the store's one pixel beyond on every side
    (``labels``), keyed so that two pixels get one key only
    where GDAL may have made them one polygon: a class inside the cell, class + 256 outside it
    (another cell's polygons), ``NO_PART`` for nodata and beyond the raster's edge."""
    height, width = labels.shape
    r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
    rows, cols = slice(max(0, r0 - 1), min(height, r0 + h + 1)), slice(max(0, c0 - 1), min(width, c0 + w + 1))
    keys = np.full((h + 2, w + 2), NO_PART, np.int16)
    read = np.asarray(labels[rows, cols]).astype(np.int16) + 256
    top, left = rows.start - (r0 - 1), cols.start - (c0 - 1)
    keys[top : top + read.shape[0], left : left + read.shape[1]] = read
    keys[1:-1, 1:-1] = block
    keys[keys % 256 == NODATA] = NO_PART  # NODATA is 255 in either range
    return keys


def junctions(keys: np.ndarray, row_off: int, col_off: int) -> tuple[np.ndarray, np.ndarray]:
    """The corners (pixel coordinates, shape (n, 2)) where a polygon of the cell runs straight past
    a corner its neighbours meet at, and the centre of one of that polygon's pixels beside each."""
    tl, tr, bl, br = keys[:-1, :-1], keys[:-1, 1:], keys[1:, :-1], keys[1:, 1:]
    corners, inside = [], []
    # (pair a, pair b, other c, other d, which of the pair's pixels (row, col offset from the corner))
    for a, b, c, d, (dr, dc) in ((tl, tr, bl, br, (-1, -1)), (bl, br, tl, tr, (0, -1)),
                                  (tl, bl, tr, br, (-1, -1)), (tr, br, tl, bl, (-1, 0))):
        own = (a >= 0) & (a < 256)  # a pixel of this cell's polygons
        i, j = np.nonzero(own & (a == b) & (c != d) & (c != a) & (d != a))
        corners.append(np.column_stack([j + col_off, i + row_off]))
        inside.append(np.column_stack([j + col_off + dc + 0.5, i + row_off + dr + 0.5]))
    return np.concatenate(corners).astype(np.float64), np.concatenate(inside)


def noded(geometries: np.ndarray, keys: np.ndarray, row_off: int, col_off: int) -> np.ndarray:
    """The polygons (pixel coordinates) with a vertex at every junction on their outline."""
    corners, inside = junctions(keys, row_off, col_off)
    if not len(corners):
        return geometries
    point_index, owner = shapely.STRtree(geometries).query(shapely.points(inside), predicate="within")
    order = np.argsort(owner, kind="stable")
    owners, group = np.unique(owner[order], return_inverse=True)
    points = shapely.multipoints(shapely.points(corners[point_index[order]]), indices=group)
    out = geometries.copy()
    out[owners] = shapely.snap(geometries[owners], points, 0.25)  # corners lie on the edges: inserted, none moved
    return out


def coverage_simplified(geometries: np.ndarray, tolerance_px: float, labels, window: Window,
                        block: np.ndarray) -> np.ndarray:
    """The cell's polygons (pixel coordinates) simplified as one coverage, the cell's sides and the
    edges against nodata held fixed (why: the module's docstring)."""
    if not len(geometries):
        return geometries
    keys = border_keys(labels, window, block)
    nodes = noded(geometries, keys, int(window.row_off), int(window.col_off))
    return shapely.coverage_simplify(nodes, tolerance_px, simplify_boundary=False)


def merge_targets(geometries: np.ndarray, area: np.ndarray, small: np.ndarray, min_area: float, *,
                  drop_isolated: bool = True) -> np.ndarray:
    """Where each polygon ends: its own index, the neighbour it is merged into, or -1 (dropped).

    ``gdal_sieve``'s rule on a coverage: the small polygons, smallest first, each into the
    neighbour (a shared edge, not a point) of the largest area, a neighbour grown by earlier merges
    counted grown; a small polygon that merges have grown to ``min_area`` stays. One with no
    neighbour is dropped (a patch of data below the minimum, nodata all round), or stays with
    ``drop_isolated=False``: the part of a region crossing the cell's border, whose neighbours are
    across it (dropping it would open a gap there)."""
    root, grown = np.arange(len(geometries)), np.asarray(area, np.float64).copy()
    dropped: set[int] = set()
    tree = shapely.STRtree(geometries)

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = int(root[i])
        return i

    for i in sorted(np.flatnonzero(small).tolist(), key=lambda k: (area[k], k)):
        if grown[i] >= min_area:
            continue
        near = tree.query(geometries[i], predicate="touches")
        shared = shapely.length(shapely.intersection(shapely.boundary(geometries[near]), geometries[i].boundary))
        roots = {find(int(k)) for k in near[shared > 0]} - {i} - dropped
        if not roots:
            if drop_isolated:
                dropped.add(i)
            continue
        target = max(roots, key=lambda r: (grown[r], -r))
        root[i], grown[target] = target, grown[target] + grown[i]
    ends = np.array([find(i) for i in range(len(geometries))], np.int64)
    ends[np.isin(ends, list(dropped))] = -1
    return ends


def sieved(block: np.ndarray, classes: np.ndarray, geometries: np.ndarray, area_m2: np.ndarray,
           small: np.ndarray, min_area_m2: float, window: Window) -> tuple[np.ndarray, int]:
    """The block with each small region given the class of its largest neighbour, or nodata where
    it has none (``merge_targets``), and how many regions were merged or dropped so. ``small``:
    the regions judged here (inside the cell below the minimum; the driver judges those on the
    cell's inner sides)."""
    ends = merge_targets(geometries, area_m2, small, min_area_m2)
    changed = np.flatnonzero(ends != np.arange(len(geometries)))
    if not len(changed):
        return block, 0
    values = [NODATA if ends[i] < 0 else int(classes[ends[i]]) for i in changed]
    out = block.copy()
    rasterize(zip(geometries[changed], values), out=out,
              transform=Affine.translation(int(window.col_off), int(window.row_off)))
    return out, len(changed)


def merged_rows(table: pa.Table, small: np.ndarray, size: np.ndarray, min_area: float) -> tuple[pa.Table, np.ndarray]:
    """One cell's rows (a part file's columns) with each ``small`` one merged into its largest
    neighbour in the cell (``merge_targets`` by ``size``, the m² of a row's whole region): its
    pixels and m² added to the neighbour's, its outline united with it. Exact on a coverage: the
    shared edge has the same vertices on both sides, so the union only takes it away. Returns the
    rows that stay and their indices in ``table``."""
    geometries = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    area_m2 = table["area_m2"].to_numpy(zero_copy_only=False).astype(np.float64)
    ends = merge_targets(geometries, size, small, min_area, drop_isolated=False)
    pixels, grown = table["pixels"].to_numpy().copy(), area_m2.copy()
    stay = np.flatnonzero(ends == np.arange(len(ends)))
    for target in np.unique(ends[(ends >= 0) & (ends != np.arange(len(ends)))]).tolist():
        members = np.flatnonzero(ends == target)
        geometries[target] = shapely.union_all(geometries[members])
        pixels[target], grown[target] = pixels[members].sum(), area_m2[members].sum()
    geometries = shapely.orient_polygons(geometries[stay])
    table = table.take(pa.array(stay))
    columns = {"pixels": pixels[stay], "area": shapely.area(geometries).astype(np.float64), "area_m2": grown[stay],
               "geometry": shapely.to_wkb(geometries), "bbox": bbox_column(geometries)}
    for name, values in columns.items():
        column = table.schema.field(name)
        table = table.set_column(table.schema.get_field_index(name), column, pa.array(values, type=column.type))
    return table, stay
