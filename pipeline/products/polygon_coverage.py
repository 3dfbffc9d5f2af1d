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

from collections.abc import Callable

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
    (``labels``), keyed so that two pixels get one key only where GDAL may have made them one
    polygon: a class inside the cell, class + 256 outside it (another cell's polygons), ``NO_PART``
    for nodata and beyond the raster's edge."""
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


def merge_targets(area: np.ndarray, small: np.ndarray, neighbours: Callable[[int], list[int]], min_area: float,
                  *, drop_isolated: bool = True) -> np.ndarray:
    """Where each polygon ends: its own index, the neighbour it is merged into, or -1 (dropped).

    ``gdal_sieve``'s rule on a coverage: the small polygons, smallest first, each into the
    neighbour (``neighbours(i)``: a shared edge, not a point) of the largest area, a neighbour
    grown by earlier merges counted grown; a small polygon that merges have grown to ``min_area``
    stays. One with no neighbour is dropped (a patch of data below the minimum, nodata all round),
    or stays with ``drop_isolated=False``: the part of a region crossing the cell's border, whose
    neighbours are across it (dropping it would open a gap there)."""
    root, grown = list(range(len(area))), np.asarray(area, np.float64).tolist()
    dropped: set[int] = set()

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for i in sorted(np.flatnonzero(small).tolist(), key=lambda k: (grown[k], k)):
        if grown[i] >= min_area:
            continue
        roots = {find(k) for k in neighbours(i)} - {i} - dropped
        if not roots:
            if drop_isolated:
                dropped.add(i)
            continue
        target = max(roots, key=lambda r: (grown[r], -r))
        root[i], grown[target] = target, grown[target] + grown[i]
    ends = np.array([find(i) for i in range(len(area))], np.int64)
    ends[np.isin(ends, list(dropped))] = -1
    return ends


def pixel_neighbours(parts: np.ndarray, count: int) -> Callable[[int], list[int]]:
    """Polygon i's neighbours, from ``parts`` (each pixel's polygon number + 1; 0: none): the
    polygons of the pixels 4-adjacent to its own, i.e. those it shares a pixel edge with."""
    pairs = []
    for a, b in ((parts[:, :-1], parts[:, 1:]), (parts[:-1, :], parts[1:, :])):
        across = (a != b) & (a > 0) & (b > 0)
        one, two = a[across].astype(np.int64) - 1, b[across].astype(np.int64) - 1  # int64: count² may pass 2³¹
        pairs += [one * count + two, two * count + one]
    codes = np.unique(np.concatenate(pairs))
    first, other = codes // count, codes % count
    starts = np.searchsorted(first, np.arange(count + 1))
    return lambda i: other[starts[i] : starts[i + 1]].tolist()


def edge_neighbours(geometries: np.ndarray) -> Callable[[int], list[int]]:
    """Polygon i's neighbours among ``geometries``: those sharing a stretch of its outline."""
    tree = shapely.STRtree(geometries)

    def neighbours(i: int) -> list[int]:
        near = tree.query(geometries[i], predicate="touches")
        shared = shapely.length(shapely.intersection(shapely.boundary(geometries[near]), geometries[i].boundary))
        return near[shared > 0].tolist()

    return neighbours


def sieved(block: np.ndarray, classes: np.ndarray, geometries: np.ndarray, area_m2: np.ndarray,
           small: np.ndarray, min_area_m2: float, window: Window) -> tuple[np.ndarray, int]:
    """The block with each small region given the class of its largest neighbour, or nodata where
    it has none (``merge_targets``), and how many regions were merged or dropped so. ``small``:
    the regions judged here (inside the cell below the minimum; the driver judges those on the
    cell's inner sides). On the pixels: a cell may hold tens of thousands of specks."""
    h, w = block.shape
    parts = rasterize(zip(geometries, range(1, len(geometries) + 1)), out_shape=(h, w), fill=0, dtype="int32",
                      transform=Affine.translation(int(window.col_off), int(window.row_off)))
    ends = merge_targets(area_m2, small, pixel_neighbours(parts, len(geometries)), min_area_m2)
    changed = int(np.count_nonzero(ends != np.arange(len(geometries))))
    if not changed:
        return block, 0
    lookup = np.concatenate([[NODATA], np.where(ends < 0, NODATA, classes[np.maximum(ends, 0)])]).astype(block.dtype)
    return np.where(parts > 0, lookup[parts], block), changed


def merged_rows(table: pa.Table, small: np.ndarray, size: np.ndarray, min_area: float) -> tuple[pa.Table, np.ndarray]:
    """One cell's rows (a part file's columns) with each ``small`` one merged into its largest
    neighbour in the cell (``merge_targets`` by ``size``, the m² of a row's whole region): its
    pixels and m² added to the neighbour's, its outline united with it. Exact on a coverage: the
    shared edge has the same vertices on both sides, so the union only takes it away. Returns the
    rows that stay and their indices in ``table``."""
    geometries = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    area_m2 = table["area_m2"].to_numpy(zero_copy_only=False).astype(np.float64)
    ends = merge_targets(size, small, edge_neighbours(geometries), min_area, drop_isolated=False)
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
