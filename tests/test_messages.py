"""Failures that exited non-zero but not with the one line naming the file or option (issue 22),
each run as a user runs it: the console script in a subprocess, on the tiny data and with the rule
of ``test_bad_inputs`` (one ``fcnseg: error:`` line, no traceback, nothing complete-looking left).
Usage errors exit 2, SIGTERM 143; everything else 1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine

from test_bad_inputs import FCNSEG, TIMEOUT, Assets, Call, Result, run_cli, seg, snapshot, train, violations
from test_segment_faults import wait_for_markers


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Assets:
    return Assets(tmp_path_factory.mktemp("messages"))


def vrt_without_its_source(raster: Path, folder: Path) -> tuple[Path, Path]:
    """A VRT of a copy of ``raster``, and that copy, deleted: GDAL opens the VRT, reads fail."""
    folder.mkdir()
    source = folder / f"source-{raster.name}"
    shutil.copyfile(raster, source)
    vrt = folder / f"mosaic-{raster.stem}.vrt"
    rasterio.shutil.copy(source, vrt, driver="VRT")
    source.unlink()
    return vrt, source


def check(call: Call, cwd: Path, status: int = 1, command: list | None = None) -> str:
    """Run ``call`` (``fcnseg ARGS``, or ``command`` as it is) and hold it to the rule, with exit
    ``status``; the error line."""
    before = snapshot(call.out) if call.out is not None else {}
    result = run_cli(call.args, cwd, timeout=call.timeout) if command is None else run_command(command, cwd)
    problems = violations(call, result, before)
    if status != 1:  # the rule's own status is 1
        problems = [p for p in problems if not p.startswith("exit status")]
        if result.returncode != status:
            problems.append(f"exit status {result.returncode}, not {status}")
    error = next((line for line in result.stderr.splitlines() if line.startswith("fcnseg: error:")), "")
    assert not problems, f"fcnseg {' '.join(result.args)}: {problems}\n{result.stderr[-3000:]}"
    return error


def test_a_vrt_with_a_missing_source_names_both(assets, tmp_path):
    """GDAL said "Read failed. See previous exception for details." (segment, query)."""
    image_vrt, image_source = vrt_without_its_source(assets.image, tmp_path / "image")
    labels_vrt, labels_source = vrt_without_its_source(assets.labels, tmp_path / "labels")
    out = tmp_path / "out"
    for call, vrt, source in [
        (seg(assets, tmp_path, input=image_vrt, out=out, names=(image_vrt.name,)), image_vrt, image_source),
        (Call(["query", labels_vrt], (labels_vrt.name,)), labels_vrt, labels_source),
    ]:
        error = check(call, tmp_path)
        assert vrt.name in error and source.name in error and "missing" in error, error
    assert not out.exists()


def test_a_rotated_input_is_named_and_a_new_out_left_without_a_trace(assets, tmp_path):
    rotated = tmp_path / "rotated.tif"
    with rasterio.open(assets.image) as src:
        profile, pixels, t = src.profile, src.read(), src.transform
    with rasterio.open(rotated, "w", **profile | {"transform": Affine(t.a, 0.3, t.c, 0.2, t.e, t.f)}) as dst:
        dst.write(pixels)
    out = tmp_path / "out"
    error = check(seg(assets, tmp_path, input=rotated, out=out, names=("rotated.tif",)), tmp_path)
    assert "rotated or sheared" in error
    assert not out.exists()  # it kept .fcnseg-run/ (parameters.json and an empty ledger)


@pytest.mark.parametrize(("args", "line"), [
    (["--tile", "abc"], "fcnseg: error: --tile: 'abc' is not a valid integer"),
    (["--simplify", "x"], "fcnseg: error: --simplify: 'x' is not a valid number"),
])
def test_a_bad_option_value_is_one_line_with_status_2(assets, tmp_path, args, line):
    result = run_cli(["segment", assets.image, "--out", tmp_path / "out", *args], tmp_path)
    assert (result.returncode, result.stderr.strip(), result.stdout) == (2, line, "")


def test_a_file_name_starting_with_a_dash_is_one_line_with_status_2(tmp_path):
    result = run_cli(["segment", "-x.tif", "--out", tmp_path / "out"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("fcnseg: error: -x.tif: no such option; a file whose name starts with '-' is "
                                     "given as ./-x.tif")


def test_a_full_disk_names_out(assets, tmp_path):
    """A 300 kB file system (tmpfs in a mount namespace of the command's own): zarr and GDAL's errors
    name no file, and the line named nothing either."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespace for a small file system here (unshare -rm)")
    small = tmp_path / "small"
    small.mkdir()
    out = small / "out"
    call = seg(assets, tmp_path, out=out, names=(str(out),))
    mounted = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=300k tmpfs "{small}" && exec "$@"', "sh",
               *FCNSEG, *call.args]
    call.out = None  # the file system went with the command's namespace
    error = check(call, tmp_path, command=mounted)
    assert "no space left on the device" in error, error


