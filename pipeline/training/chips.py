"""Training chips read window by window from disk (never the whole raster).

Two ways to place a chip. ``uniform``: anywhere, drawn again while too few pixels are labelled
(the original sampler). ``labelled``: centred in a coarse cell that holds labelled pixels of a
class, each class present drawn with equal chance, so a few polygons over a large scene and a
rare class still train. The cells come from a ``LabelIndex`` built by scanning the labels window
by window (memory follows the window and the coarse grid, not the scene).

Without a validation raster, spatial blocks of the training scene are held out (``Holdout``):
their labels are never trained on. A chip that reaches into a block sees its image as context,
with the block's labels masked (keeping chips a chip's reach away from every block instead left
most of a small scene out of training). Chip ``k`` of a run is drawn from its own generator seeded with
``(seed, k)``, so a thread pool may read chips in any order and still yields exactly the chips a
serial run yields.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.io import DatasetReader
from rasterio.windows import Window

from fcnseg.models.checkpoint import ModelCard, Normalization
from fcnseg.pipeline.io import InputError, normalize, read_pixels
from fcnseg.pipeline.training.augment import Augmenter
from fcnseg.pipeline.training.labels import UNLABELLED, LabelSource
from fcnseg.pipeline.band_statistics import scene_statistics

log = logging.getLogger(__name__)

SAMPLING = ("labelled", "uniform")
#: Side in pixels of the windows the label index is built from: bounds the scan's memory.
INDEX_WINDOW = 2048
#: Most cells the coarse label index keeps per class (4 bytes each); the cell grows past it.
MAX_INDEX_CELLS = 1 << 22


@dataclass
class LabelIndex:
    """Labelled pixels per class per ``cell`` x ``cell`` square of the scene: (classes, rows, cols)."""

    counts: np.ndarray
    cell: int
    height: int
    width: int

    @property
    def class_counts(self) -> np.ndarray:
        return self.counts.sum(axis=(1, 2), dtype=np.int64)


def index_cell(chip: int, height: int, width: int) -> int:
    """A cell at most half a chip wide, so a chip centred anywhere in a cell covers the whole cell;
    doubled while the grid would exceed ``MAX_INDEX_CELLS``."""
    cell = max(1, chip // 4)
    while math.ceil(height / cell) * math.ceil(width / cell) > MAX_INDEX_CELLS:
        cell *= 2
    return cell


def cell_counts(labels: np.ndarray, num_classes: int, cell: int) -> np.ndarray:
    """(classes, ceil(h/cell), ceil(w/cell)) pixel counts of each class in one label window."""
    h, w = labels.shape
    rows, cols = -(-h // cell), -(-w // cell)
    padded = np.full((rows * cell, cols * cell), UNLABELLED, np.uint8)
    padded[:h, :w] = labels
    blocks = padded.reshape(rows, cell, cols, cell)
    return np.stack([(blocks == k).sum(axis=(1, 3)) for k in range(num_classes)]).astype(np.uint32)


def build_label_index(labels: LabelSource, height: int, width: int, num_classes: int, cell: int) -> LabelIndex:
    """Scan the labels in windows of about ``INDEX_WINDOW`` pixels (a whole number of cells)."""
    counts = np.zeros((num_classes, -(-height // cell), -(-width // cell)), np.uint32)
    step = max(cell, INDEX_WINDOW // cell * cell)
    for row in range(0, height, step):
        for col in range(0, width, step):
            window = Window(col, row, min(step, width - col), min(step, height - row))
            part = cell_counts(labels.read(window), num_classes, cell)
            r, c = row // cell, col // cell
            counts[:, r : r + part.shape[1], c : c + part.shape[2]] = part
    return LabelIndex(counts, cell, height, width)


def box_sum(grid: np.ndarray, radius: int) -> np.ndarray:
    """Sum over the (2 radius + 1)^2 neighbourhood of each cell of the last two axes (zero outside)."""
    padded = np.pad(grid.astype(np.float64), [(0, 0)] * (grid.ndim - 2) + [(radius + 1, radius)] * 2)
    total = padded.cumsum(-1).cumsum(-2)
    k = 2 * radius + 1
    return total[..., k:, k:] - total[..., :-k, k:] - total[..., k:, :-k] + total[..., :-k, :-k]


@dataclass
class Holdout:
    """Blocks of ``block`` pixels held out of training (True in ``held``), validated on instead."""

    held: np.ndarray
    block: int
    height: int
    width: int

    def mask(self, window: Window) -> np.ndarray:
        """(height, width) of ``window``: True on pixels of held-out blocks."""
        rows = (int(window.row_off) + np.arange(int(window.height))) // self.block
        cols = (int(window.col_off) + np.arange(int(window.width))) // self.block
        return self.held[np.ix_(rows, cols)]

    def windows(self) -> list[Window]:
        """The held-out blocks as windows, clipped to the scene."""
        out = []
        for r, c in zip(*np.nonzero(self.held), strict=True):
            row, col = int(r) * self.block, int(c) * self.block
            out.append(Window(col, row, min(self.block, self.width - col), min(self.block, self.height - row)))
        return out


def choose_holdout(index: LabelIndex, fraction: float, block: int, seed: int) -> Holdout:
    """Hold out labelled blocks, stratified by class: in a seeded random order, a block is taken
    when it adds pixels of a class still short of ``fraction`` of its labelled pixels and takes no
    class past that share (so a class in a few polygons keeps them for training rather than being
    scored on them, and every class that can be split is split about alike)."""
    cells = max(1, block // index.cell)
    block = cells * index.cell
    _, rows, cols = index.counts.shape
    br, bc = -(-rows // cells), -(-cols // cells)
    padded = np.zeros((index.counts.shape[0], br * cells, bc * cells), np.int64)
    padded[:, :rows, :cols] = index.counts
    per_block = padded.reshape(-1, br, cells, bc, cells).sum(axis=(2, 4)).reshape(-1, br * bc)
    share = fraction * index.class_counts
    held = np.zeros(br * bc, bool)
    taken = np.zeros_like(share)
    rng = np.random.default_rng([seed, 1])
    for b in rng.permutation(np.nonzero(per_block.sum(axis=0))[0]):
        adds = per_block[:, b]
        if np.all(taken + adds <= share) and np.any((adds > 0) & (taken < share)):
            held[b] = True
            taken += adds
    return Holdout(held.reshape(br, bc), block, index.height, index.width)


def held_cells(index: LabelIndex, holdout: Holdout | None) -> np.ndarray:
    """(rows, cols) cells inside held-out blocks (blocks are a whole number of cells)."""
    rows, cols = index.counts.shape[1:]
    if holdout is None:
        return np.zeros((rows, cols), bool)
    per = holdout.block // index.cell
    return np.repeat(np.repeat(holdout.held, per, axis=0), per, axis=1)[:rows, :cols]


def cell_probabilities(index: LabelIndex, allowed: np.ndarray) -> np.ndarray:
    """Flat probability of each cell: a class drawn with equal chance among those with labelled
    pixels in allowed cells, then a cell in proportion to that class's pixels there."""
    counts = index.counts.astype(np.float64) * allowed
    totals = counts.sum(axis=(1, 2))
    present = totals > 0
    if not present.any():
        raise InputError("no labelled pixel left to sample training chips from")
    probs = (counts[present] / totals[present, None, None]).mean(axis=0)
    return probs.ravel()


