"""Raster I/O at the bottom of the pipeline: opening rasters with one clear error, windowed reads of
model input (selected bands, the checkpoint's normalisation, the nodata mask), GDAL's cache, and the
atomic write every output goes through (``fcnseg.atomic``).

Light on purpose (no torch import): ``fcnseg query`` and the products import it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import overload

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from fcnseg.atomic import atomic_write, atomic_write_text
from fcnseg.errors import InputError
from fcnseg.models.card import ModelCard, NodataPolicy, Normalization

__all__ = [
    "GDAL_CACHE_BYTES", "BandNodata", "InputError", "atomic_write", "atomic_write_text", "band_nodata", "bands_valid",
    "bounded_gdal_cache", "check_pixel_types", "crs_name", "differs_from_nodata", "normalize", "open_raster",
    "read_model_input", "read_pixels", "read_window", "select_bands", "valid_mask",
]

log = logging.getLogger(__name__)

#: GDAL's block cache for fcnseg's raster reads and writes. Its default (5% of RAM) fills up with a
#: scene's blocks, so memory would grow with the scene up to that cap; each block is used about once.
GDAL_CACHE_BYTES = 16 * 1024 * 1024


def bounded_gdal_cache() -> rasterio.Env:
    """``with bounded_gdal_cache():`` around GDAL work whose memory must not follow the scene's size."""
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)


def open_raster(path: str | Path) -> DatasetReader:
    """rasterio.open with one clear error for anything that is not a readable raster."""
    try:
        with warnings.catch_warnings():  # a raster in pixel coordinates (a scan, a PNG) is supported
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return _checked(rasterio.open(path), path)
    except rasterio.errors.RasterioIOError as exc:
        reason = "no such file" if not str(path).count("://") and not Path(path).exists() else str(exc)
    raise InputError(f"{path}: cannot open as a raster ({reason})")  # unchained: it may travel from a Dask worker


def _checked(src: DatasetReader, path: str | Path) -> DatasetReader:
    if src.width == 0 or src.height == 0 or src.count == 0:
        src.close()
        raise InputError(f"{path}: empty raster ({src.width}x{src.height}, {src.count} bands)")
    missing = missing_vrt_source(src)
    if missing:
        src.close()
        raise InputError(f"{path}: its source {missing} is missing (a VRT reads its pixels from its sources)")
    return src


def missing_vrt_source(src: DatasetReader) -> str | None:
    """The first local source file of a VRT that does not exist. GDAL opens a VRT without looking
    at its sources and fails only when pixels are read ("Read failed. See previous exception"),
    mid-run and naming neither file; remote sources (URIs, /vsi paths) are left to that read."""
    if src.driver != "VRT":
        return None
    for name in src.files[1:]:  # the VRT itself first
        if "://" not in name and not name.startswith("/vsi") and not Path(name).exists():
            return name
    return None


@overload
def crs_name(crs: CRS) -> str: ...


@overload
def crs_name(crs: None) -> None: ...


def crs_name(crs: CRS | None) -> str | None:
    """How outputs and messages name a CRS, one rule for ``query``'s answers and training's errors:
    its authority and code (``EPSG:32633``, ``EPSG:4326``, ``ESRI:54009``), else its WKT; None for
    a raster in pixel coordinates (no CRS), which JSON writes as null."""
    return None if crs is None else crs.to_string()


def check_north_up(src: DatasetReader, path: str | Path) -> None:
    """Refuse a rotated or sheared geotransform: the store's grid mapping and every output are
    north-up grids of the input's pixels, so none could place them."""
    t = src.transform
    if t.b != 0 or t.d != 0:
        raise InputError(f"{path}: its geotransform is rotated or sheared (row rotation {t.b:g}, column rotation"
                         f" {t.d:g}); fcnseg segments north-up rasters: warp it first, e.g. gdalwarp {path} north-up.tif")


def select_bands(src: DatasetReader, card: ModelCard, bands: Sequence[int] | None) -> list[int]:
    """1-based band indexes to feed the model: explicit, or the first ``card.bands`` bands."""
    chosen = list(bands) if bands else list(range(1, card.bands + 1))
    if len(chosen) != card.bands:
        raise InputError(f"{src.name}: {len(chosen)} bands selected, the model takes {card.bands}")
    if not bands and src.count != card.bands:
        raise InputError(f"{src.name}: has {src.count} bands, the model takes {card.bands} (choose them with --bands)")
    if any(b < 1 or b > src.count for b in chosen):
        raise InputError(f"{src.name}: has {src.count} bands, --bands asks for {chosen}")
    check_pixel_types(src, chosen)
    warn_unused_georeferencing(src)
    return chosen


def check_pixel_types(src: DatasetReader, bands: Sequence[int]) -> None:
    """Refuse complex bands: the normalisation's float cast would keep the real part and drop the
    imaginary one without a word. Every real type (int8 included: numpy keeps its sign) is taken."""
    for band in bands:
        dtype = src.dtypes[band - 1]
        if dtype.startswith("complex"):
            raise InputError(f"{src.name}: band {band} is {dtype}; the model takes real pixel values"
                             " (convert it first, e.g. to amplitude or intensity)")


