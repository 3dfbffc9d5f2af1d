"""``fcnseg export MODEL --format onnx`` and ``fcnseg.models.onnx_runtime``: the card carried in the
file's metadata exactly; any height and width (every residue of 32, batches the graph was not traced
with) against torch; docs/export.md's tiled recipe, run as the page prints it, against
``fcnseg.predict_array`` on the same tiles of a rotated int16 scene with a stair-stepped nodata collar
(equal labels, or near ties, counted); the overwrite rule, atomic writes and one-line errors.

One export of the demo model (about 6 s) shared by the module; the commands run in this process.
"""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio
import torch
from safetensors import safe_open

import fcnseg
from fcnseg.atomic import stale_partials
from fcnseg.errors import OutputConflict
from fcnseg.models import DEMO_MODEL
from fcnseg.models.card import STRIDE, receptive_field
from fcnseg.models.checkpoint import METADATA_KEY, content_sha256, file_sha256, load_checkpoint, read_card
from fcnseg.models.inference import forward_logits, load_for_inference, normalize_on_device
from fcnseg.models.onnx_runtime import CARD_KEY, EXPORT_KEY, OnnxModel
from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.tiles import default_halo
from test_bad_inputs import run_in_process  # a command run in this process
from test_training_inputs import refused  # its one error line checked

DOCS = Path(__file__).resolve().parents[1] / "docs" / "export.md"
#: Small tiles and halo on a 250 px scene: 16 chunks, the last row and column 58 px (read windows of
#: 90 px: not multiples of 32), the corners wholly in the collar.
TILING = {"tile": 64, "halo": 32}
#: Quantised probabilities (p x 254, as labels.zarr holds them): a near tie is top two at most a step apart.
NEAR_TIE_STEPS = 1


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    result = run_in_process(["export", "demo"], folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "demo-fcn8s.onnx\n"  # the path alone: a script reads it
    return folder / "demo-fcn8s.onnx"


@pytest.fixture(scope="module")
def runtime(exported) -> OnnxModel:
    return OnnxModel(exported, threads=2)


@pytest.fixture(scope="module")
def torch_model():
    """The demo model as fcnseg's CPU path prepares it (channels-last, fp32)."""
    return load_for_inference(DEMO_MODEL, torch.device("cpu"))


def test_the_card_is_in_the_metadata(exported, runtime):
    model = onnx.load(str(exported))
    props = {p.key: p.value for p in model.metadata_props}
    card = read_card(DEMO_MODEL)
    with safe_open(str(DEMO_MODEL), framework="numpy") as f:
        assert props[CARD_KEY] == f.metadata()[METADATA_KEY]  # the checkpoint's card, byte for byte
    assert runtime.card == card
    info = json.loads(props[EXPORT_KEY])
    assert info["stride"] == STRIDE and info["receptive_field"] == receptive_field(card.arch)
    assert info["halo"] == default_halo(card.arch)  # the halo segment uses
    assert info["source"] == {"checkpoint": DEMO_MODEL.name, "content_sha256": content_sha256(DEMO_MODEL)}
    assert info["fcnseg_version"] == version("fcnseg") and info["format"] == "fcnseg-onnx"
    assert model.producer_name == "fcnseg" and model.opset_import[0].version == info["opset"] == 18
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.input, *model.graph.output]}
    assert dims == {"pixels": ["batch", card.bands, "height", "width"], "valid": ["batch", "height", "width"],
                    "logits": ["batch", card.num_classes, "height", "width"], "labels": ["batch", "height", "width"]}


def raw_pixels(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """uint16 reflectance-like pixels (as the demo model's scenes hold them)."""
    return rng.integers(0, 4000, size=shape).astype(np.uint16)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("height, width", [(1, 1), (31, 33), (64, 96), (100, 77), (129, 250), (45, 160)])
def test_any_height_and_width_as_torch(runtime, torch_model, batch, height, width):
    """Raw pixels in: the graph's normalisation, nodata fill, FCN and argmax against fcnseg's torch path."""
    rng = np.random.default_rng(height * 1000 + width)
    pixels = raw_pixels(rng, (batch, runtime.card.bands, height, width))
    valid = rng.random((batch, height, width)) > 0.2
    logits, labels = runtime.run(pixels, valid)
    net, card = torch_model
    with torch.inference_mode():
        x = normalize_on_device(torch.from_numpy(pixels), torch.from_numpy(valid), card.normalization, card.nodata)
        expected = forward_logits(net, x).numpy()
    assert logits.shape == expected.shape and labels.shape == (batch, height, width) and labels.dtype == np.uint8
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
    expected_labels = np.where(valid, expected.argmax(axis=1), 255)
    differ = labels != expected_labels
    top2 = np.sort(expected, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0])[differ].max(initial=0) < 1e-4  # near ties only (none, as a rule)
    assert (labels[~valid] == 255).all()


