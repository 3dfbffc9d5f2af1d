"""What a command may write over (``pipeline.overwrite``): its own earlier output, yes; a file
fcnseg did not write or a read-only one, only with --overwrite; a folder, or any input of the same
command, never. Every refusal leaves the file there byte for byte as it was."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from fcnseg.models.checkpoint import file_sha256 as sha256, is_checkpoint, read_card
from fcnseg.pipeline.overwrite import OutputConflict
from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.synth.writer import SYNTH_TAG
from fcnseg.pipeline.training.train import TrainRequest, train_model
from test_training_inputs import fcnseg, refused  # a command run, and its one error line checked

NOTES = b"my notes: not a checkpoint\n"


def notes(path: Path) -> Path:
    path.write_bytes(NOTES)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path]:
    """A 128 px synth scene; tests that might write over its files work on a copy (``scene``)."""
    return write_scene(tmp_path_factory.mktemp("source"), 128, seed=11)


@pytest.fixture
def scene(source, tmp_path) -> tuple[Path, Path]:
    folder = shutil.copytree(source[0].parent, tmp_path / "S")
    return folder / "image.tif", folder / "labels.tif"


@pytest.fixture(scope="module")
def checkpoint(source, tmp_path_factory) -> Path:
    """A checkpoint trained by fcnseg (one step), to replace or to start from."""
    return trained(source, tmp_path_factory.mktemp("model") / "m.safetensors")


def request(scene: tuple[Path, Path], out: Path, **options) -> TrainRequest:
    return TrainRequest(image=scene[0], labels=scene[1], out=out, steps=1, chip=64, batch_size=2, holdout=0,
                        read_threads=0, progress=False, **options)


def trained(scene: tuple[Path, Path], out: Path, **options) -> Path:
    path, _, _ = train_model(request(scene, out, **options))
    return path


# train: its inputs are never written over

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_train_never_writes_over_its_label_raster(scene, overwrite):
    """The reported case: --out S/labels.tif exited 0 and the label raster was a checkpoint."""
    image, labels = scene
    before = sha256(labels)
    refused(fcnseg("train", "--image", image, "--labels", labels, "--out", labels, "--steps", 2, "--chip", 64,
                   "--batch-size", 2, *overwrite), str(labels), "--labels", "never written over")
    assert sha256(labels) == before


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("option", ["image", "labels", "val_image", "val_labels", "init", "vgg16_weights"])
def test_train_never_writes_over_any_of_its_inputs(scene, checkpoint, tmp_path, option, overwrite):
    image, labels = scene
    inputs = {"image": image, "labels": labels, "val_image": shutil.copy(image, tmp_path / "val_image.tif"),
              "val_labels": shutil.copy(labels, tmp_path / "val_labels.tif"),
              "init": shutil.copy(checkpoint, tmp_path / "init.safetensors"),
              "vgg16_weights": notes(tmp_path / "vgg16.pth")}
    target = Path(inputs[option])
    before = sha256(target)
    extra = {option: target} if option not in ("image", "labels") else {}
    if option.startswith("val_"):
        extra = {"val_image": inputs["val_image"], "val_labels": inputs["val_labels"]}
    with pytest.raises(OutputConflict, match=f"--{option.replace('_', '-')} .*never written over"):
        train_model(request(scene, target, overwrite=overwrite, **extra))
    assert sha256(target) == before


@pytest.mark.parametrize("spelling", ["symlink", "hard link", "another path"])
def test_another_name_of_an_input_is_the_input(scene, tmp_path, spelling):
    labels = scene[1]
    before = sha256(labels)
    if spelling == "symlink":
        out = tmp_path / "link.safetensors"
        out.symlink_to(labels)
    elif spelling == "hard link":
        out = tmp_path / "hard.safetensors"
        os.link(labels, out)
    else:
        out = labels.parent / ".." / labels.parent.name / labels.name
    with pytest.raises(OutputConflict, match="--labels"):
        train_model(request(scene, out, overwrite=True))
    assert sha256(labels) == before
    assert spelling != "symlink" or out.is_symlink()


def test_train_out_equal_to_init_through_the_cli(scene, checkpoint, tmp_path):
    init = shutil.copy(checkpoint, tmp_path / "stage.safetensors")
    before = sha256(init)
    refused(fcnseg("train", "--image", scene[0], "--labels", scene[1], "--init", init, "--out", init, "--steps", 1,
                   "--chip", 64, "--batch-size", 2, "--overwrite"), str(init), "--init")
    assert sha256(init) == before


# train: what is at --out

def test_train_replaces_its_own_checkpoint(source, checkpoint, tmp_path):
    """The nightly retraining writes the same --out each time: no --overwrite needed."""
    out = shutil.copy(checkpoint, tmp_path / "nightly.safetensors")
    before = sha256(out)
    trained(source, out, seed=5)
    assert sha256(out) != before and read_card(out).training.seed == 5


def test_train_replaces_a_file_of_the_user_only_with_overwrite(source, tmp_path):
    out = notes(tmp_path / "notes.txt")
    with pytest.raises(OutputConflict, match="notes.txt: exists and is not an fcnseg checkpoint.*--overwrite"):
        train_model(request(source, out))
    assert out.read_bytes() == NOTES
    trained(source, out, overwrite=True)
    assert is_checkpoint(out)


def test_a_read_only_checkpoint_is_replaced_only_with_overwrite(source, checkpoint, tmp_path):
    out = shutil.copy(checkpoint, tmp_path / "kept.safetensors")
    os.chmod(out, 0o444)
    before = sha256(out)
    with pytest.raises(OutputConflict, match="kept.safetensors: is read-only.*--overwrite"):
        train_model(request(source, out, seed=3))
    assert sha256(out) == before
    trained(source, out, seed=3, overwrite=True)
    assert read_card(out).training.seed == 3


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_a_folder_at_out_is_refused_before_training(source, tmp_path, overwrite):
    folder = tmp_path / "models"
    (folder / "keep").mkdir(parents=True)
    with pytest.raises(OutputConflict, match="models: is a folder; --out must name a file"):
        train_model(request(source, folder, overwrite=overwrite))
    under_a_file = notes(tmp_path / "notes.txt") / "m.safetensors"
    with pytest.raises(OutputConflict, match="notes.txt: is not a folder"):
        train_model(request(source, under_a_file, overwrite=overwrite))
    assert (folder / "keep").is_dir() and (tmp_path / "notes.txt").read_bytes() == NOTES


def test_train_fcn_never_writes_over_its_evaluation_scene(scene, tmp_path):
    """The flow's evaluation scene is an input train_model does not see: the flow checks it."""
    from fcnseg.flows.train_fcn import train_fcn

    evaluation = [shutil.copy(path, tmp_path / f"eval_{path.name}") for path in scene]
    before = [sha256(path) for path in evaluation]
    for name, out in zip(("eval_image", "eval_labels"), evaluation, strict=True):
        with pytest.raises(OutputConflict, match=f"{name} .*never written over"):
            train_fcn.fn(request(scene, out, overwrite=True), eval_image=str(evaluation[0]),
                         eval_labels=str(evaluation[1]))
    assert [sha256(path) for path in evaluation] == before


