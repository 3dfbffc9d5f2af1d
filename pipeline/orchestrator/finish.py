"""The stages after inference: the files made from the finished store, then the run's record.

``export_rasters`` (COGs, quicklook), ``export_polygons`` (GeoParquet, GeoPackage) and ``publish``
(class areas, run.json, item.json). Each is a plain function of the plan, so the Prefect flow runs
each as a task.
"""

from __future__ import annotations

import logging
import resource
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from fcnseg.pipeline.output import layout as outputs
from fcnseg.pipeline.analysis.query import ClassArea, query_classes, summed_classes
from fcnseg.pipeline.cluster import optional_client
from fcnseg.pipeline.products.cog import export_confidence_cog, export_labels_cog, export_probabilities_cog
from fcnseg.pipeline.products.quicklook import checkpoint_label, write_quicklook
from fcnseg.pipeline.products.quicklook_confidence import write_confidence_view
from fcnseg.pipeline.products.stac import write_stac_item
from fcnseg.pipeline.products.vectorize import VectorizeOptions, VectorizeReport, vectorize_store
from fcnseg.pipeline.faults import crash_point
from fcnseg.pipeline.output.object_store import ObjectStoreOutput
from fcnseg.pipeline.output.guard import forget_run, remove_outputs
from fcnseg.pipeline.segment.plan import RunPlan
from fcnseg.pipeline.output.record import ChunkCounts, ChunkRun, RunReport, iso_utc, write_run_json

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)


def export_rasters(plan: RunPlan, *, client: Client | None = None, scheduler: str | None = None) -> list[str]:
    """The export stage: labels.tif (and probabilities.tif, confidence.tif) as COGs, and quicklook.png
    (its labels from the store's overview pyramid, so it needs no labels.tif) and confidence.png.

    Starts by removing every file an earlier run left beside the store (its outputs may have been
    made with other options) and run.json with them: until publish, the folder is not complete.
    """
    out, options = plan.out, plan.options
    remove_outputs(out, keep_store=True)
    written = []
    if options.cog:
        export_labels_cog(plan.store_path, out / outputs.LABELS_COG)
        written += [outputs.LABELS_COG, outputs.LABELS_PAM, outputs.LABELS_QML]
        crash_point("export")
        if options.probabilities:
            export_probabilities_cog(plan.store_path, out / outputs.PROBABILITIES_COG)
            written.append(outputs.PROBABILITIES_COG)
        if options.confidence:
            export_confidence_cog(plan.store_path, out / outputs.CONFIDENCE_COG)
            written.append(outputs.CONFIDENCE_COG)
    if options.quicklook:  # its read of the input runs on the cluster when there is one
        with optional_client(client, scheduler) as reached:
            model = checkpoint_label(plan.model.path, plan.model.card.arch) if plan.model else plan.model_path
            write_quicklook(plan.input, plan.store_path, out / outputs.QUICKLOOK_PNG, client=reached, model=model)
        written.append(outputs.QUICKLOOK_PNG)
        if options.confidence:
            write_confidence_view(plan.store_path, out / outputs.CONFIDENCE_PNG, image_path=plan.input)
            written.append(outputs.CONFIDENCE_PNG)
    return written


def export_polygons(plan: RunPlan, *, client: Client | None = None, scheduler: str | None = None,
                    progress: bool = False) -> VectorizeReport | None:
    """The vectorise stage: polygons.parquet and polygons.gpkg, their cells polygonised on the Dask
    cluster (``client``, or the scheduler at ``scheduler``; neither: here, one cell after another)."""
    if not plan.options.polygons:
        return None
    options = VectorizeOptions(simplify=plan.options.simplify, min_area=plan.options.min_area,
                               cell=plan.options.polygon_cell)
    with optional_client(client, scheduler) as reached:
        return vectorize_store(plan.store_path, plan.out / outputs.POLYGONS_PARQUET, plan.out / outputs.POLYGONS_GPKG,
                               options, client=reached, progress=progress)


