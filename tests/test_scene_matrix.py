"""The main job on the scenes users bring, every default output checked exactly (``output_checks``).

Scenes from ``fcnseg synth`` in the shapes of real deliveries: a footprint rotated in its
projected frame with stair-stepped edges (whole chunks and polygon cells nodata), 4 bands uint16
tiled in UTM; one int16 band with -9999 in EPSG:4326, stripped and untiled; 4 bands float32 with
NaN, stripped. 768 px scenes in 128 px chunks (6 x 6) and 96 px polygon cells (8 x 8); crop and
blend, one and two workers, and kill -9 during vectorize then the same command again.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from output_checks import check_outputs

from fcnseg.models import DEMO_MODEL
from fcnseg.models.checkpoint import Normalization, load_checkpoint, save_checkpoint
from fcnseg.pipeline.orchestrator import SegmentOptions, segment
from fcnseg.pipeline.synth import write_scene

FCNSEG = str(Path(sys.executable).with_name("fcnseg"))
SIZE, TILE, CELL = 768, 128, 96
#: Share of the STAC footprint that may be nodata on a rotated scene (the issue's bound).
FOOTPRINT_NODATA = 0.10

SHAPES = {
    "rotated-uint16-utm-tiled": dict(rotate=30),
    "pan-int16-4326-stripped": dict(rotate=15, bands=1, dtype="int16", crs="EPSG:4326", layout="stripped"),
    "rotated-float32-nan-stripped": dict(rotate=30, dtype="float32", layout="stripped"),
}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    """image.tif of each shape; one seed, so the uint16 and float32 scenes show the same land."""
    root = tmp_path_factory.mktemp("shapes")
    return {name: write_scene(root / name, SIZE, seed=11, **kwargs)[0] for name, kwargs in SHAPES.items()}


@pytest.fixture(scope="module")
def models(scenes, tmp_path_factory) -> dict[str, Path]:
    """A model for each shape: the demo model; the demo model for reflectance in 0..1 (its
    normalisation divided by 10000); a one-band model trained on the int16 scene itself (training
    on -9999, EPSG:4326 and strips too)."""
    folder = tmp_path_factory.mktemp("models")
    net, card = load_checkpoint(DEMO_MODEL)
    scaled = dataclasses.replace(card, normalization=Normalization(
        mean=[m / 10000 for m in card.normalization.mean], std=[s / 10000 for s in card.normalization.std]))
    save_checkpoint(folder / "reflectance.safetensors", net, scaled)
    pan = scenes["pan-int16-4326-stripped"]
    trained = subprocess.run(
        [FCNSEG, "train", "--image", str(pan), "--labels", str(pan.with_name("labels.tif")), "--out",
         str(folder / "pan.safetensors"), "--steps", "60", "--chip", "128", "--batch-size", "4", "--holdout", "0",
         "--read-threads", "0"], capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    return {"rotated-uint16-utm-tiled": Path(DEMO_MODEL), "pan-int16-4326-stripped": folder / "pan.safetensors",
            "rotated-float32-nan-stripped": folder / "reflectance.safetensors"}


@pytest.fixture(scope="module")
def runs(scenes, models, cluster, tmp_path_factory):
    """Each (shape, stitch, workers) segmented once, on first use, and checked; its folder."""
    made: dict[tuple[str, str, int], Path] = {}

    def run(shape: str, stitch: str, workers: int) -> Path:
        key = (shape, stitch, workers)
        if key not in made:
            out = tmp_path_factory.mktemp("-".join(map(str, key))) / "out"
            options = SegmentOptions(tile=TILE, stitch=stitch, polygon_cell=CELL, device="cpu")
            where = {"scheduler": cluster} if workers == 2 else {"workers": 1}  # the module's two real workers
            segment(scenes[shape], models[shape], out, options, progress=False, **where)
            made[key] = out
        return made[key]

    return run


CASES = [
    ("rotated-uint16-utm-tiled", "crop", 2), ("rotated-uint16-utm-tiled", "blend", 1),
    ("pan-int16-4326-stripped", "crop", 1), ("pan-int16-4326-stripped", "blend", 2),
    ("rotated-float32-nan-stripped", "crop", 2),
]


@pytest.mark.parametrize(("shape", "stitch", "workers"), CASES)
def test_every_output_is_exact_on_the_shape(shape, stitch, workers, scenes, runs):
    found = check_outputs(scenes[shape], runs(shape, stitch, workers), polygon_cell=CELL,
                          max_footprint_nodata=FOOTPRINT_NODATA)
    # the shape is what it claims: whole chunks skipped as nodata, many cells, several classes
    assert found["chunks"]["skipped_nodata"] >= 4 and found["chunks"]["total"] == (SIZE // TILE) ** 2
    assert 0.25 < found["nodata"] / (SIZE * SIZE) < 0.5
    assert sum(n > 0 for n in found["class_pixels"]) >= 3 and found["regions"] > 20


def labels_of(out: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(out / "labels.zarr"), mode="r")["labels"][:])


def test_float32_with_nan_labels_as_uint16_does(runs):
    """The same land in reflectance 0..1 with NaN, through the demo model rescaled: nodata exactly
    where the uint16 scene has it, the labels but for near ties the same."""
    ints, floats = labels_of(runs("rotated-uint16-utm-tiled", "crop", 2)), labels_of(runs("rotated-float32-nan-stripped", "crop", 2))
    assert np.array_equal(ints == 255, floats == 255)
    assert np.mean(ints != floats) < 1e-3


def command(image: Path, out: Path, model: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FCNSEG_CRASH_AT"}
    if crash_at:
        env["FCNSEG_CRASH_AT"] = crash_at
    return subprocess.run([FCNSEG, "segment", str(image), "--out", str(out), "--model", str(model), "--tile", str(TILE),
                           "--polygon-cell", str(CELL), "--workers", "1", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=300)


def test_kill_9_during_vectorize_then_the_same_command(scenes, models, runs, tmp_path):
    """Killed with every cell's part file on disk and no polygons yet; the same command again
    finishes, on one worker, exactly as the two-worker run did."""
    shape = "rotated-uint16-utm-tiled"
    out = tmp_path / "out"
    killed = command(scenes[shape], out, models[shape], crash_at="vectorize")
    assert killed.returncode == -9, killed.stderr
    assert not (out / "run.json").exists() and not (out / "polygons.parquet").exists()
    again = command(scenes[shape], out, models[shape])
    assert again.returncode == 0, again.stderr
    check_outputs(scenes[shape], out, polygon_cell=CELL, max_footprint_nodata=FOOTPRINT_NODATA)
    clean = runs(shape, "crop", 2)
    assert np.array_equal(labels_of(out), labels_of(clean))
    import geopandas as gpd

    resumed, whole = gpd.read_parquet(out / "polygons.parquet"), gpd.read_parquet(clean / "polygons.parquet")
    assert list(zip(resumed.region_id, resumed.pixels, resumed.geometry.to_wkb())) == \
        list(zip(whole.region_id, whole.pixels, whole.geometry.to_wkb()))
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".fcnseg-run"]  # no part folder left
