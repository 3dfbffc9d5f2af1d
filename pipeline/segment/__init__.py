"""``fcnseg segment``: plan a raster into tiles, run them on Dask, stitch them into Zarr, resumably.

The unit of work is a chunk of the output (a tile's core). Each finished chunk is recorded by a
marker file written after its data, so a rerun of the same command skips what is done and
produces the same bytes as an uninterrupted run. The stages (plan, compute, publish) are plain
functions, so the Prefect flow can run each as a task. ``run.json`` is written once every output
file exists and lists them with the parameters: a rerun that finds them all is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import zarr
from tqdm import tqdm

from fcnseg.models.checkpoint import ModelCard, file_sha256, verify_checkpoint
from fcnseg.pipeline.blend import blend_pass1, blend_pass2, create_scratch, ramp_width
from fcnseg.pipeline.cluster import GPU_RESOURCE, dask_client, gpu_resources
from fcnseg.pipeline.cog import export_labels_cog, export_probabilities_cog
from fcnseg.pipeline.infer import ChunkResult, TileJob, marker_path, process_tiles
from fcnseg.pipeline.outputs import (
    ITEM_JSON,
    LABELS_COG,
    POLYGONS_GPKG,
    POLYGONS_PARQUET,
    PROBABILITIES_COG,
    QUICKLOOK_PNG,
    RUN_JSON,
    STATE_DIR,
    STORE_NAME,
)
from fcnseg.pipeline.quicklook import write_quicklook
from fcnseg.pipeline.reading import InputError, open_raster, select_bands
from fcnseg.pipeline.stac import write_stac_item
from fcnseg.pipeline.store import create_store, open_store
from fcnseg.pipeline.tiling import Tile, default_halo, iter_tiles
from fcnseg.pipeline.vectorize import VectorizeOptions, VectorizeReport, vectorize_store

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)

#: Every file a run may leave in OUT (a run with other parameters starts by removing them).
OUTPUT_FILES = (RUN_JSON, ITEM_JSON, STORE_NAME, LABELS_COG, PROBABILITIES_COG, POLYGONS_PARQUET, POLYGONS_GPKG,
                QUICKLOOK_PNG)

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
    # what is made from the finished store (changing these never recomputes a chunk)
    cog: bool = True  # labels.tif (and probabilities.tif)
    polygons: bool = True  # polygons.parquet and polygons.gpkg
    simplify: float = 0.0  # polygon simplification tolerance, CRS units; 0 = exact pixel edges
    min_area: float = 0.0  # drop polygons smaller than this (m²)
    quicklook: bool = True  # quicklook.png
    stac: bool = True  # item.json

    def outputs(self) -> dict[str, Any]:
        """The options that shape the files made from the store, as recorded in run.json."""
        return {"cog": self.cog, "polygons": self.polygons, "simplify": self.simplify, "min_area": self.min_area,
                "quicklook": self.quicklook, "stac": self.stac}


@dataclass
class RunReport:
    out: Path
    chunks: dict[str, int]
    seconds: dict[str, float]
    megapixels_per_second: float
    peak_memory_mb: float
    parameters: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    class_areas: list[dict[str, Any]] = field(default_factory=list)
    polygons: int | None = None
    skipped: bool = False  # the folder already held this exact output: nothing was done


@dataclass
class RunPlan:
    """Everything decided before any chunk is computed (the validate and plan stages)."""

    input: str
    model_path: str
    model_sha256: str
    out: Path
    options: SegmentOptions
    halo: int
    bands: list[int]
    tiles: list[Tile]
    reused: set[tuple[int, int]]
    parameters: dict[str, Any]
    num_classes: int
    height: int
    width: int
    complete: bool = False  # run.json says this exact output is already there

    @property
    def store_path(self) -> Path:
        return self.out / STORE_NAME

    @property
    def state(self) -> Path:
        return self.out / STATE_DIR

    @property
    def done_dir(self) -> Path:
        return self.state / "done"

    @property
    def todo(self) -> list[Tile]:
        return [t for t in self.tiles if (t.row, t.col) not in self.reused]


@dataclass
class ChunkRun:
    results: list[ChunkResult]
    worker_peaks_mb: list[float]
    seconds: dict[str, float]


class OutputConflict(InputError):
    """The output folder holds a run with another model or other parameters."""


def run_parameters(input_path: str, model_sha256: str, options: SegmentOptions, halo: int, bands: list[int]) -> dict[str, Any]:
    """What makes two runs produce the same chunks: a rerun must match these to reuse them."""
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
    remove_outputs(out, keep_store=False)
    remove(state)
    (state / "done").mkdir(parents=True)
    return state, False


def remove_outputs(out: Path, *, keep_store: bool) -> None:
    """Every file a run leaves in OUT (run.json first: the folder stops looking complete at once)."""
    for name in OUTPUT_FILES:
        if not (keep_store and name == STORE_NAME):
            remove(out / name)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def finished_chunks(done_dir: Path, tiles: Sequence[Tile]) -> set[tuple[int, int]]:
    return {(t.row, t.col) for t in tiles if marker_path(done_dir, t).exists()}


def plan_run(
    input_path: str | Path, model_path: str | Path, out: str | Path, options: SegmentOptions = SegmentOptions(),
    *, overwrite: bool = False,
) -> RunPlan:
    """Validate the input and model, plan the tiles and prepare OUT (the store, resume state).

    Bad input fails here, before any output exists: a damaged checkpoint, an unreadable raster,
    bands the model cannot take, or an OUT that holds another run.
    """
    if options.stitch not in ("crop", "blend"):
        raise ValueError(f"--stitch must be crop or blend, not {options.stitch!r}")
    if options.simplify < 0 or options.min_area < 0:
        raise ValueError("--simplify and --min-area must not be negative")
    out = Path(out)
    input_name = str(Path(input_path).resolve()) if Path(input_path).exists() else str(input_path)
    card, model_sha = checked_model(model_path)  # a damaged file fails here, not on a worker mid-run
    with open_raster(input_name) as src:
        bands = select_bands(src, card, options.bands)
        halo = default_halo(card.arch) if options.halo is None else options.halo
        tiles = list(iter_tiles(src.height, src.width, options.tile, halo))
        parameters = run_parameters(input_name, model_sha, options, halo, bands)
        plan = RunPlan(input_name, str(model_path), model_sha, out, options, halo, bands, tiles, set(), parameters,
                       card.num_classes, src.height, src.width)
        if is_complete(plan):
            plan.complete = True
            return plan
        out.mkdir(parents=True, exist_ok=True)
        state, reuse = prepare_output(out, parameters, overwrite)
        if not reuse or not plan.store_path.exists():
            create_store(
                plan.store_path, height=src.height, width=src.width, crs=src.crs, transform=src.transform,
                chunk=options.tile, class_names=card.class_names, class_colors=[c.color for c in card.classes],
                attrs={"fcnseg_complete": False, "model_sha256": model_sha, "parameters": parameters,
                       "source": input_name},
                probabilities=options.probabilities,
            )
            (state / "parameters.json").write_text(json.dumps(parameters, indent=2))
    plan.reused = finished_chunks(plan.done_dir, tiles)
    log.info("%s: %dx%d px, %d chunks (%d done before), tile %d, halo %d", input_name, plan.width, plan.height,
             len(tiles), len(plan.reused), options.tile, halo)
    return plan


def checked_model(model_path: str | Path) -> tuple[ModelCard, str]:
    """The card and file sha256 of a checkpoint whose every byte was verified.

    Verified once per process and file version: a flow plans many scenes with one model, and a
    full-width checkpoint is half a gigabyte to read.
    """
    try:
        stat = os.stat(model_path)
    except OSError:
        verify_checkpoint(model_path)  # raises the checkpoint's own clear error for a missing file
        raise
    return _checked_model(str(model_path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _checked_model(model_path: str, mtime_ns: int, size: int) -> tuple[ModelCard, str]:
    return verify_checkpoint(model_path), file_sha256(model_path)


def is_complete(plan: RunPlan) -> bool:
    """OUT already holds this exact output: run.json records the same parameters and outputs,
    every chunk is marked done and every file it lists exists."""
    run_json = plan.out / RUN_JSON
    if not run_json.exists():
        return False
    try:
        record = json.loads(run_json.read_text())
    except json.JSONDecodeError:
        return False
    return (
        record.get("parameters") == plan.parameters
        and record.get("outputs") == plan.options.outputs()
        and all((plan.out / name).exists() for name in record.get("files", []))
        and len(finished_chunks(plan.done_dir, plan.tiles)) == len(plan.tiles)
    )


def compute_chunks(
    plan: RunPlan, *, scheduler: str | None = None, cluster_spec: str | Path | None = None,
    workers: int | None = None, progress: bool = True,
) -> ChunkRun:
    """The infer stage: every pending chunk on the Dask cluster (crop or blend), then the store is
    marked complete and its metadata consolidated."""
    options, todo = plan.options, plan.todo
    if not todo:  # every chunk finished before: no cluster needed
        finish_store(plan)
        return ChunkRun([], [], {"infer": 0.0})
    job = TileJob(plan.input, plan.model_path, plan.model_sha256, tuple(plan.bands), options.device,
                  options.batch_size, options.probabilities)
    if options.stitch == "crop":
        submit = crop_submitter(job, todo, str(plan.store_path), str(plan.done_dir))
    else:
        submit = blend_submitter(job, plan.tiles, todo, plan.store_path, plan.done_dir, plan.state,
                                 (plan.height, plan.width), options, plan.halo, plan.num_classes)
    seconds: dict[str, float] = {}
    results, peaks = run_on_dask(submit, len(todo), scheduler=scheduler, workers=workers, progress=progress,
                                 seconds=seconds, cluster_spec=cluster_spec)
    finish_store(plan)
    return ChunkRun(results, peaks, seconds)


def finish_store(plan: RunPlan) -> None:
    """Mark the store complete, drop blend scratch, consolidate metadata (xarray opens it in one call)."""
    open_store(plan.store_path).attrs["fcnseg_complete"] = True
    shutil.rmtree(plan.state / BLEND_SCRATCH, ignore_errors=True)
    shutil.rmtree(plan.state / PASS1_DIR, ignore_errors=True)
    with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet; xarray reads it
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(str(plan.store_path))


def export_rasters(plan: RunPlan) -> list[str]:
    """The export stage: labels.tif (and probabilities.tif) as COGs, and quicklook.png.

    Starts by removing every file an earlier run left beside the store (its outputs may have been
    made with other options) and run.json with them: until publish, the folder is not complete.
    """
    out, options = plan.out, plan.options
    remove_outputs(out, keep_store=True)
    written = []
    if options.cog or options.quicklook:  # the quicklook reads the labels COG's overviews
        export_labels_cog(plan.store_path, out / LABELS_COG)
        written.append(LABELS_COG)
        if options.probabilities and options.cog:
            export_probabilities_cog(plan.store_path, out / PROBABILITIES_COG)
            written.append(PROBABILITIES_COG)
    if options.quicklook:
        write_quicklook(plan.input, out / LABELS_COG, out / QUICKLOOK_PNG)
        written.append(QUICKLOOK_PNG)
        if not options.cog:
            (out / LABELS_COG).unlink()
            written.remove(LABELS_COG)
    return written


def export_polygons(plan: RunPlan, *, progress: bool = False) -> VectorizeReport | None:
    """The vectorise stage: polygons.parquet and polygons.gpkg, merged across chunk borders."""
    if not plan.options.polygons:
        return None
    options = VectorizeOptions(simplify=plan.options.simplify, min_area=plan.options.min_area)
    return vectorize_store(plan.store_path, plan.out / POLYGONS_PARQUET, plan.out / POLYGONS_GPKG, options,
                           progress=progress)


def class_areas(store_path: Path) -> list[dict[str, Any]]:
    """Per class: pixels, m² and share of the valid area, counted chunk by chunk from the store."""
    from fcnseg.pipeline.query import query_classes

    return query_classes(store_path).to_dict()["classes"]


def segment(
    input_path: str | Path,
    model_path: str | Path,
    out: str | Path,
    options: SegmentOptions = SegmentOptions(),
    *,
    scheduler: str | None = None,
    cluster_spec: str | Path | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RunReport:
    """Segment ``input_path`` into OUT (labels.zarr and the files made from it) on a Dask cluster.

    A local cluster is started unless ``scheduler`` gives one. OUT holding this exact output
    already is a no-op (``report.skipped``); an interrupted run resumes from its finished chunks.
    """
    started = time.perf_counter()
    plan = plan_run(input_path, model_path, out, options, overwrite=overwrite)

    def infer(plan: RunPlan) -> ChunkRun:
        return compute_chunks(plan, scheduler=scheduler, cluster_spec=cluster_spec, workers=workers, progress=progress)

    return run_stages(plan, Stages(infer=infer, vectorize=lambda p: export_polygons(p, progress=progress)), started)


def publish(
    plan: RunPlan, chunk_run: ChunkRun, seconds: dict[str, float], files: list[str], polygons: VectorizeReport | None,
) -> RunReport:
    """The publish stage: per-class areas, run.json (the record of a complete output), item.json."""
    files = [STORE_NAME, *files]
    if polygons is not None:
        files += [POLYGONS_PARQUET, POLYGONS_GPKG]
    if plan.options.stac:
        files.append(ITEM_JSON)  # written right after run.json; a run.json without it is incomplete
    report = run_report(plan, chunk_run, seconds, files, class_areas(plan.store_path), polygons)
    write_run_json(plan, report)
    if plan.options.stac:
        write_stac_item(plan.out, input_path=plan.input, model_sha256=plan.model_sha256, parameters=plan.parameters)
    return report


@dataclass(frozen=True)
class Stages:
    """The stages after planning, as callables: the Prefect flow passes its tasks here."""

    infer: Callable[[RunPlan], ChunkRun] = compute_chunks
    export: Callable[[RunPlan], list[str]] = export_rasters
    vectorize: Callable[[RunPlan], VectorizeReport | None] = export_polygons
    publish: Callable[..., RunReport] = publish


def run_stages(plan: RunPlan, stages: Stages = Stages(), started: float | None = None) -> RunReport:
    """Infer, export, vectorise, publish; a plan whose output is already complete is a no-op."""
    if plan.complete:
        log.info("%s: complete for this model and these parameters; nothing to do", plan.out)
        return skipped_report(plan)
    started = time.perf_counter() if started is None else started
    seconds = {"plan": time.perf_counter() - started}
    chunk_run = stages.infer(plan)
    seconds.update(chunk_run.seconds)
    timed = Stopwatch(seconds)
    with timed("export"):
        files = stages.export(plan)
    with timed("vectorize"):
        polygons = stages.vectorize(plan)
    seconds["total"] = time.perf_counter() - started
    return stages.publish(plan, chunk_run, seconds, files, polygons)


class Stopwatch:
    """``with timed("stage"):`` adds the stage's seconds to a dict."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


