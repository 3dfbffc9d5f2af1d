"""From the painted 4-band uint16 reflectance to what a delivery stores: its bands and data type.

Every step is integer arithmetic or one exact float division per pixel, so a pixel's
value depends on nothing but the pixel (windows stay crops of larger windows).
"""

from __future__ import annotations

import numpy as np

from fcnseg.pipeline.synth.spec import BAND_NAMES, ENCODINGS, INT16_SHIFT

_BLUE, _GREEN, _RED, _NIR = (BAND_NAMES.index(b) for b in ("blue", "green", "red", "nir"))


def select_bands(image: np.ndarray, bands: int) -> np.ndarray:
    """The ``BAND_SETS[bands]`` bands of a (4, h, w) uint16 image; 1 band is the rounded mean of the visible ones."""
    if bands == 4:
        return image
    if bands == 3:
        return image[[_RED, _GREEN, _BLUE]]
    if bands == 2:
        return image[[_RED, _NIR]]
    visible = image[[_BLUE, _GREEN, _RED]].astype(np.uint32).sum(axis=0)
    return ((visible + 1) // 3).astype(np.uint16)[None]  # >= 1 since every band is


def encode(image: np.ndarray, outside: np.ndarray | None, dtype: str) -> np.ndarray:
    """Store uint16 reflectance*10000 (valid 1..10000) as ``dtype``, nodata where ``outside``."""
    if dtype == "int16":
        image = (image.astype(np.int32) - INT16_SHIFT).astype(np.int16)
    elif dtype == "float32":
        image = image.astype(np.float32) / np.float32(10000.0)
    if outside is not None:
        image[:, outside] = ENCODINGS[dtype].nodata
    return image
