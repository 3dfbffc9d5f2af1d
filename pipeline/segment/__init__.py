"""``fcnseg segment``: plan a raster into tiles, run them on Dask, stitch them into Zarr, resumably.

The stages, each a plain function (the Prefect flow runs each as a task):

* ``plan.plan_run`` — options, tiles, the run's identity (``identity``), OUT made ready (``guard``);
* ``run.compute_chunks`` — the chunks on Dask (``predict`` crop or ``blend`` tasks), each
  recorded in the chunk ledger after its data, so a rerun skips what is done;
* ``finish.export_rasters``, ``finish.export_polygons``, ``finish.publish`` — the files made
  from the store, then run.json (``record``), which says OUT is complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from fcnseg.pipeline.cluster import dask_client
from fcnseg.pipeline.cluster_specs import load_cluster_spec
from fcnseg.pipeline.products.vectorize import VectorizeReport
from fcnseg.pipeline.segment.finish import export_polygons, export_rasters, publish
from fcnseg.errors import OutputBusy, OutputConflict
from fcnseg.pipeline.output.hold import held_output, output_lock
from fcnseg.pipeline.segment.plan import RunPlan, SegmentOptions, checked_model, plan_run
from fcnseg.pipeline.output.record import ChunkRun, RunReport, Stopwatch, read_run_report
from fcnseg.pipeline.segment.run import compute_chunks

__all__ = [
    "ChunkRun", "OutputBusy", "OutputConflict", "held_output", "output_lock", "RunPlan", "RunReport", "SegmentOptions", "checked_model", "compute_chunks",
    "export_polygons", "export_rasters", "finish_stages", "plan_run", "publish", "read_run_report", "run_stages", "segment",
]

log = logging.getLogger(__name__)


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
    OUT is a folder or an object-store URI (``s3://bucket/prefix``, staged locally and uploaded
    when complete: ``object_store``).

    A local cluster is started unless ``scheduler`` gives one. OUT holding this exact output
    already is a no-op (``report.skipped``); an interrupted run resumes from its finished chunks.
    OUT is held for the whole run: a second run on it fails at once (``OutputBusy``).
    """
    started = time.perf_counter()
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    options.validate()
    if cluster_spec is not None:
        load_cluster_spec(cluster_spec)  # a bad spec fails before OUT is touched

    with held_output(out) as (folder, destination), ExitStack() as stack:
        plan = plan_run(input_path, model_path, folder, options, overwrite=overwrite,
                        local=scheduler is None and cluster_spec is None, destination=destination)
        client, startup = None, time.perf_counter()
        if needs_cluster(plan, scheduler):  # one cluster for every stage
            client = stack.enter_context(dask_client(scheduler, cluster_spec, workers, options.device))
        startup = time.perf_counter() - startup

        def infer(plan: RunPlan) -> ChunkRun:
            chunk_run = compute_chunks(plan, client=client, cluster_spec=cluster_spec, progress=progress)
            chunk_run.seconds["cluster"] = chunk_run.seconds.get("cluster", 0.0) + startup
            return chunk_run

        return run_stages(plan, started, infer=infer, export=lambda p: export_rasters(p, client=client),
                          vectorize=lambda p: export_polygons(p, client=client, progress=progress))


#: With every chunk computed before (a resumed run), the stages after inference start a cluster of
#: their own only for a store of at least this many pixels: a LocalCluster takes about 3 s to start,
#: one polygon cell (2048²) about 0.3 s to make here.
CLUSTER_FOR_PRODUCTS = 4 * 2048 * 2048


def needs_cluster(plan: RunPlan, scheduler: str | None) -> bool:
    """Whether the run uses a Dask cluster: chunks to compute, a running scheduler to reach (cheap),
    or a store large enough that its products gain from the workers."""
    if plan.complete:
        return False
    return bool(plan.todo) or scheduler is not None or plan.height * plan.width >= CLUSTER_FOR_PRODUCTS


def run_stages(
    plan: RunPlan,
    started: float,
    *,
    infer: Callable[[RunPlan], ChunkRun],
    export: Callable[[RunPlan], list[str]] = export_rasters,
    vectorize: Callable[[RunPlan], VectorizeReport | None] = export_polygons,
    publish: Callable[..., RunReport] = publish,
) -> RunReport:
    """Infer, export, vectorise, publish (each stage a callable: the flow passes its tasks); a plan
    whose output is already complete is a no-op."""
    if plan.complete:
        log.info("%s: complete for this model and these parameters; nothing to do", plan.target)
        return read_run_report(plan.target, skipped=True)
    seconds = {"plan": time.perf_counter() - started}
    chunk_run = infer(plan)
    return finish_stages(plan, chunk_run, seconds, started, export=export, vectorize=vectorize, publish=publish)


def finish_stages(
    plan: RunPlan,
    chunk_run: ChunkRun,
    seconds: dict[str, float],
    started: float,
    *,
    export: Callable[[RunPlan], list[str]] = export_rasters,
    vectorize: Callable[[RunPlan], VectorizeReport | None] = export_polygons,
    publish: Callable[..., RunReport] = publish,
) -> RunReport:
    """The stages after inference: export, vectorise, publish. Apart from ``run_stages`` so that the
    flow can run them while the next scene infers."""
    seconds = {**seconds, **chunk_run.seconds}
    timed = Stopwatch(seconds)
    with timed("export"):
        files = export(plan)
    with timed("vectorize"):
        polygons = vectorize(plan)
    seconds["total"] = time.perf_counter() - started
    return publish(plan, chunk_run, seconds, files, polygons)
