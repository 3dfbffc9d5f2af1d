"""Scale-out: the cluster spec files, the worker image and ``dask_client`` against real clusters.

The Kubernetes and HPC clusters cannot run here; their spec files are checked against what the
code, the worker image and the backends (dask-kubernetes operator CRD, dask-jobqueue 0.9
keywords) expect. LocalCluster and a separate scheduler process do run here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
import yaml

from fcnseg.pipeline.cluster import GPU_RESOURCE, dask_client, default_local_workers, gpu_resources
from fcnseg.pipeline.cluster_specs import (
    JOBQUEUE_CLASSES,
    ClusterSpec,
    jobqueue_keywords,
    load_cluster_spec,
    resolve_cluster_spec,
    resources_from_args,
    worker_container,
)
from fcnseg.pipeline.io import InputError

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "deploy" / "clusters"
DOCKERFILE = ROOT / "deploy" / "worker.Dockerfile"
SPEC_FILES = sorted(CLUSTERS.glob("*.yaml"))


def documented_image_tag() -> str:
    """The tag of the build command the Dockerfile documents (what the specs must run)."""
    match = re.search(r"docker build -f deploy/worker\.Dockerfile -t (\S+) \.$", DOCKERFILE.read_text(), re.M)
    assert match, "the Dockerfile documents its build command"
    return match.group(1)


def torch_pin(lines: list[str]) -> str:
    pins = [line.split("#")[0].strip().strip('",') for line in lines if re.match(r'\s*"?torch==', line)]
    assert len(pins) == 1, pins
    return pins[0]


# --- spec files ---------------------------------------------------------------------------------


def test_the_three_spec_files_exist():
    assert {p.stem for p in SPEC_FILES} >= {"kubernetes", "slurm", "local"}


@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.stem for p in SPEC_FILES])
def test_every_spec_file_loads_and_has_a_valid_kind(path):
    spec = load_cluster_spec(path)
    assert spec.kind in ("kubernetes", "jobqueue", "local")
    assert spec.path == path
    assert isinstance(yaml.safe_load(path.read_text()), dict)


def test_kubernetes_spec_is_a_daskcluster_running_the_worker_image_with_a_gpu():
    spec = load_cluster_spec("kubernetes")
    manifest = yaml.safe_load((CLUSTERS / "kubernetes.yaml").read_text())
    assert spec.kind == "kubernetes" and spec.options == manifest
    assert manifest["apiVersion"] == "kubernetes.dask.org/v1" and manifest["kind"] == "DaskCluster"
    name = manifest["metadata"]["name"]
    worker = worker_container(manifest)
    scheduler = manifest["spec"]["scheduler"]["spec"]["containers"][0]
    tag = documented_image_tag()
    assert worker["image"] == tag and scheduler["image"] == tag
    args = spec.worker_args()
    assert args[:2] == ["dask", "worker"] and scheduler["args"][:2] == ["dask", "scheduler"]
    assert args[args.index("--nthreads") + 1] == "1"
    assert "$(DASK_WORKER_NAME)" in args  # the operator's per-pod worker name
    assert resources_from_args(args) == {GPU_RESOURCE: 1.0} and spec.advertises_gpu
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert isinstance(manifest["spec"]["worker"]["replicas"], int) and manifest["spec"]["worker"]["replicas"] >= 1
    service = manifest["spec"]["scheduler"]["service"]
    assert service["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    assert {p["port"] for p in service["ports"]} == {8786, 8787}


def test_slurm_spec_uses_only_dask_jobqueue_keywords_and_asks_for_a_gpu():
    spec = load_cluster_spec("slurm")
    document = yaml.safe_load((CLUSTERS / "slurm.yaml").read_text())
    assert spec.kind == "jobqueue" and spec.scheduler == "slurm" and JOBQUEUE_CLASSES["slurm"] == "SLURMCluster"
    assert set(document) == {"kind", "scheduler", "jobs", "options"}
    assert set(document["options"]) <= jobqueue_keywords("slurm")
    assert spec.jobs == document["jobs"] >= 1
    assert "--gres=gpu:1" in spec.options["job_extra_directives"]
    assert spec.worker_args() == ["--resources", "GPU=1"] and spec.advertises_gpu
    # one Dask worker per job with one thread: one GPU per worker, one inference at a time
    assert spec.options["processes"] == 1 and spec.options["cores"] // spec.options["processes"] == 1


def test_every_jobqueue_spec_uses_known_keywords():
    """Also specs someone adds for PBS, SGE, LSF or HTCondor."""
    for path in SPEC_FILES:
        document = yaml.safe_load(path.read_text())
        if document.get("kind") == "jobqueue":
            assert set(document["options"]) <= jobqueue_keywords(document["scheduler"]), path


def test_local_spec_is_a_one_thread_per_process_local_cluster():
    spec = load_cluster_spec("local")
    assert spec.kind == "local"
    assert spec.options["threads_per_worker"] == 1 and spec.options["processes"] is True
    assert not spec.advertises_gpu


def test_a_bare_name_resolves_in_the_current_directory_first(tmp_path, monkeypatch):
    assert resolve_cluster_spec("slurm") == CLUSTERS / "slurm.yaml"
    (tmp_path / "deploy" / "clusters").mkdir(parents=True)
    own = tmp_path / "deploy" / "clusters" / "slurm.yaml"
    own.write_text("kind: local\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_cluster_spec("slurm") == own
    assert load_cluster_spec("slurm").kind == "local"
    assert resolve_cluster_spec("kubernetes") == CLUSTERS / "kubernetes.yaml"  # falls back to the checkout


def test_unknown_names_and_paths_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match=r"nosuch: no cluster spec of that name .*known: .*kubernetes"):
        resolve_cluster_spec("nosuch")
    with pytest.raises(InputError, match="no such cluster spec file"):
        resolve_cluster_spec(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "text, message",
    [
        ("kind: swarm\n", r"kind must be DaskCluster, jobqueue or local, not 'swarm'"),
        ("- a\n- list\n", "a YAML mapping"),
        ("kind: local\noptions: {n_workers: 1\n", "not valid YAML"),
        ("kind: local\noptions: {n_wrkers: 1}\n", r"unknown key options\.n_wrkers for LocalCluster"),
        ("kind: local\nextra: 1\n", "unknown key extra"),
        ("kind: jobqueue\nscheduler: torque\njobs: 1\noptions: {}\n", "scheduler must be one of slurm, pbs"),
        ("kind: jobqueue\nscheduler: slurm\noptions: {cores: 1, memory: 1GB}\n", "jobs .* must be a whole number"),
        ("kind: jobqueue\nscheduler: slurm\njobs: 1\noptions: {cores: 1, memory: 1GB, gres: gpu}\n",
         r"unknown key options\.gres for SLURMCluster"),
        ("kind: jobqueue\nscheduler: slurm\njobs: 1\noptions: {cores: 1, memory: 1GB, resource_spec: x}\n",
         r"unknown key options\.resource_spec for SLURMCluster"),  # a PBS/SGE keyword
        ("kind: jobqueue\nscheduler: slurm\njobs: 1\noptions: {cores: 1, memory: 1GB, extra: [a]}\n",
         r"options\.extra is not accepted here; use worker_extra_args"),
        ("kind: jobqueue\nscheduler: slurm\njobs: 1\noptions: {cores: 1}\n", r"options\.memory missing"),
        ("kind: jobqueue\nscheduler: htcondor\njobs: 1\noptions: {cores: 1, memory: 1GB}\n", r"options\.disk missing"),
        ("kind: jobqueue\nscheduler: slurm\njobs: 1\noptions: {cores: 1, memory: 1GB, worker_extra_args: --x}\n",
         "must be a list of strings"),
        ("apiVersion: kubernetes.dask.org/v2\nkind: DaskCluster\n", "needs apiVersion kubernetes.dask.org/v1"),
        ("apiVersion: kubernetes.dask.org/v1\nkind: DaskCluster\nmetadata: {name: x}\nspec: {}\n",
         r"spec\.worker\.spec is missing"),
    ],
)
def test_bad_spec_files_give_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as error:
        load_cluster_spec(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def test_worker_resources_are_read_from_dask_worker_arguments():
    assert resources_from_args(["dask", "worker", "--resources", "GPU=1 MEM=4e9"]) == {"GPU": 1.0, "MEM": 4e9}
    assert resources_from_args(["--resources=GPU=2,TPU=1"]) == {"GPU": 2.0, "TPU": 1.0}
    assert resources_from_args(["--nthreads", "1"]) == {}


# --- worker image -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_worker_image_installs_the_project_with_the_same_pins():
    instructions = dockerfile_instructions()
    runs = [args for op, args in instructions if op == "RUN"]
    pip_installs = [shlex.split(part) for run in runs for part in run.split("&&") if "pip install" in part]
    torch_install = next(cmd for cmd in pip_installs if "torch" in cmd)
    project_install = next(cmd for cmd in pip_installs if "." in cmd)
    for cmd in (torch_install, project_install):
        assert cmd[cmd.index("-c") + 1] == "constraints.txt", cmd
    # torch (CUDA build) from PyTorch's index, named by a build argument
    assert any(re.fullmatch(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", args)
               for op, args in instructions if op == "ARG")
    assert torch_install[torch_install.index("--extra-index-url") + 1] == "${TORCH_INDEX_URL}"
    # the pin constraints.txt applies in the image is the project's pin
    constraints_pin = torch_pin((ROOT / "constraints.txt").read_text().splitlines())
    project_pin = torch_pin(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert constraints_pin == project_pin == "torch==2.13.0"
    assert not re.search(r"torch==(?!2\.13\.0\b)", DOCKERFILE.read_text())
    copied = " ".join(args for op, args in instructions if op == "COPY")
    for needed in ("constraints.txt", "pyproject.toml", "README.md", "fcnseg", "models", "pipeline", "flows"):
        assert needed in copied, needed


def test_worker_image_starts_a_one_thread_gpu_worker():
    cmd = json.loads(next(args for op, args in dockerfile_instructions() if op == "CMD"))
    assert cmd[:2] == ["dask", "worker"]
    assert cmd[cmd.index("--nthreads") + 1] == "1"
    assert resources_from_args(cmd) == {GPU_RESOURCE: 1.0}
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "demo-out", "bench-out"} <= set(ignored)


# --- dask_client with real clusters ---------------------------------------------------------------


def _process_gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_local_spec_starts_a_real_local_cluster_and_closes_it():
    with dask_client(cluster_spec="local", workers=1) as client:
        info = client.scheduler_info()["workers"]
        assert len(info) == 1 and all(w["nthreads"] == 1 for w in info.values())
        assert client.submit(lambda x: x * 2, 21).result() == 42
        worker_pids = list(client.run(os.getpid).values())
        assert worker_pids and os.getpid() not in worker_pids  # separate worker processes
        assert not gpu_resources(client)
    assert client.status == "closed"
    assert all(_process_gone(pid) for pid in worker_pids)


def test_a_local_spec_with_a_gpu_resource_is_seen_as_gpu_workers(tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text("kind: local\noptions: {n_workers: 1, processes: false, resources: {GPU: 1}}\n")
    assert load_cluster_spec(path).advertises_gpu
    with dask_client(cluster_spec=path) as client:
        assert gpu_resources(client)
        assert client.submit(sum, [1, 2], resources={GPU_RESOURCE: 1}).result() == 3


def test_default_is_a_local_cluster():
    assert default_local_workers() == max(1, min(4, os.cpu_count() or 1))
    with dask_client(workers=1) as client:
        assert len(client.scheduler_info()["workers"]) == 1


@pytest.fixture
def external_scheduler(tmp_path) -> Iterator[tuple[str, subprocess.Popen, subprocess.Popen]]:
    """A real scheduler process and one worker process advertising a GPU, as on a cluster."""
    scheduler_file = tmp_path / "scheduler.json"
    common = ["--scheduler-file", str(scheduler_file), "--dashboard-address", ":0"]
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", *common],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    processes = [scheduler]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert scheduler.poll() is None and time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--no-nanny", "--nthreads", "1", "--resources", "GPU=1",
             "--name", "gpu-0", *common],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        processes.append(worker)
        yield json.loads(scheduler_file.read_text())["address"], scheduler, worker
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def test_scheduler_address_reaches_an_external_scheduler_and_leaves_it_running(external_scheduler):
    address, scheduler, worker = external_scheduler
    with dask_client(scheduler_address=address) as client:
        assert client.scheduler.address == address
        assert gpu_resources(client, wait=60)  # waits for the worker process to join
        assert client.submit(lambda: os.getpid(), resources={GPU_RESOURCE: 1}, pure=False).result() == worker.pid
    assert client.status == "closed"
    time.sleep(0.2)
    assert scheduler.poll() is None and worker.poll() is None  # not ours to stop


def test_an_unreachable_scheduler_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("FCNSEG_CONNECT_TIMEOUT", "1s")  # nothing listens there: no need to wait 10 s
    started = time.monotonic()
    with pytest.raises(InputError, match=r"tcp://127\.0\.0\.1:9: cannot reach a Dask scheduler"):
        with dask_client(scheduler_address="tcp://127.0.0.1:9"):
            pass
    assert time.monotonic() - started < 8


def test_address_and_spec_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        with dask_client(scheduler_address="tcp://127.0.0.1:8786", cluster_spec="local"):
            pass


@pytest.mark.skipif(importlib.util.find_spec("dask_kubernetes") is not None, reason="dask-kubernetes is installed")
def test_kubernetes_spec_without_dask_kubernetes_says_what_to_install():
    with pytest.raises(InputError) as error:
        with dask_client(cluster_spec="kubernetes"):
            pass
    assert str(error.value) == f"{CLUSTERS / 'kubernetes.yaml'}: needs dask-kubernetes (pip install dask-kubernetes)"


@pytest.mark.skipif(importlib.util.find_spec("dask_jobqueue") is not None, reason="dask-jobqueue is installed")
def test_slurm_spec_without_dask_jobqueue_says_what_to_install():
    with pytest.raises(InputError) as error:
        with dask_client(cluster_spec="slurm"):
            pass
    assert str(error.value) == f"{CLUSTERS / 'slurm.yaml'}: needs dask-jobqueue (pip install dask-jobqueue)"


def test_spec_validation_happens_before_the_backend_import(tmp_path):
    """A broken Kubernetes spec is reported as broken, not as a missing package."""
    path = tmp_path / "k8s.yaml"
    path.write_text("apiVersion: kubernetes.dask.org/v1\nkind: DaskCluster\nspec: {}\n")
    with pytest.raises(InputError, match=r"metadata\.name is missing"):
        with dask_client(cluster_spec=path):
            pass


def test_a_clusterspec_object_reports_its_worker_resources():
    spec = ClusterSpec(Path("x.yaml"), "jobqueue", {"worker_extra_args": ["--resources", "GPU=2"]}, "slurm", 1)
    assert spec.worker_resources() == {"GPU": 2.0} and spec.advertises_gpu
