"""The worker's tile loop: read tiles, run the model in batches, keep each tile's core.

``predict_tiles`` is the loop itself, over any open raster and loaded model: ``segment`` runs it
on Dask workers (``predict_chunks``, crop stitching) and ``evaluate`` in-process, so both batch
tiles the same way. Everything a task does is a plain function of its arguments (paths and tile
geometry), so a task run twice (a worker died, a run was resumed) writes the same bytes. The
model and the open raster are cached per worker process: loaded once, not once per tile.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch
from rasterio.io import DatasetReader

from fcnseg.models.checkpoint import ModelCard, load_checkpoint
from fcnseg.models.fcn import FCNBase
from fcnseg.models.inference import execution_of, predict_probabilities, resolve_device
from fcnseg.pipeline.io import InputError, bounded_gdal_cache, open_raster, read_model_input
from fcnseg.pipeline.segment.ledger import ChunkLedger, ChunkResult
from fcnseg.pipeline.store import NODATA, open_store, quantize_probabilities, write_chunk
from fcnseg.pipeline.tiles import Tile

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)

#: A tile with its class probabilities over the read window (None: no valid pixel in its core,
#: the model was not run) and the read window's validity mask.
Prediction = tuple[Tile, "np.ndarray | None", np.ndarray]

#: Submits a run's tasks to a client; the resources go to the tasks that run the model.
Submitter = Callable[["Client", "dict[str, float] | None"], list["Future"]]


@dataclass(frozen=True)
class TileJob:
    """What every task of one run shares: where to read, which model, how to run it."""

    input_path: str
    input_fingerprint: str  # the input's content as planned: a worker's open raster is reused only for it
    model_path: str
    model_content_sha256: str  # the checkpoint planned: a worker refuses any other
    execution: str  # what the run computes with (``cpu fp32`` ...): a worker refuses any other
    bands: tuple[int, ...]
    device: str
    batch_size: int
    probabilities: bool


def predict_tiles(
    model: FCNBase, card: ModelCard, device: torch.device, src: DatasetReader, bands: Sequence[int],
    tiles: Iterable[Tile], batch_size: int,
) -> Iterator[Prediction]:
    """Each tile's prediction, running the model on batches of up to ``batch_size`` read windows
    of one shape (edge tiles differ). Tiles are read as they are needed: at most a batch per
    shape is held. Tiles whose core holds no valid pixel come out at once, without the model."""
    pending: dict[tuple[int, ...], list[tuple[Tile, np.ndarray, np.ndarray]]] = {}
    for tile in tiles:
        with bounded_gdal_cache():
            x, valid = read_model_input(src, bands, tile.read_window, card)
        if not valid[tile.core_in_read].any():
            yield tile, None, valid
            continue
        batch = pending.setdefault(x.shape, [])
        batch.append((tile, x, valid))
        if len(batch) >= batch_size:
            yield from _run_batch(model, device, pending.pop(x.shape))
    for batch in pending.values():
        yield from _run_batch(model, device, batch)


def _run_batch(model: FCNBase, device: torch.device, batch: list[tuple[Tile, np.ndarray, np.ndarray]]) -> Iterator[Prediction]:
    scores = predict_probabilities(model, np.stack([x for _, x, _ in batch]), device)
    for (tile, _, valid), tile_scores in zip(batch, scores, strict=True):
        yield tile, tile_scores, valid


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


# --- on a Dask worker ----------------------------------------------------------------------


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


class ExecutionMismatch(InputError):
    """A worker would compute with another device or precision than the run's."""


@lru_cache(maxsize=2)
def cached_model(model_path: str, content_sha256: str, device: str, execution: str) -> tuple[FCNBase, ModelCard, torch.device]:
    """The planned model on this worker's device, loaded once per process. The checkpoint must be
    the one planned (its content hash) and the device compute as planned (``execution``)."""
    target = worker_device(device)
    if execution_of(target) != execution:
        raise ExecutionMismatch(f"a worker computes with {execution_of(target)}, the run with {execution}; "
                                "a run never mixes two")
    if target.type == "cpu" and os.environ.get("FCNSEG_TORCH_THREADS"):
        torch.set_num_threads(int(os.environ["FCNSEG_TORCH_THREADS"]))
    model, card = load_checkpoint(model_path, target, expected_content_sha256=content_sha256)
    log.info("loaded %s on %s", model_path, target)
    return model, card, target


@lru_cache(maxsize=4)
def cached_raster(path: str, fingerprint: str) -> DatasetReader:
    """The input, opened once per process and content: a file rewritten in place at the same
    path is opened afresh (GDAL would otherwise serve the old file's cached blocks)."""
    return open_raster(path)


def predicted_tiles(job: TileJob, tiles: Sequence[Tile]) -> Iterator[Prediction]:
    """``predict_tiles`` with this worker's cached model and raster."""
    model, card, target = cached_model(job.model_path, job.model_content_sha256, job.device, job.execution)
    return predict_tiles(model, card, target, cached_raster(job.input_path, job.input_fingerprint), job.bands, tiles, job.batch_size)


def predict_chunks(job: TileJob, store_path: str, ledger: ChunkLedger, tiles: Sequence[Tile]) -> list[ChunkResult]:
    """Segment ``tiles`` (crop stitching: each tile keeps its core) and record each finished chunk."""
    group = open_store(store_path)
    results: list[ChunkResult] = []
    for tile, scores, valid in predicted_tiles(job, tiles):
        if scores is None:
            results.append(ledger.record(tile, "nodata", 0))
            continue
        labels, probs, n_valid = core_result(tile, scores, valid, job.probabilities)
        write_chunk(group, tile.core, labels, probs)
        results.append(ledger.record(tile, "computed", n_valid))
    return results


def crop_tasks(job: TileJob, todo: Sequence[Tile], store_path: str, ledger: ChunkLedger) -> Submitter:
    """One task per group of ``batch_size`` tiles; each keeps its tiles' cores."""
    group = max(1, job.batch_size)

    def submit(client: Client, resources: dict[str, float] | None) -> list[Future]:
        return [
            client.submit(predict_chunks, job, store_path, ledger, todo[i : i + group], pure=False, resources=resources)
            for i in range(0, len(todo), group)
        ]

    return submit