# init-model

def test_init_model_replaces_a_text_file_only_with_overwrite(tmp_path):
    out = notes(tmp_path / "notes.txt")
    args = ("init-model", out, "--bands", 4, "--classes", 6, "--width", 0.125)
    refused(fcnseg(*args), str(out), "not an fcnseg checkpoint", "--overwrite")
    assert out.read_bytes() == NOTES
    assert fcnseg(*args, "--overwrite").returncode == 0 and is_checkpoint(out)
    before = sha256(out)
    made = fcnseg(*args, "--seed", 1)  # its own checkpoint: replaced without --overwrite
    assert made.returncode == 0, made.stderr
    assert sha256(out) != before and read_card(out).training.seed == 1


def test_init_model_never_writes_over_its_vgg16_weights(tmp_path):
    weights = notes(tmp_path / "vgg16.pth")
    refused(fcnseg("init-model", weights, "--vgg16-weights", weights, "--overwrite"), str(weights), "--vgg16-weights")
    assert weights.read_bytes() == NOTES


# synth

def user_pair(folder: Path) -> tuple[Path, Path]:
    """An image.tif and labels.tif of the user's (GeoTIFFs without synth's tag)."""
    folder.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=16, height=16, count=1, dtype="uint8", crs="EPSG:32633",
                   transform=rasterio.Affine(1, 0, 500000, 0, -1, 5400000))
    for name in ("image.tif", "labels.tif"):
        with rasterio.open(folder / name, "w", **profile) as dst:
            dst.write(np.full((1, 16, 16), 7, "uint8"))
    return folder / "image.tif", folder / "labels.tif"


def test_synth_replaces_a_pair_of_the_user_only_with_overwrite(tmp_path):
    image, labels = user_pair(tmp_path / "D")
    before = [sha256(image), sha256(labels)]
    refused(fcnseg("synth", image.parent, "--size", 64), str(image), "is not synth's own image.tif",
            "--overwrite")
    assert [sha256(image), sha256(labels)] == before and sorted(os.listdir(image.parent)) == ["image.tif", "labels.tif"]
    made = fcnseg("synth", image.parent, "--size", 64, "--overwrite")
    assert made.returncode == 0, made.stderr
    for path in (image, labels):
        with rasterio.open(path) as src:
            assert SYNTH_TAG in src.tags() and src.width == 64


def test_synth_replaces_its_own_scene_and_leaves_other_files(tmp_path):
    folder = tmp_path / "D"
    write_scene(folder, 64, seed=1)
    mine = notes(folder / "notes.txt")
    image, labels = write_scene(folder, 64, seed=2)
    fresh = write_scene(tmp_path / "fresh", 64, seed=2)
    assert [sha256(image), sha256(labels)] == [sha256(p) for p in fresh]
    assert mine.read_bytes() == NOTES


def test_synth_checks_both_files_before_writing_either(tmp_path):
    folder = tmp_path / "D"
    labels = user_pair(folder)[1]
    (folder / "image.tif").unlink()
    with pytest.raises(OutputConflict, match="labels.tif: exists and is not synth's own labels.tif"):
        write_scene(folder, 64)
    assert sorted(os.listdir(folder)) == ["labels.tif"]  # no image.tif, no partial file
    assert labels.stat().st_size > 0


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_synth_refuses_folders_where_its_files_go(tmp_path, overwrite):
    (tmp_path / "D" / "image.tif").mkdir(parents=True)
    with pytest.raises(OutputConflict, match="image.tif: is a folder"):
        write_scene(tmp_path / "D", 64, overwrite=overwrite)
    not_a_folder = notes(tmp_path / "notes.txt")
    with pytest.raises(OutputConflict, match="notes.txt: is not a folder"):
        write_scene(not_a_folder, 64, overwrite=overwrite)
    assert not_a_folder.read_bytes() == NOTES and os.listdir(tmp_path / "D") == ["image.tif"]
