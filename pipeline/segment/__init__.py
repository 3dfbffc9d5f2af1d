"""``fcnseg segment``: plan a raster into tiles, run them on Dask, stitch them into Zarr, resumably.

The stages, each a plain function (the Prefect flow runs each as a task):

* ``plan.plan_run`` — options, tiles, the run's identity (``identity``), OUT made ready (``guard``);
* ``run.compute_chunks`` — the chunks on Dask (``predict`` crop or ``blend`` tasks), each
  recorded in the chunk ledger after its data, so a rerun skips what is done;
* ``finish.export_rasters``, ``finish.export_polygons``, ``finish.publish`` — the files made
  from the store, then run.json (``record``), which says OUT is complete.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fcnseg.pipeline.cluster_specs import default_local_workers, load_cluster_spec, torch_threads
from fcnseg.errors import OutputBusy, OutputConflict
from fcnseg.pipeline.output.hold import held_output, output_lock
from fcnseg.pipeline.segment.plan import RunPlan, SegmentOptions, checked_model, plan_run
from fcnseg.pipeline.output.record import ChunkRun, RunReport, Stopwatch, read_run_report

if TYPE_CHECKING:
    from distributed import Client

    from fcnseg.pipeline.products.vectorize import VectorizeReport
    from fcnseg.pipeline.segment.finish import export_polygons, export_rasters, publish
    from fcnseg.pipeline.segment.run import compute_chunks

#: The stages' functions this package offers, imported on first use (``__getattr__``): a run with
#: nothing to do, and a command that only reads an output's records, import neither Dask's
#: distributed nor the products' geopandas (seconds of a rerun's start; measured:
#: docs/benchmarks.md#figures-quoted-in-code-comments).
LAZY = {"compute_chunks": "fcnseg.pipeline.segment.run", "export_polygons": "fcnseg.pipeline.segment.finish",
        "export_rasters": "fcnseg.pipeline.segment.finish", "publish": "fcnseg.pipeline.segment.finish"}


def __getattr__(name: str) -> object:
    if name in LAZY:
        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
    client: Client | None = None,
    scheduler: str | None = None,
    cluster_spec: str | Path | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RunReport:
    """Segment ``input_path`` into OUT (labels.zarr and the files made from it) on Dask.
    OUT is a folder or an object-store URI (``s3://bucket/prefix``, staged locally and uploaded
    when complete: ``object_store``).

    Where it computes (``how_to_run``; run.json's ``cluster`` says which): on ``client``'s cluster
    (left running); else on ``scheduler``'s, or one started from ``cluster_spec`` or of
    ``workers`` local processes; else on the current Dask client of this process, when there is
    one (left running); else in this process when the work is small (``IN_PROCESS_CHUNKS_PER_WORKER``),
    else on a LocalCluster of processes, started only once the plan has work for it. OUT holding
    this exact output already is a no-op (``report.skipped``) that starts nothing; an interrupted
    run resumes from its finished chunks. OUT is held for the whole run: a second run on it fails
    at once (``OutputBusy``).
    """
    started = time.perf_counter()
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    asked = scheduler is not None or cluster_spec is not None or workers is not None
    if client is not None and asked:
        raise ValueError("give a Dask client or a scheduler, cluster spec or workers, not both")
    options.validate()
    if cluster_spec is not None:
        load_cluster_spec(cluster_spec)  # a bad spec fails before OUT is touched
    running = client if client is not None or asked else current_client()

    with held_output(out) as (folder, destination), ExitStack() as stack:
        plan = plan_run(input_path, model_path, folder, options, overwrite=overwrite,
                        local=running is None and not (scheduler or cluster_spec), destination=destination)
        if plan.complete:
            return run_stages(plan, started, infer=lambda p: None)  # nothing to start, nothing to import
        from fcnseg.pipeline.segment.finish import export_polygons, export_rasters
        from fcnseg.pipeline.segment.run import compute_chunks

        how = how_to_run(plan, running, scheduler, cluster_spec, workers)
        run_client: list[Client | None] = [None]  # started by infer: its seconds are the cluster's, not the plan's

        def infer(plan: RunPlan) -> ChunkRun:
            startup = time.perf_counter()
            run_client[0] = stack.enter_context(client_for(how, running, scheduler, cluster_spec, workers, options.device))
            if run_client[0] is not None:  # Dask's wait and as_completed ask for the current client: the run's
                stack.enter_context(run_client[0].as_current())
            startup = time.perf_counter() - startup
            chunk_run = compute_chunks(plan, client=run_client[0], cluster_spec=cluster_spec, progress=progress)
            chunk_run.seconds["cluster"] = chunk_run.seconds.get("cluster", 0.0) + startup
            chunk_run.cluster = how
            return chunk_run

        return run_stages(plan, started, infer=infer, export=lambda p: export_rasters(p, client=run_client[0]),
                          vectorize=lambda p: export_polygons(p, client=run_client[0], progress=progress))


#: With every chunk computed before (a resumed run), the stages after inference start a cluster of
#: their own only for a store of at least this many pixels: a LocalCluster takes longer to start
#: than several polygon cells (2048²) take to make here (measured:
#: docs/benchmarks.md#figures-quoted-in-code-comments).
CLUSTER_FOR_PRODUCTS = 4 * 2048 * 2048
#: A run computes in this process (one Dask worker thread) when it has at most this many chunks to
#: compute per worker that a local cluster would start: each worker process would then compute one
#: chunk at most, so the processes add their start-up (seconds: each imports torch and loads the
#: model) and gain nothing, the chunks running one after another here with each worker's torch
#: threads taking about as long as one chunk on a worker plus that start-up.
IN_PROCESS_CHUNKS_PER_WORKER = 1

#: How a run computes, as run.json's ``cluster`` records it.
CLIENT, SCHEDULER, CLUSTER_SPEC, LOCAL, IN_PROCESS, NOTHING = (
    "client", "scheduler", "cluster-spec", "local", "in-process", "none")


def current_client() -> Client | None:
    """This process's current Dask client (a notebook's ``Client()``), if it has one (none without
    distributed imported: importing it only to ask would cost a second)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def how_to_run(plan: RunPlan, client: Client | None, scheduler: str | None, cluster_spec: str | Path | None,
               workers: int | None) -> str:
    """Where the run computes: nothing to start for a complete output (or a resumed one whose small
    products need no cluster); what was asked for; a running client; in this process for small
    work; else a LocalCluster of processes."""
    if not needs_cluster(plan, scheduler is not None or client is not None):
        return NOTHING
    if client is not None:
        return CLIENT
    if scheduler is not None:
        return SCHEDULER
    if cluster_spec is not None:
        return CLUSTER_SPEC
    if workers is None and len(plan.todo) <= IN_PROCESS_CHUNKS_PER_WORKER * local_worker_count(plan.options.device):
        return IN_PROCESS
    return LOCAL


