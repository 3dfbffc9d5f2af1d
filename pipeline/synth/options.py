"""Checks of ``write_scene``'s delivery options, each failing in one line that names its option."""

from __future__ import annotations

from fcnseg.pipeline.synth.spec import BAND_SETS, ENCODINGS, GRIDS, LAYOUTS, Grid


def check_rotate(rotate: float, collar: int) -> None:
    """A rotated footprint is 0 <= DEG < 90 (a square turned by 90 is itself) and is a collar of its own."""
    if not (isinstance(rotate, (int, float)) and 0 <= rotate < 90):
        raise ValueError(f"--rotate must be at least 0 and under 90 degrees (0 = off), got {rotate!r}")
    if rotate and collar:
        raise ValueError("--rotate and --collar cannot be combined: --rotate already gives the scene a nodata "
                         "footprint; pass one of them")


def check_bands(bands: int) -> None:
    if isinstance(bands, bool) or not isinstance(bands, int) or bands not in BAND_SETS:
        raise ValueError(f"--bands must be 1, 2, 3 or 4, got {bands!r}")


def check_dtype(dtype: str) -> None:
    if dtype not in ENCODINGS:
        raise ValueError(f"--dtype must be one of {', '.join(ENCODINGS)}, got {dtype!r}")


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"--layout must be {' or '.join(LAYOUTS)}, got {layout!r}")


def grid_for(crs: str) -> Grid:
    """The scene's grid in ``crs``: only the two CRSs synth can place its scene in, so other codes are refused."""
    grid = GRIDS.get(str(crs).upper())
    if grid is None:
        raise ValueError(f"--crs must be {' or '.join(GRIDS)} (synth places its scene in no other CRS), got {crs!r}")
    return grid


def check_pixels(collar: int, rotate: float, bands: int, dtype: str) -> None:
    """The options ``render_window`` takes (the collar's size is checked with the window)."""
    check_rotate(rotate, collar)
    check_bands(bands)
    check_dtype(dtype)