def run_report(
    plan: RunPlan, chunk_run: ChunkRun, seconds: dict[str, float], files: list[str], areas: list[dict[str, Any]],
    polygons: VectorizeReport | None,
) -> RunReport:
    results, todo = chunk_run.results, plan.todo
    chunks = {
        "total": len(plan.tiles),
        "computed": sum(r.status == "computed" for r in results),
        "skipped_nodata": sum(r.status == "nodata" for r in results),
        "reused": len(plan.reused),
    }
    driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log.debug("peak memory: driver %.0f MB, workers %s MB", driver_peak, [round(p) for p in chunk_run.worker_peaks_mb])
    infer_seconds = max(seconds.get("infer", 0.0), 1e-9)
    return RunReport(
        out=plan.out, chunks=chunks, seconds={k: round(v, 3) for k, v in seconds.items()},
        megapixels_per_second=round(sum(t.core.width * t.core.height for t in todo) / 1e6 / infer_seconds, 3),
        peak_memory_mb=round(driver_peak + sum(chunk_run.worker_peaks_mb), 1), parameters=plan.parameters,
        files=files, class_areas=areas, polygons=None if polygons is None else polygons.polygons,
    )


def skipped_report(plan: RunPlan) -> RunReport:
    """The report of a run that found its output complete: read back from run.json."""
    return read_run_report(plan.out, skipped=True)


