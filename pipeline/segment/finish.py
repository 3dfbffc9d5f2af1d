"""The stages after inference: the files made from the finished store, then the run's record.

``export_rasters`` (COGs, quicklook), ``export_polygons`` (GeoParquet, GeoPackage) and ``publish``
(class areas, run.json, item.json). Each is a plain function of the plan, so the Prefect flow runs
each as a task.
"""

from __future__ import annotations

from typing import Any

from fcnseg.pipeline import outputs
from fcnseg.pipeline.analysis.query import query_classes
from fcnseg.pipeline.products.cog import export_labels_cog, export_probabilities_cog
from fcnseg.pipeline.products.quicklook import write_quicklook
from fcnseg.pipeline.products.stac import write_stac_item
from fcnseg.pipeline.products.vectorize import VectorizeOptions, VectorizeReport, vectorize_store
from fcnseg.pipeline.segment.faults import crash_point
from fcnseg.pipeline.segment.guard import remove_outputs
from fcnseg.pipeline.segment.plan import RunPlan
from fcnseg.pipeline.segment.record import ChunkRun, RunReport, run_report, write_run_json


def export_rasters(plan: RunPlan) -> list[str]:
    """The export stage: labels.tif (and probabilities.tif) as COGs, and quicklook.png.

    Starts by removing every file an earlier run left beside the store (its outputs may have been
    made with other options) and run.json with them: until publish, the folder is not complete.
    """
    out, options = plan.out, plan.options
    remove_outputs(out, keep_store=True)
    written = []
    if options.cog or options.quicklook:  # the quicklook reads the labels COG's overviews
        export_labels_cog(plan.store_path, out / outputs.LABELS_COG)
        written.append(outputs.LABELS_COG)
        crash_point("export")
        if options.probabilities and options.cog:
            export_probabilities_cog(plan.store_path, out / outputs.PROBABILITIES_COG)
            written.append(outputs.PROBABILITIES_COG)
    if options.quicklook:
        write_quicklook(plan.input, out / outputs.LABELS_COG, out / outputs.QUICKLOOK_PNG)
        written.append(outputs.QUICKLOOK_PNG)
        if not options.cog:
            (out / outputs.LABELS_COG).unlink()
            written.remove(outputs.LABELS_COG)
    return written


def export_polygons(plan: RunPlan, *, progress: bool = False) -> VectorizeReport | None:
    """The vectorise stage: polygons.parquet and polygons.gpkg, merged across chunk borders."""
    if not plan.options.polygons:
        return None
    options = VectorizeOptions(simplify=plan.options.simplify, min_area=plan.options.min_area)
    return vectorize_store(plan.store_path, plan.out / outputs.POLYGONS_PARQUET, plan.out / outputs.POLYGONS_GPKG,
                           options, progress=progress)


def class_areas(plan: RunPlan) -> list[dict[str, Any]]:
    """Per class: pixels, m² and share of the valid area, counted chunk by chunk from the store."""
    return query_classes(plan.store_path).to_dict()["classes"]


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
    report = run_report(plan, chunk_run, seconds, files, class_areas(plan), polygons)
    if stac:
        write_stac_item(plan.out, input_path=plan.input, model_sha256=plan.model_sha256, parameters=plan.parameters,
                        pending=[outputs.RUN_JSON])
    crash_point("publish")
    write_run_json(plan, report)  # last: run.json says the folder is complete
    return report
