"""fcnseg segment: tiled runs equal whole-image runs; nodata, geo metadata, resume, bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401 - registers the .rio accessor
import torch
import xarray as xr
import zarr
from affine import Affine

import fcnseg
from fcnseg.models import DEMO_MODEL
from fcnseg.models.checkpoint import CheckpointError, ClassInfo, ModelCard, Normalization, save_checkpoint
from fcnseg.models.fcn import build_model
from fcnseg.pipeline.io import InputError
from fcnseg.pipeline.orchestrator import OutputConflict, SegmentOptions, segment
from fcnseg.pipeline.synth import write_scene


@pytest.fixture(scope="module")
def odd_scene(tmp_path_factory) -> Path:
    """A synthetic scene whose size is a multiple of neither 32 nor the tile."""
    folder = tmp_path_factory.mktemp("odd")
    image, _ = write_scene(folder, 720, seed=31)
    out = folder / "odd.tif"
    with rasterio.open(image) as src:
        profile = src.profile | {"width": 701, "height": 587}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=((0, 587), (0, 701))))
    return out


def labels_of(out: Path) -> np.ndarray:
    return xr.open_zarr(out / "labels.zarr").labels.values


@pytest.fixture(scope="module")
def whole(odd_scene, cluster, tmp_path_factory) -> np.ndarray:
    """The odd scene's labels from one whole-image run (one 736 px tile), the reference of the
    tiled, halo-less and blended runs; made once, on the module's cluster."""
    out = tmp_path_factory.mktemp("whole") / "out"
    report = segment(odd_scene, DEMO_MODEL, out, SegmentOptions(tile=736), scheduler=cluster, progress=False)
    assert report.chunks.total == 1
    return labels_of(out)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    valid = (a != 255) | (b != 255)
    return float((a[valid] == b[valid]).mean())


def model_caches(cluster: str) -> dict[str, tuple[int, int]]:
    """(hits, misses) of each worker's model cache so far (the session's workers served other runs before)."""
    from distributed import Client

    with Client(cluster) as client:
        caches = client.run(lambda: __import__("fcnseg.pipeline.segment.worker", fromlist=["_"]).cached_model.cache_info())
    return {worker: (info.hits, info.misses) for worker, info in caches.items()}


def test_tiled_run_equals_whole_image_run(tmp_path, odd_scene, cluster, whole):
    before = model_caches(cluster)
    tiled = segment(odd_scene, DEMO_MODEL, tmp_path / "tiled", SegmentOptions(tile=128, batch_size=2), scheduler=cluster, progress=False)
    assert tiled.chunks.total == 6 * 5
    a, b = whole, labels_of(tmp_path / "tiled")
    assert a.shape == (587, 701) and (a != 255).all()
    assert len(np.unique(a)) >= 4  # a real segmentation, not a constant map
    assert np.array_equal(a, b)  # crop stitching is exact on the CPU: the FCN's size independence
    # 15 tasks ran on two workers: the model was loaded at most once per worker, then reused
    after = model_caches(cluster)
    assert after.keys() == before.keys()
    assert all(after[w][1] - before[w][1] <= 1 for w in after)
    assert sum(sum(after[w]) - sum(before[w]) for w in after) == 15


def test_a_halo_smaller_than_the_receptive_field_shows_seams(tmp_path, odd_scene, cluster, whole):
    """The seam metric can fail: without context, tile borders disagree with the whole image."""
    segment(odd_scene, DEMO_MODEL, tmp_path / "nohalo", SegmentOptions(tile=128, halo=0), scheduler=cluster, progress=False)
    assert agreement(whole, labels_of(tmp_path / "nohalo")) < 0.9999


def random_model(path: Path, bands: int) -> Path:
    """A checkpoint with random (not zero) scoring layers, so its argmax map is not constant."""
    torch.manual_seed(bands)
    model = build_model("fcn8s", bands, 3, 0.125)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.08)
    card = ModelCard(
        arch="fcn8s", width=0.125, bands=bands,
        classes=[ClassInfo(n, (i * 80, 0, 0)) for i, n in enumerate(["a", "b", "c"])],
        normalization=Normalization(mean=[100.0] * bands, std=[30.0] * bands),
    )
    return save_checkpoint(path, model, card)


def write_raster(path: Path, data: np.ndarray, crs: str, transform: Affine, nodata=None) -> Path:
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, tiled=True,
                   blockxsize=128, blockysize=128)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.mark.parametrize("bands", [1, 13])
def test_any_band_count_tiles_seamlessly(tmp_path, cluster, bands):
    rng = np.random.default_rng(bands)
    data = (100 + 30 * rng.standard_normal((bands, 333, 290))).astype("float32")
    image = write_raster(tmp_path / "in.tif", data, "EPSG:32633", Affine(2, 0, 400000, 0, -2, 5000000))
    model = random_model(tmp_path / "m.safetensors", bands)
    segment(image, model, tmp_path / "whole", SegmentOptions(tile=352), scheduler=cluster, progress=False)
    segment(image, model, tmp_path / "tiled", SegmentOptions(tile=64), scheduler=cluster, progress=False)
    a = labels_of(tmp_path / "whole")
    assert len(np.unique(a)) > 1
    assert agreement(a, labels_of(tmp_path / "tiled")) >= 0.9999


