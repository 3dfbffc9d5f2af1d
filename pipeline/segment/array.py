"""``segment``'s tile loop on an array in memory: the same tiles, halo, batches, nodata rule,
normalisation and stitching, into numpy arrays instead of a Zarr store.

Why not a second tiler: every pixel here goes through the functions a segment run's workers use
(``tiles.iter_tiles``, ``predict.predict_cores`` / ``predict_tiles``, ``blend.ring_contribution``
and ``blend.blend_core``, with the tiles from ``memory_source.ArraySource``), so the labels equal
what ``segment`` writes to labels.zarr for the same pixels, bit for bit, for crop and for blend.

Memory: the outputs (uint8, one per pixel; probabilities one per class and pixel) and, for blend,
the ring contributions of the tiles whose 3x3 neighbourhood is not finished yet (about two rows of
tiles); the float input is never copied beyond a batch of tiles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from fcnseg.errors import InputError
from fcnseg.models.card import ModelCard
from fcnseg.models.fcn import FCNBase
from fcnseg.models.sizing import default_tiling
from fcnseg.models.tta import check_tta
from fcnseg.pipeline.band_statistics import (
    NORMALIZE_MODES,
    SCENE_SEED,
    check_card_statistics,
    matched_normalization,
    window_statistics,
)
from fcnseg.pipeline.cluster_specs import torch_threads
from fcnseg.pipeline.segment.blend import BlendGrid, blend_core, ring_contribution, ramp_width
from fcnseg.pipeline.segment.memory_source import ArraySource
from fcnseg.pipeline.engine.predict import core_result, predict_cores, predict_tiles
from fcnseg.pipeline.store import NODATA
from fcnseg.pipeline.tiles import Tile, check_tiling, default_halo, iter_tiles

log = logging.getLogger(__name__)

STITCHES = ("crop", "blend")


@dataclass(frozen=True)
class ArrayTiling:
    """The tiling a run on an array of ``height`` x ``width`` uses (as ``plan_run`` sizes it)."""

    height: int
    width: int
    tile: int
    halo: int
    batch_size: int

    def tiles(self) -> list[Tile]:
        return list(iter_tiles(self.height, self.width, self.tile, self.halo))


def array_tiling(card: ModelCard, device: torch.device, shape: tuple[int, ...], tile: int | None,
                 halo: int | None, batch_size: int | None) -> ArrayTiling:
    """Tile, halo and batch for a (bands, rows, cols) array: what is given, else what ``segment``
    would choose on ``device`` (``SegmentOptions.sized``), so the two cut the same tiles."""
    check_tiling(tile, halo, batch_size)
    if len(shape) != 3:
        raise InputError(f"array: expected (bands, rows, cols), got shape {tuple(shape)}")
    bands, height, width = shape
    if bands != card.bands:
        raise InputError(f"array: has {bands} bands, the model takes {card.bands} (select them before predicting)")
    if height == 0 or width == 0:
        raise InputError(f"array: empty ({width}x{height} px)")
    halo = default_halo(card.arch) if halo is None else halo
    tile, batch_size = default_tiling(card.width, halo, device, tile, batch_size)
    return ArrayTiling(height, width, tile, halo, batch_size)


def check_pixel_type(dtype: np.dtype) -> None:
    """Refuse what the model cannot take as pixel values, as ``io.check_pixel_types`` does for a
    raster: complex values (the float cast would drop the imaginary part without a word), text, objects."""
    if dtype.kind not in "biuf":
        raise InputError(f"array: holds {dtype} values; the model takes real pixel values"
                         " (convert it first, e.g. complex to amplitude)")


def predict_pixels(
    model: FCNBase, card: ModelCard, device: torch.device, array: Any, *, tile: int | None = None,
    halo: int | None = None, stitch: str = "crop", batch_size: int | None = None,
    nodata: list[float | None] | None = None, probabilities: bool = False, tta: str = "none",
    normalize: str = "card", model_name: str = "model",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (rows, cols) uint8, 255 on nodata, and with ``probabilities`` the quantised class
    probabilities (classes, rows, cols) uint8 (p x 254, 255 on nodata) of a (bands, rows, cols)
    array, as labels.zarr holds them. ``nodata``: one value per band (None: none); ``tta``: the
    views each tile's logits are averaged over (``models.tta``); ``normalize``: the card's
    normalisation, or (``"scene"``) that matched to the array's statistics (``scene_card``)."""
    if stitch not in STITCHES:
        raise ValueError(f"stitch must be crop or blend, got {stitch!r}")
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be card or scene, got {normalize!r}")
    check_tta(tta)
    check_pixel_type(np.dtype(array.dtype))
    tiling = array_tiling(card, device, tuple(array.shape), tile, halo, batch_size)
    nodata = nodata or [None] * card.bands
    if normalize == "scene":
        card = scene_card(card, array, nodata, model_name)
    source = ArraySource(array, card, nodata, tta=tta)
    labels = np.full((tiling.height, tiling.width), NODATA, dtype=np.uint8)
    probs = np.full((card.num_classes, tiling.height, tiling.width), NODATA, dtype=np.uint8) if probabilities else None
    log.debug("array %dx%d px: tile %d, halo %d, batch %d, %s, tta %s", tiling.width, tiling.height, tiling.tile,
              tiling.halo, tiling.batch_size, stitch, tta)
    with segment_threads(device):
        if stitch == "crop":
            _crop(model, device, source, tiling, labels, probs)
        else:
            _blend(model, device, source, tiling, labels, probs)
    return labels, probs


