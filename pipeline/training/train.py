"""Train an FCN on labelled rasters: the glue between files on disk and ``models.train``.

Decides the model card (bands, classes, normalisation), builds or initialises the model
(fresh, from ImageNet VGG16 weights, or from an earlier checkpoint for the paper's staged
training FCN-32s -> 16s -> 8s), samples chips from disk, validates on a held-out raster and
writes the best checkpoint with its provenance.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window

from fcnseg.models.checkpoint import (
    ClassInfo,
    ModelCard,
    NodataPolicy,
    class_count_problem,
    class_names_problem,
    file_sha256,
    load_checkpoint,
    read_card,
    save_checkpoint,
)
from fcnseg.models.card import Normalization, RobustStatistics, TrainingProvenance
from fcnseg.models.fcn import FCNBase, build_model
from fcnseg.models.inference import autocast_for, resolve_device
from fcnseg.models.metrics import Metrics, confusion_matrix, metrics_from_confusion, named_metrics
from fcnseg.models.train import TrainConfig, TrainResult, train
from fcnseg.models.vgg_weights import load_vgg16_imagenet
from fcnseg.pipeline.classes import default_colors
from fcnseg.pipeline.io import InputError, check_pixel_types, open_raster, read_model_input, select_bands
from fcnseg.pipeline.overwrite import OVERWRITE, check_checkpoint_out
from fcnseg.pipeline.training.augment import Augmenter, BandReference
from fcnseg.pipeline.training.chips import (
    ChipSampler,
    Holdout,
    LabelIndex,
    build_label_index,
    cell_probabilities,
    choose_holdout,
    expected_class_pixels,
    held_cells,
    index_cell,
    median_frequency_weights,
)
from fcnseg.pipeline.training.evaluate import evaluate_raster
from fcnseg.pipeline.training.labels import (
    UNLABELLED,
    LabelSource,
    check_class_ids,
    default_class_names,
    open_labels,
)
from fcnseg.pipeline.training.request import TrainRequest, photometric
from fcnseg.pipeline.band_statistics import scene_statistics

log = logging.getLogger(__name__)


def check_out(request: TrainRequest) -> None:
    """``out`` may be written (``pipeline.overwrite``): never one of this training's inputs."""
    inputs = {"--image": request.image, "--labels": request.labels, "--val-image": request.val_image,
              "--val-labels": request.val_labels, "--init": request.init, "--vgg16-weights": request.vgg16_weights}
    check_checkpoint_out(request.out, inputs=inputs, overwrite=request.overwrite, override=OVERWRITE)


def augmenter(request: TrainRequest, scene: Normalization, statistics: RobustStatistics) -> Augmenter | None:
    """The chips' photometric augmentation, measured against this scene's own statistics; None when off."""
    settings = photometric(request)
    if not settings.active:
        return None
    log.info("photometric augmentation: %s", ", ".join(f"{k} {v:g}" for k, v in settings.to_json().items()))
    return Augmenter(settings, BandReference(scene.mean, scene.std, statistics.p2, statistics.p98))


