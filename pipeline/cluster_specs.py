"""Cluster spec files (``deploy/clusters/*.yaml``): find, validate and start what they describe.

A spec names a cluster this process starts and tears down afterwards; ``fcnseg.pipeline.cluster``
gives the Dask client for it. Bare names (``"slurm"``) resolve to ``deploy/clusters/<name>.yaml``.
Every spec file carries a top-level ``kind``:

- ``kind: DaskCluster``: a dask-kubernetes operator resource (``apiVersion: kubernetes.dask.org/v1``),
  the file is the manifest itself so ``kubectl apply -f`` takes it unchanged.
- ``kind: jobqueue``: ``scheduler`` (slurm, pbs, sge, lsf, htcondor), ``jobs`` (batch jobs to
  submit) and ``options`` (keyword arguments of the matching dask_jobqueue class).
- ``kind: local``: ``options`` (LocalCluster keyword arguments).

The backends' packages (dask-kubernetes, dask-jobqueue) are optional and imported only when a
spec needs them. This module does not import prefect: the library runs without an orchestrator.
It sits below ``fcnseg.pipeline.cluster`` and never imports it: what both need about the workers
of a started cluster (``GPU_RESOURCE``, ``default_local_workers``) is defined here.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dask
import yaml

from fcnseg.pipeline.io import InputError

if TYPE_CHECKING:
    from distributed.deploy import Cluster

log = logging.getLogger(__name__)

#: Bare spec names resolve to ``<dir>/deploy/clusters/<name>.yaml``, ``<dir>`` being the current
#: directory first, then the checkout this module lives in.
SPEC_DIR = Path("deploy") / "clusters"
REPO_ROOT = Path(__file__).resolve().parents[1]

#: The worker resource that GPU workers advertise (``dask worker --resources GPU=1``); inference
#: tasks ask for one unit so that a worker runs one model forward pass at a time on its GPU.
GPU_RESOURCE = "GPU"

KUBERNETES_API_VERSION = "kubernetes.dask.org/v1"
KUBERNETES_KIND = "DaskCluster"

#: Keyword arguments of dask-jobqueue 0.9.0, read from its source (``Job.__init__``,
#: ``JobQueueCluster.__init__`` and each ``<X>Job.__init__``). Keywords that take Python objects
#: (loop, job_cls, scheduler_cls) or that dask_jobqueue refuses at the top level
#: (dashboard_address, host: they go in ``scheduler_options``) are left out, and so is
#: ``n_workers`` (a spec says ``jobs``). This is the single source of truth for spec validation.
JOBQUEUE_COMMON_KEYWORDS: frozenset[str] = frozenset({
    # Job (worker side)
    "cores", "memory", "processes", "nanny", "protocol", "security", "interface", "death_timeout",
    "local_directory", "worker_command", "worker_extra_args", "job_extra_directives",
    "job_script_prologue", "job_directives_skip", "log_directory", "shebang", "python", "job_name",
    "config_name",
    # JobQueueCluster (scheduler side)
    "shared_temp_directory", "silence_logs", "name", "scheduler_options",
})
JOBQUEUE_SCHEDULER_KEYWORDS: dict[str, frozenset[str]] = {
    "slurm": frozenset({"queue", "account", "walltime", "job_cpu", "job_mem"}),
    "pbs": frozenset({"queue", "account", "resource_spec", "walltime"}),
    "sge": frozenset({"queue", "project", "resource_spec", "walltime"}),
    "lsf": frozenset({"queue", "project", "ncpus", "mem", "walltime", "lsf_units", "use_stdin"}),
    "htcondor": frozenset({"disk", "submit_command_extra", "cancel_command_extra"}),
}
#: dask_jobqueue class per ``scheduler`` value.
JOBQUEUE_CLASSES: dict[str, str] = {
    "slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
}
#: Keywords dask_jobqueue 0.9 still accepts with a FutureWarning, or that a spec spells otherwise.
JOBQUEUE_RENAMED: dict[str, str] = {
    "extra": "worker_extra_args", "job_extra": "job_extra_directives", "env_extra": "job_script_prologue",
    "header_skip": "job_directives_skip", "n_workers": "jobs (at the top level of the spec)",
    "dashboard_address": "scheduler_options: {dashboard_address: ...}",
    "host": "scheduler_options: {host: ...}",
}
#: Options every jobqueue spec must set: dask_jobqueue fails without them (HTCondor also needs disk).
JOBQUEUE_REQUIRED: dict[str, tuple[str, ...]] = {
    "slurm": ("cores", "memory"), "pbs": ("cores", "memory"), "sge": ("cores", "memory"),
    "lsf": ("cores", "memory"), "htcondor": ("cores", "memory", "disk"),
}

#: LocalCluster defaults: one thread per worker process (torch per worker, GDAL not shared), and
#: a free dashboard port (``None`` would still bind :8787).
LOCAL_DEFAULTS: dict[str, Any] = {"threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}
#: LocalCluster keywords a spec may set, plus the worker keywords LocalCluster passes on.
LOCAL_KEYWORDS: frozenset[str] = frozenset({
    "name", "n_workers", "threads_per_worker", "processes", "host", "ip", "scheduler_port", "silence_logs",
    "dashboard_address", "worker_dashboard_address", "protocol", "interface", "scheduler_kwargs",
    "resources", "memory_limit", "local_directory", "death_timeout", "lifetime", "lifetime_stagger",
    "lifetime_restart",
})

SpecKind = Literal["kubernetes", "jobqueue", "local"]


@dataclass(frozen=True)
class ClusterSpec:
    """A validated cluster spec file.

    ``options`` holds the backend's own keyword arguments (LocalCluster, dask_jobqueue class) or,
    for kubernetes, the whole DaskCluster manifest.
    """

    path: Path
    kind: SpecKind
    options: dict[str, Any] = field(default_factory=dict)
    scheduler: str | None = None  # jobqueue: slurm, pbs, ...
    jobs: int | None = None  # jobqueue: batch jobs to submit

    def worker_args(self) -> list[str]:
        """The extra command-line arguments the spec's workers start with."""
        if self.kind == "kubernetes":
            container = worker_container(self.options)
            return [str(a) for a in [*container.get("command", []), *container.get("args", [])]]
        if self.kind == "jobqueue":
            return [str(a) for a in self.options.get("worker_extra_args", [])]
        return []

    def worker_resources(self) -> dict[str, float]:
        """Abstract resources (``GPU`` etc.) the spec's workers advertise to the scheduler."""
        if self.kind == "local":
            return {str(k): float(v) for k, v in (self.options.get("resources") or {}).items()}
        return resources_from_args(self.worker_args())

    @property
    def advertises_gpu(self) -> bool:
        return self.worker_resources().get(GPU_RESOURCE, 0) > 0


