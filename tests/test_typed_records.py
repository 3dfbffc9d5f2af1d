"""The records a run passes on and writes down are typed, frozen values whose JSON is what the
files held when they were string-keyed dicts: a run's class areas and chunk counts (run.json, read
back by ``read_run_report``), a model card's training provenance, a worker's execution check."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.analysis.query import ClassArea, query_classes
from fcnseg.pipeline.segment import RunReport, SegmentOptions, read_run_report, segment
from fcnseg.pipeline.output.record import ChunkCounts  # after segment: alone it meets a cycle (see the report)
from fcnseg.pipeline.synth import write_scene

OPTIONS = SegmentOptions(tile=128, cog=False, polygons=False, quicklook=False, stac=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory, cluster) -> tuple[Path, RunReport]:
    """One small real run (a 192 px scene, 4 chunks on the module's Dask workers): its folder and report."""
    folder = tmp_path_factory.mktemp("typed")
    image, _ = write_scene(folder, 192, seed=3)
    out = folder / "out"
    return out, segment(image, DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)


def test_a_runs_class_areas_are_frozen_records_and_run_json_keeps_their_keys(run):
    out, report = run
    assert report.class_areas and all(isinstance(c, ClassArea) for c in report.class_areas)
    assert isinstance(report.class_areas, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.class_areas[0].pixels = 0
    with pytest.raises(TypeError):  # keyword-only: a row cannot be built with its fields out of order
        ClassArea(0, "water", 1, 1.0, 1.0)
    recorded = json.loads((out / "run.json").read_text())["class_areas"]
    assert recorded == query_classes(out / "labels.zarr").to_dict()["classes"]  # the keys and values of before
    assert [list(c) for c in recorded] == [["class_id", "class_name", "pixels", "area_m2", "share"]] * len(recorded)
    assert report.to_dict()["class_areas"] == recorded


def test_a_runs_chunk_counts_are_a_frozen_record_and_run_json_keeps_their_keys(run):
    out, report = run
    assert report.chunks == ChunkCounts(total=4, computed=4, skipped_nodata=0, reused=0)
    assert json.loads((out / "run.json").read_text())["chunks"] == {"total": 4, "computed": 4, "skipped_nodata": 0,
                                                                    "reused": 0}
    assert report.to_dict()["chunks"] == report.chunks.to_json()
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.chunks.computed = 0


def test_run_json_read_back_gives_the_same_records(run):
    out, report = run
    again = read_run_report(out)
    assert again == report  # every field: class areas, chunk counts, identity, seconds ...
    assert all(isinstance(c, ClassArea) for c in again.class_areas) and isinstance(again.chunks, ChunkCounts)
    with pytest.raises(TypeError):  # the report is built by keyword only
        RunReport(out, report.chunks, {}, 0.0, 0.0)
