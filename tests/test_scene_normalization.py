"""``--normalize scene`` (issue 27): the card's normalisation matched, per band, to the input's own
median and interquartile range at plan time. On an int16 scene (-9999) with a rotated,
stair-stepped collar and an exact per-band affine copy of it (``2x + 300``, ``x - 200`` ...,
nodata kept), a model trained here for a few steps labels the copy as it labels the scene with
``scene`` and differently with ``card``; the statistics are the run's (one set, on the driver: a
tiled run equals the whole-image run, crop and blend, on real Dask workers), recorded in its
identity (a rerun with the other mode is refused with the diff; ``card`` records what runs before
recorded), and a card without statistics is one error line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from test_option_sets import cli_error, flow_error

import fcnseg
from fcnseg.demo import DEMO_MODEL
from fcnseg.flows.segment_scene import segment_scene
from fcnseg.models.card import Normalization, RobustStatistics
from fcnseg.pipeline.band_statistics import SCENE_SEED, matched_normalization, scene_statistics
from fcnseg.pipeline.orchestrator import OutputConflict, SegmentOptions, segment
from fcnseg.pipeline.output.run_identity import RunIdentity
from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.training.request import AUGMENT_OFF, TrainRequest
from fcnseg.pipeline.training.train import train_model

SIZE = 224  # not a multiple of the tile: edge tiles
TILE = 64
GAIN = (2, 1, 2, 3)
OFFSET = (300, -200, 100, 0)
STORE_ONLY = {"cog": False, "polygons": False, "quicklook": False, "stac": False, "device": "cpu"}
BANDS = [1, 2, 3, 4]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The scene, its labels and its copy with each band ``gain * x + offset`` (exact in int16)."""
    folder = tmp_path_factory.mktemp("scene-norm")
    image, labels = write_scene(folder, SIZE, seed=4, rotate=25, dtype="int16")
    with rasterio.open(image) as src:
        data, profile = src.read(), src.profile
    valid = ~(data == -9999).all(axis=0)
    shifted = data.astype(np.int32)
    for band, (gain, offset) in enumerate(zip(GAIN, OFFSET, strict=True)):
        shifted[band][valid] = shifted[band][valid] * gain + offset
    assert shifted.max() < 32767 and (shifted[:, valid] != -9999).all()
    with rasterio.open(folder / "shifted.tif", "w", **profile) as dst:
        dst.write(shifted.astype(np.int16))
    return image, labels, folder / "shifted.tif"


@pytest.fixture(scope="module")
def model(scenes, tmp_path_factory) -> Path:
    """A tiny FCN-8s trained for 30 steps on the unshifted scene: its card holds the statistics.
    Without photometric augmentation, so that the card's normalisation labels the shifted copy
    as another scene (what ``scene`` undoes)."""
    image, labels, _ = scenes
    out = tmp_path_factory.mktemp("scene-norm-model") / "tiny.safetensors"
    request = TrainRequest(image=image, labels=labels, out=out, arch="fcn8s", width=0.125, steps=30, chip=64, lr=3e-3,
                           batch_size=4, seed=0, holdout=0.0, progress=False, **AUGMENT_OFF)
    path, _, card = train_model(request)
    assert card.statistics is not None
    return Path(path)


def labels_of(image: Path, model: Path, out: Path, **options) -> np.ndarray:
    segment(image, str(model), out, SegmentOptions(**STORE_ONLY, **options), progress=False)
    return xr.open_zarr(out / "labels.zarr").labels.values


def test_the_matched_normalisation_undoes_an_affine_shift():
    card = Normalization(mean=[100.0, 5.0], std=[20.0, 2.0])
    training = RobustStatistics(p2=[50, 0], p25=[90, 4], p50=[102, 5], p75=[110, 6], p98=[150, 10], pixels=9)
    a, b = np.array([2.5, 1.0]), np.array([-40.0, 7.0])
    scene = RobustStatistics(**{q: list(a * np.array(getattr(training, q)) + b)
                                for q in ("p2", "p25", "p50", "p75", "p98")}, pixels=9)
    matched = matched_normalization(card, training, scene)
    x = np.array([[37.0, 101.0, 160.0], [1.0, 5.0, 9.0]])
    expected = (x - np.array(card.mean)[:, None]) / np.array(card.std)[:, None]
    seen = (a[:, None] * x + b[:, None] - np.array(matched.mean)[:, None]) / np.array(matched.std)[:, None]
    np.testing.assert_allclose(seen, expected, rtol=0, atol=1e-12)
    same = matched_normalization(card, training, training)
    assert same.std == card.std and np.allclose(same.mean, card.mean, rtol=0, atol=1e-12)
    flat = RobustStatistics(p2=[3, 3], p25=[5, 5], p50=[5, 5], p75=[5, 5], p98=[5, 5], pixels=9)
    guarded = matched_normalization(card, training, flat)  # no spread: the 2-98 % range, then 1
    assert guarded.std == [20.0 * 2 / 100, 2.0 * 2 / 10]
    none = RobustStatistics(p2=[5, 5], p25=[5, 5], p50=[5, 5], p75=[5, 5], p98=[5, 5], pixels=9)
    assert matched_normalization(card, training, none).std == card.std


