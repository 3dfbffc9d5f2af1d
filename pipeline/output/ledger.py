"""The chunk ledger: which chunks of a run are finished, one marker file per chunk.

A chunk's marker is written after its data, durably and atomically, so a marker on disk always
means the chunk's bytes are in the store: a rerun skips exactly the marked chunks. The crop and
blend paths (and blend's first pass, over its scratch store) all keep their progress this way.
A final chunk's marker also carries its class histogram, counted where the chunk was written:
the run's class areas are the sum of its markers (markers from before histograms have none), and
the sha256 of the labels written (``labels_sha256``), so that ``fcnseg verify`` can tell a chunk
damaged or lost since from the one the run wrote.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fcnseg.pipeline.analysis.histogram import ClassHistogram
from fcnseg.pipeline.io import atomic_write_text
from fcnseg.pipeline.tiles import Tile


@dataclass(frozen=True)
class ChunkResult:
    row: int
    col: int
    status: Literal["computed", "nodata"]
    valid_pixels: int
    class_pixels: list[int] | None = None  # per class of the model; None: not counted (blend pass 1, older markers)
    class_area_m2: list[float] | None = None  # per class, for a geographic CRS only (pixel areas vary by row)
    sha256: str | None = None  # of the chunk's labels as written (``labels_sha256``); None: not recorded
    class_confidence: list[int] | None = None  # per class, its summed confidence codes; None: no confidence band


def labels_sha256(labels: np.ndarray) -> str:
    """The sha256 of a chunk's labels: its uint8 bytes in row order, as the store gives them back."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.uint8).tobytes()).hexdigest()


@dataclass(frozen=True)
class ChunkLedger:
    """The markers in ``directory`` (a plain path, so the ledger travels to Dask workers)."""

    directory: str

    def marker(self, tile: Tile) -> Path:
        return Path(self.directory) / f"{tile.row}_{tile.col}.json"

    def record(self, tile: Tile, status: Literal["computed", "nodata"], valid_pixels: int,
               histogram: ClassHistogram | None = None, labels: np.ndarray | None = None) -> ChunkResult:
        """Mark ``tile``'s chunk finished; call it only once the chunk's data is written.
        ``labels``: what was written, hashed into the marker."""
        pixels, areas = (histogram.pixels, histogram.area_m2) if histogram is not None else (None, None)
        digest = labels_sha256(labels) if labels is not None else None
        confidence = histogram.confidence if histogram is not None else None
        result = ChunkResult(tile.row, tile.col, status, valid_pixels, pixels, areas, digest, confidence)
        fields = asdict(result)
        if confidence is None:  # a run without the band writes the markers it wrote before the band existed
            del fields["class_confidence"]
        atomic_write_text(self.marker(tile), json.dumps(fields), durable=True)
        return result

    def result(self, tile: Tile) -> ChunkResult | None:
        """What ``tile``'s marker records (None: not finished)."""
        try:
            return ChunkResult(**json.loads(self.marker(tile).read_text()))
        except FileNotFoundError:
            return None

    def is_finished(self, tile: Tile) -> bool:
        return self.marker(tile).exists()

    def forget(self, tile: Tile) -> None:
        """Unmark ``tile``'s chunk (its data was lost): the run computes it again."""
        self.marker(tile).unlink(missing_ok=True)

    def finished(self, tiles: Iterable[Tile]) -> set[tuple[int, int]]:
        """(row, col) of the chunks among ``tiles`` that are marked finished."""
        return {(t.row, t.col) for t in tiles if self.is_finished(t)}
