"""The Dask side of the tile loop: what a task carries, the model cached per worker process, the
crop task itself and how tiles are grouped into tasks.

Everything a task does is a plain function of its arguments (paths and tile geometry), so a task
run twice (a worker died, a run was resumed) writes the same bytes. A task streams its tiles: they
are read ahead on reader threads (``TileSource``), run through the model in batches, and written
with their ledger markers on a writer thread, so reading, computing and writing overlap.

Torch is imported by the functions that run on a worker (the model, the device, the tile source),
not by the module: the driver imports it to submit them and, on a cluster of worker processes,
never loads torch (a second of a run's start and some 200 MB of its memory).
"""

from __future__ import annotations

import logging
import math
import os
import re
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING

import zarr

from fcnseg.errors import ExecutionMismatch
from fcnseg.models.card import ModelCard, Normalization
from fcnseg.pipeline.analysis.histogram import chunk_histogram
from fcnseg.pipeline.faults import crash_at_chunks
from fcnseg.pipeline.output.ledger import ChunkLedger, ChunkResult
from fcnseg.pipeline.store import open_run_store, write_chunk
from fcnseg.pipeline.tiles import Tile

if TYPE_CHECKING:
    import torch
    from distributed import Client
    from distributed import Future as DaskFuture

    from fcnseg.models.fcn import FCNBase
    from fcnseg.pipeline.engine.predict import CorePrediction
    from fcnseg.pipeline.engine.tile_source import TileSource

log = logging.getLogger(__name__)

#: Submits a run's tasks to a client; the resources go to the tasks that run the model.
Submitter = Callable[["Client", "dict[str, float] | None"], list["DaskFuture"]]

#: Tasks per worker a run aims at, so that a worker finishing early finds more work.
TASKS_PER_WORKER = 4
#: More tasks than this cost Dask more than they balance (each costs the scheduler time of its own;
#: measured: docs/benchmarks.md#figures-quoted-in-code-comments).
MAX_TASKS = 2000
#: Chunks waiting for the writer thread; beyond it the loop waits (memory stays bounded).
WRITE_DEPTH = 4


@dataclass(frozen=True)
class TileJob:
    """What every task of one run shares: where to read, which model, how to run it, and which
    run it belongs to. Paths are absolute (or URIs), resolved once on the driver: a worker's
    working directory is no part of a run."""

    input_path: str
    input_fingerprint: str  # the input's content as planned (part of the run's identity)
    model_path: str
    model_content_sha256: str  # the checkpoint planned: a worker refuses any other
    execution: str  # what the run computes with (``cpu fp32`` ...): a worker refuses any other
    bands: tuple[int, ...]
    device: str
    batch_size: int
    probabilities: bool
    run_token: str | None = None  # the store's ``RUN_TOKEN``: a task writes into no other store
    tta: str = "none"  # --tta: the views each tile's logits are averaged over (``models.tta``)
    confidence: bool = False  # the store's per-pixel confidence band (top-class probability)
    #: --normalize scene: the per-band (mean, std) planned for the input, in place of the card's
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def worker_device(device: str) -> torch.device:
    """The device for this process: with several GPUs visible, each Dask worker takes its own."""
    import torch

    from fcnseg.models.inference import resolve_device

    resolved = resolve_device(device)
    if resolved.type != "cuda" or resolved.index is not None:
        return resolved
    count = torch.cuda.device_count()
    return torch.device("cuda", worker_gpu_index(count) if count > 1 else 0)


def worker_gpu_index(count: int) -> int:
    """Which of ``count`` visible GPUs this worker uses: the number in its name (``0``, ``gpu-3``:
    LocalCluster and most deployments number their workers), else a stable hash of the name.
    Workers started one per GPU (fcnseg's local GPU cluster, dask-cuda) see one GPU and never get here."""
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):  # not on a Dask worker
        return 0
    digits = re.search(r"(\d+)$", name)
    if digits:
        return int(digits.group(1)) % count
    log.warning("worker %s has no number in its name: its GPU is chosen by a hash of the name, and two workers "
                "may share one; name workers by number or give each its own CUDA_VISIBLE_DEVICES", name)
    return zlib.crc32(name.encode()) % count


@lru_cache(maxsize=2)
def cached_model(model_path: str, content_sha256: str, device: str, execution: str) -> tuple[FCNBase, ModelCard, torch.device]:
    """The planned model on this worker's device, loaded once per process. The checkpoint must be
    the one planned (its content hash) and the device compute as planned (``execution``)."""
    import torch

    from fcnseg.models.inference import execution_of, load_for_inference

    target = worker_device(device)
    if execution_of(target) != execution:
        raise ExecutionMismatch(f"a worker computes with {execution_of(target)}, the run with {execution}; "
                                "a run never mixes two")
    if target.type == "cpu" and os.environ.get("FCNSEG_TORCH_THREADS"):
        torch.set_num_threads(int(os.environ["FCNSEG_TORCH_THREADS"]))
    model, card = load_for_inference(model_path, target, expected_content_sha256=content_sha256)
    log.info("loaded %s on %s", model_path, target)
    return model, card, target


def job_model(job: TileJob) -> tuple[FCNBase, ModelCard, torch.device]:
    return cached_model(job.model_path, job.model_content_sha256, job.device, job.execution)


