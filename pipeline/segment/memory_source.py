"""Model input of tiles cut from an array already in memory: ``TileSource``'s counterpart for
``predict_array``.

The same contract as ``TileSource`` (``card``, ``stream(tiles, depth)`` yielding
``(tile, pixels, valid)`` in order), so ``predict.predict_cores`` and ``predict.predict_tiles``
run on it unchanged: the tiling, batching, normalisation on the device and stitching are
``segment``'s own. A tile's pixels are a slice of the caller's array (a lazily read or
dask-backed DataArray reads only that window), so memory follows the tile and the batch, never
the scene. The nodata rule is ``io.bands_valid``, the one ``io.valid_mask`` applies to a file's
per-band nodata values: a pixel is nodata when *all* its bands are; non-finite floats are never valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.windows import Window

from fcnseg.errors import InputError
from fcnseg.pipeline.io import bands_valid
from fcnseg.pipeline.engine.staging import transferable
from fcnseg.pipeline.engine.tile_source import TileInput
from fcnseg.pipeline.tiles import Tile

if TYPE_CHECKING:
    from fcnseg.models.card import ModelCard


def nodata_values(nodata: float | Sequence[float | None] | None, bands: int) -> list[float | None]:
    """One nodata value per band (None: the band has none), from one value for all or one per band."""
    if nodata is None or np.isscalar(nodata):
        return [None if nodata is None else float(nodata)] * bands
    values = [None if v is None else float(v) for v in nodata]
    if len(values) != bands:
        raise InputError(f"nodata: {len(values)} values given for {bands} bands")
    return values


class ArraySource:
    """``ArraySource(array, card, nodata)``: tiles of a (bands, rows, cols) array as model input.

    ``array`` is anything that slices to numpy (numpy, an xarray DataArray, dask, zarr ...); it is
    never copied whole. ``tta``: the views of each tile the model averages, as ``TileSource``'s.
    """

    def __init__(self, array: Any, card: ModelCard, nodata: Sequence[float | None], *, tta: str = "none") -> None:
        self.array, self.card, self.nodata, self.tta = array, card, list(nodata), tta

    def read(self, tile: Tile) -> TileInput:
        """One tile's read window: its pixels as stored and their validity."""
        pixels, valid = self.read_window(tile.read_window)
        return tile, transferable(pixels), valid

    def read_window(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """A window's pixels as stored, (bands, h, w), and their (h, w) validity (``io.read_pixels``'s shape)."""
        rows, cols = window.toslices()
        pixels = np.asarray(self.array[:, rows, cols])
        return pixels, bands_valid(pixels, self.nodata)

    def stream(self, tiles: Iterable[Tile], depth: int) -> Iterator[TileInput]:
        """The tiles' inputs in order (read on demand: slicing memory needs no read-ahead threads)."""
        for tile in tiles:
            yield self.read(tile)

    def close(self) -> None:
        """Nothing to release (the array is the caller's); here so it is a drop-in for TileSource."""

    def __enter__(self) -> ArraySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