def warn_unused_georeferencing(src: DatasetReader) -> None:
    """A raster placed only by ground control points (or RPCs) has no CRS or geotransform for the
    outputs: it is segmented in pixel coordinates, as a scan is, which is complete and correct
    there; a warning says so, rather than a refusal, since a sensor-geometry result is often wanted."""
    if src.crs is not None:
        return
    if src.gcps[0]:
        kind = "ground control points"
    elif src.rpcs is not None:
        kind = "rational polynomial coefficients (RPCs)"
    else:
        return
    log.warning("%s: has only %s; segmented in pixel coordinates: warp it first, e.g. gdalwarp,"
                " for georeferenced outputs", src.name, kind)


def valid_mask(
    src: DatasetReader, bands: Sequence[int], window: Window, pixels: np.ndarray | None = None
) -> np.ndarray:
    """(h, w) True where the pixel holds data, by GDAL's dataset-mask convention.

    ``pixels`` are the selected bands of ``window`` as read (read here when not given: ``read_pixels``
    does both in one go). A per-dataset mask
    (``.msk``, internal mask, alpha band) decides alone: one mask read. Otherwise a pixel is nodata
    when *all* selected bands are: equal to their nodata value (compared here, in numpy: NaN nodata
    too), or masked by a band's own mask. Bands without nodata always hold data. Non-finite pixels
    are never valid, whatever the masks say (the model cannot take them).
    """
    if pixels is None:
        pixels = _read(src, window, lambda: src.read(list(bands), window=window))
    return bands_valid(pixels, band_nodata(src, bands, window))


#: How one band says which of its pixels are nodata: its nodata value (None: it has none, every
#: pixel holds data), or a boolean mask read from the file (True: data).
BandNodata = float | np.ndarray | None


def band_nodata(src: DatasetReader, bands: Sequence[int], window: Window) -> list[BandNodata]:
    """Each selected band's nodata, as GDAL's mask flags say: a per-dataset mask (read once) for
    every band, none where a band is all valid, else the band's nodata value or its own mask."""
    flags = [src.mask_flag_enums[b - 1] for b in bands]
    if any(MaskFlags.per_dataset in f for f in flags):
        band = bands[next(i for i, f in enumerate(flags) if MaskFlags.per_dataset in f)]
        return [_read(src, window, lambda: src.read_masks(band, window=window)) > 0] * len(bands)
    if any(MaskFlags.all_valid in f for f in flags):
        return [None] * len(bands)
    return [src.nodatavals[band - 1] if MaskFlags.nodata in band_flags else own_mask(src, band, window)
            for band, band_flags in zip(bands, flags, strict=True)]


def own_mask(src: DatasetReader, band: int, window: Window) -> np.ndarray:
    """A band's own mask (rare: neither a nodata value nor a per-dataset mask), read: True where data."""
    return _read(src, window, lambda: src.read_masks(band, window=window)) > 0


def bands_valid(pixels: np.ndarray, nodata: Sequence[BandNodata]) -> np.ndarray:
    """(h, w) True where a (bands, h, w) window holds data: where any band does (differs from its
    nodata value, or its mask says so), and every band is finite. The one nodata rule of a file's
    window (``valid_mask``) and of an array in memory (``predict_array``), so both label alike."""
    valid = np.zeros(pixels.shape[1:], dtype=bool)
    for band, value in zip(pixels, nodata, strict=True):
        valid |= value if isinstance(value, np.ndarray) else differs_from_nodata(band, value)
    if pixels.dtype.kind in "fc":
        valid &= np.all(np.isfinite(pixels), axis=0)
    return valid


def differs_from_nodata(pixels: np.ndarray, nodata: float | None) -> np.ndarray:
    """True where one band's pixels are not its nodata value, compared as GDAL does (in the band's type)."""
    if nodata is None:
        return np.ones(pixels.shape, dtype=bool)
    if np.isnan(nodata):
        return ~np.isnan(pixels)
    if pixels.dtype.kind in "iu":
        info = np.iinfo(pixels.dtype)
        if nodata != int(nodata) or not info.min <= nodata <= info.max:
            return np.ones(pixels.shape, dtype=bool)  # no pixel of this type can hold it
    elif pixels.dtype.kind == "f" and np.isfinite(nodata) and abs(nodata) > np.finfo(pixels.dtype).max:
        return np.ones(pixels.shape, dtype=bool)
    return pixels != np.asarray(nodata).astype(pixels.dtype)


def _read(src: DatasetReader, window: Window, read: Callable[[], np.ndarray]) -> np.ndarray:
    """``read()``, with a damaged or unreadable file as one InputError naming the file and the window."""
    try:
        return read()
    except RasterioError as exc:
        where = ",".join(str(int(v)) for v in (window.col_off, window.row_off, window.width, window.height))
        reason = exc  # rasterio says "Read failed. See previous exception": GDAL's own words are at the root
        while (reason.__cause__ or reason.__context__) is not None:
            reason = reason.__cause__ or reason.__context__
        message = f"{src.name}: cannot read window {where} ({' '.join(str(reason).split())})"
    # raised outside the handler: no chained GDAL exception, which Dask could not send back from a worker
    raise InputError(message)


def read_window(src: DatasetReader, window: Window) -> np.ndarray:
    """Every band of ``window``, with a read error as one InputError naming the file and the window."""
    return _read(src, window, lambda: src.read(window=window))


def read_pixels(src: DatasetReader, bands: Sequence[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
    """The selected bands of ``window`` as stored, (bands, h, w), and their (h, w) validity mask."""
    pixels = _read(src, window, lambda: src.read(list(bands), window=window))
    return pixels, valid_mask(src, bands, window, pixels)


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
    pixels, valid = read_pixels(src, bands, window)
    return normalize(pixels, valid, card.normalization, card.nodata), valid
