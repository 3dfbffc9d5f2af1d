"""A training scene's per-band statistics, from random windows read one at a time.

The mean and standard deviation are the normalisation the model keeps; the percentiles
(2, 25, 50, 75, 98: ``models.card.RobustStatistics``) go into the card beside them, so a scene whose
radiometry differs can be compared with the training scene's (issue 27), and the photometric
augmentation bends its gamma over the 2-98 % range. Memory is bounded by the window, never the
scene: 8- and 16-bit bands are counted in an exact histogram (65,536 bins at most), other types
keep an evenly spaced subsample of at most ``SUBSAMPLE`` values per window and band.

A loose module, not ``training/``'s: ``segment --normalize scene`` and ``evaluate --normalize scene``
compute the input's own statistics with the same reader at plan time (``matched_normalization``),
and ``segment/`` may not import ``training/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from rasterio.io import DatasetReader
from rasterio.windows import Window

from fcnseg.errors import CheckpointError
from fcnseg.models.card import ModelCard, Normalization, RobustStatistics
from fcnseg.pipeline.io import InputError, read_pixels

PERCENTILES = (2, 25, 50, 75, 98)
#: The windows' seed of an input's statistics at inference: the same input gives the same numbers.
SCENE_SEED = 0
#: How a run normalises its input: the card's mean and std, or those matched to the input's statistics.
NORMALIZE_MODES = ("card", "scene")
#: Values per window and band kept for the percentiles of bands not 8 or 16 bits wide.
SUBSAMPLE = 4096
_HISTOGRAM_TYPES = ("uint8", "int8", "uint16", "int16")


#: One window's selected bands as stored, (bands, h, w), and their (h, w) validity (``io.read_pixels``'s shape).
WindowReader = Callable[[Window], tuple[np.ndarray, np.ndarray]]


def scene_statistics(
    src: DatasetReader, bands: Sequence[int], *, windows: int = 64, size: int = 256, seed: int = 0
) -> tuple[Normalization, RobustStatistics]:
    """Per-band mean and std, and percentiles, of the valid pixels of ``windows`` random windows."""
    return window_statistics(src.height, src.width, [src.dtypes[b - 1] for b in bands],
                             lambda window: read_pixels(src, bands, window), windows=windows, size=size, seed=seed,
                             name=src.name)


def window_statistics(
    height: int, width: int, dtypes: Sequence[str], read: WindowReader, *, windows: int = 64, size: int = 256,
    seed: int = 0, name: str,
) -> tuple[Normalization, RobustStatistics]:
    """``scene_statistics`` of any (bands, ``height``, ``width``) pixels ``read`` a window at a time:
    a file's, or an array's in memory (``predict_array``), the same windows for the same size and seed;
    ``name`` names the pixels in the error where no window holds a valid one."""
    rng = np.random.default_rng(seed)
    size = min(size, height, width)
    bands = len(dtypes)
    total = np.zeros(bands)
    total_sq = np.zeros(bands)
    count = 0
    dtype = np.dtype(dtypes[0])
    counted = all(np.dtype(d) == dtype for d in dtypes) and dtype.name in _HISTOGRAM_TYPES
    histograms = np.zeros((bands, 1 << (8 * dtype.itemsize)), np.int64) if counted else None
    kept: list[np.ndarray] = []
    for _ in range(windows):
        col, row = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
        pixels, valid = read(Window(col, row, size, size))
        values = pixels[:, valid].astype(np.float64)
        total += values.sum(axis=1)
        total_sq += (values**2).sum(axis=1)
        count += values.shape[1]
        if histograms is not None:
            shifted = (pixels[:, valid].astype(np.int64) - int(np.iinfo(dtype).min))
            for b in range(bands):
                histograms[b] += np.bincount(shifted[b], minlength=histograms.shape[1])
        elif values.shape[1]:
            kept.append(values[:, :: max(1, values.shape[1] // SUBSAMPLE)].astype(np.float32))
    if count == 0:
        raise InputError(f"{name}: no valid pixel found to compute band statistics")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    normalization = Normalization(mean=[float(m) for m in mean], std=[float(max(s, 1e-6)) for s in std])
    if histograms is not None:
        rows = histogram_percentiles(histograms, int(np.iinfo(dtype).min))
    else:
        rows = np.percentile(np.concatenate(kept, axis=1), PERCENTILES, axis=1, method="inverted_cdf")
    values = {f"p{q}": [float(v) for v in row] for q, row in zip(PERCENTILES, rows, strict=True)}
    return normalization, RobustStatistics(**values, pixels=int(count))


def histogram_percentiles(histograms: np.ndarray, first: int) -> np.ndarray:
    """(percentiles, bands): per band the smallest value whose cumulative count reaches q % of the
    pixels (numpy's ``inverted_cdf``), from (bands, values) counts of values ``first``, ``first + 1``, ..."""
    cumulative = histograms.cumsum(axis=1)
    out = np.empty((len(PERCENTILES), histograms.shape[0]))
    for i, q in enumerate(PERCENTILES):
        target = q / 100 * cumulative[:, -1]
        out[i] = [np.searchsorted(row, t, side="left") + first for row, t in zip(cumulative, target, strict=True)]
    return out


def scene_normalization(src: DatasetReader, bands: Sequence[int], card: ModelCard, model: str) -> Normalization:
    """The card's normalisation matched to this input (``--normalize scene``): the input's robust
    statistics from random windows (``SCENE_SEED``, bounded memory, nodata left out as the tile
    reader leaves it out) mapped onto the training scene's (``matched_normalization``). A card
    without statistics (trained before them) fails in one line naming ``model``."""
    check_card_statistics(card, model)
    _, statistics = scene_statistics(src, bands, seed=SCENE_SEED)
    return matched_normalization(card.normalization, card.statistics, statistics)


def check_card_statistics(card: ModelCard, model: str) -> None:
    """A card trained before robust statistics cannot be matched to an input: one line naming ``model``."""
    if card.statistics is None:
        raise CheckpointError(f"{model}: the model card has no training statistics, so --normalize scene cannot "
                              "match this input to its training scene; retrain the model with this fcnseg "
                              "(or use --normalize card)")


def matched_normalization(card: Normalization, training: RobustStatistics, scene: RobustStatistics) -> Normalization:
    """Per band the normalisation that maps the scene's median and spread onto the training scene's.

    With a band's scene ``x_s = a * x_c + b`` (``a`` the ratio of the interquartile ranges, ``b``
    placing the medians: ``p50_s = a * p50_c + b``), ``(x_s - mean') / std'`` equals the card's
    ``(x_c - mean_c) / std_c`` for ``std' = a * std_c`` and ``mean' = p50_s - a * (p50_c - mean_c)``.
    Where an interquartile range is 0 (a band mostly one value) the 2-98 % range gives ``a``, and
    where that is 0 too, ``a`` is 1: the medians are still matched.
    """
    mean, std = [], []
    for band, (mean_c, std_c) in enumerate(zip(card.mean, card.std, strict=True)):
        a = 1.0
        for low, high in (("p25", "p75"), ("p2", "p98")):
            spread_c = getattr(training, high)[band] - getattr(training, low)[band]
            spread_s = getattr(scene, high)[band] - getattr(scene, low)[band]
            if spread_c > 0 and spread_s > 0:
                a = spread_s / spread_c
                break
        mean.append(float(scene.p50[band] - a * (training.p50[band] - mean_c)))
        std.append(float(a * std_c))
    return Normalization(mean=mean, std=std)
