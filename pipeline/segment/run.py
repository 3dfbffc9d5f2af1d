"""The infer stage: every pending chunk of a plan computed on a Dask cluster.

The cluster is the one at ``scheduler``, one started from ``cluster_spec``, or a LocalCluster.
Its workers are asked first how they would compute (``cpu fp32``, ``cuda bf16`` ...): they must
agree with each other and with the chunks already in OUT. The tasks come from the stitching mode
(``worker.crop_tasks`` or ``blend.blend_tasks``); the store is marked complete only when every
planned chunk is in the ledger and the input is still the one planned (its fingerprint).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import zarr

from fcnseg.errors import IncompleteRun, InputError, OutputConflict
from fcnseg.pipeline.cluster import (
    GPU_RESOURCE, dask_client, gpu_resources, lost_worker_line, results_as_completed, run_on_workers, worker_peaks_mb,
)
from fcnseg.pipeline.io import atomic_write_text
from fcnseg.pipeline.output.layout import EXECUTION_JSON, PASS1_LEDGER, SCRATCH_STORE
from fcnseg.pipeline.segment.blend import blend_tasks, prepare_scratch
from fcnseg.pipeline.faults import crash_point
from fcnseg.pipeline.progress import ProgressCallback, stage_progress
from fcnseg.pipeline.segment.identity import input_fingerprint, worker_device_name, worker_execution
from fcnseg.pipeline.output.ledger import ChunkResult
from fcnseg.pipeline.segment.plan import RunPlan, restart_chunks
from fcnseg.pipeline.output.record import ChunkRun
from fcnseg.pipeline.segment.worker import Submitter, TileJob, chunks_of_key, crop_tasks
from fcnseg.pipeline.store import finish_pyramid, open_store

if TYPE_CHECKING:
    from collections.abc import Iterator

    from distributed import Client, Future



def compute_chunks(
    plan: RunPlan, *, client: Client | None = None, scheduler: str | None = None, cluster_spec: str | Path | None = None,
    workers: int | None = None, progress: bool = True, on_progress: ProgressCallback | None = None,
) -> ChunkRun:
    """Compute every chunk the plan has not reused (crop or blend), then finish the store; on
    ``client``'s cluster, or on one reached or started for this stage (``dask_client``).
    ``progress``: a bar (on a terminal), else log lines; ``on_progress(done, total)`` as chunks finish."""
    if not plan.todo:  # every chunk finished before: no cluster needed
        finish_store(plan)
        return ChunkRun(results=[], worker_peaks_mb=[], seconds={"infer": 0.0}, execution=recorded_execution(plan))
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    with ExitStack() as stack:
        if client is None:
            client = stack.enter_context(dask_client(scheduler, cluster_spec, workers, plan.options.device))
        resources = {GPU_RESOURCE: 1} if gpu_resources(client, wait=60 if cluster_spec else 0) else None
        execution = agree_execution(client, plan)
        devices = run_on_workers(client, worker_device_name, plan.options.device)
        seconds["cluster"] = time.perf_counter() - started
        started = time.perf_counter()
        job = tile_job(plan, execution)
        if plan.options.stitch == "crop":
            submit = crop_tasks(job, plan.todo, str(plan.store_path), plan.ledger)
        else:
            submit = blend_tasks(job, plan, *prepare_scratch(plan))
        results = run_tasks(client, submit, resources, len(plan.todo), progress, on_progress)
        seconds["infer"] = time.perf_counter() - started
        peaks = worker_peaks_mb(client)
    missing = [t for t in plan.tiles if not plan.ledger.is_finished(t)]
    if missing:
        raise IncompleteRun(f"{plan.out}: {len(missing)} of {len(plan.tiles)} planned chunks did not report back; "
                            "rerun the same command to finish them")
    finish_store(plan)
    return ChunkRun(results=results, worker_peaks_mb=peaks, seconds=seconds, execution=execution,
                    devices=sorted(set(devices.values())), workers=len(devices))


def tile_job(plan: RunPlan, execution: str) -> TileJob:
    """What every task of the plan's run carries: the plan's paths (absolute or URIs), the model
    planned, the execution agreed and the store's run token."""
    options = plan.options
    return TileJob(plan.input, json.dumps(dict(plan.parameters.input_fingerprint), sort_keys=True), plan.model_path,
                   plan.model_content_sha256, execution, tuple(plan.bands), options.device, options.batch_size,
                   options.probabilities, plan.run_token, tta=options.tta, confidence=options.confidence,
                   normalization=plan.normalization)