def initial_model(request: TrainRequest, bands: int, num_classes: int) -> tuple[FCNBase, ModelCard | None]:
    """A fresh model, ImageNet-initialised, or carrying over every matching tensor of ``--init``."""
    model = build_model(request.arch, bands, num_classes, request.width)
    if request.init is None:
        if request.vgg16_weights is not None:
            load_vgg16_imagenet(model, request.vgg16_weights)
        return model, None
    previous, card = load_checkpoint(request.init)
    if card.bands != bands or card.num_classes != num_classes or card.width != request.width:
        raise InputError(
            f"{request.init}: --init has {card.bands} bands, {card.num_classes} classes, width {card.width};"
            f" this training has {bands}, {num_classes}, {request.width}"
        )
    own = model.state_dict()
    carried = {k: v for k, v in previous.state_dict().items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(carried, strict=False)
    log.info("--init %s: carried %d of %d tensors from %s", request.init, len(carried), len(own), card.arch)
    return model, card


def class_list(
    request: TrainRequest, label_names: list[str] | None, label_colors, init_card: ModelCard | None,
    labels: LabelSource | None = None,
) -> list[ClassInfo]:
    """The classes in id order: ``--classes``, else the labels' names, else ``--init``'s, else
    ``class_0`` … ``class_N`` from the ids the labels hold (with a warning)."""
    names = list(request.classes or label_names or (init_card.class_names if init_card else []))
    if not names and labels is not None:
        names = default_class_names(labels, request.labels)
    if len(names) < 2:
        raise InputError(f"{request.labels}: cannot tell the class names; pass --classes NAME,NAME,...")
    problem = class_count_problem(len(names)) or class_names_problem(names)
    if problem:  # --classes was checked with the request: the names are the labels' (or --init's)
        source = f"--init {request.init}" if init_card and not label_names else request.labels
        raise InputError(f"{source}: {problem}; name the classes with --classes NAME,NAME,...")
    if label_colors and len(label_colors) == len(names):
        colors = label_colors
    elif init_card and init_card.num_classes == len(names):
        colors = [c.color for c in init_card.classes]
    else:
        colors = default_colors(len(names))
    return [ClassInfo(n, tuple(c)) for n, c in zip(names, colors, strict=True)]


def open_training_labels(request: TrainRequest, src, init_card: ModelCard | None):
    """The training labels; training on from ``--init`` maps their values to class ids as that
    checkpoint's training did (unless ``--classes`` says otherwise), so class 2 stays class 2."""
    if init_card is not None and init_card.labels is not None and not request.classes:
        log.info("--init %s: label values map to classes as its training did", request.init)
        labels = open_labels(request.labels, src, request.label_field, outside=request.outside, card=init_card,
                             layer=request.label_layer)
        labels.class_names = init_card.class_names  # a raster's own names are of its values, not of the ids
        labels.class_colors = [c.color for c in init_card.classes]
        return labels
    return open_labels(
        request.labels, src, request.label_field, list(request.classes or []) or None,
        outside=request.outside, class_name=request.class_name, layer=request.label_layer,
    )


def check_validation_data(request: TrainRequest, card: ModelCard) -> None:
    """The validation image and labels opened as every validation opens them, and their class ids
    scanned, once before training: not after ``val_every`` steps, and not at every validation."""
    with open_raster(request.val_image) as src:
        select_bands(src, card, request.bands)
        labels = open_labels(request.val_labels, src, request.label_field, outside=request.outside, card=card,
                             layer=request.label_layer)
        try:
            check_class_ids(labels, request.val_labels, card.class_names)
        finally:
            labels.close()


@dataclass
class SamplingPlan:
    """Where chips come from and how the loss weighs classes, decided once before training."""

    index: LabelIndex
    holdout: Holdout | None
    class_weights: list[float] | None
    info: dict


def log_class_pixels(index: LabelIndex, class_names: Sequence[str], held) -> None:
    """Per-class labelled pixels (and those held out for validation), so a class too sparse to
    learn shows before training, not as an IU of 0 after it."""
    total = index.class_counts
    kept = (index.counts * held).sum(axis=(1, 2), dtype="int64")
    parts = [
        f"{name} {int(t):,}" + (f" ({int(k):,} held out)" if held.any() else "")
        for name, t, k in zip(class_names, total, kept, strict=True)
    ]
    log.info("labelled pixels per class: %s", ", ".join(parts))
    for name, t, k in zip(class_names, total, kept, strict=True):
        if t == k:
            log.warning("class %s has no labelled pixel to train on", name)


#: A held-out split validates only when every labelled class has at least this part of the asked
#: share in it (10 % of its pixels at --holdout 0.2): on fewer the mean IU that picks the checkpoint
#: is noise, or blind to the class (seen: a split holding almost none of one class and none of another
#: picked a checkpoint far worse on an unseen scene than the last weights; measured:
#: docs/benchmarks.md#figures-quoted-in-code-comments).
MIN_HELD_SHARE = 0.5


def usable_holdout(index: LabelIndex, holdout: Holdout, fraction: float, class_names: Sequence[str]) -> Holdout | None:
    """The held-out blocks, or None (with a warning naming the classes) where some labelled class
    is too sparse or too clustered to hold out enough of it: --val-image is the way then."""
    held = index.counts[:, held_cells(index, holdout)].sum(axis=1)
    totals = index.class_counts
    short = [name for name, h, t in zip(class_names, held, totals, strict=True) if t > 0 and h < MIN_HELD_SHARE * fraction * t]
    if short:
        shown = ", ".join(short[:6]) + (", ..." if len(short) > 6 else "")
        log.warning("--holdout %.2f: too few labels of %s to hold out %.0f %% of them in blocks; training without"
                    " validation (last weights kept); pass --val-image/--val-labels to validate", fraction, shown,
                    100 * MIN_HELD_SHARE * fraction)
        return None
    return holdout


def plan_sampling(request: TrainRequest, src, labels, num_classes: int, class_names: Sequence[str]) -> SamplingPlan:
    """Index the labels, hold out validation blocks (without --val-image) and weigh the classes."""
    cell = index_cell(request.chip, src.height, src.width)
    index = build_label_index(labels, src.height, src.width, num_classes, cell)
    if not index.class_counts.any():
        raise InputError(f"{request.labels}: no labelled pixel over {request.image} (every pixel unlabelled or nodata);"
                         " nothing to train on")
    holdout = None
    if request.val_image is None and request.holdout > 0:
        blocks = choose_holdout(index, request.holdout, request.chip, request.seed)
        holdout = usable_holdout(index, blocks, request.holdout, class_names)
    held = held_cells(index, holdout)
    log_class_pixels(index, class_names, held)
    if request.sampling == "labelled":
        probs = cell_probabilities(index, ~held)
        seen = expected_class_pixels(index, probs, request.chip, held)
    else:
        seen = (index.counts * ~held).sum(axis=(1, 2))
    weights = loss_weights(request, seen, class_names)
    info = {
        "sampling": request.sampling,
        "class_weights": {"method": request.class_weights, "max": request.max_class_weight, "weights": weights},
        "class_pixels": [int(c) for c in index.class_counts],
        "holdout": None if holdout is None else {
            "fraction": request.holdout, "block": holdout.block, "blocks": int(holdout.held.sum()),
        },
    }
    return SamplingPlan(index, holdout, weights, info)


def loss_weights(request: TrainRequest, seen: np.ndarray, class_names: Sequence[str]) -> list[float] | None:
    """The loss's class weights from the labelled pixels training sees: median frequency balancing,
    its square root or none, each capped at ``max_class_weight`` (the median class weighs 1), so that
    a class of a few dozen pixels cannot outweigh the rest a hundredfold."""
    if request.class_weights == "none":
        return None
    balanced = median_frequency_weights(seen)
    if request.class_weights == "sqrt":
        balanced = np.sqrt(balanced)
    if request.max_class_weight is not None:
        balanced = np.minimum(balanced, request.max_class_weight)
    weights = [float(w) for w in balanced]
    shown = ", ".join(f"{n} {w:.3g}" for n, w in zip(class_names, weights, strict=True))
    method = "median frequency" if request.class_weights == "median" else "square root of median frequency"
    cap = "" if request.max_class_weight is None else f", at most {request.max_class_weight:g}"
    log.info("class weights (%s%s): %s", method, cap, shown)
    return weights


def validate_on_blocks(
    model: FCNBase, card: ModelCard, src, bands: Sequence[int], labels, windows, device, context: int
) -> Metrics:
    """The paper's metrics over held-out blocks of the training scene, each read with ``context``
    pixels around it so its edge pixels see what they would inside the scene."""
    confusion = np.zeros((card.num_classes, card.num_classes), dtype=np.int64)
    model.eval()
    with torch.no_grad():
        for w in windows:
            target = labels.read(w)
            if (target == UNLABELLED).all():
                continue
            row0, col0 = max(0, int(w.row_off) - context), max(0, int(w.col_off) - context)
            row1 = min(src.height, int(w.row_off + w.height) + context)
            col1 = min(src.width, int(w.col_off + w.width) + context)
            x, valid = read_model_input(src, bands, Window(col0, row0, col1 - col0, row1 - row0), card)
            inner = (slice(int(w.row_off) - row0, int(w.row_off) - row0 + int(w.height)),
                     slice(int(w.col_off) - col0, int(w.col_off) - col0 + int(w.width)))
            target[~valid[inner]] = UNLABELLED
            with autocast_for(device):
                scores = model(torch.from_numpy(x)[None].to(device))
            predicted = scores[0].float().argmax(0).cpu().numpy()[inner]
            confusion += confusion_matrix(predicted, target, card.num_classes)
    return metrics_from_confusion(confusion)


def train_model(request: TrainRequest) -> tuple[Path, TrainResult, ModelCard]:
    """Train as requested and write the best checkpoint to ``request.out``."""
    if (request.val_image is None) != (request.val_labels is None):  # one alone would validate on nothing
        raise ValueError("--val-image and --val-labels go together")
    check_out(request)  # before the training, not after it
    device = resolve_device(request.device)
    started = dt.datetime.now(dt.UTC)
    with open_raster(request.image) as src:
        band_indexes = list(request.bands) if request.bands else list(range(1, src.count + 1))
        if any(b < 1 or b > src.count for b in band_indexes):
            raise InputError(f"{request.image}: has {src.count} bands, --bands asks for {band_indexes}")
        check_pixel_types(src, band_indexes)
        init_card = read_card(request.init) if request.init else None
        if init_card is not None and init_card.bands != len(band_indexes):  # its normalisation is per band
            raise InputError(f"{request.init}: --init takes {init_card.bands} bands, {request.image} gives"
                             f" {len(band_indexes)} (choose them with --bands)")
        labels = open_training_labels(request, src, init_card)
        try:
            classes = class_list(request, labels.class_names, labels.class_colors, init_card, labels)
            class_names = [c.name for c in classes]
            check_class_ids(labels, request.labels, class_names)
            scene_normalization, statistics = scene_statistics(src, band_indexes, seed=request.seed)
            normalization = init_card.normalization if init_card else scene_normalization
            descriptions = [src.descriptions[b - 1] for b in band_indexes]
            card = ModelCard(
                arch=request.arch,
                width=request.width,
                bands=len(band_indexes),
                classes=classes,
                normalization=normalization,
                nodata=NodataPolicy(input=src.nodata),
                band_names=descriptions if all(descriptions) else None,
                labels=labels.mapping(len(classes)),
                statistics=statistics,
            )
            card.validate()
            if request.val_image is not None and request.val_labels is not None:
                check_validation_data(request, card)
            torch.manual_seed(request.seed)  # the initial weights too follow --seed (a rerun trains the same model)
            model, _ = initial_model(request, card.bands, card.num_classes)
            plan = plan_sampling(request, src, labels, card.num_classes, card.class_names)
            sampler = ChipSampler(
                src, band_indexes, labels, card, chip=request.chip, batch_size=request.batch_size, seed=request.seed,
                sampling=request.sampling, index=plan.index, holdout=plan.holdout, workers=request.read_threads,
                augment=augmenter(request, scene_normalization, statistics),
            )
            validate = None
            if request.val_image is not None and request.val_labels is not None:
                def validate(m: FCNBase):  # noqa: E306 - closes over the request
                    return evaluate_raster(
                        m, card, request.val_image, request.val_labels, device=device,
                        label_field=request.label_field, outside=request.outside, bands=request.bands,
                        label_layer=request.label_layer,
                        check_labels=False,
                    )
            elif plan.holdout is not None:
                held = plan.holdout.windows()
                def validate(m: FCNBase):  # noqa: E306 - closes over the scene's handles
                    return validate_on_blocks(m, card, src, band_indexes, labels, held, device, request.chip // 2)
            config = TrainConfig(
                steps=request.steps, lr=request.lr, seed=request.seed,
                val_every=request.val_every, progress=request.progress, class_weights=plan.class_weights,
            )
            with sampler:
                result = train(model, sampler, config, device, validate)
        finally:
            labels.close()

    card.metrics = named_metrics(result.best_metrics, card.class_names) if result.best_metrics else {}
    card.training = TrainingProvenance(
        command=" ".join(["fcnseg", *sys.argv[1:]]) if Path(sys.argv[0]).name == "fcnseg" else None,
        image=str(request.image),
        labels=str(request.labels),
        val_image=str(request.val_image) if request.val_image else None,
        val_labels=str(request.val_labels) if request.val_labels else None,
        init={"path": str(request.init), "sha256": file_sha256(request.init)} if request.init else None,
        vgg16_weights=str(request.vgg16_weights) if request.vgg16_weights else None,
        steps=request.steps, best_step=result.best_step, chip=request.chip,
        batch_size=request.batch_size, lr=request.lr, seed=request.seed,
        optimizer="AdamW, warm-up + cosine", device=str(device),
        started=started.isoformat(timespec="seconds"), seconds=round(result.seconds, 1),
        torch=torch.__version__, python=platform.python_version(),
        history=tuple(result.history),
        **plan.info,  # sampling, class_weights, class_pixels, holdout
        read_threads=request.read_threads,
        augmentation=photometric(request).to_json(),
    )
    check_out(request)  # again: a file may have appeared at --out while training
    path = save_checkpoint(request.out, model.cpu(), card)
    return path, result, card
