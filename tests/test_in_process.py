"""Small work without a cluster's start-up (issue 24): in this process when processes gain nothing,
with the labels, record and guarantees of a cluster run; a running Dask client used and left
running; a script without a ``__main__`` guard works on small work and fails in one line otherwise."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from distributed import Client

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.cluster_specs import ClusterSpec, default_local_workers, start_local
from fcnseg.pipeline.orchestrator import SegmentOptions, segment
from fcnseg.pipeline.synth import write_scene

FCNSEG = str(Path(sys.executable).with_name("fcnseg"))
#: Two chunks of 192 x 192: no more than the two workers a local cluster has here, so in-process.
OPTIONS = SegmentOptions(tile=192, probabilities=True)
#: The stages' timings and how the run computed: all a run.json of the same output may differ in.
HOW_IT_RAN = {"started", "finished", "seconds", "megapixels_per_second", "peak_memory_mb", "cluster", "workers"}

pytestmark = pytest.mark.skipif(default_local_workers() < 2, reason="a local cluster here has fewer than 2 workers")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A 384 x 192 scene: two chunks at tile 192."""
    folder = tmp_path_factory.mktemp("small")
    image, _ = write_scene(folder, 384, seed=11)
    out = folder / "small.tif"
    with rasterio.open(image) as src:
        with rasterio.open(out, "w", **(src.profile | {"height": 192})) as dst:
            dst.write(src.read(window=((0, 192), (0, 384))))
    return out


@pytest.fixture(scope="module")
def processes():
    """The LocalCluster of processes a default run starts here (its workers' torch threads included)."""
    with start_local(ClusterSpec(Path("<default>"), "local"), None) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def in_process(small, tmp_path_factory) -> Path:
    """The small scene segmented with no cluster asked for and no client running."""
    out = tmp_path_factory.mktemp("in-process") / "out"
    report = segment(small, DEMO_MODEL, out, OPTIONS, progress=False)
    assert report.cluster == "in-process" and json.loads((out / "run.json").read_text())["chunks"]["computed"] == 2
    return out


def record(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def store(out: Path) -> xr.Dataset:
    return xr.open_zarr(out / "labels.zarr")


def test_small_work_runs_in_process_and_equals_a_cluster_of_processes(small, in_process, processes, tmp_path):
    with Client(processes, set_as_default=False) as client:
        report = segment(small, DEMO_MODEL, tmp_path / "out", OPTIONS, client=client, progress=False)
    assert report.cluster == "client" and report.workers == default_local_workers()
    a, b = store(in_process), store(tmp_path / "out")
    assert np.array_equal(a.labels.values, b.labels.values)
    assert np.array_equal(a.probabilities.values, b.probabilities.values)
    ours, theirs = record(in_process), record(tmp_path / "out")
    assert ours["cluster"] == "in-process" and ours["workers"] == 1
    assert {k: v for k, v in ours.items() if k not in HOW_IT_RAN} == {k: v for k, v in theirs.items() if k not in HOW_IT_RAN}
    # the driver's memory is the in-process worker's: counted once, not twice
    assert ours["peak_memory_mb"] < theirs["peak_memory_mb"]


def test_a_running_client_is_used_and_left_running(small, processes, tmp_path):
    with Client(processes) as current:  # the current client, as a notebook's Client() is
        before = sum(current.run(transitions).values())
        report = segment(small, DEMO_MODEL, tmp_path / "out", OPTIONS, progress=False)
        assert report.cluster == "client"
        assert sum(current.run(transitions).values()) > before  # its workers ran the run's tasks
        assert current.submit(sum, [1, 2]).result() == 3  # and it still works
        assert current.status == "running"


def transitions(dask_worker) -> int:
    """On a worker: how many task state transitions it has made."""
    return dask_worker.state.transition_counter


def test_a_complete_output_starts_nothing(small, in_process, caplog):
    with caplog.at_level(logging.INFO, logger="fcnseg"):
        report = segment(small, DEMO_MODEL, in_process, OPTIONS, progress=False)
    assert report.skipped
    assert not [r for r in caplog.records if "in this process" in r.getMessage() or "LocalCluster" in r.getMessage()]


def test_kill_9_in_process_then_the_same_command_equals_a_clean_run(small, in_process, tmp_path):
    command = [FCNSEG, "segment", str(small), "--out", str(tmp_path / "out"), "--tile", "192", "--probabilities"]
    env = {k: v for k, v in os.environ.items() if k != "FCNSEG_CRASH_AT"}
    killed = subprocess.run(command, env={**env, "FCNSEG_CRASH_AT": "infer"}, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr  # the driver is the worker: the kill takes both
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    resumed = record(tmp_path / "out")
    assert resumed["cluster"] == "in-process" and resumed["chunks"]["reused"] == 1
    assert np.array_equal(store(tmp_path / "out").labels.values, store(in_process).labels.values)
    assert resumed["class_areas"] == record(in_process)["class_areas"]


SCRIPT = """\
from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.orchestrator import SegmentOptions, segment

report = segment({image!r}, DEMO_MODEL, {small_out!r}, SegmentOptions(tile=192), progress=False)
print("small:", report.cluster)
segment({image!r}, DEMO_MODEL, {large_out!r}, SegmentOptions(tile=64), progress=False)
"""


def test_a_script_without_a_main_guard(small, tmp_path):
    """Small work works without the guard; work that needs worker processes fails in one line
    naming the fix, before any worker runs the script again (which would find OUT busy)."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(image=str(small), small_out=str(tmp_path / "a"), large_out=str(tmp_path / "b")))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "small: in-process" in result.stdout, result.stderr
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith(f'{script}: this run starts Dask worker processes, which run the script again from the top;'
                         ' put the call under `if __name__ == "__main__":` (or pass client= a running Dask client)')
    assert "OutputBusy" not in result.stderr and "Nanny" not in result.stderr
    assert not (tmp_path / "b" / "run.json").exists()  # planned, not complete: the guarded script resumes it


def test_the_in_process_worker_has_no_memory_limit():
    """Its memory monitor would measure the caller's whole process and pause the run on its account."""
    from fcnseg.pipeline.cluster import in_process_client

    with in_process_client(1) as client:
        assert [w["memory_limit"] for w in client.scheduler_info()["workers"].values()] == [0]
