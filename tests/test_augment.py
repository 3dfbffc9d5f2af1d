"""Photometric augmentation of training chips and the card's robust statistics (issue 27): the
chips are the same for any read-thread count, a seed trains the same model, nodata stays nodata,
and the percentiles are numpy's over the pixels read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from typer.testing import CliRunner

from fcnseg.cli import app
from fcnseg.models.checkpoint import ClassInfo, ModelCard, NodataPolicy, load_checkpoint, read_card
from fcnseg.pipeline.io import read_pixels
from fcnseg.pipeline.synth import CLASSES, write_scene
from fcnseg.pipeline import band_statistics as statistics_module
from fcnseg.pipeline.training.augment import DEFAULT, Augmenter, BandReference, Photometric, gaussian_blur
from fcnseg.pipeline.training.chips import ChipSampler, build_label_index
from fcnseg.pipeline.training.labels import RasterLabels
from fcnseg.pipeline.training.request import AUGMENT_OFF, TrainRequest
from fcnseg.pipeline.band_statistics import PERCENTILES, scene_statistics
from fcnseg.pipeline.training.train import train_model

CHIP = 64
NAMES = [c.name for c in CLASSES]
ALL = Photometric(gain=0.3, offset=0.5, gamma=0.4, noise=0.2, blur=1.5)
AUGMENT = dict(augment_gain=0.3, augment_offset=0.5, augment_gamma=0.4, augment_noise=0.2, augment_blur=1.5)


@pytest.fixture(scope="module")
def collared(tmp_path_factory) -> tuple[Path, Path]:
    """A 256 px int16 scene (nodata -9999) in a rotated, stair-stepped footprint: the shape users bring."""
    return write_scene(tmp_path_factory.mktemp("collared"), 256, seed=4, rotate=25, dtype="int16")


def sampler_for(src, labels, *, augment=None, workers=0) -> ChipSampler:
    normalization, stats = scene_statistics(src, [1, 2, 3, 4], seed=0)
    card = ModelCard(arch="fcn32s", width=0.0625, bands=4, classes=[ClassInfo(n, (0, 0, 0)) for n in NAMES],
                     normalization=normalization, nodata=NodataPolicy(input=src.nodata))
    index = build_label_index(labels, src.height, src.width, len(NAMES), CHIP // 4)
    augmenter = None if augment is None else Augmenter(augment, BandReference(normalization.mean, normalization.std,
                                                                              stats.p2, stats.p98))
    return ChipSampler(src, [1, 2, 3, 4], labels, card, chip=CHIP, batch_size=4, seed=5, sampling="labelled",
                       index=index, workers=workers, augment=augmenter)


def batches(image: Path, labels_path: Path, n: int = 3, **kwargs) -> list[tuple[np.ndarray, np.ndarray]]:
    with rasterio.open(image) as src:
        labels = RasterLabels(labels_path, src)
        try:
            with sampler_for(src, labels, **kwargs) as sampler:
                return [sampler() for _ in range(n)]
        finally:
            labels.close()


def test_augmented_chips_are_the_same_for_any_read_threads_and_change_only_the_image(collared):
    image, labels = collared
    plain = batches(image, labels)
    serial = batches(image, labels, augment=ALL)
    parallel = batches(image, labels, augment=ALL, workers=3)
    for (x, y), (x2, y2), (x0, y0) in zip(serial, parallel, plain, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(y, y0)  # the same windows and labels as without augmentation
        assert not np.array_equal(x, x0)


def test_nodata_pixels_stay_the_fill_and_the_blur_takes_nothing_from_them(collared):
    image, labels = collared
    (x, y), = batches(image, labels, n=1, augment=Photometric(blur=4.0))
    with rasterio.open(image) as src:
        normalization, _ = scene_statistics(src, [1, 2, 3, 4], seed=0)
    (x0, _), = batches(image, labels, n=1)
    invalid = x0 == 0.0  # the fill: nodata pixels (a valid pixel at exactly the mean is vanishingly rare)
    assert invalid.all(axis=1).any(), "the chips should reach into the collar to be a real test"
    nodata = invalid.all(axis=1)
    assert np.all(x.transpose(1, 0, 2, 3)[:, nodata] == 0.0)
    # -9999 blurred into a neighbour would put it tens of standard deviations below the mean
    lowest = (-9999 - np.asarray(normalization.mean)) / np.asarray(normalization.std)
    assert x.min() > 0.2 * lowest.max()


def test_each_setting_moves_a_chip_as_it_says():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(100, 3000, (4, 64, 64)).astype(np.float32)
    valid = np.ones((64, 64), bool)
    reference = BandReference(mean=[1550.0] * 4, std=[840.0] * 4, low=[150.0] * 4, high=[2950.0] * 4)
    gained = Augmenter(Photometric(gain=0.5), reference)(pixels, valid, np.random.default_rng(1))
    ratio = (gained / pixels).reshape(4, -1)
    np.testing.assert_allclose(ratio, ratio[:, :1].repeat(ratio.shape[1], axis=1), rtol=1e-6)  # one gain per band
    assert np.all((ratio > 1 / 1.5 - 1e-6) & (ratio < 1.5 + 1e-6)) and len(np.unique(ratio[:, 0].round(5))) == 4
    bent = Augmenter(Photometric(gamma=0.5), reference)(np.array([[[150.0, 2950.0]]] * 4, np.float32),
                                                        np.ones((1, 2), bool), np.random.default_rng(2))
    np.testing.assert_allclose(bent[:, 0], [[150.0, 2950.0]] * 4, rtol=1e-6)  # the 2-98 % range keeps its ends
    noisy = Augmenter(Photometric(noise=0.5), reference)(pixels, valid, np.random.default_rng(3))
    assert 0 < (noisy - pixels).std() <= 0.5 * 840
    constant = np.full((2, 40, 40), 7.0, np.float32)
    np.testing.assert_allclose(gaussian_blur(constant, 2.0), constant, rtol=1e-6)
    edge = np.zeros((1, 40, 40), np.float32)
    edge[:, :, 20:] = 1.0
    blurred = gaussian_blur(edge, 2.0)
    assert 0 < blurred[0, 5, 19] < 0.5 < blurred[0, 5, 20] < 1 and blurred.sum() == pytest.approx(edge.sum(), rel=1e-5)


def request(tmp_path: Path, scene: tuple[Path, Path], name: str, **changes) -> TrainRequest:
    image, labels = scene
    return TrainRequest(image=image, labels=labels, out=tmp_path / f"{name}.safetensors", arch="fcn32s", width=0.0625,
                        steps=3, chip=CHIP, batch_size=2, seed=7, holdout=0.0, progress=False, **changes)


def test_a_seed_trains_the_same_augmented_model_whatever_the_read_threads(tmp_path, collared):
    tensors = []
    for name, changes in (("serial", dict(read_threads=0, **AUGMENT)), ("threads", dict(read_threads=3, **AUGMENT)),
                          ("plain", dict(read_threads=0, **AUGMENT_OFF))):
        path, _, card = train_model(request(tmp_path, collared, name, **changes))
        tensors.append(load_checkpoint(path)[0].state_dict())
    for name in tensors[0]:
        assert torch.equal(tensors[0][name], tensors[1][name]), name
    assert not all(torch.equal(tensors[0][n], tensors[2][n]) for n in tensors[0])  # augmentation did train
    augmented, plain = read_card(tmp_path / "serial.safetensors"), read_card(tmp_path / "plain.safetensors")
    assert augmented.training.augmentation == {k.removeprefix("augment_"): v for k, v in AUGMENT.items()}
    assert plain.training.augmentation is None
    assert augmented.statistics == plain.statistics and augmented.statistics.pixels > 0


def test_the_card_holds_the_percentiles_of_the_pixels_read(tmp_path, collared, monkeypatch):
    """int16 with -9999 (an exact histogram) and float32 with NaN (a subsample, kept whole here):
    numpy's percentiles over the valid pixels of the one window read, exactly."""
    int16 = collared[0]
    float32, _ = write_scene(tmp_path / "f", 192, seed=4, rotate=25, dtype="float32")
    monkeypatch.setattr(statistics_module, "SUBSAMPLE", 1 << 20)
    for image in (int16, float32):
        with rasterio.open(image) as src:
            _, stats = scene_statistics(src, [1, 2, 3, 4], windows=1, size=src.width)
            pixels, valid = read_pixels(src, [1, 2, 3, 4], Window(0, 0, src.width, src.height))
        expected = np.percentile(pixels[:, valid].astype(np.float64), PERCENTILES, axis=1, method="inverted_cdf")
        got = np.array([getattr(stats, f"p{q}") for q in PERCENTILES])
        np.testing.assert_array_equal(got, expected)
        assert stats.pixels == valid.sum() < valid.size
    _, _, card = train_model(request(tmp_path, collared, "card"))
    again = read_card(card_path := tmp_path / "card.safetensors")
    assert again.statistics == card.statistics and "statistics" in again.to_json()
    assert again.statistics.p2[0] > -9999 and again.statistics.p2 < again.statistics.p98
    assert card_path.exists()


