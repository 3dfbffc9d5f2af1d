"""A run's identity and the store it writes (issue 22): segment never writes where it should not,
nor calls complete what is not.

* relative ``--out`` and ``--model`` with ``--scheduler``: resolved on the driver, never by a worker
  started in another folder (a real ``dask scheduler`` and ``dask worker``, started here);
* a worker refuses a store its run did not create (the run token);
* a checkpoint replaced mid-run, the model cached on the workers: the products describe the model
  the plan verified;
* an input rewritten during a run: the run fails, the store stays incomplete, the rerun starts anew;
* a lost chunk of a complete store is noticed and recomputed;
* a VRT whose source file is re-delivered is segmented again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import xarray as xr

from fcnseg.models import DEMO_MODEL
from fcnseg.models.checkpoint import (
    ClassInfo,
    ModelCard,
    Normalization,
    content_sha256,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from fcnseg.models.fcn import build_model
from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.orchestrator import SegmentOptions, output_lock, plan_run, run_stages, segment
from fcnseg.pipeline.segment.run import compute_chunks
from fcnseg.pipeline.segment.worker import cached_model, predict_chunks
from fcnseg.pipeline.store import open_store
from fcnseg.pipeline.synth import write_scene

OPTIONS = SegmentOptions(tile=128, batch_size=1)
QUICK = SegmentOptions(tile=128, batch_size=1, cog=False, polygons=False, quicklook=False)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[int, Path]:
    """Two different 256 px scenes (seeds 61 and 62), as image files."""
    root = tmp_path_factory.mktemp("scenes")
    return {seed: write_scene(root / str(seed), 256, seed=seed)[0] for seed in (61, 62)}


@pytest.fixture(scope="module")
def clean(scenes, cluster, tmp_path_factory) -> dict[int, np.ndarray]:
    """The labels of an uninterrupted run of each scene."""
    root = tmp_path_factory.mktemp("clean")
    for seed, image in scenes.items():
        segment(image, DEMO_MODEL, root / str(seed), QUICK, scheduler=cluster, progress=False)
    return {seed: labels_of(root / str(seed)) for seed in scenes}


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """A real ``dask scheduler`` and one ``dask worker`` whose working directory is a folder of its
    own: (scheduler address, the worker's folder)."""
    from distributed import Client

    root = tmp_path_factory.mktemp("elsewhere")
    folder = root / "worker-cwd"
    folder.mkdir()
    address_file = root / "scheduler.json"
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "FCNSEG_TORCH_THREADS": "1", "DASK_LOGGING__DISTRIBUTED": "error"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    scheduler = subprocess.Popen([dask, "scheduler", "--scheduler-file", str(address_file), "--port", "0",
                                  "--no-dashboard"], cwd=root, **quiet)
    worker = subprocess.Popen([dask, "worker", "--scheduler-file", str(address_file), "--nworkers", "1",
                               "--nthreads", "1", "--no-dashboard", "--name", "0",
                               "--local-directory", str(root / "scratch")], cwd=folder, **quiet)
    try:
        deadline = time.monotonic() + 60
        while not address_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        with Client(scheduler_file=str(address_file), timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
            address = client.scheduler.address
        yield address, folder
    finally:
        for process in (worker, scheduler):
            process.terminate()
        for process in (worker, scheduler):
            process.wait(timeout=30)


def labels_of(out: Path) -> np.ndarray:
    return xr.open_zarr(out / "labels.zarr").labels.values


def state_of(out: Path) -> dict[str, bytes]:
    """Every file of an output folder (the store's chunks, the ledger's markers, run.json), by path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def other_model(path: Path) -> Path:
    """A checkpoint of another architecture and other class names, on the same 4 bands."""
    torch.manual_seed(3)
    card = ModelCard(arch="fcn16s", width=0.125, bands=4,
                     classes=[ClassInfo(name, color) for name, color in (("roof", (200, 0, 0)), ("yard", (0, 200, 0)))],
                     normalization=Normalization(mean=[0.0] * 4, std=[1.0] * 4))
    return save_checkpoint(path, build_model("fcn16s", 4, 2, 0.125), card)


# --------------------------------------------------------------------------- case 2: where workers write


def test_a_relative_out_names_the_drivers_folder_on_every_worker(scenes, clean, elsewhere, tmp_path, monkeypatch):
    address, worker_folder = elsewhere
    shutil.copy(DEMO_MODEL, worker_folder / "model.safetensors")
    monkeypatch.chdir(worker_folder)
    segment(scenes[61], "model.safetensors", "o_rel", QUICK, scheduler=address, progress=False)
    theirs = worker_folder / "o_rel"
    before = state_of(theirs)

    here = tmp_path / "driver"
    here.mkdir()
    shutil.copy(DEMO_MODEL, here / "model.safetensors")
    monkeypatch.chdir(here)
    report = segment(scenes[62], "model.safetensors", "o_rel", QUICK, scheduler=address, progress=False)
    assert report.chunks.computed == 4
    assert np.array_equal(labels_of(here / "o_rel"), clean[62])
    assert state_of(theirs) == before  # the other scene's complete output: not a byte changed
    assert json.loads((theirs / "run.json").read_text())["input"] == str(scenes[61])


def test_a_relative_model_is_the_drivers_file_on_every_worker(scenes, clean, elsewhere, tmp_path, monkeypatch):
    address, worker_folder = elsewhere
    other_model(worker_folder / "m2.safetensors")  # what the worker's folder holds under that name
    here = tmp_path / "driver"
    here.mkdir()
    shutil.copy(DEMO_MODEL, here / "m2.safetensors")
    monkeypatch.chdir(here)
    segment(scenes[62], "m2.safetensors", "o_model", QUICK, scheduler=address, progress=False)
    assert np.array_equal(labels_of(here / "o_model"), clean[62])
    assert json.loads((here / "o_model" / "run.json").read_text())["model"] == str(here / "m2.safetensors")


def test_a_worker_refuses_a_store_its_run_did_not_create(scenes, tmp_path):
    from fcnseg.pipeline.segment.run import tile_job

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    with output_lock(ours), output_lock(theirs):
        plan = plan_run(scenes[61], DEMO_MODEL, ours, OPTIONS, local=False)
        other = plan_run(scenes[61], DEMO_MODEL, theirs, OPTIONS, local=False)  # same parameters, another run
        before = state_of(theirs)
        with pytest.raises(InputError, match=f"{other.store_path}: not the label store this run created"):
            predict_chunks(tile_job(plan, "cpu fp32"), str(other.store_path), other.ledger, other.todo)
        assert state_of(theirs) == before  # no chunk, no marker


# --------------------------------------------------------------------------- case 5: the model the plan verified


def test_a_model_replaced_mid_run_is_described_as_planned(scenes, clean, cluster, tmp_path, caplog):
    from distributed import Client

    model = tmp_path / "model.safetensors"
    shutil.copy(DEMO_MODEL, model)
    planned_sha, planned_size = file_sha256(model), model.stat().st_size
    with Client(cluster) as client:  # the planned checkpoint already loaded on every worker
        client.run(cached_model, str(model), content_sha256(model), "auto", "cpu fp32")
    out = tmp_path / "out"
    with output_lock(out):
        plan = plan_run(scenes[61], model, out, OPTIONS, local=False)
        other_model(model)  # replaced mid-run by another architecture with other classes
        with caplog.at_level(logging.INFO, logger="fcnseg"):
            run_stages(plan, time.perf_counter(), infer=lambda p: compute_chunks(p, scheduler=cluster, progress=False))
    assert np.array_equal(labels_of(out), clean[61])
    item = json.loads((out / "item.json").read_text())
    demo = load_checkpoint(DEMO_MODEL)[1]
    props = item["properties"]
    assert props["mlm:architecture"] == "FCN-8s"
    assert [c["title"] for c in props["mlm:output"][0]["classification:classes"]] == demo.class_names
    assert item["assets"]["model"]["file:size"] == planned_size
    assert item["assets"]["model"]["file:checksum"] == "1220" + planned_sha
    assert props["mlm:total_parameters"] == sum(p.numel() for p in load_checkpoint(DEMO_MODEL)[0].parameters())
    record = json.loads((out / "run.json").read_text())
    assert record["model_sha256"] == planned_sha
    assert xr.open_zarr(out / "labels.zarr").labels.attrs["class_names"] == demo.class_names
    with rasterio.open(out / "labels.tif") as src:
        assert json.loads(src.tags()["class_names"]) == demo.class_names
    assert "· model (fcn8s) ·" in caplog.text  # the quicklook's title


# --------------------------------------------------------------------------- case 6: an input rewritten during a run


def test_an_input_rewritten_during_a_run_fails_it_and_the_rerun_starts_anew(scenes, clean, cluster, tmp_path, caplog):
    image = tmp_path / "scene.tif"
    shutil.copy(scenes[61], image)
    out = tmp_path / "out"
    with output_lock(out):
        plan = plan_run(image, DEMO_MODEL, out, QUICK, local=False)
        shutil.copy(scenes[62], image)  # rewritten in place while the run goes
        with pytest.raises(InputError, match=f"{image}: changed during the run; run the same command again"):
            compute_chunks(plan, scheduler=cluster, progress=False)
    assert open_store(out / "labels.zarr", mode="r").attrs["fcnseg_complete"] is False
    assert not (out / "run.json").exists()
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        report = segment(image, DEMO_MODEL, out, QUICK, scheduler=cluster, progress=False)
    assert report.chunks.reused == 0 and "its chunks are stale" in caplog.text
    assert np.array_equal(labels_of(out), clean[62])


# --------------------------------------------------------------------------- case 8: a lost chunk


def computed_chunk(out: Path) -> tuple[int, int]:
    """A chunk that the ledger marks computed (it holds labels)."""
    for marker in sorted((out / ".fcnseg-run" / "done").iterdir()):
        if json.loads(marker.read_text())["status"] == "computed":
            row, col = marker.stem.split("_")
            return int(row), int(col)
    raise AssertionError("no computed chunk")


def test_a_chunk_lost_from_a_complete_store_is_recomputed(scenes, clean, cluster, tmp_path, caplog):
    out = tmp_path / "out"
    segment(scenes[61], DEMO_MODEL, out, QUICK, scheduler=cluster, progress=False)
    row, col = computed_chunk(out)
    (out / "labels.zarr" / "labels" / "c" / str(row) / str(col)).unlink()
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        report = segment(scenes[61], DEMO_MODEL, out, QUICK, scheduler=cluster, progress=False)
    assert not report.skipped
    assert report.chunks.computed == 1 and report.chunks.reused == 3
    assert f"chunk {row},{col}" in caplog.text and "recomputing" in caplog.text
    assert np.array_equal(labels_of(out), clean[61])


def test_a_lost_store_is_recomputed_not_completed_empty(scenes, clean, cluster, tmp_path):
    out = tmp_path / "out"
    segment(scenes[61], DEMO_MODEL, out, QUICK, scheduler=cluster, progress=False)
    shutil.rmtree(out / "labels.zarr")
    report = segment(scenes[61], DEMO_MODEL, out, QUICK, scheduler=cluster, progress=False)
    assert report.chunks.computed == 4
    assert np.array_equal(labels_of(out), clean[61])


# --------------------------------------------------------------------------- case 3: a VRT's source files


def write_vrt(folder: Path, source: Path) -> Path:
    """A 1024 px VRT of 4 bands whose only data is the first 128 rows of ``source`` (a 256 px
    scene), placed between the windows a dataset fingerprint samples (rows 256-384)."""
    with rasterio.open(source) as src:
        crs, t = src.crs.to_wkt(), src.transform
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{b}"><NoDataValue>0</NoDataValue><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{source.name}</SourceFilename><SourceBand>{b}</SourceBand>'
        '<SrcRect xOff="0" yOff="0" xSize="256" ySize="128"/><DstRect xOff="0" yOff="256" xSize="256" ySize="128"/>'
        "</SimpleSource></VRTRasterBand>" for b in range(1, 5))
    vrt = folder / "mosaic.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="1024" rasterYSize="1024"><SRS>{crs}</SRS>'
                   f"<GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>{bands}</VRTDataset>")
    return vrt


def test_a_vrt_whose_source_is_redelivered_is_segmented_again(scenes, cluster, tmp_path, caplog):
    shutil.copy(scenes[61], tmp_path / "part.tif")
    vrt = write_vrt(tmp_path, tmp_path / "part.tif")
    out = tmp_path / "out"
    segment(vrt, DEMO_MODEL, out, QUICK, scheduler=cluster, progress=False)
    shutil.copy(scenes[62], tmp_path / "part.tif")  # the source re-delivered, the VRT unchanged
    fresh = tmp_path / "fresh"
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        report = segment(vrt, DEMO_MODEL, out, QUICK, scheduler=cluster, progress=False)
    assert not report.skipped and "its chunks are stale" in caplog.text
    segment(vrt, DEMO_MODEL, fresh, QUICK, scheduler=cluster, progress=False)
    assert np.array_equal(labels_of(out), labels_of(fresh))