@pytest.mark.parametrize("crs, transform", [
    ("EPSG:32633", Affine(0.5, 0, 500000.25, 0, -0.5, 5400000.75)),
    ("EPSG:4326", Affine(0.0001, 0, 10.5, 0, -0.0001, 47.25)),
])
def test_zarr_carries_crs_transform_and_shape(tmp_path, cluster, crs, transform):
    data = np.full((4, 150, 210), 500, dtype="uint16")
    image = write_raster(tmp_path / "in.tif", data, crs, transform, nodata=0)
    segment(image, DEMO_MODEL, tmp_path / "out", SegmentOptions(tile=64, probabilities=True), scheduler=cluster, progress=False)
    ds = xr.open_zarr(tmp_path / "out" / "labels.zarr")
    with rasterio.open(image) as src:
        assert ds.labels.rio.crs == src.crs
        assert ds.labels.rio.transform() == src.transform
        assert ds.labels.shape == (src.height, src.width)
    assert ds.labels.dtype == np.uint8
    assert ds.labels.attrs["class_names"][0] == "water"
    probs = ds.probabilities.values
    assert probs.shape == (6, 150, 210) and np.allclose(probs.sum(axis=0), 1.0, atol=0.03)
    with rasterio.open(tmp_path / "out" / "labels.tif") as cog, rasterio.open(image) as src:
        assert (cog.crs, cog.transform, cog.shape) == (src.crs, src.transform, src.shape)
        assert np.array_equal(cog.read(1), ds.labels.values)
    with rasterio.open(tmp_path / "out" / "probabilities.tif") as cog:
        assert cog.count == 6


def test_nodata_collar_gets_255_exactly_and_empty_tiles_are_skipped(tmp_path, cluster):
    image, _ = write_scene(tmp_path / "scene", 512, seed=3, collar=150)
    report = segment(image, DEMO_MODEL, tmp_path / "out", SegmentOptions(tile=64), scheduler=cluster, progress=False)
    labels = labels_of(tmp_path / "out")
    with rasterio.open(image) as src:
        nodata = src.read_masks(1) == 0
    assert nodata.any()
    assert np.array_equal(labels == 255, nodata)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["chunks"]["skipped_nodata"] >= 1
    assert run["chunks"] == report.chunks.to_json()
    assert run["chunks"]["computed"] + run["chunks"]["skipped_nodata"] == run["chunks"]["total"] == 64
    # what tells runs apart: the software, the time, the workers and the input's fingerprint
    assert run["versions"]["fcnseg"] == fcnseg.__version__ and run["versions"]["torch"] == torch.__version__
    assert run["versions"]["gdal"] == rasterio.__gdal_version__ and run["versions"]["zarr"] == zarr.__version__
    assert run["devices"] == ["cpu"] and run["workers"] == 2  # the module's cluster: two CPU workers
    assert run["input_fingerprint"] == run["parameters"]["input_fingerprint"]
    started, finished = (datetime.fromisoformat(run[k]) for k in ("started", "finished"))
    assert started.tzinfo == finished.tzinfo == UTC and run["finished"].endswith("Z")
    assert abs((finished - started).total_seconds() - run["seconds"]["total"]) <= 1  # both rounded to the second


def test_rerun_reuses_chunks_and_other_parameters_are_refused(tmp_path, odd_scene, cluster):
    out = tmp_path / "out"
    options = SegmentOptions(tile=256)
    segment(odd_scene, DEMO_MODEL, out, options, scheduler=cluster, progress=False)
    first = labels_of(out)
    # forget two chunks, as if the run had been killed before them
    done = sorted((out / ".fcnseg-run" / "done").iterdir())
    for marker in done[:2]:
        marker.unlink()
    (out / "run.json").unlink()
    again = segment(odd_scene, DEMO_MODEL, out, options, scheduler=cluster, progress=False)
    assert again.chunks.reused == len(done) - 2 and again.chunks.computed == 2
    assert np.array_equal(labels_of(out), first)
    with pytest.raises(OutputConflict, match="halo"):
        segment(odd_scene, DEMO_MODEL, out, SegmentOptions(tile=256, halo=64), scheduler=cluster, progress=False)
    replaced = segment(odd_scene, DEMO_MODEL, out, SegmentOptions(tile=256, halo=64), scheduler=cluster,
                       overwrite=True, progress=False)
    assert replaced.chunks.reused == 0


