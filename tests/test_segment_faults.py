"""Faults with real processes: a Dask worker killed mid-run, and a whole run killed and rerun."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.orchestrator import SegmentOptions, segment
from fcnseg.pipeline.synth import write_scene

FCNSEG = [sys.executable, "-m", "fcnseg"]
#: Small tiles and the full halo: many chunks of real work, so there is time to kill things mid-run.
ARGS = ["--tile", "64", "--batch-size", "1"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """320 px in 64 px tiles: 25 chunks, each reading its whole 256 px halo (clipped to the scene), so
    a run lasts long enough to be killed after a few chunks and still have most of them to do."""
    return write_scene(tmp_path_factory.mktemp("faults"), 320, seed=17)[0]


@pytest.fixture(scope="module")
def clean_labels(tmp_path_factory, scene, cluster) -> np.ndarray:
    out = tmp_path_factory.mktemp("clean")
    segment(scene, DEMO_MODEL, out, SegmentOptions(tile=64, batch_size=1), scheduler=cluster, progress=False)
    return labels_of(out)


def labels_of(out: Path) -> np.ndarray:
    return xr.open_zarr(out / "labels.zarr").labels.values


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def markers(done: Path) -> list[Path]:
    """The ledger's markers (not the hidden temporary files a marker is written through)."""
    return [p for p in done.glob("*.json") if not p.name.startswith(".")] if done.exists() else []


def wait_for_markers(out: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    done = out / ".fcnseg-run" / "done"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(markers(done)) >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"run ended before {count} chunks were done:\n{process.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} chunks done in {timeout} s")


def test_a_worker_killed_mid_run_does_not_change_the_output(tmp_path, scene, clean_labels):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = os.environ | {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", ":0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--no-nanny", "--nthreads", "1",
             "--name", f"w{i}", "--dashboard-address", ":0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        for i in range(2)
    ]
    try:
        out = tmp_path / "out"
        run = subprocess.Popen([*FCNSEG, "segment", str(scene), "--out", str(out), "--scheduler", address, *ARGS],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_markers(out, 4, run)
        workers[0].send_signal(signal.SIGKILL)  # dies mid-run, with tasks in flight
        assert len(markers(out / ".fcnseg-run" / "done")) < 5 * 5
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
        assert workers[0].wait(timeout=10) == -signal.SIGKILL
        assert np.array_equal(labels_of(out), clean_labels)
        assert (out / "run.json").exists()
    finally:
        for p in [*workers, scheduler]:
            p.kill()
            p.wait(timeout=30)


def test_a_killed_run_resumes_and_equals_a_clean_run(tmp_path, scene, clean_labels):
    out = tmp_path / "out"
    command = [*FCNSEG, "segment", str(scene), "--out", str(out), "--workers", "2", *ARGS]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_markers(out, 6, first)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its local workers, all at once
    first.wait(timeout=30)
    assert not (out / "run.json").exists()  # nothing says it is complete
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    chunks = json.loads((out / "run.json").read_text())["chunks"]
    assert chunks["reused"] >= 6 and chunks["computed"] > 0 and chunks["reused"] + chunks["computed"] + chunks["skipped_nodata"] == chunks["total"]
    assert np.array_equal(labels_of(out), clean_labels)