# --- spec files ---------------------------------------------------------------------------------


def resolve_cluster_spec(spec: str | Path) -> Path:
    """The spec file for ``spec``: an existing path as given, or a bare name (letters, digits,
    ``-``, ``_``) looked up as ``deploy/clusters/<name>.yaml`` under the current directory, then
    under the checkout fcnseg runs from. The current directory comes first so that a deployment
    can carry its own specs beside its ``prefect.yaml``."""
    path = Path(spec)
    if path.is_file():
        return path
    name = str(spec)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise InputError(f"{spec}: no such cluster spec file")
    candidates = list(dict.fromkeys([Path.cwd() / SPEC_DIR / f"{name}.yaml", REPO_ROOT / SPEC_DIR / f"{name}.yaml"]))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for c in candidates if c.parent.is_dir() for p in c.parent.glob("*.yaml")})
    raise InputError(
        f"{name}: no cluster spec of that name (looked for {', '.join(map(str, candidates))}; "
        f"known: {', '.join(known) or 'none'})"
    )


def load_cluster_spec(spec: str | Path) -> ClusterSpec:
    """Read and validate a spec file (by path or name); errors name the file and the problem."""
    path = resolve_cluster_spec(spec)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(document, dict):
        raise InputError(f"{path}: a cluster spec is a YAML mapping with a 'kind'")
    kind = document.get("kind")
    if kind == KUBERNETES_KIND:
        return kubernetes_spec(path, document)
    if kind == "jobqueue":
        return jobqueue_spec(path, document)
    if kind == "local":
        return local_spec(path, document)
    raise InputError(f"{path}: kind must be {KUBERNETES_KIND}, jobqueue or local, not {kind!r}")