def test_bad_inputs_are_refused_before_any_output(tmp_path, cluster):
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(InputError, match="notes.tif"):
        segment(text, DEMO_MODEL, tmp_path / "o1", scheduler=cluster, progress=False)
    three = write_raster(tmp_path / "rgb.tif", np.ones((3, 64, 64), "uint8"), "EPSG:32633", Affine(1, 0, 0, 0, -1, 0))
    with pytest.raises(InputError, match="has 3 bands, the model takes 4"):
        segment(three, DEMO_MODEL, tmp_path / "o2", scheduler=cluster, progress=False)
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.tif"):
        segment(empty, DEMO_MODEL, tmp_path / "o3", scheduler=cluster, progress=False)
    with pytest.raises(InputError, match="no such file"):
        segment(tmp_path / "missing.tif", DEMO_MODEL, tmp_path / "o4", scheduler=cluster, progress=False)
    corrupt = tmp_path / "corrupt.safetensors"
    damaged = bytearray(DEMO_MODEL.read_bytes())
    damaged[-5000] ^= 0xFF  # the header still parses: only the content hash can tell
    corrupt.write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        segment(three, corrupt, tmp_path / "o5", scheduler=cluster, progress=False)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def test_segment_command_reports_bad_input_in_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "fcnseg", "segment", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "missing.tif" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_blend_weights_sum_to_one_across_every_border():
    from fcnseg.pipeline.segment.blend import axis_weights, ramp_width

    size, tile, r = 1100, 256, ramp_width(256, 256)
    cores = [(a, min(a + tile, size)) for a in range(0, size, tile)]
    total = sum(axis_weights(0, size, core, size, r) for core in cores)
    assert np.allclose(total, 1.0)
    inside = axis_weights(0, size, cores[2], size, r)
    assert inside[cores[2][0] + r : cores[2][1] - r].min() == 1.0  # a core's interior is its own
    assert inside[: cores[2][0] - r].max() == 0 and inside[cores[2][1] + r :].max() == 0


def test_blend_equals_whole_image_run_and_resumes(tmp_path, odd_scene, cluster, whole):
    out = tmp_path / "blend"
    options = SegmentOptions(tile=128, stitch="blend", probabilities=True)
    segment(odd_scene, DEMO_MODEL, out, options, scheduler=cluster, progress=False)
    blended = labels_of(out)
    assert agreement(whole, blended) >= 0.9999
    probs = xr.open_zarr(out / "labels.zarr").probabilities.values
    assert np.allclose(probs.sum(axis=0), 1.0, atol=0.03)  # cross-faded probabilities stay probabilities
    assert sorted(p.name for p in (out / ".fcnseg-run").iterdir()) == ["done", "execution.json", "parameters.json"]  # scratch gone
    # forget three chunks: a rerun recomputes them (and the pass-1 tiles they need) identically
    for marker in sorted((out / ".fcnseg-run" / "done").iterdir())[7:10]:
        marker.unlink()
    again = segment(odd_scene, DEMO_MODEL, out, options, scheduler=cluster, progress=False)
    assert again.chunks.computed == 3 and again.chunks.reused == 27
    assert np.array_equal(labels_of(out), blended)


def test_every_output_for_analysts_and_a_complete_rerun_is_a_no_op(tmp_path, cluster):
    import geopandas as gpd

    from fcnseg.pipeline.products.stac_checks import validate_stac_item

    image, _ = write_scene(tmp_path / "scene", 320, seed=9, collar=40)
    out = tmp_path / "out"
    report = segment(image, DEMO_MODEL, out, SegmentOptions(tile=96), scheduler=cluster, progress=False)
    names = ["labels.zarr", "labels.tif", "labels.tif.aux.xml", "labels.qml", "quicklook.png", "polygons.parquet",
             "polygons.gpkg", "item.json"]
    assert report.files == names and all((out / n).exists() for n in names)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted([*names, "run.json"])
    labels = labels_of(out)
    polygons = gpd.read_parquet(out / "polygons.parquet")
    for entry in report.class_areas:  # polygons, class areas and the label map agree exactly
        count = int((labels == entry.class_id).sum())
        assert entry.pixels == count == polygons[polygons.class_id == entry.class_id].pixels.sum()
    validate_stac_item(out / "item.json")
    item = json.loads((out / "item.json").read_text())
    assert set(item["assets"]) == {"labels", "labels_pam", "labels_style", "labels_zarr", "quicklook", "polygons_parquet",
                                   "polygons_gpkg", "run", "model"}
    again = segment(image, DEMO_MODEL, out, SegmentOptions(tile=96), scheduler="tcp://127.0.0.1:9", progress=False)
    assert again.skipped and again.class_areas == report.class_areas  # never reached the (dead) scheduler
    fewer = SegmentOptions(tile=96, polygons=False, quicklook=False, stac=False)
    third = segment(image, DEMO_MODEL, out, fewer, scheduler=cluster, progress=False)
    cog = ["labels.zarr", "labels.tif", "labels.tif.aux.xml", "labels.qml"]
    assert third.chunks.reused == third.chunks.total and third.files == cog
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted([*cog, "run.json"])