def read_run_report(out: str | Path, *, skipped: bool = False) -> RunReport:
    """The report of the complete output in ``out``, from its run.json."""
    record = json.loads((Path(out) / RUN_JSON).read_text())
    return RunReport(
        out=Path(out), chunks=record["chunks"], seconds=record["seconds"],
        megapixels_per_second=record["megapixels_per_second"], peak_memory_mb=record["peak_memory_mb"],
        parameters=record["parameters"], files=record["files"], class_areas=record["class_areas"],
        polygons=record.get("polygons"), skipped=skipped,
    )


#: Submits a run's tasks to a client; the resources go to the tasks that run the model.
Submitter = Callable[["Client", "dict[str, float] | None"], list["Future"]]


def crop_submitter(job: TileJob, todo: list[Tile], store_path: str, done_dir: str) -> Submitter:
    """One task per group of ``batch_size`` tiles; each keeps its tiles' cores."""
    group = max(1, job.batch_size)

    def submit(client, resources):
        return [
            client.submit(process_tiles, job, store_path, done_dir, todo[i : i + group], pure=False, resources=resources)
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

    def submit(client, resources):
        pass1_future = {}
        for i in range(0, len(pass1), group):
            batch = pass1[i : i + group]
            future = client.submit(blend_pass1, job, str(scratch), str(pass1_dir), batch, height, width, r, pure=False,
                                   resources=resources)
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
    seconds: dict[str, float], cluster_spec: str | Path | None = None,
) -> tuple[list[ChunkResult], list[float]]:
    """Run the submitted tasks; return the final chunks' results and each worker's peak memory (MB).

    The cluster is the one at ``scheduler``, one started from ``cluster_spec``, or a LocalCluster.
    Inference tasks ask for a ``GPU`` resource when the workers advertise one, so that each GPU
    runs one batch at a time. Adds the time to reach the cluster (``cluster``) and to run the
    tiles (``infer``) to ``seconds``.
    """
    from distributed import as_completed

    started = time.perf_counter()
    with dask_client(scheduler, cluster_spec, workers) as client:
        resources = {GPU_RESOURCE: 1} if gpu_resources(client, wait=60 if cluster_spec else 0) else None
        seconds["cluster"] = time.perf_counter() - started
        started = time.perf_counter()
        results: list[ChunkResult] = []
        with tqdm(total=total, desc="segment", unit="chunk", disable=not progress) as bar:
            for future in as_completed(submit(client, resources)):
                chunk_results = future.result()
                results.extend(chunk_results)
                bar.update(len(chunk_results))
        seconds["infer"] = time.perf_counter() - started
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return results, list(peaks.values())


def write_run_json(plan: RunPlan, report: RunReport) -> None:
    """run.json, written atomically once every output file exists: it records what the folder holds."""
    record = {
        "input": plan.input,
        "model_sha256": plan.model_sha256,
        "parameters": report.parameters,
        "outputs": plan.options.outputs(),
        "files": report.files,
        "chunks": report.chunks,
        "seconds": report.seconds,
        "megapixels_per_second": report.megapixels_per_second,
        "peak_memory_mb": report.peak_memory_mb,
        "polygons": report.polygons,
        "class_areas": report.class_areas,
    }
    tmp = plan.out / f".{RUN_JSON}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, plan.out / RUN_JSON)