def expected_class_pixels(index: LabelIndex, probs: np.ndarray, chip: int, held: np.ndarray | None = None
                          ) -> np.ndarray:
    """Labelled pixels per class an average chip holds under ``probs``: the class frequencies
    training actually sees, which class-weighted sampling shifts away from the scene's (labels
    in ``held`` cells are masked out of every chip)."""
    counts = index.counts if held is None else index.counts * ~held
    near = box_sum(counts, max(0, chip // (2 * index.cell)))
    return (near * probs.reshape(index.counts.shape[1:])).sum(axis=(1, 2))


def median_frequency_weights(counts: Sequence[float]) -> np.ndarray:
    """Median frequency balancing (Eigen & Fergus 2015): weight_c = median(freq) / freq_c over the
    classes with pixels; a class without pixels gets 1 (it never reaches the loss)."""
    counts = np.asarray(counts, np.float64)
    weights = np.ones_like(counts)
    present = counts > 0
    if present.any():
        freq = counts[present] / counts[present].sum()
        weights[present] = np.median(freq) / freq
    return weights


def thread_labels(labels: LabelSource) -> LabelSource:
    """A label source one more thread may read: a raster's copy gets its own dataset handle (and
    keeps every other setting, such as a value lookup); vector labels are read-only and shared."""
    if not isinstance(getattr(labels, "src", None), DatasetReader):
        return labels
    clone = copy.copy(labels)
    clone.src = rasterio.open(labels.src.name)
    return clone


class ChipSampler:
    """Batches of (normalised image, labels) chips of one raster pair, read ``workers`` at a time
    by a thread pool (one dataset handle per thread) while the model trains on the previous batch.

    A chip with too few labelled valid pixels (``min_labelled``, or none at all when sampling
    labelled cells) once the held-out blocks' labels are masked is drawn again. ``augment`` changes
    a drawn chip's radiometry (``augment.Augmenter``) with a generator of its own, seeded by
    ``(seed, k, 1)``: the windows are those of a run without it.
    """

    def __init__(
        self,
        src: DatasetReader,
        bands: Sequence[int],
        labels: LabelSource,
        card: ModelCard,
        *,
        chip: int,
        batch_size: int,
        seed: int = 0,
        sampling: str = "uniform",
        index: LabelIndex | None = None,
        holdout: Holdout | None = None,
        workers: int = 0,
        min_labelled: float = 0.05,
        max_tries: int = 50,
        augment: Augmenter | None = None,
    ) -> None:
        if chip > min(src.height, src.width):
            raise InputError(f"{src.name}: {src.width}x{src.height} is smaller than a {chip}px chip")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        self.src, self.bands, self.labels, self.card = src, list(bands), labels, card
        self.chip, self.batch_size, self.seed = chip, batch_size, seed
        self.holdout, self.max_tries, self.augment = holdout, max_tries, augment
        self.min_labelled = min_labelled if sampling == "uniform" else 0.0
        self.index, self.cdf = index, None
        if sampling == "labelled":
            if index is None:
                raise ValueError("labelled sampling needs a LabelIndex")
            self.cdf = np.cumsum(cell_probabilities(index, ~held_cells(index, holdout)))  # centres outside the blocks
        self.batches = 0
        self.workers = workers
        self._local = threading.local()
        self._opened: list = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="chips") if workers > 0 else None
        self._pending: list[Future] | None = None

    def window(self, rng: np.random.Generator) -> Window:
        """A chip window: uniform over the scene, or centred in a cell drawn from the index."""
        if self.cdf is None:
            row = int(rng.integers(0, self.src.height - self.chip + 1))
            col = int(rng.integers(0, self.src.width - self.chip + 1))
            return Window(col, row, self.chip, self.chip)
        flat = min(int(np.searchsorted(self.cdf, rng.random() * self.cdf[-1], side="right")), len(self.cdf) - 1)
        cell = self.index.cell
        r, c = divmod(flat, self.index.counts.shape[2])
        centre_row = min(r * cell + int(rng.integers(0, cell)), self.src.height - 1)
        centre_col = min(c * cell + int(rng.integers(0, cell)), self.src.width - 1)
        row = int(np.clip(centre_row - self.chip // 2, 0, self.src.height - self.chip))
        col = int(np.clip(centre_col - self.chip // 2, 0, self.src.width - self.chip))
        return Window(col, row, self.chip, self.chip)

    def _handles(self) -> tuple[DatasetReader, LabelSource]:
        """This thread's image and label handles (rasterio handles are not shared across threads)."""
        if self._pool is None:
            return self.src, self.labels
        if not hasattr(self._local, "src"):
            src = rasterio.open(self.src.name)
            labels = thread_labels(self.labels)
            self._local.src, self._local.labels = src, labels
            with self._lock:
                self._opened.append((src, labels))
        return self._local.src, self._local.labels

    def _enough(self, target: np.ndarray) -> bool:
        labelled = (target != UNLABELLED).mean()
        return bool(labelled > 0 and labelled >= self.min_labelled)

    def chip_at(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Chip number ``k`` of the run: the same whichever thread reads it, in whatever order."""
        _, x, target = self.draw(k)
        return x, target

    def draw(self, k: int) -> tuple[Window, np.ndarray, np.ndarray]:
        """Chip ``k``'s window, image and labels (held-out blocks' labels masked to 255)."""
        src, labels = self._handles()
        rng = np.random.default_rng([self.seed, k])
        for _ in range(self.max_tries):
            window = self.window(rng)
            target = labels.read(window)
            if self.holdout is not None:
                target[self.holdout.mask(window)] = UNLABELLED
            if not self._enough(target):  # the image's nodata only removes labels: skip its read
                continue
            pixels, valid = read_pixels(src, self.bands, window)
            target[~valid] = UNLABELLED
            if self._enough(target):
                if self.augment is not None:
                    pixels = self.augment(pixels, valid, np.random.default_rng([self.seed, k, 1]))
                return window, normalize(pixels, valid, self.card.normalization, self.card.nodata), target
        if self.min_labelled > 0:
            raise InputError(f"{self.src.name}: found no chip with {self.min_labelled:.0%} of its pixels labelled in"
                             f" {self.max_tries} tries (sparse labels: --sampling labelled)")
        raise InputError(f"{self.src.name}: found no chip with labelled valid pixels in {self.max_tries} tries")

    def _submit(self, batch: int) -> list[Future]:
        first = batch * self.batch_size
        return [self._pool.submit(self.chip_at, k) for k in range(first, first + self.batch_size)]

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch; with workers, the batch after it starts reading before this returns."""
        first = self.batches * self.batch_size
        if self._pool is None:
            chips = [self.chip_at(k) for k in range(first, first + self.batch_size)]
        else:
            pending = self._pending or self._submit(self.batches)
            self._pending = self._submit(self.batches + 1)
            chips = [f.result() for f in pending]
        self.batches += 1
        return np.stack([c[0] for c in chips]), np.stack([c[1] for c in chips])

    def close(self) -> None:
        """Stop the pool and close the handles its threads opened."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for src, labels in self._opened:
            if labels is not self.labels:
                labels.close()
            src.close()
        self._opened.clear()

    def __enter__(self) -> ChipSampler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def band_statistics(
    src: DatasetReader, bands: Sequence[int], *, windows: int = 64, size: int = 256, seed: int = 0
) -> Normalization:
    """Per-band mean and std of valid pixels over random windows: the normalisation a model keeps
    (``pipeline.band_statistics.scene_statistics``, without its percentiles)."""
    return scene_statistics(src, bands, windows=windows, size=size, seed=seed)[0]
