"""``--stitch blend``: neighbouring tiles' class probabilities cross-faded across chunk borders.

Across each border between two cores lies a zone of 2r pixels (r on each side), covered by both
tiles' read windows (r <= halo). There the two tiles' probabilities are mixed with linear ramps
that sum to one; in 2-D a tile's weight is the product of its row and column ramps, so the
weights of the up to four tiles covering a pixel still sum to one. Away from the borders a chunk
is simply its own tile's core.

Two passes keep the chunk the unit of work, with bounded memory and no locks:

* pass 1, per tile: run the model; write the core's labels (and probabilities) to scratch, and
  the tile's weighted probabilities over its *ring* (pixels within r of its core's border, inside
  and outside the core) to a scratch array indexed by the tile (zero chunks are not stored);
* pass 2, per chunk, after pass 1 of its 3x3 neighbourhood: add up the ring contributions that
  fall in the chunk, take the argmax there, and write the final chunk.

The confidence band (``--confidence``) is cross-faded as the tiles' quantised confidences (one more
ring channel: weight x p x 254), not as the top of the mixed probabilities: where the tiles agree
(the FCN's size independence) the weighted mean of one integer rounds back to it whatever the
float sums, so a tiled run's confidence equals a whole-image run's, bit for bit.

Pass 1 writes scratch only, so running any task twice (a dead worker, a resumed run) is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr
from rasterio.windows import Window, intersect

from fcnseg.pipeline.analysis.histogram import chunk_histogram
from fcnseg.pipeline.faults import crash_at_chunks
from fcnseg.pipeline.io import atomic_write
from fcnseg.pipeline.output.layout import PASS1_LEDGER, SCRATCH_STORE
from fcnseg.pipeline.output.ledger import ChunkLedger, ChunkResult
from fcnseg.pipeline.segment.worker import Submitter, TileJob, job_model, job_source, task_groups, task_key
from fcnseg.pipeline.store import (
    CONFIDENCE, LABELS, NODATA, PROBABILITIES, PROBABILITY_SCALE, RUN_TOKEN, open_run_store, open_store,
    quantize_confidence, quantize_probabilities, write_chunk,
)
from fcnseg.pipeline.tiles import Tile

if TYPE_CHECKING:
    from distributed import Client, Future

    from fcnseg.pipeline.segment.plan import RunPlan

RING = "ring"
#: The widest cross-fade: wider zones cost scratch space (ring strips are stored per tile).
MAX_RAMP = 64


@dataclass(frozen=True)
class BlendGrid:
    """What both passes know of the run: the raster's size and r, half the cross-fade zone."""

    height: int
    width: int
    ramp: int


