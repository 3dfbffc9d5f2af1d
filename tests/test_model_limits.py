"""Models and inputs that cannot give a meaningful result are refused (or warned about) where they
arise (issue 22): a diverged training, non-finite tensors or normalisation, more classes than a
uint8 label with nodata 255 can hold, class names that are empty or repeated, complex pixels,
and georeferencing by ground control points only."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from safetensors.torch import save_file

from fcnseg.models.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    MAX_CLASSES,
    METADATA_KEY,
    CheckpointError,
    ClassInfo,
    ModelCard,
    NodataPolicy,
    Normalization,
    content_hash,
    load_checkpoint,
    read_card,
    save_checkpoint,
    verify_checkpoint,
)
from fcnseg.models.fcn import build_model
from fcnseg.models.inference import normalize_on_device
from fcnseg.models.train import TrainConfig, TrainingDiverged, train
from fcnseg.pipeline.io import InputError, normalize, read_pixels
from fcnseg.pipeline.orchestrator import SegmentOptions, output_lock, plan_run
from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.training.chips import band_statistics
from fcnseg.pipeline.training.train import TrainRequest, train_model

FCNSEG = [sys.executable, "-m", "fcnseg"]
NAMES = ["water", "forest", "cropland", "grassland", "road", "building"]
OPTIONS = SegmentOptions(tile=128, batch_size=1)


def fcnseg(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([*FCNSEG, *map(str, args)], capture_output=True, text=True, timeout=300)


def one_error_line(result: subprocess.CompletedProcess, *words: str) -> str:
    """The single ``fcnseg: error:`` line of a refused command, checked to hold every word."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in lines if line.startswith("fcnseg: error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def card_for(num_classes: int = 6, bands: int = 4, **changes) -> ModelCard:
    names = NAMES if num_classes == 6 else [f"class_{i}" for i in range(num_classes)]
    card = ModelCard(
        arch="fcn8s", width=0.125, bands=bands,
        classes=[ClassInfo(n, (10, 20, 30)) for n in names],
        normalization=Normalization(mean=[1000.0] * bands, std=[500.0] * bands),
        band_names=["blue", "green", "red", "nir"][:bands],
    )
    for key, value in changes.items():
        setattr(card, key, value)
    return card


def forge(path: Path, tensors: dict[str, torch.Tensor], card: dict) -> Path:
    """A checkpoint written past ``save_checkpoint``'s checks (another tool, an older fcnseg, a
    hand edit): a valid header and a matching content hash, so only the new checks can refuse it."""
    card_json = json.dumps(card, sort_keys=True)
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), METADATA_KEY: card_json,
                "content_sha256": content_hash(card_json, tensors)}
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, Path]:
    return write_scene(tmp_path_factory.mktemp("scene"), 128, seed=5)


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    """A tiny FCN-8s's tensors (4 bands, 6 classes), copied by each test that spoils them."""
    torch.manual_seed(0)
    return {k: v.clone() for k, v in build_model("fcn8s", 4, 6, 0.125).state_dict().items()}


def spoiled(weights: dict[str, torch.Tensor], name: str, value: float) -> dict[str, torch.Tensor]:
    tensors = {k: v.clone() for k, v in weights.items()}
    tensors[name].view(-1)[3] = value
    return tensors


def fast_request(scene, out: Path, **changes) -> TrainRequest:
    image, labels = scene
    fields = dict(image=image, labels=labels, out=out, steps=3, chip=64, batch_size=2, holdout=0.0,
                  read_threads=0, progress=False, class_weights="none")
    return TrainRequest(**{**fields, **changes})


# 4. Diverged training, non-finite tensors and normalisation -----------------------------------


def test_a_diverged_training_stops_with_one_line_and_leaves_the_earlier_checkpoint(scene, weights, tmp_path):
    image, labels = scene
    out = tmp_path / "model.safetensors"
    earlier = build_model("fcn8s", 4, 6, 0.125)
    earlier.load_state_dict(weights)
    before = save_checkpoint(out, earlier, card_for()).read_bytes()
    result = fcnseg("train", "--image", image, "--labels", labels, "--out", out, "--steps", 4, "--chip", 64,
                    "--batch-size", 2, "--lr", "1e12", "--holdout", 0, "--read-threads", 0)
    line = one_error_line(result, "diverged", "step 2", "loss nan", "lower --lr")
    assert "1e+12" in line
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temporary left either


def test_weights_spoiled_by_the_last_step_are_refused_too(scene, tmp_path):
    """One step at lr 1e12 ends with a finite loss but weights that give NaN: the returned model is
    checked, not only the losses seen."""
    with pytest.raises(TrainingDiverged, match="after step 1"):
        train_model(fast_request(scene, tmp_path / "m.safetensors", steps=1, lr=1e12))
    assert not (tmp_path / "m.safetensors").exists()


