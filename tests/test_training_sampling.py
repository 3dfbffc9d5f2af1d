"""Training on sparse, imbalanced labels: where chips come from, how classes weigh in the loss,
held-out validation blocks, the checkpoint kept, and parallel chip reads (issue 14, items 5-8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from fcnseg.models.checkpoint import ClassInfo, ModelCard, NodataPolicy, Normalization
from fcnseg.models.fcn import build_model
from fcnseg.pipeline.io import InputError
from fcnseg.models.train import TrainConfig, improves, loss_function, train
from fcnseg.pipeline.training import chips as chips_module
from fcnseg.pipeline.training.chips import (
    ChipSampler,
    build_label_index,
    choose_holdout,
    median_frequency_weights,
)

SIZE = 512
CHIP = 64
UNLABELLED = 255


class ArrayLabels:
    """A label source over an in-memory array that records the windows read."""

    class_names = None
    class_colors = None

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.windows: list[Window] = []

    def read(self, window: Window) -> np.ndarray:
        self.windows.append(window)
        r, c = int(window.row_off), int(window.col_off)
        return self.array[r : r + int(window.height), c : c + int(window.width)].copy()

    def unknown_ids(self, num_classes: int) -> list[int]:
        return []

    def close(self) -> None:
        pass


def sparse_labels() -> np.ndarray:
    """Three classes in a few squares over a 512 px scene (0.6 % labelled); class 2 is 16 pixels."""
    labels = np.full((SIZE, SIZE), UNLABELLED, np.uint8)
    labels[40:80, 40:80] = 0
    labels[300:330, 400:430] = 1
    labels[450:454, 100:104] = 2
    return labels


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "image.tif"
    rng = np.random.default_rng(0)
    profile = dict(driver="GTiff", width=SIZE, height=SIZE, count=3, dtype="uint8", tiled=True,
                   blockxsize=128, blockysize=128, transform=from_origin(0, SIZE, 1, 1), crs="EPSG:32633")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rng.integers(0, 255, (3, SIZE, SIZE), dtype=np.uint8))
    return path


@pytest.fixture
def label_raster(tmp_path) -> Path:
    path = tmp_path / "labels.tif"
    profile = dict(driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="uint8", nodata=255, tiled=True,
                   blockxsize=128, blockysize=128, transform=from_origin(0, SIZE, 1, 1), crs="EPSG:32633")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(sparse_labels()[None])
    return path


def card(num_classes: int = 3) -> ModelCard:
    return ModelCard(
        arch="fcn32s", width=0.0625, bands=3,
        classes=[ClassInfo(f"c{i}", (i, i, i)) for i in range(num_classes)],
        normalization=Normalization(mean=[127.0] * 3, std=[64.0] * 3), nodata=NodataPolicy(),
    )


def sampler(src, labels, **kwargs) -> ChipSampler:
    index = build_label_index(labels, SIZE, SIZE, 3, CHIP // 4)
    return ChipSampler(src, [1, 2, 3], labels, card(), chip=CHIP, batch_size=4, seed=3, index=index, **kwargs)


def test_label_index_counts_every_labelled_pixel_window_by_window(monkeypatch):
    monkeypatch.setattr(chips_module, "INDEX_WINDOW", 96)  # several windows, not a multiple of the scene
    labels = ArrayLabels(sparse_labels())
    index = build_label_index(labels, SIZE, SIZE, 3, 16)
    assert max(int(w.width) * int(w.height) for w in labels.windows) <= 96 * 96
    assert index.class_counts.tolist() == [1600, 900, 16]
    assert index.counts[2, 450 // 16, 100 // 16] == 16


def test_labelled_sampling_puts_labels_in_every_chip_and_reaches_the_rare_class(image):
    labels = ArrayLabels(sparse_labels())
    with rasterio.open(image) as src:
        chips = [sampler(src, labels, sampling="labelled").chip_at(k)[1] for k in range(60)]
        uniform = sampler(src, labels, sampling="uniform")
        windows = [uniform.window(np.random.default_rng([0, k])) for k in range(200)]
    assert all((c != UNLABELLED).any() for c in chips)
    assert sum((c == 2).any() for c in chips) >= 10  # a third expected: each class has equal chance
    uniform_hits = [(labels.read(w) != UNLABELLED).any() for w in windows]
    assert sum(uniform_hits) < 0.5 * len(windows)  # what uniform chips would have given


def test_uniform_sampling_on_sparse_labels_says_what_to_use_instead(image):
    with rasterio.open(image) as src:
        few = np.full((SIZE, SIZE), UNLABELLED, np.uint8)
        few[450:454, 100:104] = 2  # at most 16 of a chip's pixels can be labelled: under 5 %
        uniform = sampler(src, ArrayLabels(few), sampling="uniform")
        with pytest.raises(InputError, match=r"no chip with 5% of its pixels labelled in 50 tries \(sparse labels: --sampling labelled\)"):
            uniform.chip_at(0)


def test_median_frequency_weights_follow_the_formula():
    counts = [100, 300, 0, 600]
    freq = np.array([0.1, 0.3, 0.6])
    expected = [np.median(freq) / 0.1, 1.0, 1.0, np.median(freq) / 0.6]
    assert median_frequency_weights(counts).tolist() == pytest.approx(expected, rel=1e-12)
    assert median_frequency_weights([564, 87, 10_000, 20_000]).tolist() == pytest.approx(
        [np.median([564, 87, 10_000, 20_000]) / c for c in [564, 87, 10_000, 20_000]], rel=1e-12
    )


def test_weighted_loss_uses_the_weights_and_ignores_unlabelled():
    logits = torch.tensor([[[[2.0]], [[0.0]]], [[[0.0]], [[2.0]]], [[[1.0]], [[1.0]]]])  # (3, 2, 1, 1)
    target = torch.tensor([[[0]], [[0]], [[UNLABELLED]]])
    plain = loss_function(TrainConfig(), torch.device("cpu"))(logits, target)
    only_first = loss_function(TrainConfig(class_weights=[1.0, 0.0]), torch.device("cpu"))
    weighted = loss_function(TrainConfig(class_weights=[3.0, 1.0]), torch.device("cpu"))(logits, target)
    assert float(plain) == pytest.approx(float(torch.nn.functional.cross_entropy(logits[:2], target[:2])))
    assert float(weighted) == pytest.approx(float(plain))  # one class present: weights cancel in the mean
    mixed = torch.tensor([[[0]], [[1]], [[UNLABELLED]]])
    first_only = torch.nn.functional.cross_entropy(logits[:1], mixed[:1])
    assert float(only_first(logits, mixed)) == pytest.approx(float(first_only))


@pytest.mark.parametrize("sampling", ["labelled", "uniform"])
def test_no_held_out_label_is_ever_trained_on(image, sampling):
    """Chips may reach into a held-out block (its image is context) but carry none of its labels."""
    labels = ArrayLabels(np.where(sparse_labels() == UNLABELLED, 1, sparse_labels()).astype(np.uint8))
    index = build_label_index(labels, SIZE, SIZE, 3, CHIP // 4)
    holdout = choose_holdout(index, 0.2, CHIP, seed=0)
    held = np.zeros((SIZE, SIZE), bool)
    for w in holdout.windows():
        held[int(w.row_off) : int(w.row_off + w.height), int(w.col_off) : int(w.col_off + w.width)] = True
    assert 0.1 < held.mean() < 0.3
    reaching = 0
    with rasterio.open(image) as src:
        s = ChipSampler(src, [1, 2, 3], labels, card(), chip=CHIP, batch_size=4, seed=1,
                        sampling=sampling, index=index, holdout=holdout)
        for k in range(200):
            w, _, target = s.draw(k)
            inside = held[int(w.row_off) : int(w.row_off + w.height), int(w.col_off) : int(w.col_off + w.width)]
            np.testing.assert_array_equal(target == UNLABELLED, inside)  # every other pixel is labelled
            reaching += bool(inside.any())
    assert reaching > 20


def test_holdout_keeps_most_of_a_rare_class_for_training():
    labels = ArrayLabels(sparse_labels())
    index = build_label_index(labels, SIZE, SIZE, 3, 16)
    for seed in range(10):
        holdout = choose_holdout(index, 0.2, CHIP, seed=seed)
        assert not holdout.held[450 // holdout.block, 100 // holdout.block]  # all 16 pixels in one block


def test_parallel_reads_yield_exactly_the_serial_chips(image, label_raster):
    from fcnseg.pipeline.training.labels import RasterLabels

    with rasterio.open(image) as src:
        labels = RasterLabels(label_raster, src)
        serial = sampler(src, labels, sampling="labelled")
        batches = [serial() for _ in range(3)]
        with sampler(src, labels, sampling="labelled", workers=3) as parallel:
            again = [parallel() for _ in range(3)]
        labels.close()
    for (x, y), (x2, y2) in zip(batches, again, strict=True):
        assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(batches[0][1], batches[1][1])


def test_best_checkpoint_is_the_best_validation_mean_iu_not_the_last():
    torch.manual_seed(0)
    model = build_model("fcn32s", 3, 2, 0.0625)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 64, 64)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.uint8)
    scores = iter([0.2, 0.7, 0.4, 0.3])  # the loss keeps falling; validation peaks at step 4
    snapshots = {}

    def validate(m):
        snapshots[len(snapshots)] = {k: v.clone() for k, v in m.state_dict().items()}
        return {"pixel_acc": 0.0, "mean_acc": 0.0, "mean_iou": next(scores), "fw_iou": 0.0}

    result = train(model, lambda: (x, y), TrainConfig(steps=8, val_every=2, warmup_steps=1, progress=False),
                   torch.device("cpu"), validate)
    assert result.best_step == 4
    kept = model.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in snapshots[1].items())
    assert not all(torch.equal(kept[k], v) for k, v in snapshots[3].items())
    assert improves({"mean_iou": 0.5}, None) and not improves({"mean_iou": 0.5}, {"mean_iou": 0.5})


def spread_labels() -> np.ndarray:
    """A 16 px square in each 64 px block, classes 0 and 1 in turn, and a 4 px square of class 2
    in every fourth block (256 pixels)."""
    labels = np.full((SIZE, SIZE), UNLABELLED, np.uint8)
    for i in range(SIZE // 64):
        for j in range(SIZE // 64):
            labels[i * 64 + 24 : i * 64 + 40, j * 64 + 24 : j * 64 + 40] = (i + j) % 2
            if (i * 8 + j) % 4 == 0:
                labels[i * 64 + 8 : i * 64 + 12, j * 64 + 8 : j * 64 + 12] = 2
    return labels


def test_held_out_blocks_take_about_the_share_of_every_class():
    from fcnseg.pipeline.training.chips import held_cells

    spread = build_label_index(ArrayLabels(spread_labels()), SIZE, SIZE, 3, 16)
    for seed in range(5):
        holdout = choose_holdout(spread, 0.2, CHIP, seed=seed)
        share = spread.counts[:, held_cells(spread, holdout)].sum(axis=1) / spread.class_counts
        assert np.all(share <= 0.2) and np.all(share >= 0.1), share  # a rare class is not left out


def test_a_holdout_that_would_score_a_class_on_too_few_pixels_is_dropped(caplog):
    from fcnseg.pipeline.training.train import usable_holdout

    names = ["water", "forest", "building"]
    clustered = build_label_index(ArrayLabels(sparse_labels()), SIZE, SIZE, 3, 16)
    with caplog.at_level("WARNING"):
        assert usable_holdout(clustered, choose_holdout(clustered, 0.2, CHIP, seed=0), 0.2, names) is None
    assert "too few labels of forest, building to hold out 10 % of them" in caplog.text
    spread = build_label_index(ArrayLabels(spread_labels()), SIZE, SIZE, 3, 16)
    assert usable_holdout(spread, choose_holdout(spread, 0.2, CHIP, seed=0), 0.2, names) is not None


def test_training_on_sparse_labels_validates_on_held_out_blocks_and_records_it(tmp_path, image, label_raster):
    from fcnseg.pipeline.training.train import TrainRequest, train_model

    with rasterio.open(label_raster, "r+") as dst:
        dst.write(spread_labels()[None])
    request = TrainRequest(image=image, labels=label_raster, out=tmp_path / "m.safetensors", arch="fcn32s",
                           width=0.0625, steps=4, chip=CHIP, batch_size=2, val_every=2, classes=["a", "b", "c"],
                           progress=False, read_threads=2)
    _, result, card = train_model(request)
    assert [h["step"] for h in result.history if "mean_iou" in h] == [2, 4]  # validated without --val-image
    assert card.training.holdout["blocks"] >= 1
    assert card.training.sampling == "labelled"
    assert card.training.class_pixels == (32 * 256, 32 * 256, 256)
    weights = card.training.class_weights["weights"]
    assert card.training.class_weights["method"] == "median" and weights[2] > weights[0]


def test_a_seed_trains_the_same_model_whatever_the_read_threads(tmp_path, image, label_raster):
    """What keeps README's FCN table and the shipped demo model reproducible: chips, their order
    into batches and the initial weights all follow --seed, not the thread pool's timing."""
    from fcnseg.models.checkpoint import load_checkpoint
    from fcnseg.pipeline.training.train import TrainRequest, train_model

    with rasterio.open(label_raster, "r+") as dst:
        dst.write(spread_labels()[None])
    tensors = []
    for threads in (0, 3):
        request = TrainRequest(image=image, labels=label_raster, out=tmp_path / f"m{threads}.safetensors",
                               arch="fcn16s", width=0.0625, steps=3, chip=CHIP, batch_size=2, classes=["a", "b", "c"],
                               progress=False, read_threads=threads, holdout=0.0, seed=7)
        path, _, _ = train_model(request)
        tensors.append(load_checkpoint(path)[0].state_dict())
    assert tensors[0].keys() == tensors[1].keys()
    for name in tensors[0]:
        assert torch.equal(tensors[0][name], tensors[1][name]), name


