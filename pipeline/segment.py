"""``fcnseg segment``: plan a raster into tiles, run them on Dask, stitch them into Zarr, resumably.

The unit of work is a chunk of the output (a tile's core). Each finished chunk is recorded by a
marker file written after its data, so a rerun of the same command skips what is done and
produces the same bytes as an uninterrupted run. ``run.json`` is written last: its presence
says the output is complete.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import zarr
from tqdm import tqdm

from fcnseg.models.checkpoint import file_sha256, verify_checkpoint
from fcnseg.pipeline.blend import blend_pass1, blend_pass2, create_scratch, ramp_width
from fcnseg.pipeline.cog import export_labels_cog, export_probabilities_cog
from fcnseg.pipeline.infer import ChunkResult, TileJob, marker_path, process_tiles
from fcnseg.pipeline.reading import InputError, open_raster, select_bands
from fcnseg.pipeline.store import create_store, open_store
from fcnseg.pipeline.tiling import Tile, default_halo, iter_tiles

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)

STORE_NAME = "labels.zarr"
LABELS_COG = "labels.tif"
PROBABILITIES_COG = "probabilities.tif"
RUN_JSON = "run.json"
STATE_DIR = ".fcnseg-run"
BLEND_SCRATCH = "blend.zarr"
PASS1_DIR = "pass1"


@dataclass(frozen=True)
class SegmentOptions:
    tile: int = 1024
    halo: int | None = None
    stitch: Literal["crop", "blend"] = "crop"
    batch_size: int = 4
    device: str = "auto"
    probabilities: bool = False
    bands: tuple[int, ...] | None = None
    cog: bool = True  # labels.tif (and probabilities.tif) beside labels.zarr


@dataclass
class RunReport:
    out: Path
    chunks: dict[str, int]
    seconds: dict[str, float]
    megapixels_per_second: float
    peak_memory_mb: float
    parameters: dict[str, Any] = field(default_factory=dict)


class OutputConflict(InputError):
    """The output folder holds a run with another model or other parameters."""


def run_parameters(input_path: str, model_sha256: str, options: SegmentOptions, halo: int, bands: list[int]) -> dict[str, Any]:
    """What makes two runs produce the same output: a rerun must match these to reuse chunks."""
    return {
        "input": input_path, "model_sha256": model_sha256, "tile": options.tile, "halo": halo,
        "stitch": options.stitch, "bands": bands, "probabilities": options.probabilities,
    }


def prepare_output(out: Path, parameters: dict[str, Any], overwrite: bool) -> tuple[Path, bool]:
    """The state folder, after checking a previous run there; True when chunks may be reused."""
    state = out / STATE_DIR
    params_file = state / "parameters.json"
    if params_file.exists():
        previous = json.loads(params_file.read_text())
        if previous == parameters:
            return state, True
        if not overwrite:
            changed = sorted(k for k in parameters if previous.get(k) != parameters[k])
            raise OutputConflict(f"{out}: holds a run with other {', '.join(changed)}; use --overwrite to replace it")
    elif (out / STORE_NAME).exists() and not overwrite:
        raise OutputConflict(f"{out}: holds a {STORE_NAME} that fcnseg did not record; use --overwrite to replace it")
    for stale in (out / RUN_JSON, out / STORE_NAME, out / LABELS_COG, out / PROBABILITIES_COG, state):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    (state / "done").mkdir(parents=True)
    return state, False


def finished_chunks(done_dir: Path, tiles: Sequence[Tile]) -> set[tuple[int, int]]:
    return {(t.row, t.col) for t in tiles if marker_path(done_dir, t).exists()}


def segment(
    input_path: str | Path,
    model_path: str | Path,
    out: str | Path,
    options: SegmentOptions = SegmentOptions(),
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RunReport:
    """Segment ``input_path`` into ``out/labels.zarr`` on a Dask cluster (a local one by default)."""
    if options.stitch not in ("crop", "blend"):
        raise ValueError(f"--stitch must be crop or blend, not {options.stitch!r}")
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    out = Path(out)
    input_name = str(Path(input_path).resolve()) if Path(input_path).exists() else str(input_path)
    card = verify_checkpoint(model_path)  # a damaged file fails here, not on a worker mid-run
    model_sha = file_sha256(model_path)
    with open_raster(input_name) as src:
        bands = select_bands(src, card, options.bands)
        halo = default_halo(card.arch) if options.halo is None else options.halo
        tiles = list(iter_tiles(src.height, src.width, options.tile, halo))
        parameters = run_parameters(input_name, model_sha, options, halo, bands)
        out.mkdir(parents=True, exist_ok=True)
        state, reuse = prepare_output(out, parameters, overwrite)
        store_path = out / STORE_NAME
        if not reuse or not store_path.exists():
            create_store(
                store_path, height=src.height, width=src.width, crs=src.crs, transform=src.transform,
                chunk=options.tile, class_names=card.class_names, class_colors=[c.color for c in card.classes],
                attrs={"fcnseg_complete": False, "model_sha256": model_sha, "parameters": parameters,
                       "source": input_name},
                probabilities=options.probabilities,
            )
            (state / "parameters.json").write_text(json.dumps(parameters, indent=2))
        height, width = src.height, src.width
    done_dir = state / "done"
    reused = finished_chunks(done_dir, tiles)
    todo = [t for t in tiles if (t.row, t.col) not in reused]
    seconds["plan"] = time.perf_counter() - started
    log.info("%s: %dx%d px, %d chunks (%d done before), tile %d, halo %d", input_name, width, height, len(tiles), len(reused), options.tile, halo)

    job = TileJob(input_name, str(model_path), model_sha, tuple(bands), options.device, options.batch_size,
                  options.probabilities)
    if options.stitch == "crop":
        submit = crop_submitter(job, todo, str(store_path), str(done_dir))
    else:
        submit = blend_submitter(job, tiles, todo, store_path, done_dir, state, (height, width), options, halo,
                                 card.num_classes)
    results, worker_peaks = run_on_dask(
        submit, len(todo), scheduler=scheduler, workers=workers, progress=progress, seconds=seconds
    )

    finalize_started = time.perf_counter()
    open_store(store_path).attrs["fcnseg_complete"] = True
    shutil.rmtree(state / BLEND_SCRATCH, ignore_errors=True)
    shutil.rmtree(state / PASS1_DIR, ignore_errors=True)
    with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet; xarray reads it
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(str(store_path))
    seconds["finalize"] = time.perf_counter() - finalize_started
    if options.cog:
        export_started = time.perf_counter()
        export_labels_cog(store_path, out / LABELS_COG)
        if options.probabilities:
            export_probabilities_cog(store_path, out / PROBABILITIES_COG)
        seconds["export"] = time.perf_counter() - export_started
    seconds["total"] = time.perf_counter() - started

    chunks = {
        "total": len(tiles),
        "computed": sum(r.status == "computed" for r in results),
        "skipped_nodata": sum(r.status == "nodata" for r in results),
        "reused": len(reused),
    }
    driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log.debug("peak memory: driver %.0f MB, workers %s MB", driver_peak, [round(p) for p in worker_peaks])
    report = RunReport(
        out=out, chunks=chunks, seconds={k: round(v, 3) for k, v in seconds.items()},
        megapixels_per_second=round(sum(t.core.width * t.core.height for t in todo) / 1e6 / max(seconds["infer"], 1e-9), 3),
        peak_memory_mb=round(driver_peak + sum(worker_peaks), 1), parameters=parameters,
    )
    write_run_json(out, input_name, model_sha, report)
    return report


Submitter = Callable[["Client"], list["Future"]]


def crop_submitter(job: TileJob, todo: list[Tile], store_path: str, done_dir: str) -> Submitter:
    """One task per group of ``batch_size`` tiles; each keeps its tiles' cores."""
    group = max(1, job.batch_size)

    def submit(client):
        return [
            client.submit(process_tiles, job, store_path, done_dir, todo[i : i + group], pure=False)
            for i in range(0, len(todo), group)
        ]

    return submit