def job_source(job: TileJob, card: ModelCard) -> TileSource:
    """The run's tile source on this worker: its reader threads and their open datasets serve
    every task of the run (a task of one tile no longer pays for opening them). Keyed by the
    input's fingerprint: a file rewritten in place is opened afresh, never read through GDAL's
    handle (and block cache) of the old one. At most two are kept. A run's planned normalisation
    (``--normalize scene``) replaces the card's in the source's card, which the forward pass reads."""
    from fcnseg.pipeline.engine.tile_source import TileSource

    key = (job.input_path, job.input_fingerprint, job.bands, job.model_content_sha256, job.tta, job.normalization)
    if key not in _SOURCES:
        while len(_SOURCES) >= 2:
            _SOURCES.pop(next(iter(_SOURCES))).close()
        if job.normalization is not None:
            mean, std = job.normalization
            card = replace(card, normalization=Normalization(mean=list(mean), std=list(std)))
        _SOURCES[key] = TileSource(job.input_path, job.bands, card, tta=job.tta)
    return _SOURCES[key]


_SOURCES: dict[tuple, TileSource] = {}


def predict_chunks(job: TileJob, store_path: str, ledger: ChunkLedger, tiles: Sequence[Tile]) -> list[ChunkResult]:
    """Segment ``tiles`` (crop stitching: each tile keeps its core) and record each finished
    chunk; the writes happen on a writer thread while the model runs on the next batch."""
    from fcnseg.pipeline.engine.predict import predict_cores

    crash_at_chunks(tiles)  # the tests' stand-in for a chunk too large for the worker's memory
    group = open_run_store(store_path, job.run_token)  # before anything is computed for it
    model, card, device = job_model(job)
    results: list[ChunkResult] = []
    waiting: deque[Future[ChunkResult]] = deque()
    source = job_source(job, card)
    with ThreadPoolExecutor(1, thread_name_prefix="fcnseg-write") as writer:
        for core in predict_cores(model, device, source, tiles, job.batch_size, job.probabilities, job.confidence):
            waiting.append(writer.submit(write_core, group, ledger, core))
            while len(waiting) > WRITE_DEPTH:
                results.append(waiting.popleft().result())  # a failed write surfaces here, as itself
        while waiting:
            results.append(waiting.popleft().result())
    return results


def write_core(group: zarr.Group, ledger: ChunkLedger, core: CorePrediction) -> ChunkResult:
    """Write a tile's core as its chunk (with its overview blocks), then record the chunk finished
    with its class histogram (and each class's summed confidence)."""
    histogram = chunk_histogram(group, core.tile.core, core.labels, core.confidence)
    if core.labels is None:
        return ledger.record(core.tile, "nodata", 0, histogram)
    write_chunk(group, core.tile.core, core.labels, core.probabilities, core.confidence)
    return ledger.record(core.tile, "computed", core.valid_pixels, histogram, core.labels)


def tiles_per_task(tiles: int, workers: int, batch_size: int) -> int:
    """Tiles in one task: few enough that every worker gets several tasks (a small scene still
    uses the whole cluster), at most a batch (the model runs a batch at a time), and never so few
    that a huge scene floods the scheduler with more than MAX_TASKS tasks."""
    spread = math.ceil(tiles / (TASKS_PER_WORKER * max(1, workers)))
    fewest = math.ceil(tiles / MAX_TASKS)  # tiles per task that keep the task count at MAX_TASKS
    return max(1, fewest, min(spread, batch_size))


def task_groups(todo: Sequence[Tile], client: Client, batch_size: int) -> list[Sequence[Tile]]:
    """``todo`` cut into consecutive groups sized for the workers ``client`` has now."""
    workers = len(client.scheduler_info()["workers"])
    size = tiles_per_task(len(todo), workers, batch_size)
    return [todo[i : i + size] for i in range(0, len(todo), size)]


def crop_tasks(job: TileJob, todo: Sequence[Tile], store_path: str, ledger: ChunkLedger) -> Submitter:
    """One task per group of tiles; each keeps its tiles' cores."""

    def submit(client: Client, resources: dict[str, float] | None) -> list[DaskFuture]:
        return [client.submit(predict_chunks, job, store_path, ledger, group, key=task_key("predict_chunks", group),
                              resources=resources)
                for group in task_groups(todo, client, job.batch_size)]

    return submit


def task_key(name: str, tiles: Sequence[Tile]) -> tuple[str, int, int, int]:
    """A Dask key for a task computing ``tiles``, unique to this submission, that names its first
    chunk and how many it computes: a task that fails (its worker killed) says which chunks."""
    return (f"{name}-{uuid.uuid4().hex}", tiles[0].row, tiles[0].col, len(tiles))


def chunks_of_key(key: object) -> str:
    """What a ``task_key`` computes, in words: ``chunk (3, 4)``, ``chunk (3, 4) and 1 more``."""
    if not (isinstance(key, tuple) and len(key) == 4 and all(isinstance(v, int) for v in key[1:])):
        return "a task"
    _, row, col, count = key
    return f"chunk ({row}, {col})" + (f" and {count - 1} more" if count > 1 else "")
