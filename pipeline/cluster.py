"""Reaching a Dask cluster: the one Dask client a run uses, and what its workers offer.

A run needs exactly one Dask client. ``dask_client`` gives it from one of three sources and
closes what it started, so the pipeline never cares which one it is:

- ``scheduler_address="tcp://HOST:8786"``: a cluster somebody else runs (``kubectl apply`` of
  ``deploy/clusters/kubernetes.yaml``, ``dask scheduler`` on a head node, ...); left running.
- ``cluster_spec="slurm"`` (or a path to a YAML file): a cluster this process starts from a spec
  file and tears down afterwards (dask-kubernetes operator, dask-jobqueue, LocalCluster); the spec
  files and starting their clusters are ``fcnseg.pipeline.cluster_specs``.
- neither: a LocalCluster on this machine, one thread per worker process.

Bounded patience: a task whose worker died ``ALLOWED_FAILURES + 1`` times (Dask's own
``KilledWorker``: the OOM killer's pattern) fails the run, and so does a cluster that has had no
worker for ``no_worker_timeout()`` seconds; both, and a worker lost while the run asks its workers
something (``run_on_workers``), in one line (``lost_worker_line``).

This module does not import prefect: the library runs without an orchestrator.
"""

from __future__ import annotations

import ast
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import dask
from dask.utils import parse_timedelta

