"""Class areas as by-products of inference: each chunk's marker carries its class histogram, and
the run's table is their sum, equal to a full count of the finished store (``query_classes``)."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.analysis.query import ClassArea, query_classes
from fcnseg.pipeline.orchestrator import SegmentOptions, segment
from fcnseg.pipeline.orchestrator.finish import class_areas
from fcnseg.pipeline.segment.plan import plan_run
from fcnseg.pipeline.store import LABELS, open_store
from fcnseg.pipeline.synth import write_scene

OPTIONS = SegmentOptions(tile=128, cog=False, polygons=False, quicklook=False, stac=False)
#: Where each kind of scene lies: projected (the synthetic scene's own UTM grid), geographic, none.
GRIDS = {
    "geographic": ("EPSG:4326", Affine(0.0001, 0, 15.0, 0, -0.0001, 60.0)),
    "pixels": (None, Affine.identity()),
}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    """A 320 px synthetic scene with a nodata collar and a chunk without data, in its own UTM grid,
    in a geographic CRS and in pixel coordinates."""
    folder = tmp_path_factory.mktemp("areas")
    image, _ = write_scene(folder, 320, seed=11, collar=60)
    with rasterio.open(image) as src:
        data, profile = src.read(), src.profile
    data[:, :128, :128] = 0  # the scene's nodata: chunk (0, 0) is never run
    grids = {"projected": (profile["crs"], profile["transform"]), **GRIDS}
    out = {}
    for kind, (crs, transform) in grids.items():
        out[kind] = folder / f"{kind}.tif"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(out[kind], "w", **(profile | {"crs": crs, "transform": transform})) as dst:
                dst.write(data)
    return out


def full_count(out: Path) -> tuple[ClassArea, ...]:
    return tuple(query_classes(out / "labels.zarr").classes)


def markers(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / ".fcnseg-run" / "done").glob("*.json"))]


def assert_same_table(got: tuple[ClassArea, ...], expected: tuple[ClassArea, ...], geographic: bool) -> None:
    if not geographic:  # one pixel area: the same integers times the same float
        assert got == expected
        return
    assert [replace(c, area_m2=None) for c in got] == [replace(c, area_m2=None) for c in expected]
    assert [c.area_m2 for c in got] == pytest.approx([c.area_m2 for c in expected], rel=1e-12)


@pytest.mark.parametrize(("kind", "stitch"), [
    ("projected", "crop"), ("projected", "blend"), ("geographic", "crop"), ("pixels", "crop"),
])
def test_areas_from_the_markers_equal_a_full_count(tmp_path, scenes, cluster, kind, stitch):
    out = tmp_path / "out"
    report = segment(scenes[kind], DEMO_MODEL, out, OPTIONS.replace(stitch=stitch), scheduler=cluster, progress=False)
    recorded = markers(out)
    assert len(recorded) == report.chunks.total == 9 and report.chunks.skipped_nodata >= 1
    assert all(len(m["class_pixels"]) == 6 for m in recorded)  # one count per class of the model
    assert all((m["class_area_m2"] is not None) == (kind == "geographic") for m in recorded)
    assert sum(sum(m["class_pixels"]) for m in recorded) == sum(m["valid_pixels"] for m in recorded)
    assert_same_table(report.class_areas, full_count(out), geographic=kind == "geographic")
    if kind == "pixels":
        assert all(c.area_m2 is None for c in report.class_areas)


def test_a_resumed_run_sums_old_and_new_markers(tmp_path, scenes, cluster):
    out = tmp_path / "out"
    segment(scenes["geographic"], DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    for marker in sorted((out / ".fcnseg-run" / "done").glob("*.json"))[3:6]:  # as if killed before them
        marker.unlink()
    (out / "run.json").unlink()
    again = segment(scenes["geographic"], DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    assert again.chunks.reused == 6 and again.chunks.computed + again.chunks.skipped_nodata == 3
    assert all(m["class_area_m2"] is not None for m in markers(out))  # the reused chunks' and the new ones'
    assert_same_table(again.class_areas, full_count(out), geographic=True)


def test_areas_come_from_the_markers_and_markers_without_counts_fall_back(tmp_path, scenes, cluster):
    out = tmp_path / "out"
    segment(scenes["projected"], DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    plan = plan_run(scenes["projected"], DEMO_MODEL, out, OPTIONS)
    summed = class_areas(plan)
    assert summed == full_count(out)
    store = open_store(out / "labels.zarr")
    store[LABELS][128:256, :128] = np.zeros((128, 128), np.uint8)  # the store changes behind the markers' back
    assert class_areas(plan) == summed  # the table is the markers' sum: the store was not read
    marker = plan.ledger.marker(plan.tiles[0])  # a marker written before chunks had histograms
    old = {k: v for k, v in json.loads(marker.read_text()).items() if not k.startswith("class_")}
    marker.write_text(json.dumps(old))
    assert class_areas(plan) == full_count(out) != summed  # counted again from the store
