"""The label store's overview pyramid: which levels it has, and the *mode* that makes them.

A level of factor f holds, per f x f block of full-resolution pixels, the most frequent class
(255 = nodata is never counted; a block is 255 only when all its pixels are; ties go to the
smallest class id; blocks cut by the raster's edge count only the pixels inside it). Averaging
would invent classes, so a class map is only ever reduced this way.

Levels follow GDAL's overviews (factors 2, 4, 8 ... down to a long side <= 256 px,
``overview_factors``), so a COG takes them as they are. A level is written *per chunk* by the
worker that writes the chunk when its factor divides the chunk size and leaves at least
``MIN_LEVEL_CHUNK`` pixels per level chunk: each level chunk then maps to one store chunk, and
concurrent writers never share one. The coarser levels are made once the store is complete, from
the coarsest per-chunk level (or from full resolution when there is none): each of their pixels is
the mode of the finer level's modes, which is close to, but not always, the mode of all the
pixels it covers.

This module is numpy only: which levels, and the mode of blocks. ``store.py`` does the Zarr I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NODATA = 255  # the store's nodata label (store.NODATA: this module stays free of Zarr)
#: How levels are made, as the multiscales convention's ``resampling_method`` names it.
MODE = "mode"
#: A level computed per chunk keeps at least this many pixels per side in each of its chunks.
MIN_LEVEL_CHUNK = 32
#: Pixels and class counts (blocks x classes) held at once while taking modes: bound the memory of a strip.
STRIP_PIXELS = 1 << 20
COUNTS_BUDGET = 1 << 21


def overview_factors(height: int, width: int, smallest: int = 256) -> list[int]:
    """2, 4, 8 ... until the overview fits in ``smallest`` pixels."""
    factors, factor = [], 2
    while max(height, width) / factor >= smallest / 2 and factor <= 2**12:
        factors.append(factor)
        factor *= 2
    return factors


@dataclass(frozen=True)
class Level:
    """One overview level: the child group ``name`` of the store holds its ``labels``."""

    factor: int
    per_chunk: bool  # written with each chunk by the workers; else made once the store is complete

    @property
    def name(self) -> str:
        """The child group: the level's index (factor 2**index), as the multiscales convention's examples."""
        return str(self.factor.bit_length() - 1)


#: Full resolution, the store's own ``labels``.
FULL = Level(1, True)


def written_per_chunk(factor: int, chunk: tuple[int, int]) -> bool:
    """Whether a level can be computed chunk by chunk: f divides the chunk and leaves >= 32 px per side."""
    return all(c % factor == 0 and c // factor >= MIN_LEVEL_CHUNK for c in chunk)


def pyramid_levels(height: int, width: int, chunk: tuple[int, int]) -> list[Level]:
    """Every overview level of a store, finest first."""
    return [Level(f, written_per_chunk(f, chunk)) for f in overview_factors(height, width)]


def level_shape(height: int, width: int, factor: int) -> tuple[int, int]:
    """A level's size: blocks cut by the edge still make a pixel (GDAL's overview size too)."""
    return -(-height // factor), -(-width // factor)


def class_count(labels: np.ndarray, num_classes: int = 0) -> int:
    """Classes to count: ``num_classes`` or more when a larger id is present (255 aside)."""
    top = int(labels.max(initial=0))
    if top == NODATA:
        top = int(np.max(labels, where=labels != NODATA, initial=0))
    return max(num_classes, top + 1)


def block_modes(labels: np.ndarray, factors: list[int], num_classes: int = 0) -> dict[int, np.ndarray]:
    """The mode of every f x f block of ``labels`` (uint8, 255 = nodata) for each f of ``factors``
    (powers of two; ``labels`` starts on a block corner; blocks cut by its end count what is inside).

    Per class, a 0/1 plane of the strip is summed 2 x 2 up to the finest factor; coarser counts
    are sums of 2 x 2 finer ones, so every level is the mode of its full-resolution pixels. Strips
    keep pixels and blocks x classes within STRIP_PIXELS and COUNTS_BUDGET.
    """
    if not factors:
        return {}
    factors = sorted(factors)
    n = class_count(labels, num_classes)
    strip = _strip_rows(labels.shape[1], factors, n)
    parts: dict[int, list[np.ndarray]] = {f: [] for f in factors}
    for r0 in range(0, labels.shape[0], strip):
        for f, modes in _strip_modes(labels[r0 : r0 + strip], factors, n).items():
            parts[f].append(modes)
    return {f: np.concatenate(p, axis=0) for f, p in parts.items()}


def _strip_rows(width: int, factors: list[int], n: int) -> int:
    """Rows per strip: a multiple of the largest factor, within STRIP_PIXELS and COUNTS_BUDGET
    (one strip of the largest factor's rows at least)."""
    finest, largest = factors[0], factors[-1]
    by_pixels = STRIP_PIXELS // max(1, width)
    by_counts = COUNTS_BUDGET // max(1, -(-width // finest) * n) * finest
    return max(largest, min(by_pixels, by_counts) // largest * largest)


def _strip_modes(strip: np.ndarray, factors: list[int], n: int) -> dict[int, np.ndarray]:
    """Modes of one strip at every factor, from the class counts of its finest blocks."""
    counts = block_counts(strip, factors[0], n)
    out, factor = {}, factors[0]
    for f in factors:
        while factor < f:
            factor *= 2
            counts = pool2(counts, factor)
        out[f] = mode_of_counts(counts)
    return out


def block_counts(labels: np.ndarray, factor: int, n: int) -> np.ndarray:
    """Per f x f block, how many pixels of each class 0..n-1 it holds: (n, rows, cols).
    Nodata (255) is in no class, so it is never counted."""
    h, w = labels.shape
    counts = np.empty((n, -(-h // factor), -(-w // factor)), dtype=count_dtype(factor))
    for c in range(n):
        plane, f = (labels == c).view(np.uint8)[None], 1
        while f < factor:
            f *= 2
            plane = pool2(plane, f)
        counts[c] = plane[0]
    return counts


def count_dtype(factor: int) -> np.dtype:
    """The smallest unsigned type that holds a count of factor x factor pixels."""
    return np.dtype(np.uint8 if factor <= 8 else np.uint16 if factor <= 128 else np.uint32)


def pool2(counts: np.ndarray, factor: int) -> np.ndarray:
    """(classes, rows, cols) counts of 2 x 2 blocks (``factor``) from those of their quarters; a
    block cut by the edge sums the quarters it has."""
    _, h, w = counts.shape
    if h % 2 or w % 2:
        counts = np.pad(counts, ((0, 0), (0, h % 2), (0, w % 2)))
    dtype = count_dtype(factor)
    rows = np.add(counts[:, 0::2], counts[:, 1::2], dtype=dtype)
    return np.add(rows[:, :, 0::2], rows[:, :, 1::2], dtype=dtype)


def mode_of_counts(counts: np.ndarray) -> np.ndarray:
    """The most frequent class per block of (classes, rows, cols) counts (ties: the smallest id),
    255 where a block has no class. A pass per class: faster than argmax over a short axis."""
    best = counts[0].copy()
    modes = np.zeros(best.shape, dtype=np.uint8)
    for c in range(1, counts.shape[0]):
        better = counts[c] > best
        np.copyto(best, counts[c], where=better)
        modes[better] = c
    modes[best == 0] = NODATA
    return modes


def multiscales_layout(levels: list[Level], shape: tuple[int, int], transform: tuple[float, ...],
                       array: str) -> list[dict]:
    """The multiscales convention's ``layout``: full resolution (the root's ``array``), then each level
    with its scale relative to the level it was made from and its own grid (``spatial:transform``,
    ``spatial:shape``; same origin, pixels f times larger)."""
    a, b, c, d, e, f0 = transform
    entries = [{"asset": array, "transform": {"scale": [1.0, 1.0], "translation": [0.0, 0.0]},
                "spatial:transform": [a, b, c, d, e, f0], "spatial:shape": list(shape)}]
    source = source_level(levels)
    for level in levels:
        origin = FULL if level.per_chunk else source
        ratio = float(level.factor // origin.factor)
        entries.append({
            "asset": f"{level.name}/{array}",
            "derived_from": array if origin.factor == 1 else f"{origin.name}/{array}",
            "transform": {"scale": [ratio, ratio], "translation": [0.0, 0.0]},
            "resampling_method": MODE,
            "spatial:transform": [a * level.factor, b, c, d, e * level.factor, f0],
            "spatial:shape": list(level_shape(*shape, level.factor)),
        })
    return entries


def source_level(levels: list[Level]) -> Level:
    """What the levels made after the store is complete are computed from: the coarsest per-chunk
    level, or full resolution (factor 1) when the chunks are too small for any."""
    per_chunk = [lv for lv in levels if lv.per_chunk]
    return per_chunk[-1] if per_chunk else FULL