def kubernetes_spec(path: Path, manifest: dict[str, Any]) -> ClusterSpec:
    """A DaskCluster manifest, checked for what the operator's CRD requires and KubeCluster reads."""
    if manifest.get("apiVersion") != KUBERNETES_API_VERSION:
        raise InputError(f"{path}: a DaskCluster needs apiVersion {KUBERNETES_API_VERSION}, not {manifest.get('apiVersion')!r}")
    if not _get(manifest, "metadata", "name"):
        raise InputError(f"{path}: metadata.name is missing (the DaskCluster's name)")
    for keys in (("spec", "worker", "spec"), ("spec", "scheduler", "spec"), ("spec", "scheduler", "service")):
        if not isinstance(_get(manifest, *keys), dict):
            raise InputError(f"{path}: {'.'.join(keys)} is missing")
    worker_container(manifest, path)
    replicas = _get(manifest, "spec", "worker", "replicas")
    if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
        raise InputError(f"{path}: spec.worker.replicas must be a whole number, not {replicas!r}")
    return ClusterSpec(path, "kubernetes", manifest)


def worker_container(manifest: Mapping[str, Any], path: Path | None = None) -> dict[str, Any]:
    """The first container of the DaskCluster's worker pod (the one running ``dask worker``)."""
    containers = _get(manifest, "spec", "worker", "spec", "containers")
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
        raise InputError(f"{path or 'DaskCluster'}: spec.worker.spec.containers needs a worker container")
    return containers[0]


def jobqueue_spec(path: Path, document: dict[str, Any]) -> ClusterSpec:
    """scheduler + jobs + options, every option a keyword of the matching dask_jobqueue class."""
    _only_keys(path, document, {"kind", "scheduler", "jobs", "options"}, "")
    scheduler = document.get("scheduler")
    if scheduler not in JOBQUEUE_CLASSES:
        raise InputError(f"{path}: scheduler must be one of {', '.join(JOBQUEUE_CLASSES)}, not {scheduler!r}")
    jobs = document.get("jobs")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InputError(f"{path}: jobs (batch jobs to submit) must be a whole number of at least 1, not {jobs!r}")
    options = document.get("options")
    if not isinstance(options, dict):
        raise InputError(f"{path}: options (the {JOBQUEUE_CLASSES[scheduler]} keyword arguments) is missing")
    for key in options:
        if key in JOBQUEUE_RENAMED:
            raise InputError(f"{path}: options.{key} is not accepted here; use {JOBQUEUE_RENAMED[key]}")
    allowed = jobqueue_keywords(scheduler)
    _only_keys(path, options, allowed, "options.", f" for {JOBQUEUE_CLASSES[scheduler]}")
    missing = [k for k in JOBQUEUE_REQUIRED[scheduler] if options.get(k) is None]
    if missing:
        raise InputError(f"{path}: options.{', options.'.join(missing)} missing ({JOBQUEUE_CLASSES[scheduler]} needs them)")
    for key in ("worker_extra_args", "job_extra_directives", "job_script_prologue"):
        if key in options and not _is_str_list(options[key]):
            raise InputError(f"{path}: options.{key} must be a list of strings")
    _counts_at_least_one(path, options, ("cores", "processes"))
    return ClusterSpec(path, "jobqueue", options, scheduler=scheduler, jobs=jobs)


