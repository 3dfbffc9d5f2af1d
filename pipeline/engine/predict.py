"""The model's side of the tile loop: batches of same-shaped tiles through the FCN.

Raw pixels and validity masks cross to the device through pinned buffers; normalisation and the
nodata fill happen there. Two outputs, one loop. ``predict_cores`` (crop stitching) keeps each tile's core on the device:
argmax (and quantised probabilities and confidence when asked) are taken there and only uint8 comes back, a
fraction of the float scores of the whole read window. ``predict_tiles`` returns the class
probabilities over the read window, for what needs them whole: blend stitching and ``evaluate``.
Tiles come from a ``TileSource`` that reads ahead on its own threads; tiles without a valid pixel
in their core never reach the model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fcnseg.errors import DeviceMemoryError
from fcnseg.models.fcn import FCNBase
from fcnseg.models.inference import normalize_on_device
from fcnseg.models.tta import tta_logits
from fcnseg.pipeline.engine.staging import staging_for
from fcnseg.pipeline.engine.tile_source import TileInput, TileSource
from fcnseg.pipeline.store import NODATA, PROBABILITY_SCALE, quantize_probabilities
from fcnseg.pipeline.tiles import Tile

log = logging.getLogger(__name__)


#: A tile with its class probabilities over the read window (None: no valid pixel in its core,
#: the model was not run) and the read window's validity mask.
Prediction = tuple[Tile, "np.ndarray | None", np.ndarray]


@dataclass(frozen=True)
class CorePrediction:
    """What crop stitching keeps of a tile: its core's labels (uint8, 255 = nodata), quantised
    probabilities and confidence when asked, and the count of valid pixels; labels None: no valid
    pixel, not run."""

    tile: Tile
    labels: np.ndarray | None
    probabilities: np.ndarray | None
    valid_pixels: int
    confidence: np.ndarray | None = None


def read_ahead(batch_size: int) -> int:
    """Tiles read ahead of the model: two batches, so the next one is ready when this one ends."""
    return 2 * max(1, batch_size)


def batches(inputs: Iterable[TileInput], batch_size: int) -> Iterator[tuple[list[TileInput], list[TileInput]]]:
    """(tiles without a valid core pixel, a batch of up to ``batch_size`` tiles of one shape):
    tiles are grouped by read-window shape (edge tiles differ); at most a batch per shape waits."""
    pending: dict[tuple[int, ...], list[TileInput]] = {}
    for item in inputs:
        tile, x, valid = item
        if not valid[tile.core_in_read].any():
            yield [item], []
            continue
        batch = pending.setdefault(x.shape, [])
        batch.append(item)
        if len(batch) >= batch_size:
            yield [], pending.pop(x.shape)
    for batch in pending.values():
        yield [], batch


def predict_tiles(model: FCNBase, device: torch.device, source: TileSource, tiles: Iterable[Tile],
                  batch_size: int) -> Iterator[Prediction]:
    """Each tile's class probabilities over its read window (blend stitching, evaluate)."""
    for empty, batch in batches(source.stream(tiles, read_ahead(batch_size)), batch_size):
        for tile, _, valid in empty:
            yield tile, None, valid
        if batch:
            with torch.inference_mode():
                logits, _ = _forward(model, device, source, batch)
                scores = torch.softmax(logits, dim=1).cpu().numpy()
            for (tile, _, valid), tile_scores in zip(batch, scores, strict=True):
                yield tile, tile_scores, valid


def predict_cores(model: FCNBase, device: torch.device, source: TileSource, tiles: Iterable[Tile],
                  batch_size: int, probabilities: bool, confidence: bool = False) -> Iterator[CorePrediction]:
    """Each tile's core result, computed on the device (crop stitching)."""
    for empty, batch in batches(source.stream(tiles, read_ahead(batch_size)), batch_size):
        for tile, _, _ in empty:
            yield CorePrediction(tile, None, None, 0)
        if batch:
            yield from _core_batch(model, device, source, batch, probabilities, confidence)


