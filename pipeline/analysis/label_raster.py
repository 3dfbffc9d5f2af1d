"""A class raster to count, read window by window: a labels GeoTIFF (``labels.tif``, or any
single-band integer class raster with a nodata value or mask) or a ``labels.zarr`` store.

Windows follow the raster's blocks (chunks), so each read touches whole blocks once and memory
is bounded by a window (at most ``WINDOW`` x ``WINDOW`` pixels), never by the raster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from fcnseg.pipeline.classes import ClassTable, raster_classes, store_classes
from fcnseg.pipeline.io import InputError, bounded_gdal_cache, open_raster
from fcnseg.pipeline.store import LABELS, NODATA, open_store, require_complete, store_geometry

#: Side (pixels) of the windows read at once: whole blocks/chunks, grouped up to about this size.
WINDOW = 1024


class LabelRaster:
    """A single-band class raster: geometry, block grid, class names and windowed reads."""

    path: str
    crs: CRS | None  # None: a raster in pixel coordinates (no areas in m², selections in its own grid)
    transform: Affine
    height: int
    width: int
    block: tuple[int, int]
    classes: ClassTable

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Class ids and validity (False = nodata) of one window."""
        raise NotImplementedError


class _TiffLabels(LabelRaster):
    def __init__(self, path: str, src: rasterio.io.DatasetReader) -> None:
        self.path, self.src = path, src
        if src.count != 1:
            raise InputError(f"{path}: has {src.count} bands; a class raster has one")
        if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise InputError(f"{path}: holds {src.dtypes[0]} values; a class raster holds integer class ids")
        self.crs, self.transform, self.height, self.width = src.crs, src.transform, src.height, src.width
        self.block = tuple(src.block_shapes[0])
        # a fractional nodata value can never equal an integer class id: no nodata then
        self.nodata = int(src.nodata) if src.nodata is not None and float(src.nodata).is_integer() else None
        flags = src.mask_flag_enums[0]
        self.mask_band = self.nodata is None and (MaskFlags.per_dataset in flags or MaskFlags.alpha in flags)
        self.classes = raster_classes(src)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        values = self.src.read(1, window=window)
        if self.nodata is not None:
            valid = values != self.nodata
        elif self.mask_band:
            valid = self.src.read_masks(1, window=window) > 0
        else:
            valid = np.ones(values.shape, dtype=bool)
        return values, valid


class _ZarrLabels(LabelRaster):
    def __init__(self, path: str, group) -> None:
        self.path = path
        if LABELS not in group or "spatial_ref" not in group:
            raise InputError(f"{path}: not an fcnseg label store (no '{LABELS}' array or no 'spatial_ref')")
        self.array = group[LABELS]
        if self.array.ndim != 2 or not np.issubdtype(self.array.dtype, np.integer):
            raise InputError(
                f"{path}: '{LABELS}' is {self.array.ndim}-D {self.array.dtype}; expected 2-D integer class ids"
            )
        self.crs, self.transform = store_geometry(group)
        self.height, self.width = self.array.shape
        self.block = tuple(self.array.chunks)
        self.nodata = int(self.array.attrs.get("nodata", NODATA))
        self.classes = store_classes(self.array.attrs)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(self.array[window.toslices()])
        return values, values != self.nodata


def is_store(path: str | Path) -> bool:
    """A directory or a ``*.zarr`` name is a Zarr store; anything else goes to GDAL."""
    return Path(path).is_dir() or str(path).rstrip("/").endswith(".zarr")


@contextlib.contextmanager
def open_labels(path: str | Path, *, allow_partial: bool = False) -> Iterator[LabelRaster]:
    """Open a labels GeoTIFF (or any single-band class raster) or a labels.zarr store, read-only;
    an incomplete store only with ``allow_partial``."""
    path = str(path)
    if is_store(path):
        try:
            group = open_store(path, mode="r")
        except FileNotFoundError as exc:  # zarr's GroupNotFoundError is one too
            reason = "no such file or directory" if not Path(path).exists() else str(exc)
            raise InputError(f"{path}: cannot open as a Zarr label store ({reason})") from None
        except Exception as exc:  # a corrupt zarr.json and the like
            raise InputError(f"{path}: cannot open as a Zarr label store ({exc})") from None
        raster = _ZarrLabels(path, group)
        require_complete(group, path, allow_partial=allow_partial)
        yield raster
        return
    with bounded_gdal_cache(), open_raster(path) as src:
        yield _TiffLabels(path, src)


def _step(block: int) -> int:
    """Whole blocks per window, up to about WINDOW pixels (a block taller than that is cut)."""
    return block * max(1, WINDOW // block) if block <= WINDOW else WINDOW


def query_windows(raster: LabelRaster, bounds: Window) -> Iterator[Window]:
    """Block-aligned windows, clipped to ``bounds``: each read touches whole blocks once."""
    rstep, cstep = _step(raster.block[0]), _step(raster.block[1])
    r_end, c_end = bounds.row_off + bounds.height, bounds.col_off + bounds.width
    for r in range(bounds.row_off // rstep * rstep, r_end, rstep):
        for c in range(bounds.col_off // cstep * cstep, c_end, cstep):
            r0, c0 = max(r, bounds.row_off), max(c, bounds.col_off)
            yield Window(c0, r0, min(c + cstep, c_end) - c0, min(r + rstep, r_end) - r0)