def jobqueue_keywords(scheduler: str) -> frozenset[str]:
    """Every keyword a spec may give the dask_jobqueue class of ``scheduler``."""
    return JOBQUEUE_COMMON_KEYWORDS | JOBQUEUE_SCHEDULER_KEYWORDS[scheduler]


def local_spec(path: Path, document: dict[str, Any]) -> ClusterSpec:
    """LocalCluster keyword arguments under ``options`` (all optional)."""
    _only_keys(path, document, {"kind", "options"}, "")
    options = document.get("options") or {}
    if not isinstance(options, dict):
        raise InputError(f"{path}: options must be a mapping of LocalCluster keyword arguments")
    _only_keys(path, options, LOCAL_KEYWORDS, "options.", " for LocalCluster")
    resources = options.get("resources")
    if resources is not None and (
        not isinstance(resources, dict) or not all(isinstance(v, int | float) for v in resources.values())
    ):
        raise InputError(f"{path}: options.resources must map resource names to numbers, e.g. {{GPU: 1}}")
    _counts_at_least_one(path, options, ("n_workers", "threads_per_worker"))
    return ClusterSpec(path, "local", options)


def _counts_at_least_one(path: Path, options: Mapping[str, Any], keys: Sequence[str]) -> None:
    """Worker, thread and core counts are whole numbers of at least 1 where a spec gives them: a
    LocalCluster of ``n_workers: -2`` starts no worker at all, and the run would wait for one."""
    for key in keys:
        value = options.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InputError(f"{path}: options.{key} must be a whole number of at least 1, not {value!r}")


def resources_from_args(args: Sequence[str]) -> dict[str, float]:
    """The ``--resources`` of a ``dask worker`` command line, e.g. ``["--resources", "GPU=1"]``
    (also ``--resources=GPU=1`` and several pairs separated by spaces or commas)."""
    values = []
    for i, arg in enumerate(args):
        if arg == "--resources" and i + 1 < len(args):
            values.append(args[i + 1])
        elif arg.startswith("--resources="):
            values.append(arg.removeprefix("--resources="))
    resources: dict[str, float] = {}
    for pair in " ".join(values).replace(",", " ").split():
        name, _, amount = pair.partition("=")
        with suppress(ValueError):
            resources[name] = float(amount)
    return resources


# --- starting clusters --------------------------------------------------------------------------


def start_cluster(spec: ClusterSpec, workers: int | None = None) -> Cluster:
    """Start the cluster ``spec`` describes, with ``workers`` workers when given."""
    if spec.kind == "local":
        return start_local(spec, workers)
    if spec.kind == "jobqueue":
        return start_jobqueue(spec, workers)
    return start_kubernetes(spec, workers)


def default_local_workers() -> int:
    """As many workers as cores, at most 4: each holds a model, memory grows with the count."""
    return max(1, min(4, os.cpu_count() or 1))


def start_local(spec: ClusterSpec, workers: int | None) -> Cluster:
    from distributed import LocalCluster

    options = {"n_workers": default_local_workers(), **LOCAL_DEFAULTS, **spec.options}
    if workers:
        options["n_workers"] = workers
    threads = torch_threads(options["n_workers"] * options.get("threads_per_worker", 1))
    log.info("starting a LocalCluster of %d workers, %d torch threads per task%s", options["n_workers"], threads,
             f" ({spec.path})" if spec.options else "")
    with spawn_environ("FCNSEG_TORCH_THREADS", str(threads)):
        return LocalCluster(**options)


@contextmanager
def spawn_environ(name: str, value: str) -> Iterator[None]:
    """Worker processes started in here get ``name=value``. Dask's nanny sets its pre-spawn
    variables in the starting process's own environment too (where an existing value wins over
    the config): this one is restored afterwards, so the next cluster of the run is not given it."""
    with scoped_environ(name, None), dask.config.set({f"distributed.nanny.pre-spawn-environ.{name}": value}):
        yield