def test_a_card_without_statistics_is_written_as_before():
    """The shipped demo model's card (from before the statistics) gives back exactly its JSON."""
    import json

    from safetensors import safe_open

    import fcnseg.models

    demo = Path(fcnseg.models.__file__).parent / "weights" / "demo-fcn8s.safetensors"
    with safe_open(demo, "pt") as f:
        stored = json.loads(f.metadata()["fcnseg"])
    card = ModelCard.from_json(stored)
    assert card.statistics is None and json.loads(json.dumps(card.to_json())) == stored


def test_the_default_is_the_benchmarks_setting_and_the_card_records_it(tmp_path, collared):
    """``augment.DEFAULT`` (chosen on benchmarks/cross_scene.py) is what a training gets unless told
    otherwise, the command line's defaults included; all five 0 turn it off."""
    assert DEFAULT == Photometric(gain=0.3, offset=0.75, gamma=0.3, noise=0.05, blur=1.0)
    _, _, card = train_model(request(tmp_path, collared, "default", read_threads=0))
    assert card.training.augmentation == DEFAULT.to_json()
    image, labels = collared
    result = CliRunner().invoke(app, ["train", "--image", str(image), "--labels", str(labels), "--out",
                                      str(tmp_path / "cli.safetensors"), "--arch", "fcn32s", "--width", "0.0625",
                                      "--steps", "1", "--chip", str(CHIP), "--batch-size", "2", "--holdout", "0"])
    assert result.exit_code == 0, result.output
    assert read_card(tmp_path / "cli.safetensors").training.augmentation == DEFAULT.to_json()


def test_a_bad_augmentation_setting_fails_in_one_line_naming_it(tmp_path, collared):
    image, labels = collared
    for option, value in (("--augment-gain", "-0.1"), ("--augment-blur", "5"), ("--augment-noise", "nan"),
                          ("--max-class-weight", "0.5"), ("--max-class-weight", "inf")):
        result = CliRunner().invoke(app, ["train", "--image", str(image), "--labels", str(labels), "--out",
                                          str(tmp_path / "bad.safetensors"), option, value])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1 and option in lines[0], result.output
    assert not (tmp_path / "bad.safetensors").exists()
