"""``fcnseg verify OUT`` (issue 22): a finished output re-read against its run's records, each
chunk against the ledger's sha256 and each file against item.json's size and sha256."""

from __future__ import annotations

import json
import shutil
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from fcnseg.cli import app
from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.orchestrator import SegmentOptions, segment
from fcnseg.pipeline.output.ledger import labels_sha256
from fcnseg.pipeline.output.verify import VerifiedChunks, verify_output
from fcnseg.pipeline.store import open_store
from fcnseg.pipeline.synth import write_scene

#: A collar of nodata so that some chunks are never written (the ledger says nodata).
OPTIONS = SegmentOptions(tile=128, batch_size=1, polygons=False, quicklook=False)


@pytest.fixture(scope="module")
def finished(cluster, tmp_path_factory) -> Path:
    """A complete output of a 384 px scene with a nodata collar (9 chunks, some all nodata)."""
    root = tmp_path_factory.mktemp("verify")
    image, _ = write_scene(root / "scene", 384, seed=23, collar=150)
    segment(image, DEMO_MODEL, root / "out", OPTIONS, scheduler=cluster, progress=False)
    return root / "out"


@pytest.fixture
def out(finished, tmp_path) -> Path:
    """A copy of the finished output to damage (the checkpoint stays where it is)."""
    return Path(shutil.copytree(finished, tmp_path / "out"))


def markers(out: Path) -> dict[tuple[int, int], dict]:
    return {tuple(int(v) for v in p.stem.split("_")): json.loads(p.read_text())
            for p in (out / ".fcnseg-run" / "done").iterdir()}


def chunk_file(out: Path, row: int, col: int) -> Path:
    return out / "labels.zarr" / "labels" / "c" / str(row) / str(col)


def verify(*args: str | Path):
    return CliRunner().invoke(app, ["verify", *map(str, args)])


def test_the_ledger_records_each_chunks_labels_sha256(finished):
    labels = xr.open_zarr(finished / "labels.zarr").labels.values
    found = markers(finished)
    assert {m["status"] for m in found.values()} == {"computed", "nodata"}
    for (row, col), marker in found.items():
        chunk = labels[row * 128 : (row + 1) * 128, col * 128 : (col + 1) * 128]
        if marker["status"] == "computed":
            assert marker["sha256"] == labels_sha256(chunk)
        else:
            assert marker["sha256"] is None and (chunk == 255).all()


def test_a_finished_output_verifies(finished):
    result = verify(finished)
    assert result.exit_code == 0, result.output
    computed = sum(m["status"] == "computed" for m in markers(finished).values())
    item = json.loads((finished / "item.json").read_text())
    hashed = sum("file:checksum" in a for a in item["assets"].values())
    assert result.stdout.strip() == (f"{finished}: as written: 9 chunks ({computed} by their sha256, {9 - computed} "
                                     f"nodata), {hashed} files by size and sha256")
    report = json.loads(verify(finished, "--json").stdout)
    assert report["ok"] is True and report["problems"] == []
    assert report["chunks"] == {"total": 9, "verified": computed, "nodata": 9 - computed, "unverified": 0}


def test_the_reports_chunk_counts_are_a_frozen_record_with_the_json_verify_printed(finished):
    """Issue 23: ``VerifyReport.chunks`` was a dict of counters; ``--json`` keeps its keys and order."""
    report = verify_output(finished)
    computed = sum(m["status"] == "computed" for m in markers(finished).values())
    assert report.chunks == VerifiedChunks(total=9, verified=computed, nodata=9 - computed, unverified=0)
    with pytest.raises(FrozenInstanceError):
        report.chunks.total = 0  # type: ignore[misc]
    assert list(report.to_dict()["chunks"].items()) == [
        ("total", 9), ("verified", computed), ("nodata", 9 - computed), ("unverified", 0)]
    assert report.to_dict()["chunks"] == report.chunks.to_json()


def test_a_deleted_chunk_is_found(out):
    row, col = next(k for k, m in markers(out).items() if m["status"] == "computed")
    chunk_file(out, row, col).unlink()
    result = verify(out)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{out / 'labels.zarr'}: chunk {row},{col} is missing (the ledger marks it computed); "
        "rerun the segment command to recompute it"]
    assert result.stderr.startswith("fcnseg: error:") and len(result.stderr.splitlines()) == 1
    assert "1 problem(s)" in result.stderr


def test_changed_labels_and_files_are_found(out):
    (row, col), _ = next((k, m) for k, m in markers(out).items() if m["status"] == "computed")
    store = open_store(out / "labels.zarr")
    rows, cols = slice(row * 128, (row + 1) * 128), slice(col * 128, (col + 1) * 128)
    chunk = store["labels"][rows, cols]
    chunk[chunk != 255] = (chunk[chunk != 255] + 1) % 6  # another class wherever there are labels
    store["labels"][rows, cols] = chunk
    blank = next(k for k, m in markers(out).items() if m["status"] == "nodata")
    store["labels"][blank[0] * 128, blank[1] * 128] = 1  # a label where the run wrote none
    with open(out / "labels.tif", "r+b") as f:  # same size, one byte flipped at the end
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    (out / "labels.qml").write_text((out / "labels.qml").read_text() + "\n")
    (out / "labels.tif.aux.xml").unlink()
    report = verify_output(out)
    assert not report.ok
    assert sorted(report.problems) == sorted([
        f"{out / 'labels.zarr'}: chunk {row},{col} differs from what its run wrote (sha256 unlike the ledger's)",
        f"{out / 'labels.zarr'}: chunk {blank[0]},{blank[1]} holds labels where the ledger says nodata",
        f"{out / 'labels.tif'}: sha256 unlike item.json's file:checksum (the file changed since it was written)",
        f"{out / 'labels.qml'}: {(out / 'labels.qml').stat().st_size} bytes, item.json says "
        f"{(out / 'labels.qml').stat().st_size - 1}",
        f"{out / 'labels.tif.aux.xml'}: listed in run.json but missing",
        f"{out / 'labels.tif.aux.xml'}: listed in item.json but missing",
    ])
    result = verify(out, "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["problems"] == report.problems


def test_a_missing_marker_and_an_incomplete_store_are_found(out):
    (out / ".fcnseg-run" / "done" / "0_0.json").unlink()
    open_store(out / "labels.zarr").attrs["fcnseg_complete"] = False
    assert verify_output(out).problems == [
        f"{out / 'labels.zarr'}: marked incomplete (its run did not finish)",
        f"{out / 'labels.zarr'}: chunk 0,0 has no ledger marker (the ledger does not say it was finished)",
    ]


def test_a_folder_without_a_finished_run_is_one_error_line(tmp_path):
    result = verify(tmp_path)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == f"fcnseg: error: {tmp_path}: no run.json; not a finished fcnseg output, nothing to verify"


def test_a_segment_rerun_mends_what_verify_found(out, cluster):
    before = xr.open_zarr(out / "labels.zarr").labels.values
    row, col = next(k for k, m in markers(out).items() if m["status"] == "computed")
    chunk_file(out, row, col).unlink()
    assert verify(out).exit_code == 1
    image = json.loads((out / "run.json").read_text())["input"]
    report = segment(image, DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    assert report.chunks.computed == 1
    assert np.array_equal(xr.open_zarr(out / "labels.zarr").labels.values, before)
    assert verify(out).exit_code == 0