def ramp_width(tile: int, halo: int) -> int:
    """r: half the cross-fade zone. Within the halo, at most half a tile, at most MAX_RAMP."""
    return max(0, min(halo, tile // 2, MAX_RAMP))


def axis_weights(start: int, stop: int, core: tuple[int, int], size: int, r: int) -> np.ndarray:
    """A tile's weights along one axis for coordinates [start, stop): 1 inside its core, linear
    ramps across the zones [a - r, a + r) and [b - r, b + r) at borders shared with a neighbour."""
    a, b = core
    u = np.arange(start, stop, dtype=np.float64) + 0.5
    up = np.ones_like(u) if a == 0 else np.clip((u - (a - r)) / (2 * r), 0, 1)
    down = np.ones_like(u) if b == size else np.clip(((b + r) - u) / (2 * r), 0, 1)
    return (up * down).astype(np.float32)


def extended(tile: Tile, height: int, width: int, r: int) -> Window:
    """The tile's core grown by r on every side that has a neighbour: where its weight is > 0."""
    c0, r0 = int(tile.core.col_off), int(tile.core.row_off)
    c1, r1 = c0 + int(tile.core.width), r0 + int(tile.core.height)
    c0, r0 = max(0, c0 - r), max(0, r0 - r)
    c1, r1 = min(width, c1 + r), min(height, r1 + r)
    return Window(c0, r0, c1 - c0, r1 - r0)


def ring_mask(window: Window, core: Window, height: int, width: int, r: int) -> np.ndarray:
    """True over ``window`` where a pixel is within r of a border of ``core`` shared with a neighbour."""
    rows = np.arange(int(window.row_off), int(window.row_off + window.height))
    cols = np.arange(int(window.col_off), int(window.col_off + window.width))
    a, b = int(core.row_off), int(core.row_off + core.height)
    c, d = int(core.col_off), int(core.col_off + core.width)
    near_row = ((rows < a + r) & (a > 0)) | ((rows >= b - r) & (b < height))
    near_col = ((cols < c + r) & (c > 0)) | ((cols >= d - r) & (d < width))
    inside_rows = (rows >= a - r if a > 0 else rows >= a) & (rows < b + r if b < height else rows < b)
    inside_cols = (cols >= c - r if c > 0 else cols >= c) & (cols < d + r if d < width else cols < d)
    return (near_row[:, None] | near_col[None, :]) & inside_rows[:, None] & inside_cols[None, :]


def create_scratch(path: Path, height: int, width: int, grid: tuple[int, int], tile: int, r: int,
                   num_classes: int, probabilities: bool, confidence: bool = False) -> None:
    """Scratch for pass 1: core labels (and probabilities, confidence) on the chunk grid, and per-tile
    ring contributions (probabilities x weight, the weight, then confidence x weight when asked) of
    which only the ring is ever stored."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.create_array(LABELS, shape=(height, width), dtype="uint8", chunks=(tile, tile), fill_value=NODATA)
    if probabilities:
        group.create_array(PROBABILITIES, shape=(num_classes, height, width), dtype="uint8",
                           chunks=(num_classes, tile, tile), fill_value=NODATA)
    if confidence:
        group.create_array(CONFIDENCE, shape=(height, width), dtype="uint8", chunks=(tile, tile), fill_value=NODATA)
    side = tile + 2 * r
    zone = max(32, 2 * r)
    channels = num_classes + 1 + int(confidence)
    group.create_array(RING, shape=(*grid, channels, side, side), dtype="float32", fill_value=0.0,
                       chunks=(1, 1, channels, zone, zone))


def blend_pass1(job: TileJob, scratch: str, pass1: ChunkLedger, tiles: Sequence[Tile], grid: BlendGrid) -> list[ChunkResult]:
    """Run the model on ``tiles``; store their core results and ring contributions in scratch.
    The engine (torch) is imported here, on the worker: the driver imports this module to submit
    the task and stays without torch (``worker``'s docstring)."""
    from fcnseg.pipeline.engine.predict import core_result, predict_tiles

    crash_at_chunks(tiles)  # the tests' stand-in for a chunk too large for the worker's memory
    interior = open_run_store(scratch, job.run_token)
    ring_array = interior[RING]
    results = []
    model, card, device = job_model(job)
    source = job_source(job, card)
    for tile, scores, valid in predict_tiles(model, device, source, tiles, job.batch_size):
        if scores is None:
            results.append(pass1.record(tile, "nodata", 0))
            continue
        if grid.ramp > 0:
            write_ring(ring_array, tile, scores, valid, grid, job.confidence)
        labels, probs, n_valid = core_result(tile, scores, valid, job.probabilities)
        confidence = core_confidence(tile, scores, valid) if job.confidence else None
        write_chunk(interior, tile.core, labels, probs, confidence)
        results.append(pass1.record(tile, "computed", n_valid))
    return results


def core_confidence(tile: Tile, scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The core's confidence from probabilities over the read window: the top class's probability,
    quantised as crop stitching quantises it on the device (255 on nodata)."""
    return quantize_confidence(scores[(slice(None), *tile.core_in_read)].max(axis=0), valid[tile.core_in_read])


def write_ring(ring_array: zarr.Array, tile: Tile, scores: np.ndarray, valid: np.ndarray, grid: BlendGrid,
               confidence: bool = False) -> None:
    """Store the tile's weighted probabilities and weights over its ring (zero elsewhere, not stored)."""
    contribution = ring_contribution(tile, scores, valid, grid, confidence)
    ring_array[tile.row, tile.col, :, : contribution.shape[1], : contribution.shape[2]] = contribution


def ring_contribution(tile: Tile, scores: np.ndarray, valid: np.ndarray, grid: BlendGrid,
                      confidence: bool = False) -> np.ndarray:
    """(classes + 1, h, w) over the tile's ``extended`` window: its probabilities x weight, then the
    weight, zero off its ring; with ``confidence`` one more channel, its quantised confidence x
    weight. Apart from ``write_ring`` so that in-memory prediction mixes the same floats."""
    height, width, r = grid.height, grid.width, grid.ramp
    ext = extended(tile, height, width, r)
    read = tile.read_window
    rows = slice(int(ext.row_off - read.row_off), int(ext.row_off - read.row_off + ext.height))
    cols = slice(int(ext.col_off - read.col_off), int(ext.col_off - read.col_off + ext.width))
    core_rows = (int(tile.core.row_off), int(tile.core.row_off + tile.core.height))
    core_cols = (int(tile.core.col_off), int(tile.core.col_off + tile.core.width))
    weight = (
        axis_weights(int(ext.row_off), int(ext.row_off + ext.height), core_rows, height, r)[:, None]
        * axis_weights(int(ext.col_off), int(ext.col_off + ext.width), core_cols, width, r)[None, :]
    )
    weight = weight * valid[rows, cols]  # nodata pixels contribute nothing
    parts = [scores[:, rows, cols] * weight, weight[None]]
    if confidence:
        codes = quantize_confidence(scores[:, rows, cols].max(axis=0), valid[rows, cols])  # 255: weight 0
        parts.append((codes * weight)[None])
    contribution = np.concatenate(parts, axis=0)
    contribution[:, ~ring_mask(ext, tile.core, height, width, r)] = 0.0
    return contribution


def blend_pass2(job: TileJob, scratch: str, final_store: str, ledger: ChunkLedger, tile: Tile,
                neighbours: Sequence[Tile], grid: BlendGrid, *_pass1: object) -> list[ChunkResult]:
    """The final chunk: the tile's own core, with the ring cross-faded with its neighbours'.

    ``_pass1`` are the results of the pass-1 tasks this chunk needs: passing them makes Dask run
    this task after them (and rerun them, should a worker holding them die first).
    """
    scratch_group = open_store(scratch, mode="r")
    core = tile.core
    rows, cols = core.toslices()
    labels = scratch_group[LABELS][rows, cols]
    valid = labels != NODATA
    final = open_run_store(final_store, job.run_token)
    if not valid.any():
        return [ledger.record(tile, "nodata", 0, chunk_histogram(final, core, None))]
    probs = scratch_group[PROBABILITIES][:, rows, cols] if job.probabilities else None
    confidence = scratch_group[CONFIDENCE][rows, cols] if job.confidence else None
    ring_array = scratch_group[RING]

    def ring_part(other: Tile, part_rows: slice, part_cols: slice) -> np.ndarray:
        return ring_array[other.row, other.col, :, part_rows, part_cols]

    labels, probs = blend_core(tile, neighbours, grid, labels, probs, ring_part, ring_array.shape[2], confidence)
    write_chunk(final, core, labels, probs, confidence)
    histogram = chunk_histogram(final, core, labels, confidence)
    return [ledger.record(tile, "computed", int(valid.sum()), histogram, labels)]


#: A tile's stored ring contribution over (rows, cols) of its ``extended`` window (``ring_contribution``).
RingPart = Callable[[Tile, slice, slice], np.ndarray]


def blend_core(tile: Tile, neighbours: Sequence[Tile], grid: BlendGrid, labels: np.ndarray,
               probs: np.ndarray | None, ring_part: RingPart, channels: int,
               confidence: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A chunk's final labels (and probabilities) from its pass-1 core result (``labels``: 255 on
    nodata) and the ring contributions of itself and its neighbours, added in this order (the floats
    of pass 2 wherever its scratch lives). ``channels``: classes + 1 (the weight), + 1 with
    ``confidence`` (the pass-1 core's band, cross-faded in place like ``labels``)."""
    height, width, r = grid.height, grid.width, grid.ramp
    core = tile.core
    valid = labels != NODATA
    total = np.zeros((channels, int(core.height), int(core.width)), dtype=np.float32)
    for other in (tile, *neighbours):
        ext = extended(other, height, width, r)
        if not intersect(ext, core):
            continue
        overlap = ext.intersection(core)
        src_r, src_c = int(overlap.row_off - ext.row_off), int(overlap.col_off - ext.col_off)
        dst_r, dst_c = int(overlap.row_off - core.row_off), int(overlap.col_off - core.col_off)
        h, w = int(overlap.height), int(overlap.width)
        total[:, dst_r : dst_r + h, dst_c : dst_c + w] += ring_part(other, slice(src_r, src_r + h), slice(src_c, src_c + w))
    classes = channels - 1 - int(confidence is not None)
    weight = total[classes]
    blended = ring_mask(core, core, height, width, r) & valid & (weight > 0)
    labels[blended] = total[:classes].argmax(axis=0)[blended]
    if probs is not None:
        mixed = total[:classes] / np.maximum(weight, 1e-12)
        probs[:, blended] = quantize_probabilities(mixed, blended)[:, blended]
    if confidence is not None:  # the weighted mean of the tiles' codes: one code where they agree
        mean = total[classes + 1][blended] / weight[blended]
        confidence[blended] = np.clip(np.rint(mean), 0, PROBABILITY_SCALE).astype(np.uint8)
    return labels, probs


# --- the run's tasks -----------------------------------------------------------------------


def prepare_scratch(plan: RunPlan) -> tuple[Path, ChunkLedger]:
    """The scratch store and pass-1 ledger under the run's state folder, created on the first run
    and kept by a resumed one (its finished pass-1 tiles are not run again)."""
    scratch, pass1 = plan.state / SCRATCH_STORE, plan.state / PASS1_LEDGER
    if not scratch.exists():
        grid = (max(t.row for t in plan.tiles) + 1, max(t.col for t in plan.tiles) + 1)
        r = ramp_width(plan.options.tile, plan.halo)
        with atomic_write(scratch) as partial:  # whole or absent: a crash here never blocks the rerun
            create_scratch(partial, plan.height, plan.width, grid, plan.options.tile, r, plan.num_classes,
                           plan.options.probabilities, plan.options.confidence)
            open_store(partial).attrs[RUN_TOKEN] = plan.run_token  # pass 1 writes no other run's scratch
    pass1.mkdir(exist_ok=True)
    return scratch, ChunkLedger(str(pass1))


def blend_tasks(job: TileJob, plan: RunPlan, scratch: Path, pass1: ChunkLedger) -> Submitter:
    """Pass 1 for every tile a pending chunk needs (itself and its neighbours) that has not run
    yet, then pass 2 per pending chunk, each depending on the pass-1 tasks of its 3x3 neighbourhood."""
    grid = BlendGrid(plan.height, plan.width, ramp_width(plan.options.tile, plan.halo))
    by_index = {(t.row, t.col): t for t in plan.tiles}

    def neighbours(t: Tile) -> list[Tile]:
        keys = [(t.row + dr, t.col + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]
        return [by_index[k] for k in keys if k in by_index]

    todo = plan.todo
    needed = {(n.row, n.col): n for t in todo for n in (t, *neighbours(t))}
    first = [n for _, n in sorted(needed.items()) if not pass1.is_finished(n)]
    def submit(client: Client, resources: dict[str, float] | None) -> list[Future]:
        pass1_future = {}
        for batch in task_groups(first, client, job.batch_size):
            future = client.submit(blend_pass1, job, str(scratch), pass1, batch, grid, key=task_key("blend_pass1", batch),
                                   resources=resources)
            pass1_future.update({(t.row, t.col): future for t in batch})
        finals = []
        for t in todo:
            around = neighbours(t)
            deps = dict.fromkeys(pass1_future[k] for k in [(n.row, n.col) for n in (t, *around)] if k in pass1_future)
            finals.append(client.submit(
                blend_pass2, job, str(scratch), str(plan.store_path), plan.ledger, t, around, grid, *deps,
                key=task_key("blend_pass2", [t]),
            ))
        return finals

    return submit
