"""Score a model on a labelled raster of any size, tile by tile (the paper's four metrics)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fcnseg.models.checkpoint import ModelCard
from fcnseg.models.fcn import FCNBase
from fcnseg.models.inference import predict_probabilities
from fcnseg.models.metrics import IGNORE_INDEX, Metrics, confusion_matrix, metrics_from_confusion
from fcnseg.pipeline.labels import open_labels
from fcnseg.pipeline.reading import open_raster, read_model_input, select_bands
from fcnseg.pipeline.tiling import default_halo, iter_tiles

log = logging.getLogger(__name__)


def evaluate_raster(
    model: FCNBase,
    card: ModelCard,
    image: str | Path,
    labels: str | Path,
    *,
    device: torch.device,
    label_field: str | None = None,
    bands: Sequence[int] | None = None,
    tile: int = 1024,
    halo: int | None = None,
    progress: bool = False,
) -> Metrics:
    """Metrics over every pixel that is valid in the image and labelled (not 255) in the labels."""
    halo = default_halo(card.arch) if halo is None else halo
    num_classes = card.num_classes
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    model.eval()
    with open_raster(image) as src:
        band_indexes = select_bands(src, card, bands)
        label_source = open_labels(labels, src, label_field, card.class_names)
        try:
            tiles = list(iter_tiles(src.height, src.width, tile, halo))
            for t in tqdm(tiles, desc="evaluate", unit="tile", disable=not progress):
                target = label_source.read(t.core)
                x, valid = read_model_input(src, band_indexes, t.read, card)
                core_valid = valid[t.core_in_read]
                target[~core_valid] = IGNORE_INDEX
                if not core_valid.any() or (target == IGNORE_INDEX).all():
                    continue
                scores = predict_probabilities(model, x[None], device)[0]
                predicted = scores.argmax(axis=0)[t.core_in_read]
                confusion += confusion_matrix(predicted, target, num_classes)
        finally:
            label_source.close()
    if not confusion.any():
        log.warning("%s: no labelled valid pixel to evaluate", labels)
    return metrics_from_confusion(confusion)
