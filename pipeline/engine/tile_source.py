"""Model input of tiles, read ahead of the model on a small thread pool.

GDAL releases the GIL while it reads and decodes, so a couple of reader threads keep the next
tiles ready while the model runs on the current batch (on a GPU the device never waits for the
disk; on a CPU, I/O overlaps compute). A GDAL dataset must not be shared between threads: each
reader thread opens its own. At most ``depth`` tiles are in flight, so memory stays bounded
whatever the number of tiles; they come out in the order they went in.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
from rasterio.io import DatasetReader

from fcnseg.pipeline.io import bounded_gdal_cache, open_raster, read_pixels
from fcnseg.pipeline.engine.staging import transferable
from fcnseg.pipeline.tiles import Tile

if TYPE_CHECKING:
    from fcnseg.models.checkpoint import ModelCard

#: Reader threads per source: enough to hide a read behind a forward pass, few enough to leave
#: the cores to the model.
READERS = 2

#: A tile, its selected bands (bands, h, w) as stored (normalised on the model's device) and its
#: (h, w) validity mask.
TileInput = tuple[Tile, np.ndarray, np.ndarray]


class TileSource:
    """``with TileSource(path, bands, card) as source: for tile, pixels, valid in source.stream(tiles, depth)``.

    ``tta``: the views of each tile the model averages (``models.tta``: none, flip, d4), read by
    the forward pass with the card."""

    def __init__(self, path: str, bands: Sequence[int], card: ModelCard, *, readers: int = READERS,
                 tta: str = "none") -> None:
        self.path, self.bands, self.card, self.tta = path, list(bands), card, tta
        self._local = threading.local()
        self._opened: list[DatasetReader] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max(1, readers), thread_name_prefix="fcnseg-read")

    def read(self, tile: Tile) -> TileInput:
        """One tile's pixels and validity, read with this thread's own dataset."""
        with bounded_gdal_cache():
            pixels, valid = read_pixels(self._dataset(), self.bands, tile.read_window)
        return tile, transferable(pixels), valid

    def stream(self, tiles: Iterable[Tile], depth: int) -> Iterator[TileInput]:
        """The tiles' inputs in order, with up to ``depth`` reads in flight ahead of the consumer."""
        in_flight: deque[Future[TileInput]] = deque()
        for tile in tiles:
            in_flight.append(self._pool.submit(self.read, tile))
            if len(in_flight) >= max(1, depth):
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for dataset in self._opened:
                dataset.close()
            self._opened.clear()

    def __enter__(self) -> TileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dataset(self) -> DatasetReader:
        dataset = getattr(self._local, "dataset", None)
        if dataset is None:
            dataset = self._local.dataset = open_raster(self.path)
            with self._lock:
                self._opened.append(dataset)
        return dataset