def test_an_infinite_loss_stops_the_loop_at_its_step():
    model = build_model("fcn32s", 2, 3, 0.0625)
    images = np.zeros((1, 2, 32, 32), np.float32)
    images[0, 0, 5, 5] = np.inf

    def batch():
        return images, np.zeros((1, 32, 32), np.uint8)

    with pytest.raises(TrainingDiverged, match=r"step 1.*loss (nan|inf).*lower --lr"):
        train(model, batch, TrainConfig(steps=3, progress=False), torch.device("cpu"))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_save_checkpoint_refuses_non_finite_tensors(weights, tmp_path, value):
    model = build_model("fcn8s", 4, 6, 0.125)
    model.load_state_dict(spoiled(weights, "score_pool4.weight", value))
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"kept")
    with pytest.raises(CheckpointError, match=r"m\.safetensors.*score_pool4\.weight.*(NaN|infinite)"):
        save_checkpoint(path, model, card_for())
    assert path.read_bytes() == b"kept"


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_loading_refuses_a_checkpoint_with_a_non_finite_tensor(weights, tmp_path, value):
    path = forge(tmp_path / "one-bad-layer.safetensors", spoiled(weights, "fc7.weight", value), card_for().to_json())
    for load in (load_checkpoint, verify_checkpoint):
        with pytest.raises(CheckpointError, match=r"one-bad-layer\.safetensors: tensor fc7\.weight .*(NaN|infinite)"):
            load(path)


def test_segment_refuses_a_nan_checkpoint_before_any_output(weights, scene, tmp_path):
    """Reported: segment with a diverged model labelled 100 % class 0 and exited 0."""
    model = forge(tmp_path / "nan.safetensors", {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                                 for k, v in weights.items()}, card_for().to_json())
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"nan\.safetensors: tensor .* NaN"), output_lock(out):
        plan_run(scene[0], model, out, OPTIONS, local=False)
    assert not out.exists()  # the lock leaves no trace and nothing else was written


@pytest.mark.parametrize(("statistic", "value"), [("mean", float("nan")), ("std", float("nan")),
                                                  ("std", float("inf")), ("mean", float("-inf"))])
def test_the_card_refuses_non_finite_normalisation_naming_the_band(weights, tmp_path, statistic, value):
    card = card_for()
    getattr(card.normalization, statistic)[2] = value
    with pytest.raises(ValueError, match=rf"band 3 \(red\).*{statistic}"):
        card.validate()
    path = forge(tmp_path / "norm.safetensors", weights, card.to_json())
    with pytest.raises(CheckpointError, match=rf"norm\.safetensors: .*band 3 \(red\).*{statistic}"):
        read_card(path)


def test_the_card_refuses_a_non_finite_nodata_fill_and_bad_colours(weights, tmp_path):
    """Own cases: a NaN fill spreads NaN from every nodata pixel across the receptive field; a
    nodata label other than 255 contradicts every output; a colour that is not three values
    0..255 fails the COG's colour table after the whole run."""
    with pytest.raises(ValueError, match="nodata fill"):
        card_for(nodata=NodataPolicy(fill=float("nan"))).validate()
    with pytest.raises(ValueError, match="nodata label must be 255"):  # every output's nodata
        card_for(nodata=NodataPolicy(label=0)).validate()
    for color in [(float("nan"), 0, 0), (0, 300, 0), (0, 0)]:
        card = card_for()
        card.classes[4] = ClassInfo("road", color)
        with pytest.raises(ValueError, match="colour of class 4 'road'"):
            card.validate()
    data = card_for().to_json()
    data["classes"][1]["color"] = [float("nan"), 0, 0]
    with pytest.raises(CheckpointError, match=r"colours\.safetensors: .*forest"):
        read_card(forge(tmp_path / "colours.safetensors", weights, data))


def test_a_card_with_a_width_no_model_has_is_refused_naming_the_file(weights, tmp_path):
    """Own case: a width outside (0, 1] failed in build_model with a message naming no file."""
    data = card_for().to_json()
    data["width"] = 0.0
    with pytest.raises(CheckpointError, match=r"width\.safetensors: .*width"):
        load_checkpoint(forge(tmp_path / "width.safetensors", weights, data))


def test_the_finiteness_check_names_the_first_bad_tensor():
    """One ``isfinite().all()`` per tensor (README: what it costs on the demo and a full-width model)."""
    from fcnseg.models import DEMO_MODEL
    from fcnseg.models.checkpoint import non_finite_tensor

    tensors = dict(load_checkpoint(DEMO_MODEL)[0].state_dict())
    assert non_finite_tensor(tensors) is None
    tensors["score_fr.bias"] = torch.tensor([0.0, float("nan")])
    assert non_finite_tensor(tensors) == "score_fr.bias"