def run_tasks(client: Client, submit: Submitter, resources: dict[str, float] | None, total: int,
              bar: bool, on_progress: ProgressCallback | None = None) -> list[ChunkResult]:
    """The final chunks' results, as the tasks finish. Inference tasks ask for a ``GPU`` resource
    when the workers advertise one, so that each GPU runs one batch at a time. Patience is bounded
    (``cluster``): a task whose worker died again and again, and a cluster left without workers,
    fail the run in one line naming the chunk or the wait."""
    results: list[ChunkResult] = []
    with stage_progress(total, "segment", "chunk", bar=bar, on_update=on_progress) as advance:
        for chunk_results in task_results(client, submit(client, resources)):
            results.extend(chunk_results)
            advance(len(chunk_results))
            crash_point("infer")
    return results


def task_results(client: Client, futures: list[Future]) -> Iterator[list[ChunkResult]]:
    """Each task's chunk results as it finishes; its workers' deaths (Dask's KilledWorker,
    NoWorkerError) as one InputError naming the chunk whose task killed them."""
    try:
        yield from results_as_completed(client, futures)
        return
    except Exception as exc:
        line = lost_worker_line(exc, chunks_of_key(getattr(exc, "task", None)))
        if line is None:
            raise
    raise InputError(line)  # outside the handler: Dask's exception chain is no part of the message


def agree_execution(client: Client, plan: RunPlan) -> str:
    """How the workers compute for ``--device``: one way for all of them, and the way of the
    chunks already in OUT (with ``--overwrite`` those are dropped instead). Recorded in the run state."""
    found = run_on_workers(client, worker_execution, plan.options.device)
    if not found:
        raise InputError(f"the Dask cluster at {client.scheduler.address} has no workers")
    for address, answer in found.items():
        if answer.refusal is not None:
            raise InputError(f"{answer.refusal} (worker {address})")
    kinds = sorted({answer.execution for answer in found.values()})
    if len(kinds) > 1:
        raise InputError(f"the workers compute differently ({', '.join(kinds)}); choose one with --device")
    execution = kinds[0]
    recorded = recorded_execution(plan)
    if recorded not in (None, execution) and plan.ledger.finished(plan.tiles):
        if not plan.overwrite:
            raise OutputConflict(f"{plan.out}: its chunks were computed with {recorded}, these workers compute with "
                                 f"{execution}; finish it where it started, or use --overwrite (flow: overwrite=true) to start again")
        restart_chunks(plan)
    atomic_write_text(plan.state / EXECUTION_JSON, json.dumps({"execution": execution}), durable=True)
    return execution


def recorded_execution(plan: RunPlan) -> str | None:
    path = plan.state / EXECUTION_JSON
    return json.loads(path.read_text())["execution"] if path.exists() else None


def finish_store(plan: RunPlan) -> None:
    """Make the pyramid's coarse levels, mark the store complete, drop blend scratch, consolidate
    metadata (xarray opens it in one call). Refused when the input is no longer the one planned:
    its chunks may come from two scenes (a file rewritten in place during the run)."""
    check_input_unchanged(plan)
    group = open_store(plan.store_path)
    finish_pyramid(group)
    group.attrs["fcnseg_complete"] = True
    shutil.rmtree(plan.state / SCRATCH_STORE, ignore_errors=True)
    shutil.rmtree(plan.state / PASS1_LEDGER, ignore_errors=True)
    with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet; xarray reads it
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(str(plan.store_path))


def check_input_unchanged(plan: RunPlan) -> None:
    """The input's fingerprint now against the plan's: a change fails the run in one line (the
    rerun then finds the fingerprint changed and segments the new content from scratch)."""
    if input_fingerprint(plan.input) != plan.parameters.input_fingerprint:
        raise InputError(f"{plan.input}: changed during the run; run the same command again to segment it anew")