def test_the_shifted_copy_has_the_shifted_statistics_exactly(scenes):
    image, _, shifted = scenes
    with rasterio.open(image) as src, rasterio.open(shifted) as dst:
        _, plain = scene_statistics(src, BANDS, seed=SCENE_SEED)
        _, moved = scene_statistics(dst, BANDS, seed=SCENE_SEED)
    for q in ("p2", "p25", "p50", "p75", "p98"):
        assert getattr(moved, q) == [g * v + o for g, v, o in zip(GAIN, getattr(plain, q), OFFSET, strict=True)]
    assert moved.pixels == plain.pixels and plain.p2[0] > -9999  # the collar's nodata left out


@pytest.mark.parametrize("stitch", ["crop", "blend"])
def test_scene_normalisation_labels_the_shifted_copy_as_the_scene(scenes, model, tmp_path, stitch):
    image, _, shifted = scenes
    reference = labels_of(image, model, tmp_path / "a-scene", stitch=stitch, tile=TILE, normalize="scene")
    card = labels_of(image, model, tmp_path / "a-card", stitch=stitch, tile=TILE)
    moved = labels_of(shifted, model, tmp_path / "b-scene", stitch=stitch, tile=TILE, normalize="scene")
    moved_card = labels_of(shifted, model, tmp_path / "b-card", stitch=stitch, tile=TILE)
    valid = reference != 255
    assert valid.mean() > 0.4 and (~valid).any() and np.array_equal(moved == 255, ~valid)
    assert len(np.unique(reference[valid])) >= 2
    # the training scene's own statistics are the card's: the matched normalisation is the card's
    assert np.count_nonzero(card != reference) <= 2
    # the same inputs up to float32 rounding of the normalisation: a pixel or two at a tie, at most
    assert np.count_nonzero(moved != reference) <= 2
    assert np.count_nonzero(moved_card != reference) > 0.05 * valid.sum()  # the card's: another scene to it
    recorded = json.loads((tmp_path / "b-scene" / "run.json").read_text())["parameters"]
    assert recorded["normalize"] == "scene" and set(recorded["normalization"]) == {"mean", "std"}
    assert "normalize" not in json.loads((tmp_path / "b-card" / "run.json").read_text())["parameters"]


def test_a_tiled_run_on_dask_equals_the_whole_image_run(scenes, model, cluster, tmp_path):
    """One set of statistics per run, computed on the driver and carried to the workers."""
    _, _, shifted = scenes
    options = SegmentOptions(**STORE_ONLY, normalize="scene", tile=TILE, batch_size=3)
    segment(shifted, str(model), tmp_path / "tiled", options, scheduler=cluster, progress=False)
    tiled = xr.open_zarr(tmp_path / "tiled" / "labels.zarr").labels.values
    whole = labels_of(shifted, model, tmp_path / "whole", tile=SIZE + 32 - SIZE % 32, normalize="scene")
    np.testing.assert_array_equal(tiled, whole)
    card = labels_of(shifted, model, tmp_path / "card", tile=TILE)
    assert not np.array_equal(tiled, card)


def test_the_mode_and_its_values_are_the_runs_identity(scenes, model, tmp_path):
    _, _, shifted = scenes
    out = tmp_path / "out"
    options = SegmentOptions(**{**STORE_ONLY, "stac": True}, normalize="scene", tile=TILE)
    segment(shifted, str(model), out, options, progress=False)
    parameters = json.loads((out / ".fcnseg-run" / "parameters.json").read_text())
    assert parameters["normalize"] == "scene" and len(parameters["normalization"]["mean"]) == 4
    assert json.loads((out / "run.json").read_text())["parameters"] == parameters
    item = json.loads((out / "item.json").read_text())["properties"]
    assert item["fcnseg:parameters"] == parameters
    model_input = item["mlm:input"][0]
    assert model_input["value_scaling"] == [{"type": "z-score", "mean": m, "stddev": s} for m, s
                                            in zip(parameters["normalization"]["mean"], parameters["normalization"]["std"])]
    assert "--normalize scene" in model_input["description"]
    assert segment(shifted, str(model), out, options, progress=False).skipped  # the same numbers again
    with pytest.raises(OutputConflict, match=r"other parameters \(scene normalisation none \(was mean -?[0-9.]+,"
                                             r".* std [0-9.]+,.*\), --normalize card \(was scene\)\)"):
        segment(shifted, str(model), out, options.replace(normalize="card"), progress=False)