def blend_submitter(
    job: TileJob, tiles: list[Tile], todo: list[Tile], store_path: Path, done_dir: Path, state: Path,
    shape: tuple[int, int], options: SegmentOptions, halo: int, num_classes: int,
) -> Submitter:
    """Pass 1 for every tile a pending chunk needs (itself and its neighbours), then pass 2 per
    pending chunk, each depending on the pass-1 tasks of its 3x3 neighbourhood."""
    height, width = shape
    r = ramp_width(options.tile, halo)
    scratch, pass1_dir = state / BLEND_SCRATCH, state / PASS1_DIR
    if not scratch.exists():
        grid = (max(t.row for t in tiles) + 1, max(t.col for t in tiles) + 1)
        create_scratch(scratch, height, width, grid, options.tile, r, num_classes, options.probabilities)
    pass1_dir.mkdir(exist_ok=True)
    by_index = {(t.row, t.col): t for t in tiles}

    def neighbours(t: Tile) -> list[Tile]:
        keys = [(t.row + dr, t.col + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]
        return [by_index[k] for k in keys if k in by_index]

    needed = {(n.row, n.col): n for t in todo for n in (t, *neighbours(t))}
    pass1 = [n for key, n in sorted(needed.items()) if not marker_path(pass1_dir, n).exists()]
    group = max(1, job.batch_size)

    def submit(client):
        pass1_future = {}
        for i in range(0, len(pass1), group):
            batch = pass1[i : i + group]
            future = client.submit(blend_pass1, job, str(scratch), str(pass1_dir), batch, height, width, r, pure=False)
            pass1_future.update({(t.row, t.col): future for t in batch})
        finals = []
        for t in todo:
            around = neighbours(t)
            deps = dict.fromkeys(pass1_future[k] for k in [(n.row, n.col) for n in (t, *around)] if k in pass1_future)
            finals.append(client.submit(
                blend_pass2, job, str(scratch), str(store_path), str(done_dir), t, around, height, width, r,
                *deps, pure=False,
            ))
        return finals

    return submit


def run_on_dask(
    submit: Submitter, total: int, *, scheduler: str | None, workers: int | None, progress: bool,
    seconds: dict[str, float],
) -> tuple[list[ChunkResult], list[float]]:
    """Run the submitted tasks; return the final chunks' results and each worker's peak memory (MB).

    Adds the time to reach the cluster (``cluster``) and to run the tiles (``infer``) to ``seconds``.
    """
    from distributed import Client, LocalCluster, as_completed

    started = time.perf_counter()
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        n = workers or max(1, min(4, (os.cpu_count() or 2)))
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)
    try:
        log.info("Dask dashboard: %s", client.dashboard_link)
        seconds["cluster"] = time.perf_counter() - started
        started = time.perf_counter()
        results: list[ChunkResult] = []
        with tqdm(total=total, desc="segment", unit="chunk", disable=not progress) as bar:
            for future in as_completed(submit(client)):
                chunk_results = future.result()
                results.extend(chunk_results)
                bar.update(len(chunk_results))
        seconds["infer"] = time.perf_counter() - started
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return results, list(peaks.values())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def write_run_json(out: Path, input_path: str, model_sha: str, report: RunReport) -> None:
    """run.json, written atomically and last: its presence marks a complete output."""
    record = {
        "input": input_path,
        "model_sha256": model_sha,
        "parameters": report.parameters,
        "chunks": report.chunks,
        "seconds": report.seconds,
        "megapixels_per_second": report.megapixels_per_second,
        "peak_memory_mb": report.peak_memory_mb,
    }
    tmp = out / f".{RUN_JSON}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, out / RUN_JSON)