def scene_card(card: ModelCard, array: Any, nodata: list[float | None], model_name: str) -> ModelCard:
    """``card`` with its normalisation matched to the array's own statistics, from the random
    windows ``segment --normalize scene`` reads of a file of the same pixels (``SCENE_SEED``), so
    the two normalise alike; a card without statistics fails in one line naming ``model_name``."""
    check_card_statistics(card, model_name)
    bands, height, width = array.shape
    reader = ArraySource(array, card, nodata)
    _, statistics = window_statistics(height, width, [np.dtype(array.dtype).name] * bands, reader.read_window,
                                      seed=SCENE_SEED, name="array")
    return replace(card, normalization=matched_normalization(card.normalization, card.statistics, statistics))


@contextmanager
def segment_threads(device: torch.device) -> Iterator[None]:
    """On the CPU, torch's threads as a segment run's workers on this machine have them (in this
    process or a local cluster: ``torch_threads`` of ``local_worker_count``), put back afterwards.
    A convolution's sums depend on how its work is split between threads (the last bits of a logit
    differ), so another count could turn a near tie into another label."""
    if device.type != "cpu":
        yield
        return
    from fcnseg.pipeline.segment import local_worker_count

    previous = torch.get_num_threads()
    torch.set_num_threads(torch_threads(local_worker_count("cpu")))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _crop(model: FCNBase, device: torch.device, source: ArraySource, tiling: ArrayTiling,
          labels: np.ndarray, probs: np.ndarray | None) -> None:
    """Each tile keeps its core (``predict_cores``: argmax on the device, as a crop task does)."""
    for core in predict_cores(model, device, source, tiling.tiles(), tiling.batch_size, probs is not None):
        if core.labels is None:  # no valid pixel: left 255, as the store leaves such a chunk unwritten
            continue
        rows, cols = core.tile.core.toslices()
        labels[rows, cols] = core.labels
        if probs is not None:
            probs[:, rows, cols] = core.probabilities


class _Rings:
    """Blend's pass-1 ring contributions kept in memory until every chunk that needs them is final."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.by_tile: dict[tuple[int, int], np.ndarray] = {}

    def part(self, other: Tile, rows: slice, cols: slice) -> np.ndarray:
        """Like the scratch store's ring array: zeros for a tile that stored none (nodata core, ramp 0)."""
        ring = self.by_tile.get((other.row, other.col))
        if ring is None:
            return np.zeros((self.channels, rows.stop - rows.start, cols.stop - cols.start), dtype=np.float32)
        return ring[:, rows, cols]


def _blend(model: FCNBase, device: torch.device, source: ArraySource, tiling: ArrayTiling,
           labels: np.ndarray, probs: np.ndarray | None) -> None:
    """Blend's two passes (``blend``): pass 1 per tile as its scores come, pass 2 per chunk as soon
    as the pass 1 of its 3x3 neighbourhood is done; a ring is dropped once no chunk needs it."""
    tiles = tiling.tiles()
    grid = BlendGrid(tiling.height, tiling.width, ramp_width(tiling.tile, tiling.halo))
    by_index = {(t.row, t.col): t for t in tiles}
    rings = _Rings(source.card.num_classes + 1)  # one per class, then the weight
    passed: set[tuple[int, int]] = set()
    final: set[tuple[int, int]] = set()
    for tile, scores, valid in predict_tiles(model, device, source, tiles, tiling.batch_size):
        if scores is not None:
            if grid.ramp > 0:
                rings.by_tile[(tile.row, tile.col)] = ring_contribution(tile, scores, valid, grid)
            core_labels, core_probs, _ = core_result(tile, scores, valid, probs is not None)
            rows, cols = tile.core.toslices()
            labels[rows, cols] = core_labels
            if probs is not None:
                probs[:, rows, cols] = core_probs
        passed.add((tile.row, tile.col))
        for key in _around(tile.row, tile.col, by_index):
            if key not in final and all(k in passed for k in _around(*key, by_index)):
                _final_chunk(by_index[key], [by_index[k] for k in _around(*key, by_index) if k != key],
                             grid, labels, probs, rings)
                final.add(key)
        for key in list(rings.by_tile):
            if all(k in final for k in _around(*key, by_index)):
                del rings.by_tile[key]


def _around(row: int, col: int, by_index: dict[tuple[int, int], Tile]) -> Iterable[tuple[int, int]]:
    """The tile itself, then its neighbours in pass 2's order (``blend.blend_tasks``)."""
    keys = [(row, col)] + [(row + dr, col + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]
    return [k for k in keys if k in by_index]


def _final_chunk(tile: Tile, neighbours: list[Tile], grid: BlendGrid, labels: np.ndarray,
                 probs: np.ndarray | None, rings: _Rings) -> None:
    """Pass 2 of one chunk, in place (``blend.blend_pass2``: a chunk without a valid pixel stays 255)."""
    rows, cols = tile.core.toslices()
    core_labels = labels[rows, cols].copy()
    if not (core_labels != NODATA).any():
        return
    core_probs = probs[:, rows, cols].copy() if probs is not None else None
    core_labels, core_probs = blend_core(tile, neighbours, grid, core_labels, core_probs, rings.part, rings.channels)
    labels[rows, cols] = core_labels
    if probs is not None:
        probs[:, rows, cols] = core_probs
