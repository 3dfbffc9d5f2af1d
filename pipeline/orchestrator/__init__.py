"""A whole ``fcnseg segment`` run, the one orchestrator: the CLI, the library face
(``fcnseg.segment``) and the ``segment-scene`` flow all run their scenes through it, and it is the
only importer of ``pipeline/products/`` outside products itself.

The stage sequence, written once (``run_sequence``): hold OUT, plan (``segment.plan.plan_run``),
skip an output that is already complete, infer (``segment.run.compute_chunks``: the chunks on
Dask), then hand the held folder to the stages after inference (``finish_stages``:
``finish.export_rasters``, ``finish.export_polygons``, ``finish.publish``, run.json last).
``segment()`` passes plain functions as the stages; the flow passes its Prefect tasks, its finish a
task that runs while the next scene infers. Where a run computes: ``compute``; the flow's scene
helpers: ``scenes``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from fcnseg.errors import OutputBusy, OutputConflict
from fcnseg.pipeline.cluster_specs import load_cluster_spec
from fcnseg.pipeline.orchestrator.compute import client_for, current_client, how_to_run
from fcnseg.pipeline.output.hold import held_output, output_lock
from fcnseg.pipeline.output.record import ChunkRun, RunReport, Stopwatch, read_run_report
from fcnseg.pipeline.segment.plan import RunPlan, checked_model, plan_run
from fcnseg.pipeline.segment_options import SegmentOptions

if TYPE_CHECKING:
    from distributed import Client

    from fcnseg.pipeline.orchestrator.finish import VectorizeReport, export_polygons, export_rasters, publish
    from fcnseg.pipeline.segment.run import compute_chunks

#: The stages' functions this package offers, imported on first use (``__getattr__``): a run with
#: nothing to do, and a command that only reads an output's records, import neither Dask's
#: distributed nor the products' geopandas (seconds of a rerun's start; measured:
#: docs/benchmarks.md#figures-quoted-in-code-comments).
LAZY = {"compute_chunks": "fcnseg.pipeline.segment.run", "export_polygons": "fcnseg.pipeline.orchestrator.finish",
        "export_rasters": "fcnseg.pipeline.orchestrator.finish", "publish": "fcnseg.pipeline.orchestrator.finish",
        "VectorizeReport": "fcnseg.pipeline.orchestrator.finish"}


def __getattr__(name: str) -> object:
    if name in LAZY:
        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ChunkRun", "OutputBusy", "OutputConflict", "held_output", "output_lock", "RunPlan", "RunReport", "SegmentOptions",
    "VectorizeReport", "checked_model", "compute_chunks", "export_polygons", "export_rasters", "finish_stages",
    "plan_run", "publish", "read_run_report", "run_sequence", "run_stages", "segment",
]

log = logging.getLogger(__name__)

#: What a run's finish stage returns: the report (``segment()``), or the flow's future of it.
Finished = TypeVar("Finished")


def segment(
    input_path: str | Path,
    model_path: str | Path,
    out: str | Path,
    options: SegmentOptions = SegmentOptions(),
    *,
    client: Client | None = None,
    scheduler: str | None = None,
    cluster_spec: str | Path | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RunReport:
    """Segment ``input_path`` into OUT (labels.zarr and the files made from it) on Dask.
    OUT is a folder or an object-store URI (``s3://bucket/prefix``, staged locally and uploaded
    when complete: ``output.object_store``).

    Where it computes (``compute.how_to_run``; run.json's ``cluster`` says which): on ``client``'s
    cluster (left running); else on ``scheduler``'s, or one started from ``cluster_spec`` or of
    ``workers`` local processes; else on the current Dask client of this process, when there is
    one (left running); else in this process when the work is small
    (``compute.IN_PROCESS_CHUNKS_PER_WORKER``), else on a LocalCluster of processes, started only
    once the plan has work for it. OUT holding this exact output already is a no-op
    (``report.skipped``) that starts nothing; an interrupted run resumes from its finished chunks.
    OUT is held for the whole run: a second run on it fails at once (``OutputBusy``). The options
    were checked when they were made (``SegmentOptions`` validates at construction, and is frozen).
    """
    started = time.perf_counter()
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    asked = scheduler is not None or cluster_spec is not None or workers is not None
    if client is not None and asked:
        raise ValueError("give a Dask client or a scheduler, cluster spec or workers, not both")
    if cluster_spec is not None:
        load_cluster_spec(cluster_spec)  # a bad spec fails before OUT is touched
    running = client if client is not None or asked else current_client()
    held = ExitStack()  # OUT's hold, then the run's client: the client is closed first
    run_client: list[Client | None] = [None]  # started by infer: its seconds are the cluster's, not the plan's

    def plan(folder: Path, destination: str | None) -> RunPlan:
        return plan_run(input_path, model_path, folder, options, overwrite=overwrite,
                        local=running is None and not (scheduler or cluster_spec), destination=destination)

    def infer(plan: RunPlan) -> ChunkRun:
        from fcnseg.pipeline.segment.run import compute_chunks

        how = how_to_run(plan, running, scheduler, cluster_spec, workers)
        startup = time.perf_counter()
        run_client[0] = held.enter_context(client_for(how, running, scheduler, cluster_spec, workers, options.device))
        if run_client[0] is not None:  # Dask's wait and as_completed ask for the current client: the run's
            held.enter_context(run_client[0].as_current())
        startup = time.perf_counter() - startup
        chunk_run = compute_chunks(plan, client=run_client[0], cluster_spec=cluster_spec, progress=progress)
        chunk_run.seconds["cluster"] = chunk_run.seconds.get("cluster", 0.0) + startup
        chunk_run.cluster = how
        return chunk_run

    def finish(plan: RunPlan, chunk_run: ChunkRun, seconds: dict[str, float], held: ExitStack) -> RunReport:
        from fcnseg.pipeline.orchestrator.finish import export_polygons, export_rasters

        with held:
            return finish_stages(plan, chunk_run, seconds, started,
                                 export=lambda p: export_rasters(p, client=run_client[0]),
                                 vectorize=lambda p: export_polygons(p, client=run_client[0], progress=progress))

    return run_sequence(out, started, plan=plan, infer=infer, finish=finish, held=held)


def run_sequence(
    out: str | Path,
    started: float,
    *,
    plan: Callable[[Path, str | None], RunPlan],
    infer: Callable[[RunPlan], ChunkRun],
    finish: Callable[[RunPlan, ChunkRun, dict[str, float], ExitStack], Finished],
    held: ExitStack | None = None,
) -> RunReport | Finished:
    """One scene's stages, the one place they are sequenced: hold OUT (``held_output``: the folder
    to plan in and the object-store URI it is staged for), ``plan`` it, skip it when complete
    (its report read while OUT is still held, then let go), ``infer``, and hand ``finish`` the
    plan, the chunks and the open hold: ``finish`` lets go of OUT (``segment()`` when its stages
    are done; the flow's finish task, in the background while the next scene infers). On a
    failure before ``finish`` has OUT, OUT is let go here. ``held``: a stack the stages may add
    to (the run's client), closed with OUT's hold.
    """
    held = held if held is not None else ExitStack()
    try:
        folder, destination = held.enter_context(held_output(out))
        run_plan = plan(folder, destination)
        result = planned_stages(run_plan, started, infer=infer,
                                finish=lambda p, chunk_run, seconds: finish(p, chunk_run, seconds, held))
        if run_plan.complete:
            held.close()
        return result
    except BaseException:
        held.close()
        raise


def planned_stages(
    plan: RunPlan,
    started: float,
    *,
    infer: Callable[[RunPlan], ChunkRun],
    finish: Callable[[RunPlan, ChunkRun, dict[str, float]], Finished],
) -> RunReport | Finished:
    """After the plan: a complete output's report (``skipped``), else infer and finish."""
    if plan.complete:
        log.info("%s: complete for this model and these parameters; nothing to do", plan.target)
        return read_run_report(plan.target, skipped=True)
    seconds = {"plan": time.perf_counter() - started}
    return finish(plan, infer(plan), seconds)


def run_stages(
    plan: RunPlan,
    started: float,
    *,
    infer: Callable[[RunPlan], ChunkRun],
    export: Callable[[RunPlan], list[str]] | None = None,
    vectorize: Callable[[RunPlan], VectorizeReport | None] | None = None,
    publish: Callable[..., RunReport] | None = None,
) -> RunReport:
    """Infer, export, vectorise, publish a plan made holding OUT (each stage a callable; None:
    ``finish``'s function); a plan whose output is already complete is a no-op."""
    return planned_stages(plan, started, infer=infer, finish=lambda p, chunk_run, seconds: finish_stages(
        p, chunk_run, seconds, started, export=export, vectorize=vectorize, publish=publish))


def finish_stages(
    plan: RunPlan,
    chunk_run: ChunkRun,
    seconds: dict[str, float],
    started: float,
    *,
    export: Callable[[RunPlan], list[str]] | None = None,
    vectorize: Callable[[RunPlan], VectorizeReport | None] | None = None,
    publish: Callable[..., RunReport] | None = None,
) -> RunReport:
    """The stages after inference: export, vectorise, publish. Apart from ``run_stages`` so that the
    flow can run them while the next scene infers."""
    from fcnseg.pipeline.orchestrator import finish

    export, vectorize, publish = export or finish.export_rasters, vectorize or finish.export_polygons, publish or finish.publish
    seconds = {**seconds, **chunk_run.seconds}
    timed = Stopwatch(seconds)
    with timed("export"):
        files = export(plan)
    with timed("vectorize"):
        polygons = vectorize(plan)
    seconds["total"] = time.perf_counter() - started
    return publish(plan, chunk_run, seconds, files, polygons)
