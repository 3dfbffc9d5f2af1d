"""Shared fixtures: small synthetic scenes made by the project itself (nothing downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def scene(tmp_path_factory) -> tuple[Path, Path]:
    """A 384 px synthetic scene (image.tif, labels.tif) shared by the tests that only read it."""
    from fcnseg.pipeline.synth import write_scene

    return write_scene(tmp_path_factory.mktemp("scene"), 384, seed=7)


@pytest.fixture(scope="session")
def cluster():
    """Real Dask worker processes (two, one thread each), shared by every test that asks for them; its
    address. One for the session: each start costs seconds (two processes importing torch, loading
    the model), and a dozen modules ask for it."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c.scheduler_address
