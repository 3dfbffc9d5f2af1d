"""Train an FCN on labelled rasters: the glue between files on disk and ``models.train``.

Decides the model card (bands, classes, normalisation), builds or initialises the model
(fresh, from ImageNet VGG16 weights, or from an earlier checkpoint for the paper's staged
training FCN-32s -> 16s -> 8s), samples chips from disk, validates on a held-out raster and
writes the best checkpoint with its provenance.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fcnseg.models.checkpoint import (
    ClassInfo,
    ModelCard,
    NodataPolicy,
    file_sha256,
    load_checkpoint,
    read_card,
    save_checkpoint,
)
from fcnseg.models.fcn import ARCHS, STRIDE, FCNBase, build_model
from fcnseg.models.inference import resolve_device
from fcnseg.models.train import TrainConfig, TrainResult, train
from fcnseg.models.vgg_weights import load_vgg16_imagenet
from fcnseg.pipeline.classes import default_colors
from fcnseg.pipeline.io import InputError, open_raster, select_bands
from fcnseg.pipeline.training.chips import ChipSampler, band_statistics
from fcnseg.pipeline.training.evaluate import evaluate_raster
from fcnseg.pipeline.training.labels import check_class_ids, open_labels

log = logging.getLogger(__name__)

@dataclass
class TrainRequest:
    image: Path
    labels: Path
    out: Path
    val_image: Path | None = None
    val_labels: Path | None = None
    arch: str = "fcn8s"
    width: float = 0.125
    init: Path | None = None
    vgg16_weights: Path | None = None
    steps: int = 2000
    chip: int = 256
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    label_field: str | None = None
    classes: Sequence[str] | None = None
    bands: Sequence[int] | None = None
    val_every: int = 250
    progress: bool = True

    def __post_init__(self) -> None:
        """Refuse options that cannot train, before any file is opened (named as on the command line)."""
        if self.arch not in ARCHS:
            raise ValueError(f"--arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        checks = [
            ("--steps", self.steps, self.steps >= 1, "at least 1"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, "at least 1"),
            ("--chip", self.chip, self.chip >= STRIDE, f"at least {STRIDE} (the model's stride)"),
            ("--lr", self.lr, self.lr > 0 and math.isfinite(self.lr), "a positive number"),
            ("--val-every", self.val_every, self.val_every >= 1, "at least 1"),
            ("--width", self.width, self.width > 0 and math.isfinite(self.width), "a positive number"),
        ]
        for option, value, ok, rule in checks:
            if not ok:
                raise ValueError(f"{option} must be {rule}, got {value}")


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


def class_list(request: TrainRequest, label_names: list[str] | None, label_colors, init_card: ModelCard | None) -> list[ClassInfo]:
    names = list(request.classes or label_names or (init_card.class_names if init_card else []))
    if len(names) < 2:
        raise InputError(f"{request.labels}: cannot tell the class names; pass --classes NAME,NAME,...")
    if label_colors and len(label_colors) == len(names):
        colors = label_colors
    elif init_card and init_card.num_classes == len(names):
        colors = [c.color for c in init_card.classes]
    else:
        colors = default_colors(len(names))
    return [ClassInfo(n, tuple(c)) for n, c in zip(names, colors, strict=True)]


def check_validation_data(request: TrainRequest, card: ModelCard) -> None:
    """The validation image and labels opened as every validation opens them, and their class ids
    scanned, once before training: not after ``val_every`` steps, and not at every validation."""
    with open_raster(request.val_image) as src:
        select_bands(src, card, request.bands)
        labels = open_labels(request.val_labels, src, request.label_field, card.class_names)
        try:
            check_class_ids(labels, request.val_labels, card.class_names)
        finally:
            labels.close()


def train_model(request: TrainRequest) -> tuple[Path, TrainResult, ModelCard]:
    """Train as requested and write the best checkpoint to ``request.out``."""
    device = resolve_device(request.device)
    started = dt.datetime.now(dt.UTC)
    with open_raster(request.image) as src:
        band_indexes = list(request.bands) if request.bands else list(range(1, src.count + 1))
        if any(b < 1 or b > src.count for b in band_indexes):
            raise InputError(f"{request.image}: has {src.count} bands, --bands asks for {band_indexes}")
        labels = open_labels(request.labels, src, request.label_field, list(request.classes or []) or None)
        try:
            init_card = read_card(request.init) if request.init else None
            classes = class_list(request, labels.class_names, labels.class_colors, init_card)
            class_names = [c.name for c in classes]
            check_class_ids(labels, request.labels, class_names)
            normalization = init_card.normalization if init_card else band_statistics(src, band_indexes, seed=request.seed)
            descriptions = [src.descriptions[b - 1] for b in band_indexes]
            card = ModelCard(
                arch=request.arch,
                width=request.width,
                bands=len(band_indexes),
                classes=classes,
                normalization=normalization,
                nodata=NodataPolicy(input=src.nodata),
                band_names=descriptions if all(descriptions) else None,
            )
            card.validate()
            if request.val_image is not None and request.val_labels is not None:
                check_validation_data(request, card)
            model, _ = initial_model(request, card.bands, card.num_classes)
            sampler = ChipSampler(
                src, band_indexes, labels, card, chip=request.chip, batch_size=request.batch_size, seed=request.seed
            )
            validate = None
            if request.val_image is not None and request.val_labels is not None:
                def validate(m: FCNBase):  # noqa: E306 - closes over the request
                    return evaluate_raster(
                        m, card, request.val_image, request.val_labels, device=device,
                        label_field=request.label_field, bands=request.bands, check_labels=False,
                    )
            config = TrainConfig(
                steps=request.steps, lr=request.lr, seed=request.seed,
                val_every=request.val_every, progress=request.progress,
            )
            result = train(model, sampler, config, device, validate)
        finally:
            labels.close()

    card.metrics = dict(result.best_metrics) if result.best_metrics else {}
    card.training = {
        "command": " ".join(["fcnseg", *sys.argv[1:]]) if Path(sys.argv[0]).name == "fcnseg" else None,
        "image": str(request.image),
        "labels": str(request.labels),
        "val_image": str(request.val_image) if request.val_image else None,
        "val_labels": str(request.val_labels) if request.val_labels else None,
        "init": {"path": str(request.init), "sha256": file_sha256(request.init)} if request.init else None,
        "vgg16_weights": str(request.vgg16_weights) if request.vgg16_weights else None,
        "steps": request.steps, "best_step": result.best_step, "chip": request.chip,
        "batch_size": request.batch_size, "lr": request.lr, "seed": request.seed,
        "optimizer": "AdamW, warm-up + cosine", "device": str(device),
        "started": started.isoformat(timespec="seconds"), "seconds": round(result.seconds, 1),
        "torch": torch.__version__, "python": platform.python_version(),
        "history": result.history,
    }
    path = save_checkpoint(request.out, model.cpu(), card)
    return path, result, card
