"""Tile geometry: a grid of core windows, each read with a halo, origins on the model's stride;
and the chunk windows every reader of the label store walks.

A tile owns its *core* (the output it writes) and reads *core + halo*, clipped at the raster's
edges (never padded with invented pixels). Cores and halos are multiples of the model stride, so
every read window starts on a multiple of 32 and the FCN sees the same pooling grid as it would
on the whole image; the halo gives each core pixel the context a whole-image run would give it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rasterio.windows import Window

from fcnseg.models.card import STRIDE, receptive_field


@dataclass(frozen=True)
class Tile:
    """One chunk of the output grid: ``core`` is the chunk it writes, ``read_window`` the
    core grown by the halo (clipped at the raster's edges) that the model sees."""

    row: int
    col: int
    core: Window
    read_window: Window

    @property
    def core_in_read(self) -> tuple[slice, slice]:
        """Where the core lies inside the read window, as array slices."""
        r0 = int(self.core.row_off - self.read_window.row_off)
        c0 = int(self.core.col_off - self.read_window.col_off)
        return slice(r0, r0 + int(self.core.height)), slice(c0, c0 + int(self.core.width))


def check_tiling(tile: int | None, halo: int | None, batch_size: int | None = 1) -> None:
    """The tiling options as a user gives them (``--tile``, ``--halo``, ``--batch-size``; None:
    chosen for the device); ValueError names the option."""
    if tile is not None and (tile <= 0 or tile % STRIDE):
        raise ValueError(f"--tile must be a positive multiple of {STRIDE}, got {tile}")
    if halo is not None and (halo < 0 or halo % STRIDE):
        raise ValueError(f"--halo must be a non-negative multiple of {STRIDE}, got {halo}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")


def check_multiple(name: str, value: int, stride: int = STRIDE) -> None:
    if value < 0 or value % stride:
        raise ValueError(f"{name} must be a non-negative multiple of {stride}, got {value}")


def iter_tiles(height: int, width: int, tile: int, halo: int, stride: int = STRIDE) -> Iterator[Tile]:
    """Tiles covering a ``height`` x ``width`` raster, row by row."""
    check_multiple("tile size", tile, stride)
    check_multiple("halo", halo, stride)
    if tile == 0:
        raise ValueError("tile size must be positive")
    for row, r0 in enumerate(range(0, height, tile)):
        for col, c0 in enumerate(range(0, width, tile)):
            core = Window(c0, r0, min(tile, width - c0), min(tile, height - r0))
            rr, cc = max(0, r0 - halo), max(0, c0 - halo)
            read = Window(cc, rr, min(width, c0 + tile + halo) - cc, min(height, r0 + tile + halo) - rr)
            yield Tile(row, col, core, read)


def default_halo(arch: str, stride: int = STRIDE) -> int:
    """Half the model's receptive field, rounded up to the stride: every core pixel then sees all
    the context it would see in a whole-image run."""
    radius = receptive_field(arch) // 2
    return -(-radius // stride) * stride


def chunk_windows(height: int, width: int, chunks: tuple[int, ...]) -> Iterator[Window]:
    """Windows that follow a store's chunks row by row (the last two of ``chunks``): each read
    touches one chunk."""
    ch, cw = chunks[-2:]
    for r in range(0, height, ch):
        for c in range(0, width, cw):
            yield Window(c, r, min(cw, width - c), min(ch, height - r))
