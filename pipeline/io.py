"""Raster I/O at the bottom of the pipeline: opening rasters with one clear error, windowed reads of
model input (selected bands, the checkpoint's normalisation, the nodata mask), GDAL's cache, and the
atomic write every output goes through (``fcnseg.atomic``).

Light on purpose (no torch import): ``fcnseg query`` and the products import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio.io import DatasetReader
from rasterio.windows import Window

from fcnseg.atomic import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from fcnseg.models.checkpoint import ModelCard, NodataPolicy, Normalization

__all__ = [
    "GDAL_CACHE_BYTES", "InputError", "atomic_write", "atomic_write_text", "bounded_gdal_cache", "normalize",
    "open_raster", "read_model_input", "select_bands", "valid_mask",
]

#: GDAL's block cache for fcnseg's raster reads and writes. Its default (5% of RAM) fills up with a
#: scene's blocks, so memory would grow with the scene up to that cap; each block is used about once.
GDAL_CACHE_BYTES = 16 * 1024 * 1024


def bounded_gdal_cache() -> rasterio.Env:
    """``with bounded_gdal_cache():`` around GDAL work whose memory must not follow the scene's size."""
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)


class InputError(ValueError):
    """Input that cannot be segmented; the message names the file and the problem."""


def open_raster(path: str | Path) -> DatasetReader:
    """rasterio.open with one clear error for anything that is not a readable raster."""
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        reason = "no such file" if not str(path).count("://") and not Path(path).exists() else str(exc)
        raise InputError(f"{path}: cannot open as a raster ({reason})") from None
    if src.width == 0 or src.height == 0 or src.count == 0:
        src.close()
        raise InputError(f"{path}: empty raster ({src.width}x{src.height}, {src.count} bands)")
    return src


def select_bands(src: DatasetReader, card: ModelCard, bands: Sequence[int] | None) -> list[int]:
    """1-based band indexes to feed the model: explicit, or the first ``card.bands`` bands."""
    chosen = list(bands) if bands else list(range(1, card.bands + 1))
    if len(chosen) != card.bands:
        raise InputError(f"{src.name}: {len(chosen)} bands selected, the model takes {card.bands}")
    if not bands and src.count != card.bands:
        raise InputError(f"{src.name}: has {src.count} bands, the model takes {card.bands} (choose them with --bands)")
    if any(b < 1 or b > src.count for b in chosen):
        raise InputError(f"{src.name}: has {src.count} bands, the model needs bands {chosen}")
    return chosen


def valid_mask(src: DatasetReader, bands: Sequence[int], window: Window) -> np.ndarray:
    """True where every selected band holds data (GDAL's masks: nodata value, mask band or alpha)."""
    masks = src.read_masks(list(bands), window=window)
    return np.all(masks > 0, axis=0)


def normalize(
    pixels: np.ndarray, valid: np.ndarray, normalization: Normalization, nodata: NodataPolicy
) -> np.ndarray:
    """(bands, h, w) float32 ``(x - mean) / std``, with pixels outside ``valid`` set to ``fill``."""
    mean = np.asarray(normalization.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(normalization.std, dtype=np.float32)[:, None, None]
    out = (pixels.astype(np.float32) - mean) / std
    out[:, ~valid] = nodata.fill
    return out


def read_model_input(
    src: DatasetReader, bands: Sequence[int], window: Window, card: ModelCard
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (bands, h, w) float32 input and its (h, w) validity mask for one window."""
    pixels = src.read(list(bands), window=window)
    valid = valid_mask(src, bands, window) & np.all(np.isfinite(pixels), axis=0)
    return normalize(pixels, valid, card.normalization, card.nodata), valid