def test_a_run_with_the_cards_normalisation_records_what_runs_before_it_recorded():
    before = {"input": "/data/x.tif", "input_fingerprint": {"size": 1}, "model_sha256": "ab", "device": "cpu",
              "tile": 512, "halo": 256, "stitch": "crop", "bands": [1, 2], "probabilities": False}
    identity = RunIdentity.from_json(before)
    assert identity.normalize == "card" and identity.normalization is None and identity.to_json() == before
    scene = RunIdentity.from_json({**before, "normalize": "scene", "normalization": {"mean": [1.0], "std": [2.0]}})
    assert RunIdentity.from_json(scene.to_json()) == scene
    assert scene.differences(before) == "scene normalisation mean 1 std 2 (was none), --normalize scene (was card)"


def test_a_card_without_statistics_and_a_bad_mode_are_one_line(scene, tmp_path):
    image, labels = scene
    out = tmp_path / "out"
    line = cli_error(["segment", str(image), "--out", str(out), "--normalize", "scene"])
    assert line.startswith(f"{DEMO_MODEL}: the model card has no training statistics") and "retrain" in line
    assert not out.exists()
    evaluate = ["evaluate", "--model", str(DEMO_MODEL), "--image", str(image), "--labels", str(labels)]
    assert cli_error([*evaluate, "--normalize", "scene"]) == line
    bad = cli_error(["segment", str(image), "--out", str(out), "--normalize", "median"])
    assert bad == "--normalize must be card or scene, got 'median'" and not out.exists()
    assert flow_error(segment_scene, {"inputs": "x.tif", "output_root": str(out), "options": {"normalize": "median"}},
                      "options") == bad
    assert cli_error([*evaluate, "--normalize", "median"]) == bad


def test_evaluate_with_scene_normalisation_scores_the_copy_as_the_scene(scenes, model):
    image, labels, shifted = scenes
    reference = fcnseg.evaluate(model, image, labels, tile=TILE, device="cpu", normalize="scene")
    moved = fcnseg.evaluate(model, shifted, labels, tile=TILE, device="cpu", normalize="scene")
    moved_card = fcnseg.evaluate(model, shifted, labels, tile=TILE, device="cpu")
    assert np.abs(np.asarray(moved["confusion"]) - np.asarray(reference["confusion"])).sum() <= 4
    assert not np.array_equal(moved_card["confusion"], reference["confusion"])


@pytest.mark.parametrize("stitch", ["crop", "blend"])
def test_predict_array_with_scene_normalisation_equals_what_segment_writes(scenes, model, tmp_path, stitch):
    """The same windows' statistics, read from the array instead of the file: the same normalisation,
    so the same labels bit for bit, numpy and DataArray alike; ``card`` labels the copy otherwise."""
    import rioxarray

    _, _, shifted = scenes
    written = labels_of(shifted, model, tmp_path / "out", stitch=stitch, tile=TILE, normalize="scene")
    loaded = fcnseg.load_model(model, device="cpu")
    with rasterio.open(shifted) as src:
        pixels = src.read()
    labels = fcnseg.predict_array(loaded, pixels, nodata=-9999, tile=TILE, stitch=stitch, normalize="scene")
    np.testing.assert_array_equal(labels, written)
    data_array = rioxarray.open_rasterio(shifted)
    np.testing.assert_array_equal(fcnseg.predict_array(loaded, data_array, tile=TILE, stitch=stitch,
                                                       normalize="scene").values, written)
    card = fcnseg.predict_array(loaded, pixels, nodata=-9999, tile=TILE, stitch=stitch)
    assert np.count_nonzero(card != written) > 0.05 * np.count_nonzero(written != 255)


def test_predict_array_refuses_a_bad_mode_and_a_card_without_statistics(scene):
    from fcnseg.errors import CheckpointError

    demo = fcnseg.load_model("demo", device="cpu")
    pixels = np.zeros((4, 64, 64), np.uint8)
    with pytest.raises(CheckpointError, match=r"the model card has no training statistics"):
        fcnseg.predict_array(demo, pixels, normalize="scene")
    with pytest.raises(ValueError, match=r"^normalize must be card or scene, got 'median'$"):
        fcnseg.predict_array(demo, pixels, normalize="median")
