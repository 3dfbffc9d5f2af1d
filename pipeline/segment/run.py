"""The infer stage: every pending chunk of a plan computed on a Dask cluster.

The cluster is the one at ``scheduler``, one started from ``cluster_spec``, or a LocalCluster.
The tasks come from the stitching mode (``predict.crop_tasks`` or ``blend.blend_tasks``); when
every planned chunk has reported back the store is marked complete and its metadata consolidated.
"""

from __future__ import annotations

import resource
import shutil
import time
import warnings
from pathlib import Path

import zarr
from tqdm import tqdm

from fcnseg.pipeline.cluster import GPU_RESOURCE, dask_client, gpu_resources
from fcnseg.pipeline.segment.blend import PASS1_LEDGER, SCRATCH_STORE, blend_tasks, prepare_scratch
from fcnseg.pipeline.segment.ledger import ChunkResult
from fcnseg.pipeline.segment.plan import RunPlan
from fcnseg.pipeline.segment.predict import Submitter, TileJob, crop_tasks
from fcnseg.pipeline.segment.record import ChunkRun
from fcnseg.pipeline.store import open_store


def compute_chunks(
    plan: RunPlan, *, scheduler: str | None = None, cluster_spec: str | Path | None = None,
    workers: int | None = None, progress: bool = True,
) -> ChunkRun:
    """Compute every chunk the plan has not reused (crop or blend), then finish the store."""
    options, todo = plan.options, plan.todo
    if not todo:  # every chunk finished before: no cluster needed
        finish_store(plan)
        return ChunkRun([], [], {"infer": 0.0})
    job = TileJob(plan.input, plan.model_path, plan.model_sha256, tuple(plan.bands), options.device,
                  options.batch_size, options.probabilities)
    if options.stitch == "crop":
        submit = crop_tasks(job, todo, str(plan.store_path), plan.ledger)
    else:
        scratch, pass1 = prepare_scratch(plan)
        submit = blend_tasks(job, plan, scratch, pass1)
    seconds: dict[str, float] = {}
    results, peaks = run_on_dask(submit, len(todo), scheduler=scheduler, workers=workers, progress=progress,
                                 seconds=seconds, cluster_spec=cluster_spec)
    finish_store(plan)
    return ChunkRun(results, peaks, seconds)


def finish_store(plan: RunPlan) -> None:
    """Mark the store complete, drop blend scratch, consolidate metadata (xarray opens it in one call)."""
    open_store(plan.store_path).attrs["fcnseg_complete"] = True
    shutil.rmtree(plan.state / SCRATCH_STORE, ignore_errors=True)
    shutil.rmtree(plan.state / PASS1_LEDGER, ignore_errors=True)
    with warnings.catch_warnings():  # consolidated metadata is not in the v3 spec yet; xarray reads it
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(str(plan.store_path))


def run_on_dask(
    submit: Submitter, total: int, *, scheduler: str | None, workers: int | None, progress: bool,
    seconds: dict[str, float], cluster_spec: str | Path | None = None,
) -> tuple[list[ChunkResult], list[float]]:
    """Run the submitted tasks; return the final chunks' results and each worker's peak memory (MB).

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
