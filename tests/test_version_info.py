"""Small things a user trips on (issue 25, item 6): ``fcnseg --version``, ``fcnseg info MODEL``,
class names in ``evaluate --json``, and what run.json says of how an output was made (batch size,
command line, the code's commit) without any of it entering the identity a rerun must match.

The commands run in this process through the app itself (``app([...])``, as the console script
calls it), on real checkpoints and a real synthetic scene; only the no-torch check needs a fresh
interpreter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from fcnseg.cli import app
from fcnseg.models import DEMO_MODEL
from fcnseg.models.checkpoint import read_card
from fcnseg.pipeline.versions import CHECKOUT, code_commit

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "89abcdef0123456789abcdef0123456789abcdef"


def fcnseg(capsys, *args: object) -> tuple[int, str, str]:
    """Run ``fcnseg ARGS`` in this process; its exit status, stdout and stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        app([str(a) for a in args])
    printed = capsys.readouterr()
    return done.value.code, printed.out, printed.err


# --- --version -----------------------------------------------------------------------------------

def test_version_prints_the_package_version_and_the_checkouts_commit(capsys):
    code_commit.cache_clear()  # read once per process; the tree may have had commits since this one's first read
    status, out, err = fcnseg(capsys, "--version")
    assert status == 0 and err == ""
    expected = f"fcnseg {version('fcnseg')}"
    git = shutil.which("git")
    if git and (CHECKOUT / ".git").exists():
        head = subprocess.run([git, "-C", str(CHECKOUT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        expected += f" (commit {head})"
    assert out == expected + "\n"


def test_the_commit_is_read_from_the_files_of_a_loose_a_packed_and_a_detached_head(tmp_path):
    loose, packed, detached, worktree = (tmp_path / name for name in ("loose", "packed", "detached", "worktree"))
    (loose / ".git" / "refs" / "heads").mkdir(parents=True)
    (loose / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (loose / ".git" / "refs" / "heads" / "main").write_text(SHA + "\n")
    (packed / ".git").mkdir(parents=True)
    (packed / ".git" / "HEAD").write_text("ref: refs/heads/dev\n")
    (packed / ".git" / "packed-refs").write_text(f"# pack-refs with: peeled\n{OTHER_SHA} refs/heads/main\n{SHA} refs/heads/dev\n")
    (detached / ".git").mkdir(parents=True)
    (detached / ".git" / "HEAD").write_text(OTHER_SHA + "\n")
    worktree.mkdir()
    (worktree / ".git").write_text(f"gitdir: {loose / '.git'}\n")  # a worktree's or submodule's .git file
    assert [code_commit(p) for p in (loose, packed, detached, worktree)] == [SHA, SHA, OTHER_SHA, SHA]


def test_no_git_checkout_is_no_commit_and_no_error(tmp_path):
    assert code_commit(tmp_path) is None  # a wheel's site-packages: nothing to read, nothing run
    (tmp_path / "broken" / ".git").mkdir(parents=True)  # a .git without HEAD: git says no, nothing raises
    assert code_commit(tmp_path / "broken") is None


# --- fcnseg info ---------------------------------------------------------------------------------

def test_info_json_is_the_demo_models_card_and_its_verified_hash(capsys):
    status, out, _ = fcnseg(capsys, "info", "demo", "--json")
    assert status == 0
    printed = json.loads(out)
    assert printed["card"] == json.loads(json.dumps(read_card(DEMO_MODEL).to_json()))  # safetensors' own reader
    assert printed["model"] == str(DEMO_MODEL) and printed["verified"] is True
    from fcnseg.models.checkpoint import content_sha256

    assert printed["content_sha256"] == content_sha256(DEMO_MODEL)


def test_info_prints_bands_classes_colours_mapping_provenance_and_metrics(capsys):
    status, out, _ = fcnseg(capsys, "info", str(DEMO_MODEL))
    card = read_card(DEMO_MODEL)
    assert status == 0
    for expected in ("fcn8s", "width 0.125", *card.band_names, *card.class_names, "#1e64c8", "raster labels",
                     "Training provenance", "AdamW", "mean_iou", f"{card.metrics['mean_iou']:.4f}"):
        assert expected in out, expected


def test_info_reads_a_checkpoint_from_init_model(capsys, tmp_path):
    checkpoint = tmp_path / "m.safetensors"
    assert fcnseg(capsys, "init-model", checkpoint, "--bands", 3, "--classes", 2, "--width", 0.125,
                  "--class-names", "dry,wet")[0] == 0
    status, out, _ = fcnseg(capsys, "info", checkpoint, "--json")
    card = json.loads(out)["card"]
    assert status == 0 and [c["name"] for c in card["classes"]] == ["dry", "wet"]
    assert card["training"] == {"init": "random", "seed": 0, "vgg16_weights": None}
    status, text, _ = fcnseg(capsys, "info", checkpoint)
    assert status == 0 and "label mapping not recorded" in text and "init" in text


@pytest.mark.parametrize("damage", ["byte", "truncated", "not-safetensors", "missing"])
def test_a_damaged_checkpoint_is_one_error_line(capsys, tmp_path, damage):
    checkpoint = tmp_path / "m.safetensors"
    data = bytearray(DEMO_MODEL.read_bytes())
    if damage == "byte":
        data[-5] ^= 0xFF  # a weight's byte: only the content hash can tell
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "not-safetensors":
        data = bytearray(b"GIF89a" + bytes(100))
    if damage != "missing":
        checkpoint.write_bytes(bytes(data))
    status, out, err = fcnseg(capsys, "info", checkpoint)
    assert status == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(f"fcnseg: error: {checkpoint}: "), err
    reason = {"byte": "content hash mismatch", "truncated": "truncated or damaged",
              "not-safetensors": "not a safetensors checkpoint", "missing": "no such checkpoint file"}[damage]
    assert reason in err


def test_info_imports_no_torch():
    probe = ("import sys\nfrom fcnseg.cli import app\ntry:\n    app(['info', 'demo', '--json'])\n"
             "except SystemExit as e:\n    assert e.code == 0\nprint('torch' in sys.modules, 'safetensors' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "False False"


# --- evaluate --json -----------------------------------------------------------------------------

def test_evaluate_json_names_each_class_beside_its_id_and_iou(capsys, scene):
    image, labels = scene
    status, out, _ = fcnseg(capsys, "evaluate", "--model", DEMO_MODEL, "--image", image, "--labels", labels, "--json")
    assert status == 0
    metrics = json.loads(out)
    names = read_card(DEMO_MODEL).class_names
    assert [(c["class_id"], c["class"]) for c in metrics["per_class_iou"]] == list(enumerate(names))
    import numpy as np

    from fcnseg.models.metrics import metrics_from_confusion  # each class's IoU from the confusion matrix

    expected = metrics_from_confusion(np.array(metrics["confusion"]))["per_class_iou"]
    assert [c["iou"] for c in metrics["per_class_iou"]] == expected


# --- run.json: batch size, command, code -------------------------------------------------------------

#: The outputs that cost seconds and say nothing of the record are off.
LIGHT = ("--no-polygons", "--no-quicklook", "--no-stac", "--no-cog")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, scene):
    """One small scene segmented by the command (in this process: one chunk), and its run.json."""
    out = tmp_path_factory.mktemp("cli") / "out"
    argv = ["segment", str(scene[0]), "--out", str(out), "--batch-size", "2", "--tile", "256", *LIGHT]
    with pytest.raises(SystemExit) as done:
        app(argv)
    assert done.value.code == 0
    return out, argv


def run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def test_run_json_records_the_batch_size_the_command_line_and_the_code(cli_run):
    out, argv = cli_run
    record = run_json(out)
    assert record["batch_size"] == 2
    assert record["command"] == {"argv": ["fcnseg", *argv]}
    assert record["code"] == {"version": version("fcnseg"), "commit": code_commit()}
    assert "batch_size" not in record["parameters"] and "code" not in record["parameters"]


def test_a_rerun_with_another_batch_size_or_from_another_commit_is_still_a_no_op(capsys, cli_run):
    out, argv = cli_run
    before = run_json(out)
    as_another_commit = {**before, "code": {"version": "0.0.9", "commit": OTHER_SHA}}  # as an older checkout wrote it
    (out / "run.json").write_text(json.dumps(as_another_commit, indent=2))
    rerun = [a if a != "2" else "3" for a in argv]  # --batch-size 3
    status, _, err = fcnseg(capsys, *rerun)
    assert status == 0 and "already complete" in err, err
    assert run_json(out) == as_another_commit  # nothing recomputed, nothing rewritten


def test_a_library_call_records_its_name_and_options(tmp_path, scene):
    import fcnseg as library

    report = library.segment(scene[0], tmp_path / "out", batch_size=3, tile=256, polygons=False, quicklook=False,
                             stac=False, cog=False)
    record = run_json(tmp_path / "out")
    command = record["command"]
    assert command["call"] == "segment" and record["batch_size"] == 3
    assert command["arguments"]["input"] == str(scene[0]) and command["arguments"]["batch_size"] == 3
    assert command["arguments"]["tile"] == 256 and command["arguments"]["polygons"] is False
    assert not report.skipped


# --- what docs/outputs.md says of GDAL and labels.zarr ---------------------------------------------

def gdal_version() -> tuple[int, ...]:
    import rasterio

    return tuple(int(part) for part in rasterio.__gdal_version__.split(".")[:2])


def test_gdal_reads_labels_zarr_from_3_12_and_not_before(cli_run):
    """docs/outputs.md: GDAL 3.12 (rasterio 1.5.2's wheels, Python >= 3.12) reads the store's labels;
    GDAL 3.10 (rasterio 1.4's) opens the root but not the array (zarr-python 3 writes the ``bytes`` codec)."""
    import numpy as np
    import rasterio
    import xarray as xr
    from rasterio.errors import RasterioError

    out, _ = cli_run
    name = f'ZARR:"{out / "labels.zarr"}":/labels'
    if gdal_version() >= (3, 12):
        with rasterio.open(name) as src:
            labels = src.read(1)
        expected = xr.open_zarr(out / "labels.zarr")["labels"].values
        assert np.array_equal(labels, expected)
    elif gdal_version() <= (3, 10):
        with pytest.raises(RasterioError, match="codec"):
            rasterio.open(name)
    else:
        pytest.skip(f"GDAL {rasterio.__gdal_version__}: neither version docs/outputs.md speaks of")
