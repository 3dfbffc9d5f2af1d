"""Quiet logs (issue 25, item 4): Dask's routine INFO lines off unless asked for with --verbose,
warnings that mislead silenced at their source, a flow's API log handler fed only from runs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.training.vector_labels import VectorLabels

#: dask imported first (as a flow's or the demo's imports do), then the command line's logging set
#: up, then distributed imported and an in-process cluster run: Dask's loggers' levels come from
#: its config, read at dask's import, so an environment variable set afterwards alone is too late.
IN_PROCESS_RUN = """
import sys, dask
from fcnseg.cli import setup_logging
setup_logging(verbose=sys.argv[1] == "verbose")
from fcnseg.pipeline.cluster import in_process_client
with in_process_client(1) as client:
    assert client.submit(sum, [1, 2]).result() == 3
"""


#: Lines Dask's scheduler and worker log at INFO in every in-process run (the demo's log had them).
DASK_ROUTINE = ("State start", "Scheduler at:", "Start worker at:", "Lost all workers", "Closing scheduler")


def dask_lines(verbose: bool) -> list[str]:
    run = subprocess.run([sys.executable, "-c", IN_PROCESS_RUN, "verbose" if verbose else "quiet"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert run.returncode == 0, run.stderr
    return [line for line in run.stderr.splitlines() if any(text in line for text in DASK_ROUTINE)]


def test_dask_routine_lines_are_off_by_default_and_back_with_verbose():
    assert dask_lines(verbose=False) == []
    assert len(dask_lines(verbose=True)) == len(DASK_ROUTINE)


def test_vector_labels_burnt_on_read_threads_warn_of_no_georeference_never(tmp_path):
    """Training reads chips on threads; rasterio's in-memory burn warned now and then that it had
    "no geotransform", reading as if the labels had lost their georeference. The labels burnt on
    threads equal those burnt on one thread."""
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape

    image, labels = write_scene(tmp_path / "scene", 256, seed=1)
    with rasterio.open(labels) as src:
        rows = [(shape(g), int(v)) for g, v in shapes(src.read(1), transform=src.transform)]
        crs = src.crs
    frame = gpd.GeoDataFrame({"cid": [v for _, v in rows]}, geometry=[g for g, _ in rows], crs=crs)
    frame.to_file(tmp_path / "labels.gpkg", engine="pyogrio")
    rng = np.random.default_rng(0)
    windows = [Window(int(rng.integers(0, 192)), int(rng.integers(0, 192)), 64, 64) for _ in range(300)]
    with rasterio.open(image) as src:
        source = VectorLabels(tmp_path / "labels.gpkg", src, "cid")
        one_thread = [source.read(w) for w in windows]
        with warnings.catch_warnings(record=True) as caught:
            with ThreadPoolExecutor(4) as pool:
                threaded = list(pool.map(source.read, windows))
    assert [(w.filename, w.lineno) for w in caught if issubclass(w.category, NotGeoreferencedWarning)] == []
    assert all(np.array_equal(a, b) for a, b in zip(one_thread, threaded, strict=True))


def test_the_flows_api_log_handler_takes_records_only_from_inside_a_run():
    pytest.importorskip("prefect")
    from fcnseg.flows.logs import InRunOnly

    record = logging.LogRecord("fcnseg.pipeline.segment.worker", logging.INFO, __file__, 1, "loaded", None, None)
    assert InRunOnly().filter(record) is False  # a Dask worker thread: no run, no API line, no warning
    record.flow_run_id = "8b4c3f8e-0000-0000-0000-000000000000"
    assert InRunOnly().filter(record) is True


def test_a_reports_sentence_is_one_line_in_a_log_file(tmp_path):
    """Off a terminal rich cut lines at 80 columns: the rerun's sentence about a long OUT came out
    in pieces in a log file. Now a sentence is one line; tables keep their width."""
    out = tmp_path / ("a-long-output-folder-name-" * 4)
    script = ("from types import SimpleNamespace; from fcnseg.tables import print_report; "
              f"print_report(SimpleNamespace(skipped=True, out={str(out)!r}, simplify_area_error=None, files=[], "
              "class_areas=[]))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env=os.environ | {"COLUMNS": "80", "TERM": "dumb"})
    assert run.returncode == 0, run.stderr
    assert f"{out}: already complete for this model and these parameters; nothing to do" in run.stderr.splitlines()
