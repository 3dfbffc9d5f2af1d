"""The segment stage on Dask: a raster planned into tiles, the tiles run on Dask workers and
stitched into the Zarr store, resumably. The run as a whole (hold OUT, plan, infer, the products,
run.json) is ``fcnseg.pipeline.orchestrator``'s; this package is only its infer stage:

* ``plan`` — ``SegmentOptions``, ``RunPlan``, ``plan_run`` (options, tiles, the run's identity,
  OUT made ready); ``identity`` — the input's fingerprint, the execution;
* ``run.compute_chunks`` — the chunks on Dask (``worker``'s crop tasks or ``blend``'s), each
  recorded in the chunk ledger after its data, so a rerun skips what is done;
* ``array`` (with ``array_frame``, ``memory_source``) — the same tile loop into numpy (``predict_array``).

Importing the package imports none of them (``local_worker_count`` needs only the cluster specs).
"""

from __future__ import annotations

from fcnseg.pipeline.cluster_specs import default_local_workers


def local_worker_count(device: str) -> int:
    """The workers a LocalCluster started for this run would have: one per GPU, else per core (at most 4)."""
    from fcnseg.pipeline.cluster import local_gpus

    return len(local_gpus(device)) or default_local_workers()