from fcnseg.errors import InputError, NoWorkers, WorkerLost
from fcnseg.models.sizing import gpu_driver_present
from fcnseg.pipeline.cluster_specs import (
    GPU_RESOURCE, ClusterSpec, default_local_workers, load_cluster_spec, start_cluster, start_gpu_local,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from distributed import Client, Future
    from distributed.deploy import Cluster

log = logging.getLogger(__name__)

#: Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 so that they hand memory back to
#: the OS sooner; setting it also switches off glibc's adaptive mmap threshold, so every large array
#: (a convolution's activations) is a fresh mmap with fresh page faults: inference ran measurably
#: slower (measured: docs/benchmarks.md#figures-quoted-in-code-comments). Workers
#: fcnseg starts run without it; their memory stays bounded by tile, batch and workers.
WORKER_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
#: How long to try reaching a scheduler given by address (it should be running already);
#: ``FCNSEG_CONNECT_TIMEOUT`` (a Dask duration such as "30s") sets it for a slow network.
CONNECT_TIMEOUT = "10s"
#: The clients ``dask_client`` holds open in this process, by scheduler address. A stage given
#: only an address (a Prefect task) shares the run's client rather than opening its own: a
#: distributed client is thread-safe, while clients of one scheduler opened and closed by several
#: threads at once (a scene's export beside the next scene's inference) hung a flow run.
_open_clients: dict[str, Client] = {}
_open_clients_lock = threading.Lock()
#: Deaths a task's worker may die and the task still be retried elsewhere; one more and the task
#: fails with Dask's KilledWorker (``distributed.scheduler.allowed-failures``, set on the clusters
#: fcnseg starts; a running scheduler keeps its own, Dask's default 3). A chunk that the OOM killer
#: takes its worker for does so every time: three deaths say enough.
ALLOWED_FAILURES = 2
#: How long a run waits on a cluster without any worker (all died, none came back) before it
#: fails; ``FCNSEG_NO_WORKER_TIMEOUT`` (a Dask duration such as "5m") sets it.
NO_WORKER_TIMEOUT = "60s"
#: How often a waiting run looks whether its cluster still has workers, seconds.
WATCH_INTERVAL = 1.0
#: The remedy for workers that die running chunks: their memory holds a batch of tiles.
MEMORY_HINT = "likely out of memory: lower --tile or --batch-size"


def worker_peaks_mb(client: Client) -> list[float]:
    """Each worker process's peak resident memory so far (MB): it only grows, so the latest is the run's.
    A worker inside this process (an in-process run) is left out: its memory is the driver's, which
    the run record counts already."""
    found = run_on_workers(client, process_peak, doing="for their peak memory").values()
    return [mb for pid, mb in found if pid != os.getpid()]


def process_peak() -> tuple[int, float]:
    """On a worker: its process id and peak resident memory (MB)."""
    return os.getpid(), peak_rss_mb()


def peak_rss_mb() -> float:
    """On a worker: this process's peak resident memory, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- bounded patience -----------------------------------------------------------------------------


def no_worker_timeout() -> float:
    """Seconds a run waits on a cluster without workers: ``FCNSEG_NO_WORKER_TIMEOUT`` or 60 s."""
    value = os.environ.get("FCNSEG_NO_WORKER_TIMEOUT", NO_WORKER_TIMEOUT)
    try:
        seconds = parse_timedelta(value, default="s")
    except (ValueError, KeyError, TypeError):
        seconds = None
    if seconds is None or seconds <= 0:
        raise InputError(f"FCNSEG_NO_WORKER_TIMEOUT: {value!r} is not a positive duration (such as 60s or 5m)")
    return float(seconds)


def patience_config() -> dict[str, object]:
    """The scheduler settings of a cluster fcnseg starts: Dask itself fails a task that killed
    its worker ALLOWED_FAILURES + 1 times, and the tasks of a cluster left without workers."""
    return {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
            "distributed.scheduler.no-workers-timeout": no_worker_timeout()}


def lost_worker_line(exc: BaseException, running: str = "a task") -> str | None:
    """Dask's errors for workers that died or never came, in one line (None for any other error).
    ``running``: what the task computed, e.g. ``chunk (3, 4)``."""
    from distributed.scheduler import KilledWorker, NoWorkerError

    if isinstance(exc, KilledWorker):
        return f"a Dask worker died {exc.allowed_failures + 1} times running {running}; {MEMORY_HINT}"
    if isinstance(exc, NoWorkerError):
        return no_workers_line(exc.timeout)
    return None


def no_workers_line(seconds: float, address: str = "") -> str:
    """Why a cluster has no workers, as far as the run can tell, and what to do."""
    where = f"the Dask cluster at {address}" if address else "the Dask cluster"
    return (f"{where} has had no workers for {seconds:g} s: they died (if again and again, {MEMORY_HINT})"
            " or never started; finished chunks are kept, run the same command again once workers run"
            " (FCNSEG_NO_WORKER_TIMEOUT sets the wait)")


class WorkerWatch:
    """Whether a cluster has been without any worker for longer than ``timeout`` seconds."""

    def __init__(self, client: Client, timeout: float | None = None) -> None:
        self.client = client
        self.timeout = no_worker_timeout() if timeout is None else timeout
        self.since: float | None = None

    def check(self) -> None:
        """Raise NoWorkers once the cluster has had no worker for ``timeout`` seconds."""
        if self.client.nthreads():
            self.since = None
            return
        now = time.monotonic()
        self.since = now if self.since is None else self.since
        if now - self.since >= self.timeout:
            raise NoWorkers(no_workers_line(self.timeout, self.client.scheduler.address))


def results_as_completed(client: Client, futures: Iterable[Future]) -> Iterator[object]:
    """The results of ``futures`` as their tasks finish (a task's error raised as itself), looking
    every WATCH_INTERVAL seconds of waiting whether the cluster still has workers. Dask waits forever
    for a task, or for a result that only a dead worker held (it computes it again), on a cluster
    whose workers all died; this waits at most ``no_worker_timeout()`` (NoWorkers)."""
    from distributed import wait

    watch = WorkerWatch(client)
    pending = set(futures)
    while pending:
        try:
            with client.as_current():  # Dask's wait asks for the current client: a caller's may be none
                done, pending = wait(pending, timeout=WATCH_INTERVAL, return_when="FIRST_COMPLETED")
        except TimeoutError:
            watch.check()
            continue
        for future in done:
            yield watched_result(future, watch)


def watched_result(future: Future, watch: WorkerWatch) -> object:
    """``future.result()``, watched: the worker holding it may die before it is fetched. A task that
    finished but whose result takes longer than the wait to arrive (a loaded machine) is waited for
    again, each wait twice the last; only the task's own TimeoutError is raised."""
    timeout = WATCH_INTERVAL
    while True:
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            if future.status == "error":  # the task failed (with its own TimeoutError, say): its error
                return future.result()
            watch.check()
            if future.status == "finished":
                timeout *= 2


def run_on_workers(client: Client, function: Callable[..., object], *args: object,
                   doing: str = "how they compute") -> dict[str, object]:
    """``client.run``: ``function`` on every worker, by address; a worker that dies meanwhile
    (Dask: "Stream is closed") is WorkerLost, said in one line."""
    from distributed.comm import CommClosedError

    try:
        return client.run(function, *args)
    except CommClosedError:
        raise WorkerLost(f"the Dask cluster at {client.scheduler.address}: a worker died while the run asked its"
                         f" workers {doing}; run the same command again (if it happens again, the workers are short of"
                         " memory or being stopped)") from None


@contextmanager
def optional_client(client: Client | None = None, scheduler: str | None = None) -> Iterator[Client | None]:
    """``client``; else a client of the running scheduler at ``scheduler`` (see ``dask_client``);
    else None: the caller works in this process. For the stages after inference, which use a
    cluster when there is one and are still correct without."""
    if client is not None or scheduler is None:
        yield client
        return
    with dask_client(scheduler) as reached:
        yield reached


@contextmanager
def dask_client(
    scheduler_address: str | None = None,
    cluster_spec: str | Path | None = None,
    workers: int | None = None,
    device: str = "auto",
) -> Iterator[Client]:
    """A Dask client for one run, from exactly one source; closes what it started.

    ``scheduler_address``: connect to a running scheduler (left running afterwards; ``workers`` is
    ignored: that cluster has its own); when this process holds a client of it open already (the
    flow's, for a stage running as a task) that client is shared and left open. ``cluster_spec``: start the cluster a spec file describes
    (a path, or a bare name such as ``"slurm"`` for ``deploy/clusters/slurm.yaml``, see
    ``resolve_cluster_spec``); ``workers`` overrides the spec's worker count. Neither: a
    LocalCluster of ``workers`` processes (default ``default_local_workers()``), one thread each;
    on a machine with GPUs (and ``device`` not ``cpu``) one worker per GPU instead (``workers``
    of them at most), or one for ``cuda:N``.
    """
    if scheduler_address and cluster_spec:
        raise ValueError(
            f"give a Dask scheduler address ({scheduler_address}) or a cluster spec ({cluster_spec}), not both"
        )
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    from distributed import Client

    cluster: Cluster | None = None
    with _open_clients_lock:
        held = _open_clients.get(scheduler_address) if scheduler_address else None
    if held is not None:
        yield held
        return
    if scheduler_address:
        if workers:
            log.warning("workers=%d ignored: the scheduler at %s has its own workers", workers, scheduler_address)
        client = connect(scheduler_address)
    else:
        spec = load_cluster_spec(cluster_spec) if cluster_spec else ClusterSpec(Path("<default>"), "local")
        gpus = [] if cluster_spec else local_gpus(device, workers)
        if gpus or spec.kind == "local":
            check_spawn_safe()
        with sigint_ignored_by_children(), dask.config.set({**WORKER_ENVIRON, **patience_config()}):
            pin = not device.startswith("cuda:")  # cuda:N names the GPU itself: it must stay visible as N
            cluster = start_gpu_local(gpus, pin=pin) if gpus else start_cluster(spec, workers)
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
    address = client.scheduler.address
    with _open_clients_lock:
        shared = _open_clients.setdefault(address, client) is client
    try:
        log.info("Dask dashboard: %s", client.dashboard_link)
        yield client
    finally:
        if shared:
            with _open_clients_lock:
                del _open_clients[address]
        client.close()
        if cluster is not None:
            cluster.close()


#: The in-process cluster: one worker thread inside this process. It starts at once (worker
#: processes take seconds, each importing torch and loading the model; measured:
#: docs/benchmarks.md#figures-quoted-in-code-comments), and runs the same tasks, ledger and
#: guarantees, one task at a time. No memory limit: a worker's memory monitor would measure the
#: whole process (the caller's data too) and pause or spill on its account, stalling the run.
IN_PROCESS_OPTIONS: dict[str, object] = {"processes": False, "n_workers": 1, "threads_per_worker": 1,
                                         "dashboard_address": ":0", "memory_limit": 0}


@contextmanager
def in_process_client(threads: int) -> Iterator[Client]:
    """A Dask client of one worker thread inside this process, closed afterwards. Torch computes
    with ``threads`` threads meanwhile: a convolution's sums depend on how its work is split, so
    the count a worker process would get keeps the labels identical bit for bit; this process's
    own count is put back afterwards (a notebook's torch keeps its setting)."""
    import torch
    from distributed import Client, LocalCluster

    previous = torch.get_num_threads()
    with dask.config.set(patience_config()):
        cluster = LocalCluster(**IN_PROCESS_OPTIONS)
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    torch.set_num_threads(threads)
    log.info("running in this process (one Dask worker thread, %d torch threads)", threads)
    try:
        yield client
    finally:
        torch.set_num_threads(previous)
        client.close()
        cluster.close()


def unguarded_main_script() -> str | None:
    """The script this process runs, when it is calling in here from its top level outside an
    ``if __name__ == "__main__":`` block (None otherwise: a guarded call, a notebook, ``python -c``,
    ``python -m package``).
    Dask starts local workers with multiprocessing's *spawn*, which runs the main script again in
    every worker: an unguarded call there starts the run again in each of them (the run's own OUT
    is then busy, and the workers fail to start)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path or not Path(path).is_file():
        return None
    name = getattr(main.__spec__, "name", None) or ""
    if name == "__main__" or name.endswith(".__main__"):  # a package's __main__.py: spawn never runs it again
        return None
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:
        return None
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    line = frame.f_lineno
    guarded = any(isinstance(node, ast.If) and is_main_test(node.test) and node.lineno <= line <= (node.end_lineno or 0)
                  for node in ast.walk(tree))
    return None if guarded else path


def is_main_test(test: ast.expr) -> bool:
    """Whether an ``if`` tests ``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def check_spawn_safe() -> None:
    """Refuse, in one line, to start worker processes from an unguarded script's top level
    (``unguarded_main_script``), naming the fix, before any worker re-runs the script."""
    if dask.config.get("distributed.worker.multiprocessing-method", "spawn") != "spawn":
        return
    script = unguarded_main_script()
    if script is not None:
        raise InputError(f"{script}: this run starts Dask worker processes, which run the script again from the top;"
                         ' put the call under `if __name__ == "__main__":` (or pass client= a running Dask client)')


def local_gpus(device: str, workers: int | None = None) -> list[int]:
    """The GPUs of this machine a local run uses for ``device``: all of them for ``auto`` and
    ``cuda`` (at most ``workers``), the one for ``cuda:N``, none for ``cpu`` or without CUDA.
    Without a GPU driver library torch is not imported to ask: the workers load it, not the driver."""
    if device == "cpu" or not gpu_driver_present():
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    if device.startswith("cuda:"):
        return [int(device.split(":", 1)[1])]
    return list(range(torch.cuda.device_count()))[: workers or None]


@contextmanager
def sigint_ignored_by_children() -> Iterator[None]:
    """Processes started in here (a local cluster's workers) ignore Ctrl-C: it is the driver's to
    handle (one line, then it stops them), not each worker's to print a traceback about. Signal
    dispositions can only change on the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def connect(address: str) -> Client:
    """A client of a running scheduler; an unreachable one is bad input, said in one line."""
    from distributed import Client

    try:
        return Client(address, timeout=os.environ.get("FCNSEG_CONNECT_TIMEOUT", CONNECT_TIMEOUT))
    except OSError as exc:
        raise InputError(f"{address}: cannot reach a Dask scheduler there ({exc})") from None


def gpu_resources(client: Client, wait: float = 0.0) -> bool:
    """True when a worker of ``client``'s cluster advertises a ``GPU`` resource.

    Only then may inference tasks ask for ``resources={"GPU": 1}``: on a cluster whose workers
    have no such resource, tasks that ask for it would wait forever. Workers of a freshly started
    cluster (a batch queue, pods being scheduled) may not be there yet: ``wait`` seconds are spent
    waiting for the first one.
    """
    if wait > 0 and not client.scheduler_info()["workers"]:
        with suppress(TimeoutError):
            client.wait_for_workers(1, timeout=wait)
    workers = client.scheduler_info()["workers"].values()
    return any((w.get("resources") or {}).get(GPU_RESOURCE, 0) > 0 for w in workers)