def local_worker_count(device: str) -> int:
    """The workers a LocalCluster started for this run would have: one per GPU, else per core (at most 4)."""
    from fcnseg.pipeline.cluster import local_gpus

    return len(local_gpus(device)) or default_local_workers()


@contextmanager
def client_for(how: str, client: Client | None, scheduler: str | None, cluster_spec: str | Path | None,
               workers: int | None, device: str) -> Iterator[Client | None]:
    """The run's one Dask client for every stage (None: nothing to compute), closed afterwards when
    the run started it. In this process, torch computes with the threads each worker process of a
    local cluster gets (``torch_threads``), so the labels equal that cluster's bit for bit."""
    from fcnseg.pipeline.cluster import dask_client, in_process_client

    if how == NOTHING:
        yield None
    elif how == CLIENT:
        yield client
    elif how == IN_PROCESS:
        with in_process_client(torch_threads(local_worker_count(device))) as started:
            yield started
    else:
        with dask_client(scheduler, cluster_spec, workers, device) as started:
            yield started


def needs_cluster(plan: RunPlan, running: bool) -> bool:
    """Whether the run uses a Dask cluster: chunks to compute, a running cluster to use (cheap),
    or a store large enough that its products gain from the workers."""
    if plan.complete:
        return False
    return bool(plan.todo) or running or plan.height * plan.width >= CLUSTER_FOR_PRODUCTS


def run_stages(
    plan: RunPlan,
    started: float,
    *,
    infer: Callable[[RunPlan], ChunkRun],
    export: Callable[[RunPlan], list[str]] | None = None,
    vectorize: Callable[[RunPlan], VectorizeReport | None] | None = None,
    publish: Callable[..., RunReport] | None = None,
) -> RunReport:
    """Infer, export, vectorise, publish (each stage a callable: the flow passes its tasks; None:
    ``finish``'s function); a plan whose output is already complete is a no-op."""
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
    export: Callable[[RunPlan], list[str]] | None = None,
    vectorize: Callable[[RunPlan], VectorizeReport | None] | None = None,
    publish: Callable[..., RunReport] | None = None,
) -> RunReport:
    """The stages after inference: export, vectorise, publish. Apart from ``run_stages`` so that the
    flow can run them while the next scene infers."""
    from fcnseg.pipeline.segment import finish

    export, vectorize, publish = export or finish.export_rasters, vectorize or finish.export_polygons, publish or finish.publish
    seconds = {**seconds, **chunk_run.seconds}
    timed = Stopwatch(seconds)
    with timed("export"):
        files = export(plan)
    with timed("vectorize"):
        polygons = vectorize(plan)
    seconds["total"] = time.perf_counter() - started
    return publish(plan, chunk_run, seconds, files, polygons)
