"""Label map -> one polygon per connected region of one class (per cell), cells on the Dask workers.

The label map is cut into fixed cells (``cell_polygons.CELL`` pixels, independent of the store's
chunks, so the polygons are the same for any chunking). Each cell is polygonised on a worker
(``cell_polygons.vectorize_cell``) into a part file; here, on the driver, only what crosses cell
borders is handled: the part numbers along facing cell edges say which parts are one region
(union-find over border parts only: memory follows the border length, never the area), and the
part files are streamed into GeoParquet and GeoPackage with each part's ``region_id``.

A region inside one cell is one polygon. A region crossing cell borders is one polygon per cell,
all with one ``region_id``: ``dissolve(by="region_id")`` gives the exact region. No polygon is
larger than a cell, so memory is bounded for any map — also where one class percolates through
the whole scene, as land cover often does. ``--min-area`` judges whole regions, summed over parts,
and merges the small ones into their largest neighbour; ``--simplify`` simplifies each cell's
polygons as one coverage, cell sides held fixed (``polygon_coverage``: why that keeps the cells
exact with memory bounded by the cell).

A store without a CRS (pixel coordinates) gives polygons in its transform's units, ``area`` in
those units² and ``area_m2`` null: there are no metres to measure, and none are made up.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fcnseg.atomic import partial_path
from fcnseg.pipeline.classes import store_classes
from fcnseg.pipeline.cluster import worker_peaks_mb
from fcnseg.pipeline.faults import crash_point
from fcnseg.pipeline.progress import stage_progress
from fcnseg.pipeline.products.cell_polygons import CELL, CellJob, CellResult, Edge, cell_windows, vectorize_cell
from fcnseg.pipeline.products.polygon_coverage import merged_rows
from fcnseg.pipeline.products.polygon_writer import PolygonWriter
from fcnseg.pipeline.store import LABELS, NODATA, open_store, require_complete, store_geometry

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VectorizeOptions:
    simplify: float = 0.0  # tolerance in CRS units; 0 keeps the exact pixel edges
    min_area: float = 0.0  # drop regions smaller than this many square metres (needs a CRS)
    cell: int = CELL  # side (pixels) of the cells polygonised apart: the largest polygon written


@dataclass
class VectorizeReport:
    polygons: int  # rows written: a region crossing cell borders is one row per cell
    regions: int
    dropped: int  # regions smaller than --min-area: merged into their largest neighbour (dropped: none)
    pixels: int
    seconds: float
    worker_peaks_mb: list[float] = field(default_factory=list)  # after the cells ran (empty: in-process)
    area_moved_px: float = 0.0  # --simplify: sum of |simplified - exact area| over the polygons, in pixels

    @property
    def megapixels_per_second(self) -> float:
        return self.pixels / 1e6 / max(self.seconds, 1e-9)

    @property
    def simplify_area_error(self) -> float:
        """The area simplification moved between polygons, as a share of the polygons' area (0.004:
        0.4 %): each polygon's |area change|, summed. The coverage's total is unchanged (its outer
        edges are held fixed), so this is what a single polygon's area may be off by, in sum."""
        return self.area_moved_px / max(self.pixels, 1)


class UnionFind:
    """Union-find over part keys, with path halving; the smaller key becomes the root."""

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


#: A side of a cell, the neighbour across it (row, col offset) and the neighbour's facing side.
ACROSS = {"top": (-1, 0, "bottom"), "bottom": (1, 0, "top"), "left": (0, -1, "right"), "right": (0, 1, "left")}


