"""OUT/confidence.png, beside quicklook.png: where the model was sure and where it was not.

The store's confidence band (the top class's probability, ``--confidence``) at quicklook size, in
five bins from red (below 0.5: the model hesitated between classes) to blue (0.9 and above), with
their legend and a title; nodata is transparent. Bins rather than a continuous ramp: a reader of
a glance tells five colours apart, and the legend is the quicklook's (``draw_legend``). The band
has no overviews in the store, so its pixels are read *nearest* under the picture's pixel
centres (``sample_indices``), chunk by chunk: memory follows the picture's size only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.pipeline.products.quicklook import quicklook_shape, sample_indices, _save_png
from fcnseg.pipeline.products.quicklook_annotations import draw_legend, draw_title, scene_name
from fcnseg.pipeline.store import CONFIDENCE, NODATA, PROBABILITY_SCALE, open_store, require_complete

log = logging.getLogger(__name__)

#: Lower edges (probabilities) of the bins above the first, and the bins' colours (ColorBrewer RdYlBu).
EDGES = (0.5, 0.7, 0.8, 0.9)
BIN_COLORS = np.array([(215, 48, 39), (252, 141, 89), (254, 224, 144), (145, 191, 219), (69, 117, 180)], np.uint8)
BIN_NAMES = ["p < 0.5", "0.5 - 0.7", "0.7 - 0.8", "0.8 - 0.9", "p >= 0.9"]


def write_confidence_view(store_path: str | Path, out_png: str | Path, *, image_path: str | Path | None = None,
                          max_size: int = 2048) -> Path:
    """Write ``out_png``: the store's confidence band at quicklook size (long side at most
    ``max_size``), binned and coloured, with a legend and a title naming ``image_path``'s scene.
    Appears under its final name only when complete."""
    codes = read_confidence(store_path, max_size)
    rgba = confidence_rgba(codes)
    img = Image.fromarray(np.ascontiguousarray(rgba))
    scene = scene_name(image_path) if image_path is not None else Path(str(store_path)).parent.name
    draw_title(img, f"{scene}: confidence (the top class's probability)")
    draw_legend(img, BIN_NAMES, BIN_COLORS.astype(np.float32))
    _save_png(img, Path(out_png))
    log.info("wrote confidence view %s (%dx%d)", out_png, img.width, img.height)
    return Path(out_png)


def read_confidence(store_path: str | Path, max_size: int) -> np.ndarray:
    """The confidence codes (uint8, p x 254, 255 = nodata) under the picture's pixel centres."""
    group = open_store(store_path, mode="r")
    require_complete(group, store_path)  # never a product of an interrupted run
    band = group[CONFIDENCE]
    height, width = band.shape
    shape = quicklook_shape(height, width, max_size)
    rows, cols = (sample_indices(n, size, 1, size) for n, size in zip(shape, (height, width)))
    return np.asarray(band.get_orthogonal_selection((rows, cols)))


def confidence_bins(codes: np.ndarray) -> np.ndarray:
    """Each pixel's bin (0 .. len(EDGES)), by its probability code / 254."""
    return np.digitize(codes.astype(np.float32) / PROBABILITY_SCALE, EDGES)


def confidence_rgba(codes: np.ndarray) -> np.ndarray:
    """(h, w, 4) uint8: each valid pixel in its bin's colour, nodata transparent."""
    valid = codes != NODATA
    rgba = np.zeros((*codes.shape, 4), np.uint8)
    rgba[..., :3] = BIN_COLORS[confidence_bins(codes)]
    rgba[..., 3] = np.where(valid, 255, 0)
    rgba[~valid, :3] = 0
    return rgba