# 7. At most 255 classes --------------------------------------------------------------------------


def test_the_class_limit_is_named_once():
    from fcnseg.pipeline.store import NODATA

    assert MAX_CLASSES == NODATA == 255  # ids 0..254, and 255 is nodata in every output
    card_for(MAX_CLASSES).validate()
    with pytest.raises(ValueError, match="256 classes.*at most 255"):
        card_for(MAX_CLASSES + 1).validate()


@pytest.mark.parametrize("classes", [256, 300])
def test_init_model_refuses_more_than_255_classes(tmp_path, classes):
    out = tmp_path / "m.safetensors"
    result = fcnseg("init-model", out, "--bands", 4, "--classes", classes, "--width", 0.125)
    one_error_line(result, "--classes", str(classes), "255")
    assert not out.exists()


def test_a_checkpoint_with_256_classes_is_refused_before_any_output(scene, tmp_path):
    torch.manual_seed(0)
    tensors = build_model("fcn8s", 4, 256, 0.125).state_dict()
    model = forge(tmp_path / "wide.safetensors", tensors, card_for(256).to_json())
    for load in (read_card, verify_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError, match=r"wide\.safetensors: .*256 classes.*at most 255"):
            load(model)
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="256 classes"), output_lock(out):
        plan_run(scene[0], model, out, OPTIONS, local=False)
    assert not out.exists()


def test_train_refuses_more_than_255_classes_before_training(scene, tmp_path):
    names = [f"c{i}" for i in range(256)]
    with pytest.raises(ValueError, match="--classes: 256 classes.*at most 255"):
        train_model(fast_request(scene, tmp_path / "m.safetensors", classes=names))
    assert not (tmp_path / "m.safetensors").exists()


def test_train_refuses_a_label_raster_naming_more_than_255_classes(scene, tmp_path):
    labels = relabelled(scene[1], tmp_path / "labels.tif", [f"c{i}" for i in range(300)])
    with pytest.raises(InputError, match=r"labels\.tif: 300 classes.*at most 255"):
        train_model(fast_request((scene[0], labels), tmp_path / "m.safetensors"))


# 9. Inputs accepted without a word ----------------------------------------------------------------


def relabelled(labels: Path, out: Path, names: list[str]) -> Path:
    """labels.tif copied with its class_names tag replaced (the colours tag dropped)."""
    with rasterio.open(labels) as src:
        data, profile = src.read(1), src.profile
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(class_names=json.dumps(names))
    return out


def retyped(image: Path, out: Path, dtype: str, convert=lambda a: a, **profile) -> Path:
    with rasterio.open(image) as src:
        data, base = src.read(), src.profile
    base.update(dtype=dtype, nodata=None, **profile)
    with rasterio.open(out, "w", **base) as dst:
        dst.write(convert(data).astype(dtype if not dtype.startswith("complex") else "complex64"))
    return out


def test_complex_input_is_refused_naming_the_file_and_type(scene, weights, tmp_path):
    image = retyped(scene[0], tmp_path / "complex.tif", "complex64", lambda a: a * (1 + 1j))
    model = forge(tmp_path / "m.safetensors", weights, card_for().to_json())
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"complex\.tif: band 1 is complex64"), output_lock(out):
        plan_run(image, model, out, OPTIONS, local=False)
    assert not out.exists()
    with pytest.raises(InputError, match=r"complex\.tif: band 1 is complex64"):
        train_model(fast_request((image, scene[1]), tmp_path / "t.safetensors"))


def test_int8_input_is_normalised_with_its_sign(tmp_path):
    """int8 runs through the same arithmetic as every integer type: signed values stay signed on
    the host, on the device and in the band statistics (checked, not assumed: a cast through
    uint8 would turn -100 into 156)."""
    rng = np.random.default_rng(0)
    data = rng.integers(-128, 128, size=(2, 64, 64)).astype(np.int8)
    path = tmp_path / "int8.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=2, dtype="int8", nodata=-128) as dst:
        dst.write(data)
    with rasterio.open(path) as src:
        assert src.dtypes[0] == "int8"
        pixels, valid = read_pixels(src, [1, 2], rasterio.windows.Window(0, 0, 64, 64))
        stats = band_statistics(src, [1, 2], windows=1, size=64)
    assert pixels.dtype == np.int8 and np.array_equal(pixels, data)
    assert np.array_equal(valid, ~((data[0] == -128) & (data[1] == -128)))
    values = data[:, valid].astype(np.float64)
    np.testing.assert_allclose(stats.mean, values.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, values.std(axis=1), rtol=1e-9)
    norm, nodata = Normalization(mean=[-3.5, 7.25], std=[40.0, 0.5]), NodataPolicy()
    host = normalize(pixels, valid, norm, nodata)
    expected = (data.astype(np.float32) - np.float32([-3.5, 7.25])[:, None, None]) / np.float32([40.0, 0.5])[:, None, None]
    expected[:, ~valid] = 0.0
    assert np.array_equal(host, expected)
    device = normalize_on_device(torch.from_numpy(pixels)[None], torch.from_numpy(valid)[None], norm, nodata)
    assert torch.equal(device[0], torch.from_numpy(host))


