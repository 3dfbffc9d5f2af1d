"""The segment-scene flow end to end: a real Prefect server and worker (deploy/serve.sh, as `make serve`
starts them), deployments registered from deploy/prefect.yaml, runs triggered with the Prefect CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import psutil
import pytest
import rasterio
import shapely
import xarray as xr
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from fcnseg.flows.report import SceneOutcome, markdown_report
from fcnseg.pipeline.orchestrator.scenes import find_scenes, scene_folder
from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.products.stac_checks import validate_stac_catalog
from fcnseg.pipeline.products.stac_footprint import Grid, rectangle_footprint
from fcnseg.pipeline.orchestrator import SegmentOptions, segment
from fcnseg.pipeline.synth import write_scene

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
#: How long serve.sh may take to stop (its trap: the worker, then the server; about 1 s here).
STOP_SECONDS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory):
    """deploy/serve.sh on a random port with a temporary PREFECT_HOME; stopped as Ctrl-C stops it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = os.environ | {
        "PREFECT_PORT": str(port), "PREFECT_HOME": str(home), "FCNSEG_SERVE_UI": "false",
        "PREFECT_BIN": PREFECT, "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    serve = subprocess.Popen(["bash", "deploy/serve.sh"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    for line in serve.stdout:
        lines.append(line)
        if "fcnseg serve: ready" in line:
            break
    else:
        serve.wait(timeout=30)
        pytest.fail("deploy/serve.sh did not get ready:\n" + "".join(lines))
    env |= {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    yield env
    left = stop_serve(serve)
    assert left == [], f"still running after serve.sh stopped (killed now): {left}"
    assert "fcnseg serve: stopped" in serve.stdout.read()


def stop_serve(serve: subprocess.Popen) -> list[str]:
    """SIGTERM to serve.sh's process group (its trap stops the worker, then the server), a wait of
    at most STOP_SECONDS, then SIGKILL to whatever of its session is left, named in the list
    returned: ``set -m`` gives the worker and the server process groups of their own, so a kill of
    serve.sh's group alone would leave them (and the flow runs they started) running."""
    os.killpg(serve.pid, signal.SIGTERM)
    try:
        serve.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    left = session_processes(serve.pid)
    for process in left:
        process.kill()
    psutil.wait_procs(left, timeout=5)
    serve.wait(timeout=5)
    return [f"{p.pid} {' '.join(p.info['cmdline'] or [])[:80]}" for p in left]


def session_processes(session: int) -> list[psutil.Process]:
    """The processes of a session (those a ``start_new_session`` Popen and its descendants run in)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if os.getsid(process.pid) == session and process.pid != os.getpid():
                found.append(process)
        except (ProcessLookupError, PermissionError):
            continue
    return found


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("incoming")
    for seed in (4, 5):
        image, _ = write_scene(folder / f"s{seed}", 256, seed=seed)
        image.rename(folder / f"scene{seed}.tif")
    (folder / "broken.tif").write_text("not a raster")
    return folder


def run_deployment(env: dict, name: str, **params) -> subprocess.CompletedProcess:
    args = [PREFECT, "deployment", "run", name, "--watch"]
    for key, value in params.items():
        args += ["--param", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def client_output(env: dict, code: str) -> str:
    """What a Prefect client script (``code``) prints, run in another process against the test's server."""
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def client_json(env: dict, code: str) -> dict:
    """The JSON object a Prefect client script prints on its last line."""
    return json.loads(client_output(env, code).strip().splitlines()[-1])


def latest_report(env: dict, key: str = "segment-scene-report") -> str:
    """The markdown of the newest artifact with this key (a segment-scene run's by default), read from the server."""
    code = (
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey\n"
        "from prefect.client.schemas.sorting import ArtifactSort\n"
        "with get_client(sync_client=True) as c:\n"
        f"    a = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[{key!r}])),"
        " sort=ArtifactSort.CREATED_DESC, limit=1)\n"
        "    print(a[0].data)\n"
    )
    return client_output(env, code)


def latest_task_runs(env: dict) -> list[str]:
    """Names of the task runs of the newest on-demand flow run (the nightly one is only scheduled)."""
    return [line.split("\t")[0] for line in latest_task_lines(env)]


def latest_task_times(env: dict) -> dict[str, tuple[float, float]]:
    """Start and end (POSIX seconds) of each task run of the newest on-demand flow run, by name."""
    return {name: (float(start), float(end)) for name, start, end in (line.split("\t") for line in latest_task_lines(env))}


def latest_task_lines(env: dict) -> list[str]:
    """name, start and end timestamps (tab-separated) of the task runs of the newest on-demand flow run."""
    code = (
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterId\n"
        "from prefect.client.schemas.sorting import FlowRunSort\n"
        "with get_client(sync_client=True) as c:\n"
        "    d = c.read_deployment_by_name('segment-scene/on-demand')\n"
        "    on_demand = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[d.id]))\n"
        "    run = c.read_flow_runs(flow_run_filter=on_demand, sort=FlowRunSort.START_TIME_DESC, limit=1)[0]\n"
        "    tasks = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))\n"
        "    print('\\n'.join(f'{t.name}\\t{t.start_time.timestamp()}\\t{t.end_time.timestamp()}' for t in tasks))\n"
    )
    return client_output(env, code).splitlines()


def latest_run_record(env: dict) -> dict:
    """The newest on-demand flow run's final state, log messages and artifacts (type, data), read from the server."""
    code = (
        "import json\n"
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, "
        "FlowRunFilterDeploymentId, LogFilter, LogFilterFlowRunId\n"
        "from prefect.client.schemas.sorting import FlowRunSort\n"
        "with get_client(sync_client=True) as c:\n"
        "    d = c.read_deployment_by_name('segment-scene/on-demand')\n"
        "    on_demand = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[d.id]))\n"
        "    run = c.read_flow_runs(flow_run_filter=on_demand, sort=FlowRunSort.START_TIME_DESC, limit=1)[0]\n"
        "    logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))\n"
        "    arts = c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))\n"
        "    print(json.dumps({'state': run.state.name, 'logs': [l.message for l in logs],\n"
        "                      'artifacts': [[a.type, a.data, a.description] for a in arts]}))\n"
    )
    return client_json(env, code)


def labels_of(out: Path) -> np.ndarray:
    return xr.open_zarr(out / "labels.zarr").labels.values


def test_deployments_registered_with_the_nightly_schedule(prefect_env):
    code = (
        "from prefect.client.orchestration import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    d = c.read_deployment_by_name('segment-scene/nightly')\n"
        "    s = d.schedules[0].schedule\n"
        "    print(s.cron, s.timezone, d.work_pool_name, d.parameters['inputs'])\n"
        "    print(c.read_deployment_by_name('segment-scene/on-demand').schedules)\n"
        "    print(d.global_concurrency_limit.limit, d.concurrency_options.collision_strategy.value)\n"
    )
    out = client_output(prefect_env, code)
    assert out.splitlines() == ["0 2 * * * UTC fcnseg incoming", "[]", "1 ENQUEUE"]


@pytest.fixture(scope="module")
def large_scene(tmp_path_factory) -> Path:
    """A scene whose export and polygons take long enough to be seen overlapping the next scene."""
    image, _ = write_scene(tmp_path_factory.mktemp("large"), 1024, seed=6)
    return image


def test_scenes_overlap_and_equal_direct_segment_runs_and_a_rerun_skips(prefect_env, scenes, large_scene,
                                                                        tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    inputs = [str(large_scene), str(scenes / "scene4.tif")]
    result = run_deployment(prefect_env, "segment-scene/on-demand", inputs=inputs, output_root=str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    times = latest_task_times(prefect_env)
    # the second scene's tiles infer while the first scene's polygons are made
    assert times[f"infer {inputs[1]}"][0] < times[f"vectorize {inputs[0]}"][1], times
    names = latest_task_runs(prefect_env)  # the stages after inference are nested in one finish task per scene
    assert sorted(n.split()[0] for n in names if n.endswith(inputs[0])) == ["export", "finish", "infer", "plan", "publish", "vectorize"]
    runs = {}
    for scene in inputs:
        out = scene_folder(str(root), scene)
        run = runs[scene] = json.loads((out / "run.json").read_text())
        assert all((out / name).exists() for name in run["files"])
        assert {"labels.tif", "polygons.parquet", "polygons.gpkg", "quicklook.png", "item.json"} <= set(run["files"])
        # one chunk: segment runs it in this process by default (no worker processes to start)
        direct = segment(scene, DEMO_MODEL, tmp_path_factory.mktemp("direct"), SegmentOptions(tile=1024), progress=False)
        assert np.array_equal(labels_of(out), labels_of(direct.out))
        assert run["class_areas"] == direct.class_areas_json() and run["polygons"] == direct.polygons
        assert gpd.read_parquet(out / "polygons.parquet").equals(gpd.read_parquet(direct.out / "polygons.parquet"))
    assert "2 processed, 0 skipped" in latest_report(prefect_env)
    validate_stac_catalog(root / "catalog.json")  # every scene's item, by relative links
    catalog = json.loads((root / "catalog.json").read_text())
    items = sorted(link["href"] for link in catalog["links"] if link["rel"] == "item")
    assert items == sorted(f"./{scene_folder(str(root), s).name}/item.json" for s in inputs)
    record = latest_run_record(prefect_env)  # what the run's page shows while and after it works
    for scene in inputs:
        assert any(m.startswith(f"{scene}: ") and " chunks (0 done before)" in m for m in record["logs"]), record["logs"]
    assert sum(m.startswith("Dask at ") for m in record["logs"]) == 1  # one cluster for both scenes
    assert sum(m.startswith("segment: ") and m.endswith("(100 %)") for m in record["logs"]) == 2
    assert sum(m.startswith("vectorised ") for m in record["logs"]) == 2  # logged in the finish task's thread
    progress = [a for a in record["artifacts"] if a[0] == "progress"]
    assert [a[1] for a in progress] == [100.0, 100.0]
    tables = {a[2]: a[1] for a in record["artifacts"] if a[0] == "table"}
    for scene in inputs:
        table = json.loads(tables[f"fcnseg: class areas of {Path(scene).name}"])
        run = json.loads((scene_folder(str(root), scene) / "run.json").read_text())
        assert [(r["class"], r["pixels"]) for r in table] == [(c["class_name"], c["pixels"]) for c in run["class_areas"]]
    links = sorted(a[1] for a in record["artifacts"] if (a[2] or "").startswith("fcnseg: the output of"))
    assert links == sorted(f"[{Path(s).name}: outputs]({scene_folder(str(root), s).resolve().as_uri()})" for s in inputs)

    again = run_deployment(prefect_env, "segment-scene/on-demand", inputs=inputs, output_root=str(root))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 processed, 2 skipped" in latest_report(prefect_env)
    logs = latest_run_record(prefect_env)["logs"]
    assert not any("Dask at " in m for m in logs), logs  # nothing new: no cluster started
    for scene in inputs:
        assert json.loads((scene_folder(str(root), scene) / "run.json").read_text()) == runs[scene]  # untouched


def test_a_bad_scene_fails_alone_on_an_external_scheduler(prefect_env, scenes, tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    port = free_port()
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--dashboard-address", ":0"], stderr=subprocess.DEVNULL)
    address = f"tcp://127.0.0.1:{port}"
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                               "--name", "external", "--dashboard-address", ":0"], stderr=subprocess.DEVNULL)
    try:
        result = run_deployment(prefect_env, "segment-scene/on-demand", inputs=[str(scenes / "broken.tif"),
                                str(scenes / "scene5.tif")], output_root=str(root), scheduler_address=address,
                                options={"tile": 64})
        assert worker.poll() is None and scheduler.poll() is None  # the flow left the external cluster running
    finally:
        for process in (worker, scheduler):
            process.terminate()
            process.wait(timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr  # the flow run ended Failed
    run = json.loads((scene_folder(str(root), str(scenes / "scene5.tif")) / "run.json").read_text())  # the good scene was processed anyway
    assert run["chunks"]["total"] == 16
    # 16 chunks, yet only the stages are task runs: validate, plan (x2 scenes), infer, finish (export, vectorize, publish)
    assert len(latest_task_runs(prefect_env)) == 8
    assert not (scene_folder(str(root), str(scenes / "broken.tif")) / "run.json").exists()
    report = latest_report(prefect_env)
    assert "1 processed, 0 skipped (already complete), 1 failed" in report
    failed_row = next(line for line in report.splitlines() if line.startswith("| broken.tif"))
    assert "failed: InputError" in failed_row and "broken.tif" in failed_row.split("failed:")[1]


def rotated_rectangle(size: int, degrees: float, half_long: float, half_short: float) -> np.ndarray:
    """Pixels (by centre) inside a rectangle turned by ``degrees`` about the scene's centre."""
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = cols - size / 2, rows - size / 2
    a = np.deg2rad(degrees)
    return (abs(dx * np.cos(a) + dy * np.sin(a)) < half_long) & (abs(-dx * np.sin(a) + dy * np.cos(a)) < half_short)


#: polygon_cell of the flow run on the scenes users bring: 3x3 and 4x4 cells on scenes of 192 and 256 pixels.
SMALL_CELL = 64


@pytest.fixture(scope="module")
def brought(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A folder of the scenes users bring: ``nocrs.tif`` (a write_scene image without CRS, identity
    transform), ``collared.tif`` (a scene turned 30 degrees in a nodata collar that covers whole
    corners and whole polygon cells) and ``empty.tif`` (every pixel nodata); and the collared
    scene's valid pixels."""
    folder, sources = tmp_path_factory.mktemp("brought"), tmp_path_factory.mktemp("brought-sources")
    image, _ = write_scene(sources / "nocrs", 192, seed=31)
    with rasterio.open(image) as src:
        data = src.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(folder / "nocrs.tif", "w", driver="GTiff", width=192, height=192, count=data.shape[0],
                           dtype=data.dtype, transform=Affine.identity()) as dst:
            dst.write(data)
    image, _ = write_scene(sources / "collared", 256, seed=32)
    with rasterio.open(image) as src:
        data, profile = src.read(), src.profile
    assert profile["nodata"] == 0
    inside = rotated_rectangle(256, 30, 90, 55)
    data[:, ~inside] = 0
    with rasterio.open(folder / "collared.tif", "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(folder / "empty.tif", "w", **profile) as dst:
        dst.write(np.zeros_like(data))
    cells = inside.reshape(4, SMALL_CELL, 4, SMALL_CELL).any(axis=(1, 3))
    assert not inside[0, 0] and not inside[-1, -1] and not inside[0, -1] and not inside[-1, 0]  # whole corners
    assert 0 < cells.sum() < cells.size  # some polygon cells have no valid pixel at all
    return folder, inside


def test_scenes_without_crs_collared_and_all_nodata_complete_in_one_run(prefect_env, brought, tmp_path_factory):
    """Issue 21: a folder with a scene without CRS, a rotated collared one and an all-nodata one
    (which ended Failed, 2 of 2) completes; each scene's outputs are valid, class areas of the scene
    without CRS are null (no square metres are made up), the all-nodata scene has empty outputs."""
    folder, inside = brought
    root = tmp_path_factory.mktemp("outputs")
    result = run_deployment(prefect_env, "segment-scene/on-demand", inputs=str(folder), output_root=str(root),
                            options={"tile": 64, "polygon_cell": SMALL_CELL})
    assert result.returncode == 0, result.stdout + result.stderr
    record = latest_run_record(prefect_env)
    assert record["state"] == "Completed"
    scenes = {name: str(folder / f"{name}.tif") for name in ("collared", "empty", "nocrs")}
    outs = {name: scene_folder(str(root), scene) for name, scene in scenes.items()}
    runs = {name: json.loads((out / "run.json").read_text()) for name, out in outs.items()}
    for name, out in outs.items():
        run = runs[name]
        assert run["outputs"]["polygon_cell"] == SMALL_CELL, name  # the flow parameter reached the library
        assert {"polygons.parquet", "polygons.gpkg"} <= set(run["files"]) and all((out / f).exists() for f in run["files"])
        labels = labels_of(out)
        parquet = gpd.read_parquet(out / "polygons.parquet")
        gpkg = gpd.read_file(out / "polygons.gpkg", layer="polygons")
        assert len(parquet) == len(gpkg) == run["polygons"], name
        assert parquet.is_valid.all() and gpkg.is_valid.all(), name
        assert int(parquet.pixels.sum()) == int((labels != 255).sum()) == sum(c["pixels"] for c in run["class_areas"])
        with rasterio.open(scenes[name]) as src:
            side = SMALL_CELL * abs(src.transform.a)
        bounds = parquet.bounds  # no polygon is larger than a cell
        assert ((bounds.maxx - bounds.minx) <= side).all() and ((bounds.maxy - bounds.miny) <= side).all(), name

    nocrs, nocrs_polygons = runs["nocrs"], gpd.read_parquet(outs["nocrs"] / "polygons.parquet")
    assert (labels_of(outs["nocrs"]) != 255).all() and nocrs["chunks"]["total"] == 9
    assert nocrs_polygons.crs is None and nocrs_polygons.area_m2.isna().all()
    assert all(c["area_m2"] is None for c in nocrs["class_areas"]) and "item.json" not in nocrs["files"]
    assert nocrs_polygons.region_id.nunique() < len(nocrs_polygons)  # regions cut at cells: several rows each

    collared = runs["collared"]
    assert np.array_equal(labels_of(outs["collared"]) == 255, ~inside)  # nodata exactly where the collar is
    assert collared["chunks"]["skipped_nodata"] > 0 and collared["chunks"]["computed"] > 0
    item = json.loads((outs["collared"] / "item.json").read_text())
    with rasterio.open(scenes["collared"]) as src:
        grid = Grid(src.crs, src.transform, src.height, src.width)
    rectangle = shapely.geometry.shape(rectangle_footprint(grid)[0])
    assert shapely.geometry.shape(item["geometry"]).area < 0.6 * rectangle.area  # the collar is left out (30 % valid)

    empty = runs["empty"]
    assert (labels_of(outs["empty"]) == 255).all() and empty["polygons"] == 0
    assert empty["chunks"] == {"total": 16, "computed": 0, "skipped_nodata": 16, "reused": 0}
    assert all(c["pixels"] == 0 and c["area_m2"] == 0 and c["share"] == 0 for c in empty["class_areas"])
    item = json.loads((outs["empty"] / "item.json").read_text())
    assert shapely.geometry.shape(item["geometry"]).equals(rectangle)  # no valid pixel: the raster's rectangle

    validate_stac_catalog(root / "catalog.json")  # the two items; a scene without CRS has none
    catalog = json.loads((root / "catalog.json").read_text())
    assert sorted(link["href"] for link in catalog["links"] if link["rel"] == "item") == sorted(
        f"./{outs[n].name}/item.json" for n in ("collared", "empty"))

    tables = {a[2]: json.loads(a[1]) for a in record["artifacts"] if a[0] == "table"}
    for name, run in runs.items():
        table = tables[f"fcnseg: class areas of {name}.tif"]
        assert [(r["class"], r["pixels"]) for r in table] == [(c["class_name"], c["pixels"]) for c in run["class_areas"]]
        areas = [r["area_m2"] for r in table]
        assert areas == ([None] * len(table) if name == "nocrs" else [round(c["area_m2"], 1) for c in run["class_areas"]])
    assert [a[1] for a in record["artifacts"] if a[0] == "progress"] == [100.0, 100.0, 100.0]

    report = latest_report(prefect_env)
    assert "**3 processed, 0 skipped (already complete), 0 failed**" in report
    for name in scenes:
        assert any(line.startswith(f"| {name}.tif | processed |") for line in report.splitlines()), report
    section = report.split("## nocrs.tif (processed)")[1].split("\n## ")[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and not line.startswith("| class")]
    assert len(rows) == len(nocrs["class_areas"]) and all(row[2] == "—" for row in rows), section
    section = report.split("## empty.tif (processed)")[1].split("\n## ")[0]
    assert "| water | 0 | 0 | 0.0 % |" in section


def scene_artifacts(env: dict, keys: list[str]) -> dict:
    """Per key: every version's flow run and data (newest first), and the latest's (read_latest_artifacts)."""
    code = (
        "import json\n"
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey, "
        "ArtifactFilter, ArtifactFilterKey\n"
        "from prefect.client.schemas.sorting import ArtifactSort\n"
        f"keys = {keys!r}\n"
        "with get_client(sync_client=True) as c:\n"
        "    versions = {k: [[str(a.flow_run_id), a.type, a.data] for a in c.read_artifacts(artifact_filter="
        "ArtifactFilter(key=ArtifactFilterKey(any_=[k])), sort=ArtifactSort.CREATED_DESC)] for k in keys}\n"
        "    latest = c.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter("
        "key=ArtifactCollectionFilterKey(any_=keys)))\n"
        "    print(json.dumps({'versions': versions, 'latest': {a.key: str(a.flow_run_id) for a in latest}}))\n"
    )
    return client_json(env, code)


def test_artifact_keys_follow_prefects_rule():
    from prefect.client.schemas.actions import ArtifactCreate

    from fcnseg.flows.segment_scene import artifact_key

    assert artifact_key("class-areas", Path("/out/S2B_MSIL2A.Tile_33UVP-1a2b3c4d")) == \
        "class-areas-s2b-msil2a-tile-33uvp-1a2b3c4d"
    assert artifact_key("outputs", "s3://bucket/nightly/Scene..A__b-0f0f0f0f/") == "outputs-scene-a-b-0f0f0f0f"
    assert artifact_key("progress", "/out/___") == "progress-scene"
    ArtifactCreate(key=artifact_key("class-areas", "/out/S2B_MSIL2A.Tile_33UVP-1a2b3c4d"), type="table", data=[])
    with pytest.raises(ValueError, match="lowercase letters, numbers, and dashes"):  # what an unsanitised key meets
        ArtifactCreate(key="class-areas-S2B_MSIL2A.Tile_33UVP-1a2b3c4d", type="table", data=[])


def test_each_scene_keeps_one_artifact_history_per_kind(prefect_env, tmp_path_factory):
    """Two runs of a scene named with capitals, dots and underscores: its class-areas table, outputs
    link and progress each carry the scene's key, with both runs' versions under it, newest latest."""
    folder = tmp_path_factory.mktemp("keyed")
    image, _ = write_scene(tmp_path_factory.mktemp("keyed-source"), 128, seed=7)  # 4 chunks: a LocalCluster
    scene = folder / "S2B_MSIL2A.Tile_33UVP.tif"
    image.rename(scene)
    root = tmp_path_factory.mktemp("outputs")
    name = scene_folder(str(root), str(scene)).name
    assert name.startswith("S2B_MSIL2A.Tile_33UVP-")
    suffix = "s2b-msil2a-tile-33uvp-" + name.rsplit("-", 1)[1]
    keys = [f"{kind}-{suffix}" for kind in ("class-areas", "outputs", "progress")]
    runs = []
    for options in ({"tile": 64}, {"tile": 64, "quicklook": False}):  # other parameters: processed again
        result = run_deployment(prefect_env, "segment-scene/on-demand", inputs=[str(scene)], output_root=str(root),
                                options=options, overwrite=True)
        assert result.returncode == 0, result.stdout + result.stderr
        runs.append(latest_run_id(prefect_env))
    found = scene_artifacts(prefect_env, keys)
    for key, kind in zip(keys, ("table", "markdown", "progress"), strict=True):
        versions = found["versions"][key]
        assert [v[0] for v in versions] == runs[::-1], key  # one version per run, newest first
        assert {v[1] for v in versions} == {kind}, key
        assert found["latest"][key] == runs[1], key
    table = json.loads(found["versions"][keys[0]][0][2])
    run = json.loads((root / name / "run.json").read_text())
    assert [(r["class"], r["pixels"]) for r in table] == [(c["class_name"], c["pixels"]) for c in run["class_areas"]]
    assert found["versions"][keys[1]][0][2] == f"[{scene.name}: outputs]({(root / name).resolve().as_uri()})"
    assert found["versions"][keys[2]][0][2] == 100.0
    # issue 25 item 4: the served worker's log (102 of 187 lines were Dask's INFO) holds none of Dask's lines
    log = (Path(prefect_env["PREFECT_HOME"]) / "worker.log").read_text().splitlines()
    assert sum("starting a LocalCluster of 2 workers" in line for line in log) >= 2, log  # worker processes ran
    assert [line for line in log if "distributed." in line or "jupyter" in line] == []


def latest_run_id(env: dict) -> str:
    """The id of the newest on-demand flow run."""
    code = (
        "from prefect.client.orchestration import get_client\n"
        "from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId\n"
        "from prefect.client.schemas.sorting import FlowRunSort\n"
        "with get_client(sync_client=True) as c:\n"
        "    d = c.read_deployment_by_name('segment-scene/on-demand')\n"
        "    runs = c.read_flow_runs(flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[d.id])),"
        " sort=FlowRunSort.START_TIME_DESC, limit=1)\n"
        "    print(runs[0].id)\n"
    )
    return client_output(env, code).strip().splitlines()[-1]


def test_find_scenes_expands_folders_and_globs(scenes):
    tifs = [str(scenes / n) for n in ("broken.tif", "scene4.tif", "scene5.tif")]
    assert find_scenes(str(scenes)) == tifs
    assert find_scenes(str(scenes / "scene*.tif")) == tifs[1:]
    assert find_scenes([tifs[1], str(scenes)]) == [tifs[1], tifs[0], tifs[2]]  # no scene twice
    assert find_scenes("s3://bucket/scene.tif") == ["s3://bucket/scene.tif"]
    with pytest.raises(InputError, match="no rasters"):
        find_scenes(str(scenes / "*.jp2"))
    a, b = scene_folder("/out", "/in/a/scene4.tif"), scene_folder("/out", "/in/b/scene4.tif")
    assert a.parent == b.parent == Path("/out") and a.name.startswith("scene4-") and b.name.startswith("scene4-")
    assert a != b  # same file name in two folders: two output folders
    assert a == scene_folder("/out", "/in/a/scene4.tif")  # stable: a scene keeps its folder
    assert scene_folder("/out", "s3://bucket/scene4.tif").name.startswith("scene4-")
    assert scene_folder("s3://bucket/nightly/", "/in/a/scene4.tif") == f"s3://bucket/nightly/{a.name}"  # a URI root


def test_markdown_report_lists_failures():
    text = markdown_report([SceneOutcome("/in/x.tif", "failed", error="InputError: x.tif: not a raster")], "/out")
    assert "0 processed, 0 skipped (already complete), 1 failed" in text and "x.tif: not a raster" in text


def test_retrain_deployment_trains_and_evaluates(prefect_env, tmp_path):
    image, labels = write_scene(tmp_path / "train", 256, seed=21)
    out = tmp_path / "retrained.safetensors"
    result = run_deployment(prefect_env, "train-fcn/retrain", request={
        "image": str(image), "labels": str(labels), "out": str(out), "steps": 3, "chip": 64, "batch_size": 2,
        "width": 0.0625, "sampling": "uniform", "class_weights": "sqrt", "holdout": 0})
    assert result.returncode == 0, result.stdout + result.stderr
    from fcnseg.models.checkpoint import read_card

    card = read_card(out)
    assert card.arch == "fcn8s" and card.class_names[0] == "water" and card.training.steps == 3
    assert card.training.sampling == "uniform" and card.training.class_weights["method"] == "sqrt"
    assert card.training.holdout is None  # the deployment's parameters reach the trainer
    report = latest_report(prefect_env, "train-fcn-report")  # no eval scene, no validation: said so
    assert "- **Scored on:** training scene (not an unseen score)" in report, report
    assert "- **Checkpoint chosen on:** last weights (step 3): holdout 0, no validation" in report, report


def test_retrain_scores_on_the_eval_scene_and_chooses_on_the_validation_scene(prefect_env, tmp_path):
    """The evaluation scene is never the validation scene: the checkpoint is chosen on val_image,
    scored on eval_image, and the report says both."""
    image, labels = write_scene(tmp_path / "train", 128, seed=22)
    val_image, val_labels = write_scene(tmp_path / "val", 128, seed=23)
    eval_image, eval_labels = write_scene(tmp_path / "eval", 128, seed=24)
    out = tmp_path / "retrained.safetensors"
    result = run_deployment(prefect_env, "train-fcn/retrain", request={
        "image": str(image), "labels": str(labels), "out": str(out), "val_image": str(val_image),
        "val_labels": str(val_labels), "steps": 2, "chip": 64, "batch_size": 2, "width": 0.0625},
        eval_image=str(eval_image), eval_labels=str(eval_labels))
    assert result.returncode == 0, result.stdout + result.stderr
    from fcnseg.models.checkpoint import read_card

    training = read_card(out).training
    assert training.val_image == str(val_image) and training.holdout is None
    report = latest_report(prefect_env, "train-fcn-report")
    assert f"- **Scored on:** eval scene {eval_image}" in report, report
    assert f"- **Checkpoint chosen on:** validation scene {val_image} (best mean IU, step {training.best_step})" in report


def test_train_fcn_says_what_chose_the_checkpoint():
    from fcnseg.flows.train_fcn import chosen_on
    from fcnseg.models.card import TrainingProvenance as Record

    assert chosen_on(Record(val_image="/v.tif", holdout=None, best_step=250), 0.2) == \
        "validation scene /v.tif (best mean IU, step 250)"
    blocks = Record(val_image=None, best_step=500, holdout={"fraction": 0.2, "block": 512, "blocks": 7})
    assert chosen_on(blocks, 0.2) == \
        "held-out blocks of the training scene (7 blocks of 512 px, 20 % of each class; best mean IU, step 500)"
    dropped = chosen_on(Record(val_image=None, holdout=None, best_step=2000), 0.2)  # usable_holdout said no
    assert dropped.startswith("last weights (step 2000): the held-out blocks were dropped")
    assert chosen_on(Record(val_image=None, holdout=None, best_step=2000), 0) == \
        "last weights (step 2000): holdout 0, no validation"


def test_train_fcn_report_shows_a_class_without_iou_as_a_dash():
    from fcnseg.flows.train_fcn import iou_rows

    assert iou_rows(["water", "building"], [0.51234, None]) == ["| water | 0.5123 |", "| building | — |"]


def test_train_fcn_never_validates_on_the_evaluation_scene(tmp_path):
    from fcnseg.flows.train_fcn import train_fcn
    from fcnseg.pipeline.training.train import TrainRequest

    scene = str(tmp_path / "eval.tif")
    request = TrainRequest(image="i.tif", labels="l.tif", out=tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="val_image is the evaluation scene"):
        train_fcn.fn(request.replace(val_image=scene, val_labels="e.tif"), eval_image=scene, eval_labels="e.tif")
    with pytest.raises(ValueError, match="eval_image and eval_labels go together"):
        train_fcn.fn(request, eval_image=scene)


def test_only_transient_io_errors_are_retried():
    from prefect.states import Failed

    from fcnseg.flows.segment_scene import is_transient
    from fcnseg.models.checkpoint import CheckpointError

    assert is_transient(None, None, Failed(data=OSError("connection reset reading s3://b/x.tif")))
    for error in (InputError("x.tif: not a raster"), CheckpointError("m: damaged"), FileNotFoundError("x.tif"),
                  ValueError("bad"), RuntimeError("bug")):
        assert not is_transient(None, None, Failed(data=error)), error