@contextmanager
def scoped_environ(name: str, value: str | None) -> Iterator[None]:
    """This process's environment variable ``name`` set to ``value`` (None: unset) in here, and
    put back as it was afterwards."""
    previous = os.environ.pop(name, None)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if previous is not None:
            os.environ[name] = previous


def torch_threads(concurrent_tasks: int) -> int:
    """Torch threads per task so that the tasks running at once use every core (Dask's nanny
    would give each one thread: 4 workers on 16 cores would leave 12 idle); ``FCNSEG_TORCH_THREADS``
    set by the user wins."""
    if os.environ.get("FCNSEG_TORCH_THREADS"):
        return int(os.environ["FCNSEG_TORCH_THREADS"])
    return max(1, (os.cpu_count() or 1) // max(1, concurrent_tasks))


def start_gpu_local(gpus: Sequence[int], pin: bool = True) -> Cluster:
    """One worker per GPU on this machine, each advertising a ``GPU`` resource (one task at a time
    on its GPU) and, with ``pin``, seeing only its own GPU through ``CUDA_VISIBLE_DEVICES``: the
    equivalent of dask-cuda's LocalCUDACluster, without its dependencies."""
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {
        i: {"cls": Nanny, "options": {
            "nthreads": 1, "name": i, "resources": {GPU_RESOURCE: 1}, "dashboard_address": ":0",
            "env": {"CUDA_VISIBLE_DEVICES": str(gpu)} if pin else {},
        }}
        for i, gpu in enumerate(gpus)
    }
    log.info("starting a local GPU cluster: one worker per GPU (%s)", ", ".join(map(str, gpus)))
    return SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
                       name="fcnseg-gpu")


def start_jobqueue(spec: ClusterSpec, workers: int | None) -> Cluster:
    """Submit the spec's batch jobs; ``workers`` (Dask workers, not jobs) overrides ``jobs``."""
    assert spec.scheduler is not None and spec.jobs is not None
    module = _optional_import("dask_jobqueue", "dask-jobqueue", spec.path)
    cluster_class = getattr(module, JOBQUEUE_CLASSES[spec.scheduler])
    cluster = cluster_class(**spec.options)
    try:
        if workers:
            cluster.scale(n=workers)
        else:
            cluster.scale(jobs=spec.jobs)
    except BaseException:
        cluster.close()
        raise
    asked = f"{workers} workers" if workers else f"{spec.jobs} jobs"
    log.info("%s: %s asked of %s, scheduler %s", spec.path, asked, spec.scheduler, cluster.scheduler_address)
    return cluster


def start_kubernetes(spec: ClusterSpec, workers: int | None) -> Cluster:
    """Create the DaskCluster resource through the operator; deleted again when closed."""
    module = _optional_import("dask_kubernetes.operator", "dask-kubernetes", spec.path)
    namespace = _get(spec.options, "metadata", "namespace")
    cluster = module.KubeCluster(custom_cluster_spec=spec.options, namespace=namespace)
    try:
        if workers:
            cluster.scale(workers)
    except BaseException:
        cluster.close()
        raise
    log.info("%s: DaskCluster %s created", spec.path, cluster.name)
    return cluster


def _optional_import(module: str, package: str, path: Path) -> Any:
    """Import a backend only a spec needs; when missing, one line that says what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        reason = "" if exc.name in (None, top, module) else f" (its dependency {exc.name} is missing)"
        raise InputError(f"{path}: needs {package} (pip install {package}){reason}") from None


# --- small helpers ------------------------------------------------------------------------------


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _only_keys(path: Path, mapping: Mapping[str, Any], allowed: set[str] | frozenset[str], prefix: str,
               where: str = "") -> None:
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise InputError(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + k for k in unknown)}{where}"
        )


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
