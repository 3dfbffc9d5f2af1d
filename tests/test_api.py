"""``import fcnseg``: a light import, the names it offers, their errors, ``open_labels`` against
labels.tif, and the README's Python example run as written (the one segment run of this module,
on a small scene, in this process)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

import fcnseg
from fcnseg.errors import InputError

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "dask", "distributed", "prefect", "rasterio")


def readme_example() -> str:
    """The README's Python example: its first ``python`` code block."""
    block = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "README.md has no python code block"
    return block.group(1)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """The README's example run in a folder holding a small rotated scene as scene.tif; what it printed."""
    import contextlib
    import io
    import os
    import shutil

    from fcnseg.pipeline.synth import write_scene

    folder = tmp_path_factory.mktemp("readme")
    image, _ = write_scene(folder / "synth", 256, seed=3, rotate=45)
    shutil.copy(image, folder / "scene.tif")
    printed, here = io.StringIO(), os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme"})
    finally:
        os.chdir(here)
    return folder, printed.getvalue()


def test_import_fcnseg_is_light_and_lists_its_names():
    """The face loads on use: importing it (and reaching ``fcnseg.segment``'s help) imports none of
    the heavy libraries."""
    code = ("import sys, fcnseg; fcnseg.segment.__doc__, fcnseg.Model; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules)); print(' '.join(dir(fcnseg)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, names = result.stdout.splitlines()
    assert heavy == "[]"
    assert set(names.split()) >= {"segment", "load_model", "predict_array", "open_labels", "query", "train",
                                  "evaluate", "Model", "FcnsegError", "__version__"}


def test_an_unknown_name_or_keyword_is_named():
    with pytest.raises(AttributeError, match="no attribute 'segmentt'"):
        fcnseg.segmentt  # noqa: B018
    with pytest.raises(TypeError, match="unexpected keyword argument 'tiles'"):
        fcnseg.segment("scene.tif", "out", tiles=512)
    with pytest.raises(TypeError, match="unexpected keyword argument 'step'"):
        fcnseg.train("image.tif", "labels.tif", "m.safetensors", step=10)


def test_option_fields_are_segment_options():
    from fcnseg.api import segment_options
    from fcnseg.pipeline.segment_options import SegmentOptions

    assert segment_options(None, {"tile": 512, "stitch": "blend"}) == SegmentOptions(tile=512, stitch="blend")
    changed = segment_options(SegmentOptions(tile=256), {"probabilities": True})
    assert changed == SegmentOptions(tile=256, probabilities=True)
    with pytest.raises(ValueError, match="--stitch"):
        segment_options(None, {"stitch": "mean"})


def test_readme_example_runs(readme_run):
    folder, printed = readme_run
    assert printed.rstrip().endswith("True")  # predict_array in memory equals what segment wrote
    assert (folder / "out" / "run.json").exists()


def test_evaluate_gives_what_the_command_prints(readme_run):
    """The same defaults as ``fcnseg evaluate`` (tile, halo, batch, device): the same metrics."""
    import json

    from typer.testing import CliRunner

    from fcnseg.cli import app
    from fcnseg.models import DEMO_MODEL

    folder, _ = readme_run
    image, labels = folder / "synth" / "image.tif", folder / "synth" / "labels.tif"
    printed = CliRunner().invoke(app, ["evaluate", "--model", str(DEMO_MODEL), "--image", str(image),
                                       "--labels", str(labels), "--json"])
    assert printed.exit_code == 0, printed.output
    from fcnseg.models.checkpoint import read_card
    from fcnseg.models.metrics import named_metrics

    library = named_metrics(fcnseg.evaluate("demo", image, labels), read_card(DEMO_MODEL).class_names)
    assert json.loads(json.dumps(library)) == json.loads(printed.output)  # the command names the classes


def test_open_labels_has_the_geometry_nodata_and_classes_of_labels_tif(readme_run):
    import dask.array

    folder, _ = readme_run
    labels = fcnseg.open_labels(folder / "out")
    assert isinstance(labels.data, dask.array.Array)  # lazily backed, not loaded
    with rasterio.open(folder / "out" / "labels.tif") as src:
        from fcnseg.pipeline.classes import raster_classes

        assert labels.dims == ("y", "x") and labels.shape == (src.height, src.width)
        assert labels.rio.crs == src.crs
        assert labels.rio.transform() == src.transform
        assert labels.rio.nodata == src.nodata == 255 and labels.attrs["_FillValue"] == 255
        table = raster_classes(src)
        assert labels.attrs["class_names"] == table.names
        assert [tuple(c) for c in labels.attrs["class_colors"]] == table.colors
        np.testing.assert_array_equal(labels.values, src.read(1))


def test_query_of_an_output_folder_counts_its_labels(readme_run):
    folder, _ = readme_run
    labels = fcnseg.open_labels(folder / "out").values
    result = fcnseg.query(folder / "out")
    assert result.valid_pixels == int((labels != 255).sum())
    assert {c.class_id: c.pixels for c in result.classes} == {
        int(v): int(n) for v, n in zip(*np.unique(labels[labels != 255], return_counts=True), strict=True)}


def test_open_labels_of_a_store_without_crs(tmp_path):
    """A scene in pixel coordinates (a scan): its transform, no CRS."""
    from affine import Affine

    from fcnseg.pipeline.store import COMPLETE, create_store

    create_store(tmp_path / "labels.zarr", height=40, width=30, crs=None, transform=Affine.identity(), chunk=32,
                 class_names=["a", "b"], class_colors=[(1, 2, 3), (4, 5, 6)], attrs={COMPLETE: True})
    labels = fcnseg.open_labels(tmp_path)
    assert labels.rio.crs is None and labels.rio.transform() == Affine.identity()
    assert labels.attrs["class_names"] == ["a", "b"] and labels.attrs["class_colors"] == [[1, 2, 3], [4, 5, 6]]
    assert labels.shape == (40, 30) and labels.rio.nodata == 255


def test_open_labels_of_a_folder_without_a_store(tmp_path):
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}/labels.zarr: no label store there")):
        fcnseg.open_labels(tmp_path)
