"""A chunk's per-class pixel counts (and true areas), taken by the worker that writes the chunk.

They travel in the chunk's ledger marker, so the run's class-area table is their sum
(``query.summed_classes``) and the finished store is never read again to count it. Projected and
pixel-coordinate stores need only the counts (one pixel area everywhere, applied once to the
sums, exactly as ``fcnseg query`` does); a geographic store's pixel area changes with latitude,
so its chunks also sum their pixels' true areas, row by row. A pass per class over the chunk is
faster than ``np.bincount``, which widens every uint8 to 8 bytes first (measured:
docs/benchmarks.md#figures-quoted-in-code-comments).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr
from rasterio.windows import Window

from fcnseg.pipeline.analysis.areas import row_pixel_areas_m2
from fcnseg.pipeline.classes import store_classes
from fcnseg.pipeline.store import LABELS, store_geometry


@dataclass(frozen=True)
class ClassHistogram:
    """Pixels per class of the model, and for a geographic CRS their area in m² (None otherwise);
    with a confidence band, each class's summed confidence (uint8 codes, p x 254: exact integers,
    so the run's mean per class is the same whatever the order the chunks are added in)."""

    pixels: list[int]
    area_m2: list[float] | None = None
    confidence: list[int] | None = None


def chunk_histogram(group: zarr.Group, window: Window, labels: np.ndarray | None,
                    confidence: np.ndarray | None = None) -> ClassHistogram:
    """The histogram of one chunk of the store ``group`` (``labels`` None: a chunk without data);
    ``confidence``: the chunk's confidence band, summed per class."""
    num_classes = len(store_classes(group[LABELS].attrs).names)
    crs, transform = store_geometry(group)  # cheap next to the counts (benchmarks.md): not worth a cache
    geographic = crs is not None and crs.is_geographic
    if labels is None:
        return ClassHistogram([0] * num_classes, [0.0] * num_classes if geographic else None)
    sums = None if confidence is None else class_sums(labels, confidence, num_classes)
    if not geographic:
        return ClassHistogram([int(np.count_nonzero(labels == c)) for c in range(num_classes)], None, sums)
    per_row = row_counts(labels, num_classes)
    areas = per_row @ row_pixel_areas_m2(crs, transform, int(window.row_off), labels.shape[0])
    return ClassHistogram(per_row.sum(axis=1).tolist(), areas.tolist(), sums)


def class_sums(labels: np.ndarray, values: np.ndarray, num_classes: int) -> list[int]:
    """Per class, the sum of ``values`` (uint8) over its pixels: exact integers."""
    return [int(values[labels == c].sum(dtype=np.int64)) for c in range(num_classes)]


def row_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(classes, rows): how many pixels of each class lie on each row (nodata is no class)."""
    return np.stack([np.count_nonzero(labels == c, axis=1) for c in range(num_classes)])