def test_sqrt_and_capped_weights_follow_the_median_frequency_weights(tmp_path, image, label_raster):
    from fcnseg.pipeline.training.train import TrainRequest, train_model

    ways = {"median": {}, "sqrt": dict(class_weights="sqrt"), "none": dict(class_weights="none"),
            "capped": dict(max_class_weight=2.0), "sqrt-capped": dict(class_weights="sqrt", max_class_weight=1.5)}
    weights, recorded = {}, {}
    for name, way in ways.items():
        request = TrainRequest(image=image, labels=label_raster, out=tmp_path / f"{name}.safetensors", arch="fcn32s",
                               width=0.0625, steps=1, chip=CHIP, batch_size=2, classes=["a", "b", "c"], progress=False,
                               holdout=0.0, **way)
        _, _, card = train_model(request)
        recorded[name] = {k: card.training.class_weights[k] for k in ("method", "max")}
        weights[name] = card.training.class_weights["weights"]
    assert weights["none"] is None and weights["median"][2] > 2  # the rare class: the cap below bites
    assert weights["sqrt"] == [float(np.sqrt(w)) for w in weights["median"]]
    assert weights["capped"] == [min(w, 2.0) for w in weights["median"]] != weights["median"]
    assert weights["sqrt-capped"] == [min(w, 1.5) for w in weights["sqrt"]] != weights["sqrt"]
    assert recorded["capped"] == {"method": "median", "max": 2.0}
    assert recorded["median"] == {"method": "median", "max": None}
    assert recorded["sqrt-capped"] == {"method": "sqrt", "max": 1.5}
