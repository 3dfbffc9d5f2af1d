"""Where a run computes: on a client given, a scheduler, a cluster started from a spec or of local
worker processes, or in this process for small work; and the one Dask client every stage of the
run shares (``client_for``). Apart from the stage sequence (``orchestrator``) so that a run with
nothing to compute decides it without importing Dask's distributed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fcnseg.pipeline.cluster_specs import torch_threads
from fcnseg.pipeline.segment import local_worker_count
from fcnseg.pipeline.segment.plan import RunPlan

if TYPE_CHECKING:
    from distributed import Client

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
