"""Light commands stay light (issue 23): ``fcnseg evaluate`` ran segment's tile loop by importing
``pipeline.segment``, whose ``__init__`` drives every product, so it loaded Dask, pyarrow, PIL and
jsonschema; and it asked OGR (pyogrio, which imports geopandas, shapely and pyarrow) whether a
labels GeoTIFF was vectors. Each check runs in a fresh interpreter: what a module imports is only
seen from an empty ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fcnseg.models import DEMO_MODEL
from fcnseg.models.sizing import gpu_driver_present
from fcnseg.pipeline.synth import write_scene

#: Packages a light command must not load: the cluster, the products' writers, vector I/O.
HEAVY = ("distributed", "dask", "pyarrow", "PIL", "jsonschema", "geopandas", "shapely")

#: Prints the heavy packages loaded after each step, as JSON.
PROBE = """
import json, sys
HEAVY = {heavy!r}

def loaded():
    return sorted({{m.split('.')[0] for m in sys.modules}} & set(HEAVY))

import fcnseg.pipeline.training.evaluate
steps = {{"import": loaded()}}
import torch
from fcnseg.models.inference import load_for_inference
from fcnseg.pipeline.training.evaluate import evaluate_raster
model, card = load_for_inference({model!r}, torch.device("cpu"))
metrics = evaluate_raster(model, card, {image!r}, {labels!r}, device=torch.device("cpu"))
steps["evaluate"] = loaded()
steps["pixels"] = int(sum(map(sum, metrics["confusion"])))
print(json.dumps(steps))
"""


def loaded_after(code: str) -> dict:
    """The JSON that ``code`` prints, run in a fresh interpreter."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory) -> dict:
    """One evaluation of the demo model on a small synthetic scene (labels: a class GeoTIFF)."""
    image, labels = write_scene(tmp_path_factory.mktemp("scene"), 128)
    return loaded_after(PROBE.format(heavy=HEAVY, model=str(DEMO_MODEL), image=str(image), labels=str(labels)))


def test_importing_evaluate_loads_neither_dask_nor_the_products(evaluation):
    assert evaluation["import"] == []


def test_evaluating_on_a_class_raster_loads_no_vector_library(evaluation):
    assert evaluation["pixels"] == 128 * 128  # it scored the whole scene: every pixel labelled and valid
    assert evaluation["evaluate"] == []


def test_query_loads_only_the_geometry_library_it_computes_with():
    """``fcnseg query`` selects by points, boxes and polygons with shapely; the rest stays out."""
    code = ("import json, sys, fcnseg.pipeline.analysis.query; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    assert loaded_after(code) == ["shapely"]


@pytest.fixture(scope="module")
def finished_output(tmp_path_factory) -> Path:
    """A small complete output (one 128 px chunk, no polygons or quicklook), segmented in this process."""
    import fcnseg

    root = tmp_path_factory.mktemp("verify")
    image, _ = write_scene(root / "scene", 128, seed=5)
    fcnseg.segment(image, root / "out", tile=128, polygons=False, quicklook=False, progress=False)
    return root / "out"


def test_verify_loads_neither_torch_nor_the_cluster(finished_output):
    """``fcnseg verify`` re-reads files against their records: no model, no Dask, no products.
    Checked as a user would (``python -X importtime -m fcnseg verify OUT``): every module imported
    is named on stderr."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "fcnseg", "verify", str(finished_output)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith(f"{finished_output}: as written: 1 chunks (1 by their sha256, 0 nodata)")
    loaded = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in run.stderr.splitlines() if "|" in line}
    assert loaded & {"torch", "safetensors", *HEAVY} <= {"shapely"}  # shapely: analysis.areas, under the ledger's class counts


#: What a segment command that computes nothing must not load: the model's framework, the
#: cluster, vector I/O (issue 24: a rerun of a complete output took 2.9 s, mostly importing them).
NOT_FOR_NOTHING = {"torch", "safetensors", "distributed", "geopandas", "prefect"}


def imported(run: subprocess.CompletedProcess) -> set[str]:
    """The top-level packages ``python -X importtime`` named on stderr."""
    return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in run.stderr.splitlines() if "|" in line}


def segment_command(*args: str) -> subprocess.CompletedProcess:
    """``python -X importtime -m fcnseg segment ARGS``, as a user runs the command."""
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "fcnseg", "segment", *args],
                          capture_output=True, text=True, check=False)


def test_a_rerun_of_a_complete_output_loads_no_torch_cluster_or_vectors(finished_output):
    """Reported (issue 24): the plan read the checkpoint through torch and imported the polygons'
    writer for its cell size and the STAC module for the model's record, so a rerun that computes
    nothing imported torch, geopandas and the cluster's code. It reads the checkpoint's header now."""
    image = finished_output.parent / "scene" / "image.tif"
    run = segment_command(str(image), "--out", str(finished_output), "--tile", "128", "--no-polygons",
                          "--no-quicklook", "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["skipped"] is True  # nothing computed: the earlier run's report
    assert imported(run) & NOT_FOR_NOTHING == set()


def test_segment_with_a_bad_option_loads_no_torch(tmp_path):
    """Reported (issue 24): a bad option failed only after about 3 s of imports (torch,
    geopandas, distributed). Its one line comes before any of them, and OUT is not made."""
    image, _ = write_scene(tmp_path / "scene", 64, seed=1)
    run = segment_command(str(image), "--out", str(tmp_path / "out"), "--tile", "100")
    assert run.returncode == 1
    assert [line for line in run.stderr.splitlines() if "|" not in line] == [
        "fcnseg: error: --tile must be a positive multiple of 32, got 100"]
    assert imported(run) & NOT_FOR_NOTHING == set()
    assert not (tmp_path / "out").exists()


#: A run on a cluster, from a fresh interpreter: what the driver loaded afterwards.
DRIVER_PROBE = """
import json, sys
import fcnseg
report = fcnseg.segment({image!r}, {out!r}, scheduler={scheduler!r}, tile=128, polygons=False, quicklook=False)
print(json.dumps({{"cluster": report.cluster, "computed": report.chunks.computed,
                   "loaded": sorted({{m.split('.')[0] for m in sys.modules}} & {{"torch", "safetensors"}})}}))
"""


def test_the_driver_of_a_cluster_run_loads_no_torch(scene, cluster, tmp_path):
    """The workers run the model; the driver plans, submits and writes the products. It imported
    torch anyway (segment.worker and segment.blend at their top, cluster.local_gpus to ask for
    GPUs): a second of a local run's start and some 200 MB of the driver's memory."""
    image, _ = scene
    steps = loaded_after(DRIVER_PROBE.format(image=str(image), out=str(tmp_path / "out"), scheduler=cluster))
    assert steps["cluster"] == "scheduler" and steps["computed"] == 9
    assert steps["loaded"] == []
    if not gpu_driver_present():  # a local cluster's start asks for GPUs: without a driver, not through torch
        asked = loaded_after("import json, sys\nfrom fcnseg.pipeline.cluster import local_gpus\n"
                             "print(json.dumps([local_gpus('auto'), 'torch' in sys.modules]))")
        assert asked == [[], False]