class RegionLinks:
    """Which border parts of which cells are one region, built as the cells come back in any order.

    A part is keyed by its cell's number and its number in the cell. A cell's edges are kept only
    until every neighbour has come back."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.parts = UnionFind()
        self.area_m2: dict[int, float] = {}
        self.edges: dict[tuple[int, int], dict[str, Edge]] = {}

    def key(self, row: int, col: int, part: int) -> int:
        return ((row * self.columns + col) << 32) | part

    def add(self, cell: CellResult) -> None:
        """Link the cell's border parts with those of its neighbours already in. Total: a cell
        without valid pixels has no edges (nothing crosses into it), and neighbours may come in
        any order; the links, and so the regions, are the same for every order."""
        here = (cell.row, cell.col)
        for edge in cell.edges.values():
            for part in np.unique(edge.parts[edge.parts > 0]).tolist():
                self.parts.add(self.key(*here, part))
        for part, area in cell.border_area_m2.items():
            self.area_m2[self.key(*here, part)] = area
        self.edges[here] = cell.edges
        for side, (dr, dc, facing) in ACROSS.items():
            there = (cell.row + dr, cell.col + dc)
            other = self.edges.get(there, {}).get(facing)
            if side in cell.edges and other is not None:
                self.join(here, cell.edges[side], there, other)
        for done in [here, *((cell.row + dr, cell.col + dc) for dr, dc, _ in ACROSS.values())]:
            sides = self.edges.get(done)
            if sides and all((done[0] + ACROSS[s][0], done[1] + ACROSS[s][1]) in self.edges for s in sides):
                self.edges[done] = {}  # every neighbour is in: its strips are no longer needed

    def join(self, here: tuple[int, int], edge: Edge, there: tuple[int, int], other: Edge) -> None:
        """Pixels facing each other across a cell border with the same class are one region."""
        same = (edge.labels == other.labels) & (edge.labels != NODATA)
        for a, b in set(zip(edge.parts[same].tolist(), other.parts[same].tolist())):
            self.parts.union(self.key(*here, a), self.key(*there, b))

    def region_areas(self) -> dict[int, float]:
        """m² of each region that crosses a cell border (by root key)."""
        totals: dict[int, float] = {}
        for key, area in sorted(self.area_m2.items()):  # one order of summation, whatever the arrival order
            root = self.parts.find(key)
            totals[root] = totals.get(root, 0.0) + area
        return totals


def vectorize_store(
    store_path: str | Path,
    parquet_path: str | Path | None,
    gpkg_path: str | Path | None,
    options: VectorizeOptions = VectorizeOptions(),
    *,
    client: Client | None = None,
    progress: bool = False,
) -> VectorizeReport:
    """Write the regions of ``labels.zarr`` to GeoParquet and/or GeoPackage (either may be None).

    The cells run as tasks on ``client``'s workers, or one after another here without one; the
    files are the same either way."""
    started = time.perf_counter()
    group = open_store(store_path, mode="r")
    crs, transform = store_geometry(group)
    if crs is None and options.min_area > 0:  # metres cannot be measured on a pixel grid: refuse, never guess
        raise ValueError("--min-area needs a georeferenced input (square metres); this raster has no CRS")
    if options.cell < 1:
        raise ValueError(f"the polygon cell must be at least 1 pixel, got {options.cell}")
    require_complete(group, store_path)  # never a product of an interrupted run
    height, width = group[LABELS].shape
    cells = cell_windows(height, width, options.cell)
    simplify_px = options.simplify / min(abs(transform.a), abs(transform.e))
    # the part files go to a hidden folder named like a partial output: what a killed run leaves,
    # the next one's output cleanup removes (pipeline/output/guard.py's remove_outputs)
    parts_dir = partial_path(Path(parquet_path or gpkg_path or Path(store_path).with_suffix(".parquet")))
    parts_dir.mkdir()
    job = CellJob(str(store_path), str(parts_dir), simplify_px, options.min_area)
    links = RegionLinks(columns=-(-width // options.cell))
    done: dict[tuple[int, int], CellResult] = {}
    try:
        with stage_progress(len(cells), "vectorize", "cell", bar=progress) as advance:
            for cell in run_cells(job, cells, client):
                links.add(cell)
                cell.edges = {}  # the links hold them while a neighbour still needs them
                done[(cell.row, cell.col)] = cell
                advance()
        crash_point("vectorize")  # the kill -9 tests: every cell's part file on disk, no output yet
        peaks = [] if client is None else worker_peaks_mb(client)
        geometry_types = ["Polygon"]  # also simplified: a coverage's polygons stay Polygons (polygon_coverage)
        classes = store_classes(dict(group[LABELS].attrs))
        with PolygonWriter(crs, optional_path(parquet_path), optional_path(gpkg_path), geometry_types,
                           classes=classes) as out:
            regions, dropped = write_parts(out, [done[(r, c)] for r, c, _ in cells], links, options.min_area)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    report = VectorizeReport(polygons=out.rows, regions=regions, dropped=dropped,
                             pixels=sum(c.pixels for c in done.values()), seconds=time.perf_counter() - started,
                             worker_peaks_mb=peaks, area_moved_px=sum(c.area_moved_px for c in done.values()))
    log.info("vectorised %d regions in %d polygons (%d merged or dropped by --min-area; --simplify moved %.3f %% "
             "of the area between polygons) in %.1f s", report.regions, report.polygons, report.dropped,
             100 * report.simplify_area_error, report.seconds)
    return report


def run_cells(job: CellJob, cells: list, client: Client | None) -> Iterator[CellResult]:
    """Every cell's result, as the cells finish: on the workers, or here one by one. When the
    caller stops early (a cell failed, the stage is abandoned), the cells not yet run are
    cancelled, so that none starts on a part folder that is about to be removed."""
    if client is None:
        for row, col, window in cells:
            yield vectorize_cell(job, row, col, window)
        return
    from distributed import as_completed

    futures = [client.submit(vectorize_cell, job, row, col, window, pure=False) for row, col, window in cells]
    try:
        for future in as_completed(futures):
            yield future.result()
            future.release()
    finally:
        client.cancel([f for f in futures if not f.done()])


def write_parts(out: PolygonWriter, cells: list[CellResult], links: RegionLinks, min_area: float) -> tuple[int, int]:
    """Stream the part files, cell by cell, into the outputs with each part's region id; numbers
    regions in the order they are written (so the files do not depend on which worker was first).
    The parts of a region below ``min_area`` are merged into their largest neighbour in their cell
    (``polygon_coverage.merged_rows``), as the cells did with the regions inside them: no gap opens.
    Each table goes with its row of cells, which bounds the GeoParquet row groups in space.
    Returns (regions, regions merged or dropped)."""
    areas = links.region_areas() if min_area > 0 else {}
    too_small = {root for root, area in areas.items() if area < min_area}
    region_of: dict[int, int] = {}
    regions = 0
    for cell in cells:
        if cell.part_file is None:
            continue
        # one thread: the table waits for its row group, and arrays decoded on Arrow's pool threads
        # pin those threads' allocator pages meanwhile (the memory test's map grew more with threads
        # than without; measured: docs/benchmarks.md#figures-quoted-in-code-comments)
        table = pq.read_table(cell.part_file, use_threads=False)
        roots = [links.parts.find(key) if key in links.parts.parent else None
                 for key in (links.key(cell.row, cell.col, part) for part in table["part"].to_numpy().tolist())]
        small = np.array([root in too_small for root in roots], bool)
        if small.any():  # a row's size: its whole region's m² (a row inside the cell: its own)
            own = table["area_m2"].to_numpy(zero_copy_only=False)
            size = np.array([areas.get(root, m2) for root, m2 in zip(roots, own)], np.float64)
            table, stay = merged_rows(table, small, size, min_area)
            roots = [roots[i] for i in stay]
        ids = np.zeros(table.num_rows, np.int64)
        for i, root in enumerate(roots):
            if root is None or root not in region_of:
                regions += 1
                ids[i] = regions
                if root is not None:
                    region_of[root] = regions
            else:
                ids[i] = region_of[root]
        table = table.drop_columns(["part"]).add_column(2, pa.field("region_id", pa.int64()), pa.array(ids))
        out.write(table, strip=cell.row)
    return regions, sum(c.dropped for c in cells) + len(too_small - region_of.keys())


def optional_path(path: str | Path | None) -> Path | None:
    return None if path is None else Path(path)
