"""A label store's confidence band (``--confidence``), read beside its labels.

``fcnseg query`` and the run's class-area table give each class's mean confidence: the sum of its
pixels' confidence codes (uint8, p x 254, exact integers) over its pixel count. Only a label store
carries the band (labels.zarr's ``confidence``); a labels GeoTIFF is counted without it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rasterio.windows import Window

from fcnseg.pipeline.store import CONFIDENCE, PROBABILITY_SCALE, open_store

#: Reads the confidence codes (uint8) of one window of the labels.
ConfidenceReader = Callable[[Window], np.ndarray]


def confidence_reader(path: str, shape: tuple[int, int], store: bool) -> ConfidenceReader | None:
    """The reader of the confidence band of the label raster at ``path`` (None: it has none)."""
    if not store:
        return None
    group = open_store(path, mode="r")
    if CONFIDENCE not in group or tuple(group[CONFIDENCE].shape) != tuple(shape):
        return None
    band = group[CONFIDENCE]
    return lambda window: np.asarray(band[window.toslices()])


def mean_confidence(code_sum: int, pixels: int) -> float | None:
    """A class's mean confidence (a probability) from its summed codes; None without pixels."""
    return float(code_sum) / (PROBABILITY_SCALE * pixels) if pixels else None
