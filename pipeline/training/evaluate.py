"""Score a model on a labelled raster of any size, tile by tile (the paper's four metrics)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fcnseg.models.checkpoint import ModelCard
from fcnseg.models.fcn import FCNBase
from fcnseg.models.sizing import default_tiling
from fcnseg.models.tta import check_tta
from fcnseg.models.metrics import IGNORE_INDEX, Metrics, confusion_matrix, metrics_from_confusion
from fcnseg.pipeline.band_statistics import NORMALIZE_MODES, scene_normalization
from fcnseg.pipeline.engine.predict import predict_tiles
from fcnseg.pipeline.engine.tile_source import TileSource
from fcnseg.pipeline.io import open_raster, select_bands
from fcnseg.pipeline.progress import stage_progress
from fcnseg.pipeline.tiles import Tile, check_tiling, default_halo, iter_tiles
from fcnseg.pipeline.training.labels import check_class_ids, open_labels

log = logging.getLogger(__name__)


def evaluate_raster(
    model: FCNBase,
    card: ModelCard,
    image: str | Path,
    labels: str | Path,
    *,
    device: torch.device,
    label_field: str | None = None,
    outside: str | None = None,
    label_layer: str | None = None,
    bands: Sequence[int] | None = None,
    tile: int | None = None,
    halo: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    check_labels: bool = True,
    tta: str = "none",
    normalize: str = "card",
    model_name: str = "the model",
) -> Metrics:
    """Metrics over every pixel that is valid in the image and labelled (not 255) in the labels.

    The tiles run through ``segment``'s own loop (``predict_tiles``: same tiles, halo and batches),
    so the score is the score of what ``segment`` writes; tiles without a label are not run.
    Labels holding a class id the model does not have are refused before any tile runs (a scan of
    the labels; ``check_labels=False`` skips it where the caller has checked them already).
    Label values map to class ids through the card's ``labels`` mapping, as training mapped them;
    ``label_field`` and ``outside`` default to the card's (see ``labels.open_labels``); ``label_layer``
    picks the layer of a vector file of several. ``tta``: the views each tile's logits are
    averaged over (``models.tta``), as ``segment --tta`` averages them. ``normalize``: ``card``, or
    ``scene``: the card's normalisation matched to this image's statistics, as ``segment --normalize
    scene`` matches it (``band_statistics.scene_normalization``; ``model_name`` is named when the card
    has no statistics).
    """
    check_tiling(tile, halo, batch_size)
    check_tta(tta)
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"--normalize must be card or scene, got {normalize!r}")
    halo = default_halo(card.arch) if halo is None else halo
    tile, batch_size = default_tiling(card.width, halo, device, tile, batch_size)  # as segment chooses them
    num_classes = card.num_classes
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    model.eval()
    with open_raster(image) as src:
        band_indexes = select_bands(src, card, bands)
        if normalize == "scene":
            card = replace(card, normalization=scene_normalization(src, band_indexes, card, model_name))
        label_source = open_labels(labels, src, label_field, outside=outside, card=card, layer=label_layer)
        try:
            if check_labels:
                check_class_ids(label_source, labels, card.class_names)
            targets: dict[tuple[int, int], np.ndarray] = {}  # labels of the tiles in flight

            def labelled_tiles() -> Iterator[Tile]:
                tiles = list(iter_tiles(src.height, src.width, tile, halo))
                with stage_progress(len(tiles), "evaluate", "tile", bar=progress) as advance:
                    for t in tiles:
                        target = label_source.read(t.core)
                        advance()
                        if (target != IGNORE_INDEX).any():
                            targets[(t.row, t.col)] = target
                            yield t

            with TileSource(src.name, band_indexes, card, tta=tta) as source:
                for t, scores, valid in predict_tiles(model, device, source, labelled_tiles(), batch_size):
                    target = targets.pop((t.row, t.col))
                    if scores is None:
                        continue
                    target[~valid[t.core_in_read]] = IGNORE_INDEX
                    predicted = scores.argmax(axis=0)[t.core_in_read]
                    confusion += confusion_matrix(predicted, target, num_classes)
        finally:
            label_source.close()
    if not confusion.any():
        log.warning("%s: no labelled valid pixel to evaluate", labels)
    return metrics_from_confusion(confusion)
