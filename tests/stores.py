"""Label stores written from an array, chunk by chunk as the pipeline writes them (no model run)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from fcnseg.pipeline.store import COMPLETE, create_store, finish_pyramid, open_store, write_chunk
from fcnseg.pipeline.tiles import chunk_windows

UTM = CRS.from_epsg(32633)
#: 0.5 m pixels in UTM zone 33N.
TRANSFORM = Affine(0.5, 0, 500000.0, 0, -0.5, 5400000.0)


def store_from_array(
    path: Path, labels: np.ndarray, *, chunk: int, class_names: Sequence[str], class_colors: Sequence[Sequence[int]],
    crs: CRS | None = UTM, transform: Affine = TRANSFORM, attrs: dict[str, Any] | None = None,
    probabilities: bool = False, complete: bool = True,
) -> Path:
    """``path`` (labels.zarr) holding ``labels``; with ``probabilities``, one-hot p = 1 (254) per class.

    ``crs=None`` gives a store in pixel coordinates. Like a segment run, the store is marked
    complete (``fcnseg_complete``) only after its chunks and its overview pyramid are written;
    ``complete=False`` (or that attribute in ``attrs``) leaves it as an interrupted run would."""
    height, width = labels.shape
    attrs = dict(attrs or {})
    finished = attrs.pop(COMPLETE, complete)
    group = create_store(path, height=height, width=width, crs=crs, transform=transform, chunk=chunk,
                         class_names=class_names, class_colors=class_colors, attrs={**attrs, COMPLETE: False},
                         probabilities=probabilities)
    for window in chunk_windows(height, width, (chunk, chunk)):
        block = labels[window.toslices()]
        probs = None
        if probabilities:
            probs = np.stack([(block == k) * 254 for k in range(len(class_names))]).astype(np.uint8)
        write_chunk(group, window, block, probs)
    if finished:
        finish_pyramid(path)
    open_store(path).attrs[COMPLETE] = bool(finished)
    return path
