"""Fault injection for the kill -9 tests: ``FCNSEG_CRASH_AT=<point>`` kills the process at that point.

The points sit where a crash is hardest on resume (between a stage's writes); the tests run the
real command with the variable set, then the same command without it, and compare with a clean
run. ``chunk ROW,COL`` kills the Dask worker that starts that chunk, every time it does (the OOM
killer's pattern: a chunk too large for the worker's memory); ``handshake`` kills a worker while
the run asks its workers how they compute. Unset (always, outside those tests), a point costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from typing import Protocol

VARIABLE = "FCNSEG_CRASH_AT"


class ChunkIndex(Protocol):
    row: int
    col: int


def crash_point(name: str) -> None:
    """SIGKILL this process if ``FCNSEG_CRASH_AT`` names this point."""
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def crash_at_chunks(tiles: Iterable[ChunkIndex]) -> None:
    """SIGKILL this process (a worker) if ``FCNSEG_CRASH_AT`` is ``chunk ROW,COL`` of one of ``tiles``."""
    point = os.environ.get(VARIABLE)
    if point and point.startswith("chunk "):
        for tile in tiles:
            crash_point(f"chunk {tile.row},{tile.col}")
