"""The work of one Dask task: read tiles, run the model, stitch the cores, write chunks.

Everything here is a plain function of its arguments (paths and tile geometry), so a task that
is run twice (a worker died, a run was resumed) writes the same bytes. The model and the open
raster are cached per worker process: loaded once, not once per tile.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fcnseg.models.checkpoint import ModelCard, load_checkpoint
from fcnseg.models.fcn import FCNBase
from fcnseg.models.inference import predict_probabilities, resolve_device
from fcnseg.pipeline.reading import bounded_gdal_cache, open_raster, read_model_input
from fcnseg.pipeline.store import NODATA, open_store, quantize_probabilities, write_chunk
from fcnseg.pipeline.tiling import Tile

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ChunkResult:
    row: int
    col: int
    status: str  # "computed" or "nodata"
    valid_pixels: int


def worker_device(device: str) -> torch.device:
    """The device for this process: with several GPUs, each Dask worker takes its own."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None and torch.cuda.device_count() > 1:
        try:
            from distributed import get_worker

            name = get_worker().name
            index = int(name) if str(name).isdigit() else abs(hash(name))
        except (ImportError, ValueError):
            index = os.getpid()
        resolved = torch.device("cuda", index % torch.cuda.device_count())
    return resolved


@lru_cache(maxsize=2)
def cached_model(model_path: str, model_sha256: str, device: str) -> tuple[FCNBase, ModelCard, torch.device]:
    """The model, loaded once per process (the hash in the key makes a changed file reload)."""
    target = worker_device(device)
    if target.type == "cpu" and os.environ.get("FCNSEG_TORCH_THREADS"):
        torch.set_num_threads(int(os.environ["FCNSEG_TORCH_THREADS"]))
    model, card = load_checkpoint(model_path, target)
    log.info("loaded %s on %s", model_path, target)
    return model, card, target


@lru_cache(maxsize=4)
def cached_raster(path: str):
    return open_raster(path)


def marker_path(done_dir: Path, tile: Tile) -> Path:
    return done_dir / f"{tile.row}_{tile.col}.json"


@dataclass(frozen=True)
class TileJob:
    """What every task of one run shares: where to read, which model, how to run it."""

    input_path: str
    model_path: str
    model_sha256: str
    bands: tuple[int, ...]
    device: str
    batch_size: int
    probabilities: bool


def predicted_tiles(job: TileJob, tiles: Sequence[Tile]) -> Iterator[tuple[Tile, np.ndarray | None, np.ndarray]]:
    """(tile, class probabilities over its read window, validity mask) for each tile; the
    probabilities are None when the tile's core holds no valid pixel (the model is not run)."""
    model, card, target = cached_model(job.model_path, job.model_sha256, job.device)
    src = cached_raster(job.input_path)
    pending: list[tuple[Tile, np.ndarray, np.ndarray]] = []
    for tile in tiles:
        with bounded_gdal_cache():
            x, valid = read_model_input(src, job.bands, tile.read, card)
        if not valid[tile.core_in_read].any():
            yield tile, None, valid
            continue
        pending.append((tile, x, valid))
    for batch in _same_shape_batches(pending, job.batch_size):
        scores = predict_probabilities(model, np.stack([x for _, x, _ in batch]), target)
        for (tile, _, valid), tile_scores in zip(batch, scores, strict=True):
            yield tile, tile_scores, valid


def process_tiles(job: TileJob, store_path: str, done_dir: str, tiles: Sequence[Tile]) -> list[ChunkResult]:
    """Segment ``tiles`` (crop stitching: each tile keeps its core) and record each finished chunk."""
    group = open_store(store_path)
    results: list[ChunkResult] = []
    for tile, scores, valid in predicted_tiles(job, tiles):
        if scores is None:
            results.append(finish_chunk(done_dir, tile, "nodata", 0))
            continue
        labels, probs, n_valid = core_result(tile, scores, valid, job.probabilities)
        write_chunk(group, tile.core, labels, probs)
        results.append(finish_chunk(done_dir, tile, "computed", n_valid))
    return results


def core_result(
    tile: Tile, scores: np.ndarray, valid: np.ndarray, probabilities: bool
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The core's labels (argmax, 255 on nodata), quantised probabilities if asked, valid pixel count."""
    core_scores = scores[(slice(None), *tile.core_in_read)]
    core_valid = valid[tile.core_in_read]
    labels = core_scores.argmax(axis=0).astype(np.uint8)
    labels[~core_valid] = NODATA
    probs = quantize_probabilities(core_scores, core_valid) if probabilities else None
    return labels, probs, int(core_valid.sum())


def _same_shape_batches(items: list, batch_size: int) -> list[list]:
    """Groups of up to ``batch_size`` tiles whose read windows have the same shape (edge tiles differ)."""
    by_shape: dict[tuple[int, ...], list] = {}
    for item in items:
        by_shape.setdefault(item[1].shape, []).append(item)
    return [group[i : i + batch_size] for group in by_shape.values() for i in range(0, len(group), batch_size)]


def finish_chunk(done_dir: str, tile: Tile, status: str, valid_pixels: int) -> ChunkResult:
    """Record a chunk as finished, after its data is written (atomic rename)."""
    result = ChunkResult(tile.row, tile.col, status, valid_pixels)
    path = marker_path(Path(done_dir), tile)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(result)))
    os.replace(tmp, path)
    return result