def recipe() -> dict:
    """docs/export.md's recipe, run from the page itself: the documented code is the tested code."""
    (block,) = re.findall(r"```python\n(import rasterio\n.*?)```", DOCS.read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102 - the project's own page
    return namespace


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 250 px int16 scene (nodata -9999) in EPSG:4326, untiled, its valid square turned by 30 degrees."""
    image, _ = write_scene(tmp_path_factory.mktemp("rotated"), 250, seed=5, rotate=30, dtype="int16",
                           layout="stripped", crs="EPSG:4326")
    return image


def test_the_recipe_labels_as_torch_on_a_rotated_scene(exported, scene, tmp_path):
    out = tmp_path / "labels.tif"
    recipe()["segment_onnx"](exported, scene, out, threads=2, **TILING)
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        labels = dst.read(1)
        pixels, nodata = src.read(), src.nodata
        assert src.profile["tiled"] is False and nodata == -9999 and src.crs.to_epsg() == 4326
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
    expected, probabilities = fcnseg.predict_array(fcnseg.load_model("demo", device="cpu"), pixels, nodata=nodata,
                                                   probabilities=True, device="cpu", **TILING)
    np.testing.assert_array_equal(labels == 255, expected == 255)  # nodata exactly where torch has it
    valid = expected != 255
    assert 0.3 < valid.mean() < 0.9 and len(np.unique(expected[valid])) >= 3  # collar and several classes
    differ = labels != expected
    top2 = np.sort(probabilities, axis=0)[-2:].astype(int)
    assert differ.sum() <= max(3, valid.sum() // 10_000), differ.sum()
    assert (top2[1] - top2[0])[differ].max(initial=0) <= NEAR_TIE_STEPS


def test_an_existing_file_is_replaced_only_with_overwrite(exported, tmp_path):
    target = tmp_path / "mine.onnx"
    target.write_bytes(b"my notes\n")
    line = refused(run_in_process(["export", "demo", "--out", target], tmp_path), str(target), "--overwrite")
    assert "exists" in line and target.read_bytes() == b"my notes\n"
    own = tmp_path / "again.onnx"
    own.write_bytes(exported.read_bytes())  # not even an earlier export is replaced unasked
    refused(run_in_process(["export", "demo", "--out", own], tmp_path), str(own), "--overwrite")
    assert file_sha256(own) == file_sha256(exported)
    result = run_in_process(["export", "demo", "--out", target, "--overwrite"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert OnnxModel(target).card == read_card(DEMO_MODEL) and not stale_partials(target)


def test_the_model_itself_and_a_folder_are_never_written(tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(DEMO_MODEL.read_bytes())
    refused(run_in_process(["export", model, "--out", model, "--overwrite"], tmp_path), str(model), "MODEL")
    assert file_sha256(model) == file_sha256(DEMO_MODEL)
    refused(run_in_process(["export", "demo", "--out", tmp_path, "--overwrite"], tmp_path), "is a folder")


def test_a_file_that_appears_meanwhile_is_not_replaced(tmp_path):
    """The rule again just before the rename: nothing replaced, nothing half-written left."""
    from fcnseg.cli.export import check_out
    from fcnseg.models.onnx_export import export_onnx

    target = tmp_path / "late.onnx"

    def appears_then_checked() -> None:
        target.write_bytes(b"written by someone else meanwhile\n")
        check_out(target, DEMO_MODEL, overwrite=False)

    net, card = load_checkpoint(DEMO_MODEL)
    with pytest.raises(OutputConflict, match="exists"):
        export_onnx(net, card, target, check_before_rename=appears_then_checked)
    assert target.read_bytes() == b"written by someone else meanwhile\n" and not stale_partials(target)


@pytest.mark.parametrize("content, problem", [(None, "no such checkpoint"),
                                              (b"not a model\n", "not a safetensors")])
def test_a_bad_model_is_one_line(tmp_path, content, problem):
    model = tmp_path / "bad.safetensors"
    if content is not None:
        model.write_bytes(content)
    refused(run_in_process(["export", model], tmp_path), str(model), problem)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*"))


def test_a_file_not_exported_by_fcnseg_is_refused_by_the_runtime(exported, tmp_path):
    model = onnx.load(str(exported))
    del model.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(model, str(foreign))
    with pytest.raises(fcnseg.FcnsegError, match="without fcnseg's model card"):
        OnnxModel(foreign)
    (tmp_path / "text.onnx").write_text("not onnx\n")
    with pytest.raises(fcnseg.FcnsegError, match="not an ONNX model"):
        OnnxModel(tmp_path / "text.onnx")


@pytest.mark.parametrize("missing", ["onnxscript", "onnxruntime"])
def test_without_the_extra_one_line_names_it(tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed: importing it raises ImportError
    line = refused(run_in_process(["export", "demo"], tmp_path), missing, "extra 'onnx'",
                   "pip install onnx onnxscript onnxruntime")
    assert "export" in line and not list(tmp_path.iterdir())


def test_pt2_and_unknown_formats_are_one_line(tmp_path):
    refused(run_in_process(["export", "demo", "--format", "pt2"], tmp_path), "pt2", "docs/export.md")
    refused(run_in_process(["export", "demo", "--format", "tflite"], tmp_path), "--format tflite", "onnx")
    assert not list(tmp_path.iterdir())