def _forward(model: FCNBase, device: torch.device, source: TileSource,
             batch: list[TileInput]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's float32 logits and its (n, h, w) validity, both on the device. A batch the
    device's memory cannot hold runs in halves, and later batches of that shape in parts that fit
    (the default batch is an estimate); a single tile it cannot hold is an error that says what
    to change."""
    key = (str(device), batch[0][1].shape)
    fits = _FITTING_BATCH.get(key, len(batch))
    if len(batch) <= fits:
        try:
            return _forward_once(model, device, source, batch)
        except torch.OutOfMemoryError:
            pass  # handled below: leaving the handler frees the tensors its traceback holds
        if len(batch) == 1:
            height, width = batch[0][1].shape[1:]
            raise DeviceMemoryError(f"{device}: out of memory for one tile of {width}x{height} px (core + halo); "
                                    "choose a smaller --tile")
        fits = _FITTING_BATCH[key] = len(batch) // 2
        log.warning("%s: a batch of %d tiles does not fit in memory; running %d at a time (--batch-size %d)",
                    device, len(batch), fits, fits)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    parts = [_forward(model, device, source, batch[i : i + fits]) for i in range(0, len(batch), fits)]
    return torch.cat([logits for logits, _ in parts]), torch.cat([valid for _, valid in parts])


#: The most tiles of one read-window shape that fit a forward pass on a device, once more did not.
_FITTING_BATCH: dict[tuple[str, tuple[int, ...]], int] = {}


def _forward_once(model: FCNBase, device: torch.device, source: TileSource,
                  batch: list[TileInput]) -> tuple[torch.Tensor, torch.Tensor]:
    staging = staging_for(device)
    pixels = staging.to_device([pixels for _, pixels, _ in batch])
    valid = staging.to_device([valid for _, _, valid in batch])
    x = normalize_on_device(pixels, valid, source.card.normalization, source.card.nodata)
    return tta_logits(model, x, source.tta, source.card.nodata.fill), valid  # the source's --tta views, averaged


@torch.inference_mode()
def _core_batch(model: FCNBase, device: torch.device, source: TileSource, batch: list[TileInput],
                probabilities: bool, confidence: bool = False) -> Iterator[CorePrediction]:
    logits, valid = _forward(model, device, source, batch)
    for i, (tile, _, _) in enumerate(batch):
        rows, cols = tile.core_in_read
        core = logits[i, :, rows, cols]
        core_valid = valid[i, rows, cols]
        labels = core.argmax(dim=0).to(torch.uint8).masked_fill_(~core_valid, NODATA)
        probs = top = None
        if probabilities or confidence:
            quantised = torch.softmax(core, dim=0).clamp(0, 1).mul(PROBABILITY_SCALE).round().to(torch.uint8)
            if confidence:  # the label's quantised probability: the largest (rounding is monotone)
                top = quantised.amax(dim=0).masked_fill_(~core_valid, NODATA).cpu().numpy()
            if probabilities:
                probs = quantised.masked_fill_(~core_valid, NODATA).cpu().numpy()
        yield CorePrediction(tile, labels.cpu().numpy(), probs, int(core_valid.sum()), top)


def core_result(
    tile: Tile, scores: np.ndarray, valid: np.ndarray, probabilities: bool
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """From probabilities over the read window: the core's labels (argmax, 255 on nodata),
    quantised probabilities if asked, valid pixel count (blend's first pass)."""
    core_scores = scores[(slice(None), *tile.core_in_read)]
    core_valid = valid[tile.core_in_read]
    labels = core_scores.argmax(axis=0).astype(np.uint8)
    labels[~core_valid] = NODATA
    probs = quantize_probabilities(core_scores, core_valid) if probabilities else None
    return labels, probs, int(core_valid.sum())
