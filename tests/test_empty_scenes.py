"""Edges of emptiness (issue 21, item 4): scenes with little or no data, each through the real
``segment`` (the demo model, real Dask worker processes) and checked by ``check_outputs``.

Every scene is the session's synthetic 384² scene (4 bands uint16, nodata 0, EPSG:32633) with
pixels set to nodata, written with rasterio. Tiles of 128 px (3 x 3 chunks) and polygon cells of
64 px (6 x 6 cells), so that missing chunks and cells without a valid pixel meet the link step.
Where there is nothing, the files must still be there: empty but valid.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from output_checks import check_outputs
from scipy import ndimage

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.orchestrator import RunReport, SegmentOptions, segment

TILE, CELL = 128, 64
OPTIONS = SegmentOptions(tile=TILE, polygon_cell=CELL)


@pytest.fixture(scope="module")
def base(scene) -> tuple[np.ndarray, dict]:
    """The synthetic scene's pixels (4, 384, 384) and its profile."""
    image, _ = scene
    with rasterio.open(image) as src:
        return src.read(), src.profile


def write_image(folder: Path, pixels: np.ndarray, profile: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "image.tif"
    with rasterio.open(path, "w", **{**profile, "height": pixels.shape[1], "width": pixels.shape[2]}) as dst:
        dst.write(pixels)
    return path


def run(image: Path, out: Path, cluster: str) -> RunReport:
    return segment(image, DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)


def labels_of(out: Path) -> np.ndarray:
    with rasterio.open(out / "labels.tif") as src:
        return src.read(1)


def class_cells(labels: np.ndarray, class_id: int) -> set[tuple[int, int]]:
    rows, cols = np.nonzero(labels == class_id)
    return {(int(r), int(c)) for r, c in zip(rows // CELL, cols // CELL)}


def test_a_scene_without_any_valid_pixel(tmp_path, base, cluster):
    pixels, profile = base
    image = write_image(tmp_path, np.zeros_like(pixels), profile)
    report = run(image, tmp_path / "out", cluster)
    assert report.chunks.to_json() == {"total": 9, "computed": 0, "skipped_nodata": 9, "reused": 0}
    assert report.polygons == 0 and all(c.pixels == 0 and c.share == 0.0 for c in report.class_areas)
    found = check_outputs(image, tmp_path / "out", polygon_cell=CELL)
    assert found["valid"] == 0 and found["polygons"] == 0
    for frame in (gpd.read_parquet(tmp_path / "out" / "polygons.parquet"),
                  pyogrio.read_dataframe(tmp_path / "out" / "polygons.gpkg", layer="polygons")):
        assert len(frame) == 0 and frame.crs == profile["crs"]  # empty, but a layer with its CRS


def test_one_valid_pixel(tmp_path, base, cluster):
    pixels, profile = base
    only = np.zeros_like(pixels)
    only[:, 200, 170] = pixels[:, 200, 170]  # inside chunk (1, 1) and cell (3, 2)
    image = write_image(tmp_path, only, profile)
    report = run(image, tmp_path / "out", cluster)
    assert report.chunks.to_json() == {"total": 9, "computed": 1, "skipped_nodata": 8, "reused": 0}
    found = check_outputs(image, tmp_path / "out", polygon_cell=CELL)
    assert found["valid"] == 1 and found["polygons"] == found["regions"] == 1


@pytest.mark.parametrize("shape", ["quarter disc", "pixel"])
def test_valid_data_only_at_the_rasters_corner(tmp_path, base, cluster, shape):
    """A 350 x 360 crop (its last chunk and cell cut by the edge) valid only at its bottom right
    corner: a quarter disc of radius 30 in the last cell, or the corner pixel alone."""
    pixels, profile = base
    height, width = 350, 360
    crop = pixels[:, :height, :width].copy()
    rows, cols = np.mgrid[:height, :width]
    keep = (height - 0.5 - rows) ** 2 + (width - 0.5 - cols) ** 2 < 30**2 if shape == "quarter disc" else \
        (rows == height - 1) & (cols == width - 1)
    crop[:, ~keep] = 0
    image = write_image(tmp_path, crop, profile)
    report = run(image, tmp_path / "out", cluster)
    assert report.chunks.to_json() == {"total": 9, "computed": 1, "skipped_nodata": 8, "reused": 0}
    found = check_outputs(image, tmp_path / "out", polygon_cell=CELL)
    assert found["valid"] == int(keep.sum()) and found["shape"] == (height, width)


def test_a_row_and_a_column_of_chunks_without_data(tmp_path, base, cluster):
    """The middle row and column of chunks nodata: four valid corners, five chunks never run, and
    two rows and two columns of cells without a valid pixel between the polygons' cells."""
    pixels, profile = base
    crossed = pixels.copy()
    crossed[:, TILE : 2 * TILE, :] = 0
    crossed[:, :, TILE : 2 * TILE] = 0
    image = write_image(tmp_path, crossed, profile)
    report = run(image, tmp_path / "out", cluster)
    assert report.chunks.to_json() == {"total": 9, "computed": 4, "skipped_nodata": 5, "reused": 0}
    found = check_outputs(image, tmp_path / "out", polygon_cell=CELL, max_footprint_nodata=0.10)
    assert found["valid"] == 4 * TILE * TILE
    assert found["footprint_nodata"] < 0.10  # the footprint leaves the nodata cross out


def test_a_class_that_occurs_in_one_polygon_cell_only(tmp_path, base, cluster):
    """The scene with every pixel the model calls class K made nodata (grown by 3 px), except for
    one region of K inside one cell: K then has polygons in that cell alone, the other classes
    across many. The model decides what K is where, so the scene is narrowed (what it now calls K
    elsewhere dropped too) until that holds, trying regions in turn, within a budget of runs."""
    pixels, profile = base
    first = tmp_path / "whole"
    run(write_image(first, pixels, profile), first / "out", cluster)
    found = narrowed_to_one_cell(tmp_path, pixels, profile, labels_of(first / "out"), cluster)
    assert found is not None, "no region of any class could be left alone in one cell"
    image, out, class_id, target = found
    predicted = labels_of(out)
    checked = check_outputs(image, out, polygon_cell=CELL)
    assert checked["class_pixels"][class_id] > 0
    spread = [len(class_cells(predicted, k)) for k in range(len(checked["class_pixels"])) if k != class_id]
    assert max(spread) > 4, spread  # the other classes cross cells
    frame = gpd.read_parquet(out / "polygons.parquet")
    alone = frame[frame.class_id == class_id]
    assert len(alone) >= 1 and alone.pixels.sum() == checked["class_pixels"][class_id]


def narrowed_to_one_cell(tmp_path: Path, pixels: np.ndarray, profile: dict, predicted: np.ndarray, cluster: str,
                         narrowings: int = 4, budget: int = 8) -> tuple[Path, Path, int, tuple[int, int]] | None:
    """(image, output, K, its cell) of a run in which class K occurs in one polygon cell only."""
    runs = 0
    for class_id, region in regions_inside_one_cell(predicted):
        target = next(iter(class_cells(region.astype(np.uint8), 1)))
        now, dropped = predicted, np.zeros(predicted.shape, bool)
        for _ in range(narrowings):
            if runs == budget:
                return None
            dropped |= ndimage.binary_dilation((now == class_id) & ~region, iterations=3) & ~region
            scene = pixels.copy()
            scene[:, dropped] = 0
            folder = tmp_path / f"run-{runs}"
            image = write_image(folder, scene, profile)
            run(image, folder / "out", cluster)
            runs += 1
            now = labels_of(folder / "out")
            cells = class_cells(now, class_id)
            if cells == {target}:
                print(f"class {class_id} in cell {target} alone after {runs} narrowing run(s); {int(dropped.sum())} px dropped")
                return image, folder / "out", class_id, target
            if not cells:  # the region itself is gone: try the next one
                break
    return None


def regions_inside_one_cell(labels: np.ndarray, margin: int = 6, smallest: int = 20) -> list[tuple[int, np.ndarray]]:
    """(class, mask) of the 4-connected regions of at least ``smallest`` pixels that lie inside one
    cell, ``margin`` pixels from its borders; those whose class has the fewest pixels elsewhere first."""
    found_regions = []
    for class_id in np.unique(labels[labels != 255]):
        found, _ = ndimage.label(labels == class_id)
        total = int((labels == class_id).sum())
        for index, (rows, cols) in enumerate(ndimage.find_objects(found), start=1):
            r0, c0 = rows.start % CELL, cols.start % CELL
            if rows.start // CELL != (rows.stop - 1) // CELL or cols.start // CELL != (cols.stop - 1) // CELL:
                continue
            if min(r0, c0) < margin or max(r0 + rows.stop - rows.start, c0 + cols.stop - cols.start) > CELL - margin:
                continue
            region = found == index
            if region.sum() >= smallest:
                found_regions.append((total - int(region.sum()), int(class_id), region))
    found_regions.sort(key=lambda r: (r[0], r[1]))
    return [(class_id, region) for _, class_id, region in found_regions]