def run_command(command: list, cwd: Path) -> Result:
    """``command`` as it is (not ``fcnseg ARGS``), as ``run_cli`` reports a run."""
    started = time.monotonic()
    process = subprocess.run([str(a) for a in command], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    return Result([str(a) for a in command], process.returncode, process.stdout, process.stderr,
                  time.monotonic() - started)


def test_sigterm_is_treated_as_ctrl_c(tmp_path):
    """SIGTERM (a service manager stopping the command, a batch queue's time limit) ended the run
    with status 143 and no line; now as Ctrl-C: one line, the same clean-up (the cluster stopped,
    OUT's lock released), a resumable OUT."""
    from fcnseg.pipeline.synth import write_scene

    image, _ = write_scene(tmp_path / "scene", 512, seed=3)
    out = tmp_path / "out"
    process = subprocess.Popen([*FCNSEG, "segment", str(image), "--out", str(out), "--tile", "128", "--halo", "64",
                                "--batch-size", "1", "--workers", "1"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_markers(out, 1, process)
        process.send_signal(signal.SIGTERM)  # the command alone, as `kill PID` does
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143, stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert errors == ["fcnseg: error: terminated; run the same command again to resume"], stderr
    assert "Traceback" not in stderr
    assert not (out / "run.json").exists() and not (out / ".fcnseg.lock").exists()
    assert (out / ".fcnseg-run" / "parameters.json").exists()


def test_a_cluster_spec_without_workers_is_refused_up_front(assets, tmp_path):
    """``n_workers: -2`` was accepted and the run failed 65 s later on "has no workers"."""
    spec = tmp_path / "noworkers.yaml"
    spec.write_text("kind: local\noptions:\n  n_workers: -2\n")
    out = tmp_path / "out"
    call = seg(assets, tmp_path, "--cluster-spec", spec, out=out, names=("noworkers.yaml",), timeout=40, local=False)
    error = check(call, tmp_path)
    assert "options.n_workers must be a whole number of at least 1, not -2" in error
    assert not out.exists()


@pytest.mark.parametrize(("spec", "problem"), [
    ("kind: local\noptions: {threads_per_worker: 0}\n",
     "options.threads_per_worker must be a whole number of at least 1, not 0"),
    ("kind: jobqueue\nscheduler: slurm\njobs: 1\noptions: {cores: 0, memory: 4GB}\n",
     "options.cores must be a whole number of at least 1, not 0"),
    ("kind: jobqueue\nscheduler: slurm\njobs: 1\noptions: {cores: 4, memory: 4GB, processes: two}\n",
     "options.processes must be a whole number of at least 1, not 'two'"),
])
def test_spec_counts_are_checked_on_load(tmp_path, spec, problem):
    from fcnseg.pipeline.cluster_specs import load_cluster_spec
    from fcnseg.pipeline.io import InputError

    path = tmp_path / "spec.yaml"
    path.write_text(spec)
    with pytest.raises(InputError) as error:
        load_cluster_spec(path)
    assert str(error.value) == f"{path}: {problem}"


def test_train_init_with_another_band_count_names_both_files(assets, tmp_path):
    """It said "normalisation has not 4 values per statistic"."""
    call = train(assets, tmp_path, init=assets.three_band_model, names=(assets.three_band_model.name,))
    error = check(call, tmp_path)
    assert assets.three_band_model.name in error and assets.image.name in error and "3 bands" in error, error


def test_labels_without_a_labelled_pixel_are_named(assets, tmp_path):
    """It said "no labelled pixel left to sample training chips from"."""
    unlabelled = tmp_path / "unlabelled.tif"
    with rasterio.open(assets.labels) as src:
        profile, shape = src.profile, src.shape
    with rasterio.open(unlabelled, "w", **profile) as dst:
        dst.write(np.full(shape, 255, dtype=np.uint8), 1)
    error = check(train(assets, tmp_path, labels=unlabelled, names=("unlabelled.tif",)), tmp_path)
    assert "no labelled pixel" in error