def gcp_only(image: Path, out: Path) -> Path:
    """The image with its geotransform replaced by three ground control points (a raw scan, an
    unrectified satellite product)."""
    with rasterio.open(image) as src:
        data, profile = src.read(), src.profile
    gcps = [GroundControlPoint(0, 0, 500000.0, 5400000.0), GroundControlPoint(0, 128, 500000.0, 5399872.0),
            GroundControlPoint(128, 128, 500128.0, 5399872.0)]
    profile.pop("transform")
    profile.update(crs=CRS.from_epsg(32633), gcps=gcps)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def test_gcp_only_input_is_segmented_in_pixel_coordinates_with_a_warning(scene, weights, tmp_path, caplog):
    image = gcp_only(scene[0], tmp_path / "gcps.tif")
    with rasterio.open(image) as src:
        assert src.crs is None and len(src.gcps[0]) == 3
    model = forge(tmp_path / "m.safetensors", weights, card_for().to_json())
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="fcnseg"), output_lock(out):
        plan = plan_run(image, model, out, OPTIONS, local=False)
    assert plan.georeferenced is False
    warned = [r.getMessage() for r in caplog.records if "ground control points" in r.getMessage()]
    assert len(warned) == 1
    assert "gcps.tif" in warned[0] and "pixel coordinates" in warned[0] and "gdalwarp" in warned[0]


@pytest.mark.parametrize("names", [["water", "water"], ["water", ""], ["water", "  "]])
def test_the_card_refuses_empty_and_repeated_class_names(weights, tmp_path, names):
    card = card_for(2)
    card.classes = [ClassInfo(n, (1, 2, 3)) for n in names]
    with pytest.raises(ValueError, match="class names"):
        card.validate()
    tensors = build_model("fcn8s", 4, 2, 0.125).state_dict()
    with pytest.raises(CheckpointError, match=r"names\.safetensors: .*class names"):
        read_card(forge(tmp_path / "names.safetensors", tensors, card.to_json()))


def test_init_model_refuses_repeated_class_names(tmp_path):
    out = tmp_path / "m.safetensors"
    result = fcnseg("init-model", out, "--classes", 3, "--class-names", "water,land,water", "--width", 0.125)
    one_error_line(result, "--class-names", "'water'")
    assert not out.exists()


@pytest.mark.parametrize("names", [["water", "forest", "water"], ["water", ""]])
def test_train_refuses_empty_and_repeated_class_names_before_any_file(tmp_path, names):
    missing = tmp_path / "missing.tif"
    with pytest.raises(ValueError, match="--classes"):
        TrainRequest(image=missing, labels=missing, out=tmp_path / "m.safetensors", classes=names)


@pytest.mark.parametrize("bad", ["water", ""])
def test_train_refuses_a_label_raster_with_empty_or_repeated_names(scene, tmp_path, bad):
    names = list(NAMES)
    names[3] = bad
    labels = relabelled(scene[1], tmp_path / "labels.tif", names)
    with pytest.raises(InputError, match=r"labels\.tif: .*class names"):
        train_model(fast_request((scene[0], labels), tmp_path / "m.safetensors"))
    assert not (tmp_path / "m.safetensors").exists()


# Own cases: options that cannot make a model ---------------------------------------------------


@pytest.mark.parametrize(("option", "bands", "classes", "width"), [
    ("--width", 4, 3, 0.0), ("--width", 4, 3, 2.0), ("--width", 4, 3, float("nan")), ("--bands", 0, 3, 0.125),
    ("--classes", 4, 1, 0.125),
])
def test_init_model_names_the_option_it_refuses(option, bands, classes, width):
    """Own case: these were refused by build_model in words that named no option."""
    from fcnseg.cli import check_model_shape

    with pytest.raises(ValueError, match=f"^{option}"):
        check_model_shape(bands, classes, width)


def test_train_refuses_a_width_above_one_before_any_file(tmp_path):
    missing = tmp_path / "missing.tif"
    with pytest.raises(ValueError, match="--width"):
        TrainRequest(image=missing, labels=missing, out=tmp_path / "m.safetensors", width=2.0)
