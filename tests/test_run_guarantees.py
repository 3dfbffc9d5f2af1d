"""What a finished run guarantees (README): the silent wrong results of issue 10, each refused or
recomputed, and kill -9 at every stage followed by the same command equals a clean run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
import xarray as xr

from fcnseg.models import DEMO_MODEL
from fcnseg.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fcnseg.pipeline.orchestrator import OutputBusy, OutputConflict, SegmentOptions, output_lock, plan_run, segment
from fcnseg.pipeline.segment.run import IncompleteRun, compute_chunks
from fcnseg.pipeline.synth import write_scene

FCNSEG = str(Path(sys.executable).with_name("fcnseg"))
OPTIONS = SegmentOptions(tile=128, batch_size=1)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    """Two different 256 px scenes (seeds 41 and 42), as image files."""
    root = tmp_path_factory.mktemp("scenes")
    return {seed: write_scene(root / str(seed), 256, seed=seed)[0] for seed in (41, 42)}


@pytest.fixture(scope="module")
def clean(scenes, cluster, tmp_path_factory) -> dict[int, Path]:
    """An uninterrupted run of each scene."""
    root = tmp_path_factory.mktemp("clean")
    for seed, image in scenes.items():
        segment(image, DEMO_MODEL, root / str(seed), OPTIONS, scheduler=cluster, progress=False)
    return {seed: root / str(seed) for seed in scenes}


def labels_of(out: Path) -> np.ndarray:
    return xr.open_zarr(out / "labels.zarr").labels.values


def interrupt(out: Path) -> None:
    """What a killed run leaves: no run.json, and only some chunks marked finished."""
    (out / "run.json").unlink()
    for marker in sorted((out / ".fcnseg-run" / "done").iterdir())[1:]:
        marker.unlink()


def test_an_input_replaced_after_a_killed_run_is_segmented_again(scenes, clean, cluster, tmp_path):
    image = tmp_path / "scene.tif"
    shutil.copy(scenes[41], image)
    out = tmp_path / "out"
    segment(image, DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    interrupt(out)
    shutil.copy(scenes[42], image)  # a new delivery at the same path
    report = segment(image, DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    assert report.chunks.reused == 0  # no chunk of the old scene
    assert np.array_equal(labels_of(out), labels_of(clean[42]))


def test_an_input_replaced_after_a_complete_run_is_not_complete(scenes, clean, cluster, tmp_path):
    image = tmp_path / "scene.tif"
    shutil.copy(scenes[41], image)
    out = tmp_path / "out"
    segment(image, DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    shutil.copy(scenes[42], image)
    os.utime(image, ns=(os.stat(scenes[41]).st_atime_ns, os.stat(out / "run.json").st_mtime_ns - 10**9))
    report = segment(image, DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    assert not report.skipped
    assert np.array_equal(labels_of(out), labels_of(clean[42]))
    assert report.class_areas_json() == json.loads((clean[42] / "run.json").read_text())["class_areas"]


def test_a_checkpoint_replaced_during_a_run_fails_it(scenes, cluster, tmp_path):
    model = tmp_path / "model.safetensors"
    shutil.copy(DEMO_MODEL, model)
    out = tmp_path / "out"
    with output_lock(out):
        plan = plan_run(scenes[41], model, out, OPTIONS, local=False)
        net, card = load_checkpoint(model)
        with torch.no_grad():
            next(net.parameters()).add_(1.0)  # another model with the same card
        save_checkpoint(model, net, card)
        with pytest.raises(CheckpointError, match="changed since the run was planned"):
            compute_chunks(plan, scheduler=cluster, progress=False)
    assert not (out / "run.json").exists()
    assert xr.open_zarr(out / "labels.zarr").attrs["fcnseg_complete"] is False


def test_a_resume_on_another_device_never_mixes(scenes, clean, cluster, tmp_path):
    out = tmp_path / "out"
    segment(scenes[41], DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    interrupt(out)
    (out / ".fcnseg-run" / "execution.json").write_text(json.dumps({"execution": "cuda bf16"}))  # begun on a GPU
    with pytest.raises(OutputConflict, match="computed with cuda bf16, these workers compute with cpu fp32"):
        segment(scenes[41], DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    report = segment(scenes[41], DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False, overwrite=True)
    assert report.chunks.computed == 4 and report.chunks.reused == 0
    assert json.loads((out / "run.json").read_text())["execution"] == "cpu fp32"
    assert np.array_equal(labels_of(out), labels_of(clean[41]))


def test_the_store_is_complete_only_when_every_planned_chunk_reported(scenes, cluster, tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        plan = plan_run(scenes[41], DEMO_MODEL, out, OPTIONS, local=False)
        plan.reused = {(0, 0)}  # a chunk the ledger does not hold is never computed
        with pytest.raises(IncompleteRun, match="1 of 4 planned chunks did not report back"):
            compute_chunks(plan, scheduler=cluster, progress=False)
    assert xr.open_zarr(out / "labels.zarr").attrs["fcnseg_complete"] is False


def test_files_fcnseg_did_not_write_are_never_overwritten(cluster, tmp_path):
    image, truth = write_scene(tmp_path / "S", 128, seed=5)
    before = truth.read_bytes()
    with pytest.raises(OutputConflict, match="labels.tif, which fcnseg did not write"):
        segment(image, DEMO_MODEL, tmp_path / "S", OPTIONS, scheduler=cluster, progress=False)
    assert truth.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "S").iterdir()) == ["image.tif", "labels.tif"]


def test_invalid_options_leave_no_output(scenes, cluster, tmp_path):
    for options in (dict(tile=128, batch_size=-3), dict(tile=100), dict(device="tpu")):
        with pytest.raises(ValueError):  # refused when the options are made (SegmentOptions checks its values)
            segment(scenes[41], DEMO_MODEL, tmp_path / "out", SegmentOptions(**options), scheduler=cluster, progress=False)
        assert not (tmp_path / "out").exists()


def test_one_run_per_output_folder(scenes, cluster, tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        with pytest.raises(OutputBusy, match=f"in use by another fcnseg run .*pid {os.getpid()}"):
            segment(scenes[41], DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    # a holder killed with -9 leaves the lock file, not the lock
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from fcnseg.pipeline.orchestrator import output_lock\n"
                               f"with output_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    busy = subprocess.run([FCNSEG, "segment", str(scenes[41]), "--out", str(out), "--scheduler", cluster],
                          capture_output=True, text=True)
    assert busy.returncode == 1 and "Traceback" not in busy.stderr
    assert [line for line in busy.stderr.splitlines() if line.strip()] == [
        f"fcnseg: error: {out}: in use by another fcnseg run (host {os.uname().nodename}, pid {holder.pid}); "
        "one run per output folder at a time"
    ]
    holder.kill()
    holder.wait()
    report = segment(scenes[41], DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    assert report.chunks.total == 4


# --- kill -9 at each stage, then the same command --------------------------------------------


def run_command(image: Path, out: Path, *extra: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FCNSEG_CRASH_AT"}
    if crash_at:
        env["FCNSEG_CRASH_AT"] = crash_at
    command = [FCNSEG, "segment", str(image), "--out", str(out), "--tile", "128", "--batch-size", "1",
               "--workers", "1", *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clean_command(scenes, tmp_path_factory):
    """The output of an uninterrupted command, per stitching mode (made once, on first use)."""
    made: dict[str, Path] = {}

    def clean(stitch: str) -> Path:
        if stitch not in made:
            out = tmp_path_factory.mktemp(f"clean-{stitch}") / "out"
            result = run_command(scenes[42], out, "--stitch", stitch)
            assert result.returncode == 0, result.stderr
            made[stitch] = out
        return made[stitch]

    return clean


@pytest.mark.parametrize(("stage", "stitch"), [
    ("plan", "crop"), ("infer", "crop"), ("infer", "blend"), ("export", "crop"), ("vectorize", "crop"),
    ("publish", "crop"),
])
def test_kill_9_at_a_stage_then_the_same_command_equals_a_clean_run(stage, stitch, scenes, clean_command, tmp_path):
    image, out = scenes[42], tmp_path / "out"
    killed = run_command(image, out, "--stitch", stitch, crash_at=stage)
    assert killed.returncode == -9, killed.stderr
    assert not (out / "run.json").exists()  # run.json, the mark of a complete folder, is written last
    again = run_command(image, out, "--stitch", stitch)
    assert again.returncode == 0, again.stderr
    clean_out = clean_command(stitch)
    record, reference = (json.loads((o / "run.json").read_text()) for o in (out, clean_out))
    assert record["files"] == reference["files"] and record["class_areas"] == reference["class_areas"]
    assert np.array_equal(labels_of(out), labels_of(clean_out))
    with rasterio.open(out / "labels.tif") as a, rasterio.open(clean_out / "labels.tif") as b:
        assert np.array_equal(a.read(), b.read())
    polygons, expected = gpd.read_parquet(out / "polygons.parquet"), gpd.read_parquet(clean_out / "polygons.parquet")
    assert len(polygons) == len(expected) and polygons.pixels.sum() == expected.pixels.sum()
    assert not [p.name for p in out.iterdir() if ".partial" in p.name]  # no leftovers of the killed writers
    if stage == "infer":
        assert record["chunks"]["reused"] >= 1  # the finished chunks were kept


def test_ctrl_c_is_one_line_and_the_run_resumes(tmp_path):
    """Ctrl-C in a terminal reaches the whole process group: the command and its local workers."""
    image, _ = write_scene(tmp_path / "scene", 512, seed=3)  # 16 chunks: the first done, 15 still to do
    out = tmp_path / "out"
    command = [FCNSEG, "segment", str(image), "--out", str(out), "--tile", "128", "--batch-size", "1", "--workers", "2"]
    # started as a terminal's shell starts a foreground command, Ctrl-C at its default: a test run
    # launched in the background of a non-interactive shell passes SIGINT on ignored (POSIX), and a
    # command that inherits it ignored rightly keeps ignoring it
    foreground = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execv(sys.argv[1], sys.argv[1:])", *command]
    process = subprocess.Popen(foreground, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    done = out / ".fcnseg-run" / "done"
    deadline = time.monotonic() + 120
    def finished() -> bool:  # a marker, not the hidden temporary file it is written through
        return done.exists() and any(not p.name.startswith(".") for p in done.iterdir())

    while not finished() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr + stdout and "KeyboardInterrupt" not in stderr + stdout
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert errors == ["fcnseg: error: interrupted; run the same command again to resume"]
    assert not (out / "run.json").exists()
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["chunks"]["reused"] >= 1 and record["chunks"]["total"] == 16


def test_nothing_is_made_from_an_incomplete_store(tmp_path):
    from stores import store_from_array

    from fcnseg.pipeline.analysis.query import query_classes
    from fcnseg.pipeline.io import InputError
    from fcnseg.pipeline.products.cog import export_labels_cog
    from fcnseg.pipeline.products.vectorize import vectorize_store

    labels = np.random.default_rng(0).integers(0, 3, (64, 64), dtype=np.uint8)
    store = store_from_array(tmp_path / "labels.zarr", labels, chunk=32, class_names=["a", "b", "c"],
                             class_colors=[(1, 1, 1)] * 3, attrs={"fcnseg_complete": False})
    with pytest.raises(InputError, match="the label store is incomplete .*--partial"):
        query_classes(store)
    assert query_classes(store, allow_partial=True).valid_pixels == 64 * 64
    with pytest.raises(InputError, match="incomplete"):
        export_labels_cog(store, tmp_path / "labels.tif")
    with pytest.raises(InputError, match="incomplete"):
        vectorize_store(store, tmp_path / "polygons.parquet", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]
    refused = subprocess.run([FCNSEG, "query", str(store)], capture_output=True, text=True)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert [line for line in refused.stderr.splitlines() if line.strip()] == [
        f"fcnseg: error: {store}: the label store is incomplete (its run was interrupted); rerun the segment command "
        "to finish it, or pass --partial to read it as it is"
    ]
    assert subprocess.run([FCNSEG, "query", str(store), "--partial", "--json"], capture_output=True).returncode == 0
