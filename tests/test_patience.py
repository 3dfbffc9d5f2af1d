"""Bounded patience with real Dask worker processes killed by the test: a chunk whose task kills
its worker every time (the OOM killer's pattern), a cluster whose workers all died, a worker lost
during the start handshake; and a flow given one scene under two spellings. Each fails (or runs)
in one line, never waits without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.faults import VARIABLE as CRASH_AT
from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.orchestrator import SegmentOptions, segment
from fcnseg.pipeline.synth import write_scene

#: 4 chunks of 128 px, one tile per task (a CPU's batch): a chunk's task is that chunk alone.
OPTIONS = SegmentOptions(tile=128, halo=64)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_scene(tmp_path_factory.mktemp("patience"), 256, seed=5)[0]


@pytest.mark.timeout(240)
def test_a_chunk_that_kills_its_worker_again_and_again_fails_the_run_in_one_line(tmp_path, scene, monkeypatch):
    """The local cluster's nanny brings the worker back each time; Dask's allowed-failures (set by
    fcnseg: 2) ends it at the third death, and the line names the chunk and the likely cause."""
    monkeypatch.setenv(CRASH_AT, "chunk 0,1")  # read by the worker processes the run starts
    with pytest.raises(InputError) as error:
        segment(scene, DEMO_MODEL, tmp_path / "out", OPTIONS, workers=1, progress=False)
    assert str(error.value) == ("a Dask worker died 3 times running chunk (0, 1); likely out of memory: "
                                "lower --tile or --batch-size")
    assert not (tmp_path / "out" / "run.json").exists()


@pytest.mark.timeout(120)
def test_a_cluster_whose_workers_all_died_ends_the_run_after_the_no_worker_wait(tmp_path, scene, monkeypatch):
    """A running scheduler (not started by fcnseg: Dask's own no-worker timeout unset) and one worker
    without a nanny, which the chunk kills: nothing brings a worker back. Without bounded patience
    the run waited for one forever, without a line."""
    from distributed import LocalCluster

    monkeypatch.setenv("FCNSEG_NO_WORKER_TIMEOUT", "2s")
    with LocalCluster(n_workers=0, dashboard_address=":0") as cluster:
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address, "--no-nanny",
             "--nthreads", "1", "--dashboard-address", ":0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ | {CRASH_AT: "chunk 1,0"},
        )
        try:
            cluster.wait_for_workers(1, timeout=60)
            with pytest.raises(InputError, match=r"has had no workers for 2 s: they died .*lower --tile or "
                                                 r"--batch-size.*FCNSEG_NO_WORKER_TIMEOUT"):
                segment(scene, DEMO_MODEL, tmp_path / "out", OPTIONS, scheduler=cluster.scheduler_address,
                        progress=False)
        finally:
            worker.kill()
            worker.wait()
    assert not (tmp_path / "out" / "run.json").exists()


@pytest.mark.timeout(120)
def test_a_worker_lost_during_the_start_handshake_is_one_line(tmp_path, scene, monkeypatch):
    """Dask said only "in <TCP (closed) Scheduler Broadcast local=... remote=...>: Stream is closed"."""
    monkeypatch.setenv(CRASH_AT, "handshake")
    with pytest.raises(OSError) as error:  # an OSError: a flow retries it, as the transient failure it is
        segment(scene, DEMO_MODEL, tmp_path / "out", OPTIONS, workers=1, progress=False)
    message = str(error.value)
    assert "a worker died while the run asked its workers how they compute; run the same command again" in message
    assert "Stream is closed" not in message and "\n" not in message


def test_no_worker_timeout_is_a_positive_duration(monkeypatch):
    from fcnseg.pipeline.cluster import no_worker_timeout

    assert no_worker_timeout() == 60
    monkeypatch.setenv("FCNSEG_NO_WORKER_TIMEOUT", "5m")
    assert no_worker_timeout() == 300
    for bad in ("soon", "0", "-1s"):
        monkeypatch.setenv("FCNSEG_NO_WORKER_TIMEOUT", bad)
        with pytest.raises(InputError, match=f"FCNSEG_NO_WORKER_TIMEOUT: '{bad}' is not a positive duration"):
            no_worker_timeout()


def test_one_scene_under_two_spellings_is_one_scene(tmp_path, monkeypatch):
    """``inc/a.tif`` and ``./inc/a.tif`` (or a folder holding it, or a link to it) are one output
    folder; as two scenes the second waited on the first's lock and the flow ended Failed."""
    from fcnseg.pipeline.orchestrator.scenes import find_scenes

    monkeypatch.chdir(tmp_path)
    (tmp_path / "inc").mkdir()
    for name in ("a.tif", "b.tif"):
        (tmp_path / "inc" / name).write_bytes(b"")
    (tmp_path / "link.tif").symlink_to(tmp_path / "inc" / "a.tif")
    assert find_scenes(["inc/a.tif", "./inc/a.tif"]) == ["inc/a.tif"]
    assert find_scenes(["./inc/a.tif", "inc", str(tmp_path / "inc" / "a.tif"), "link.tif"]) == [
        "./inc/a.tif", "inc/b.tif"]
    assert find_scenes(["s3://bucket/a.tif", "s3://bucket/./a.tif"]) == ["s3://bucket/a.tif", "s3://bucket/./a.tif"]