def class_areas(plan: RunPlan) -> tuple[ClassArea, ...]:
    """Per class: pixels, m² and share of the valid area (and mean confidence), the sum of the class
    histograms in the chunks' markers (counted by the workers as they wrote them). A store whose
    markers have none (written by an earlier version) is counted again from the store, chunk by chunk."""
    markers = [plan.ledger.result(tile) for tile in plan.tiles]
    histograms = [(m.class_pixels, m.class_area_m2) for m in markers if m is not None and m.class_pixels is not None]
    confidence = None
    if plan.options.confidence:  # every chunk with a valid pixel summed its confidence
        confidence = [m.class_confidence for m in markers if m is not None and m.class_confidence is not None]
        if any(m is not None and m.status == "computed" and m.class_confidence is None for m in markers):
            histograms = []  # not summed when written: count the store
    summed = summed_classes(plan.store_path, histograms, confidence) if len(histograms) == len(plan.tiles) else None
    return tuple((summed or query_classes(plan.store_path)).classes)


def publish(
    plan: RunPlan, chunk_run: ChunkRun, seconds: dict[str, float], files: list[str], polygons: VectorizeReport | None,
) -> RunReport:
    """The publish stage: per-class areas, item.json, then run.json (the record of a complete output)."""
    files = [outputs.STORE_NAME, *files]
    if polygons is not None:
        files += [outputs.POLYGONS_PARQUET, outputs.POLYGONS_GPKG]
    stac = plan.options.stac and plan.georeferenced  # a STAC item needs a footprint on the Earth
    if stac:
        files.append(outputs.ITEM_JSON)
    started = time.perf_counter()
    areas = class_areas(plan)
    if stac:
        write_stac_item(plan.out, input_path=plan.input, model_path=plan.model_path, model_sha256=plan.model_sha256,
                        parameters=plan.parameters.to_json(), pending=[outputs.RUN_JSON], model=plan.model)
    published = time.perf_counter() - started
    seconds = {**seconds, "publish": published, "total": seconds.get("total", 0.0) + published}
    report = run_report(plan, chunk_run, seconds, files, areas, polygons)
    crash_point("publish")
    write_run_json(plan.out, report, input_path=plan.input, model_path=plan.model_path,  # last: run.json
                   model_sha256=plan.model_sha256, outputs=plan.options.outputs(),  # says the folder is complete
                   options=plan.options)
    if plan.destination:
        upload(plan, [*files, outputs.RUN_JSON])
    return report


def run_report(
    plan: RunPlan, chunk_run: ChunkRun, seconds: dict[str, float], files: list[str], areas: tuple[ClassArea, ...],
    polygons: VectorizeReport | None,
) -> RunReport:
    """The run's report: what became of its chunks, seconds per stage, throughput, peak memory of
    this process and the workers, its files and class areas, how and when it computed."""
    results = chunk_run.results
    chunks = ChunkCounts(
        total=len(plan.tiles),
        computed=sum(r.status == "computed" for r in results),
        skipped_nodata=sum(r.status == "nodata" for r in results),
        reused=len(plan.reused),
    )
    driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_peaks = chunk_run.worker_peaks_mb  # a process's peak only grows: the polygons' is the later one
    if polygons is not None and polygons.worker_peaks_mb:
        worker_peaks = polygons.worker_peaks_mb
    log.debug("peak memory: driver %.0f MB, workers %s MB", driver_peak, [round(p) for p in worker_peaks])
    infer_seconds = max(seconds.get("infer", 0.0), 1e-9)
    finished = datetime.now(UTC)
    started = finished - timedelta(seconds=seconds.get("total", 0.0))
    return RunReport(
        out=plan.target, chunks=chunks, seconds={k: round(v, 3) for k, v in seconds.items()},
        megapixels_per_second=round(sum(t.core.width * t.core.height for t in plan.todo) / 1e6 / infer_seconds, 3),
        peak_memory_mb=round(driver_peak + sum(worker_peaks), 1), parameters=plan.parameters,
        files=files, class_areas=areas, polygons=None if polygons is None else polygons.polygons,
        simplify_area_error=None if polygons is None else round(polygons.simplify_area_error, 6),
        execution=chunk_run.execution, started=iso_utc(started), finished=iso_utc(finished),
        devices=chunk_run.devices, workers=chunk_run.workers, cluster=chunk_run.cluster,
    )


def upload(plan: RunPlan, files: list[str]) -> None:
    """A finished output staged for an object store: uploaded (run.json last), then the staging
    folder emptied (``held_output`` removes it once the lock is let go)."""
    ObjectStoreOutput(plan.destination).upload(plan.out, files)
    forget_run(plan.out)
