"""Outputs to an object store: ``--out s3://bucket/prefix`` against a real S3 server (moto's,
started by the test on a free port), read back with the readers analysts use on buckets."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import geopandas as gpd
import numpy as np
import pytest
import xarray as xr

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.output.layout import LEASE_KEY
from fcnseg.pipeline.output.object_store import staging_folder
from fcnseg.pipeline.orchestrator import OutputConflict, SegmentOptions, segment
from fcnseg.pipeline.synth import write_scene

FCNSEG = str(Path(sys.executable).with_name("fcnseg"))
OPTIONS = SegmentOptions(tile=128, batch_size=1)
BUCKET = "fcnseg-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> dict[str, str]:
    """An S3 server with one bucket; this process and its children reach it through the AWS
    variables (and stage in a folder of the test's)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "FCNSEG_STAGING": str(tmp_path_factory.mktemp("staging"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fsspec.filesystem("s3").mkdir(BUCKET)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_scene(tmp_path_factory.mktemp("scene"), 256, seed=43)[0]


@pytest.fixture(scope="module")
def local_run(scene, cluster, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    segment(scene, DEMO_MODEL, out, OPTIONS, scheduler=cluster, progress=False)
    return out


def keys(prefix: str) -> set[str]:
    """The objects under an s3:// prefix, relative to it."""
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    root = prefix.removeprefix("s3://")
    return {key.removeprefix(root + "/") for key in fs.find(root)}


def read_json(uri: str) -> dict:
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()  # another process wrote it
    return json.loads(fs.cat(uri))


def cli(*args: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FCNSEG_CRASH_AT"}
    if crash_at:
        env["FCNSEG_CRASH_AT"] = crash_at
    return subprocess.run([FCNSEG, "segment", *args, "--tile", "128", "--batch-size", "1", "--workers", "1"],
                          env=env, capture_output=True, text=True, timeout=300)


def test_an_output_on_s3_equals_a_local_run_and_opens_from_the_bucket(s3, scene, local_run, cluster):
    uri = f"s3://{BUCKET}/runs/a"
    report = segment(scene, DEMO_MODEL, uri, OPTIONS, scheduler=cluster, progress=False)
    assert report.out == uri and not report.skipped
    local = json.loads((local_run / "run.json").read_text())
    assert report.class_areas_json() == local["class_areas"] and report.polygons == local["polygons"]
    remote = keys(uri)
    assert {"run.json", "item.json", "labels.tif", "polygons.parquet", "polygons.gpkg", "quicklook.png",
            "labels.zarr/zarr.json", ".fcnseg-run/parameters.json"} <= remote
    assert remote - {".fcnseg-run/parameters.json"} == {  # the output files; the run state stays behind
        str(p.relative_to(local_run)) for p in local_run.rglob("*") if p.is_file() and ".fcnseg-run" not in p.parts}
    labels = xr.open_zarr(f"{uri}/labels.zarr").labels.values
    assert np.array_equal(labels, xr.open_zarr(local_run / "labels.zarr").labels.values)
    assert gpd.read_parquet(f"{uri}/polygons.parquet").equals(gpd.read_parquet(local_run / "polygons.parquet"))
    item = read_json(f"{uri}/item.json")
    assert item["assets"]["labels"]["href"] == "./labels.tif"  # relative: valid wherever the prefix is
    assert not staging_folder(uri).exists()  # emptied and removed after the upload

    again = segment(scene, DEMO_MODEL, uri, OPTIONS, scheduler=cluster, progress=False)
    assert again.skipped and again.out == uri and again.class_areas == report.class_areas
    assert not staging_folder(uri).exists()


def test_a_run_killed_during_its_upload_never_looks_complete_and_the_rerun_finishes_it(s3, scene, local_run):
    uri = f"s3://{BUCKET}/runs/killed"
    killed = cli(str(scene), "--out", uri, crash_at="upload")
    assert killed.returncode == -9, killed.stderr
    remote = keys(uri)
    assert "labels.tif" in remote and "run.json" not in remote  # files there, but not complete
    assert LEASE_KEY in remote  # the killed run's lease: its process is gone, so the rerun takes it over
    rerun = cli(str(scene), "--out", uri)
    assert rerun.returncode == 0, rerun.stderr
    assert "taking over the lease" in rerun.stderr and LEASE_KEY not in keys(uri)
    record = read_json(f"{uri}/run.json")
    assert record["chunks"]["reused"] == record["chunks"]["total"]  # the staged chunks were kept
    assert record["class_areas"] == json.loads((local_run / "run.json").read_text())["class_areas"]
    assert not staging_folder(uri).exists()


def test_a_prefix_holding_files_of_the_users_is_refused_and_left_alone(s3, scene, cluster):
    uri = f"s3://{BUCKET}/theirs"
    fs = fsspec.filesystem("s3")
    fs.pipe(f"{BUCKET}/theirs/labels.tif", b"not ours")
    with pytest.raises(OutputConflict, match="labels.tif, which fcnseg did not write"):
        segment(scene, DEMO_MODEL, uri, OPTIONS, scheduler=cluster, progress=False)
    fs.invalidate_cache()
    assert fs.cat(f"{BUCKET}/theirs/labels.tif") == b"not ours" and keys(uri) == {"labels.tif"}

    other = cli(str(scene), "--out", f"s3://{BUCKET}/runs/a", "--simplify", "1")  # a run with other outputs there
    assert other.returncode == 0, other.stderr  # outputs options only: the run is redone from the same chunks
    bad = cli(str(scene), "--out", f"s3://{BUCKET}/runs/a", "--halo", "0")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        f"fcnseg: error: s3://{BUCKET}/runs/a: holds a run with other parameters (--halo 0 (was 256)); use --overwrite (flow: overwrite=true) to replace it"]


def test_a_prefix_another_machine_is_writing_is_refused_in_one_line(s3, scene):
    uri = f"s3://{BUCKET}/busy"
    fs = fsspec.filesystem("s3")
    lease = {"host": "worker-7", "pid": 4242, "token": "t", "since": "2026-12-02T02:00:00+00:00"}
    fs.pipe_file(f"{BUCKET}/busy/{LEASE_KEY}", json.dumps(lease).encode())
    result = cli(str(scene), "--out", uri)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"fcnseg: error: {uri}: in use by another fcnseg run (host worker-7, pid 4242, since 2026-12-02T02:00:00+00:00);"
        f" one run per output at a time — if that run is gone, remove {uri}/{LEASE_KEY}"]
    assert keys(uri) == {LEASE_KEY} and read_json(f"{uri}/{LEASE_KEY}") == lease  # nothing written, the lease kept
    fs.rm(f"{BUCKET}/busy/{LEASE_KEY}")  # that run is gone: removed by hand, as the message says
    again = cli(str(scene), "--out", uri)
    assert again.returncode == 0, again.stderr
    assert "run.json" in keys(uri) and LEASE_KEY not in keys(uri)


def test_a_missing_bucket_fails_in_one_line_before_any_work(s3, scene):
    result = cli(str(scene), "--out", "s3://no-such-bucket/out")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["fcnseg: error: s3://no-such-bucket/out: bucket no-such-bucket does not exist"]


def test_a_catalog_under_a_prefix_lists_its_scenes_and_merges_on_rerun(s3):
    from fcnseg.pipeline.products.stac_catalog import catalog_exists, write_stac_catalog
    from fcnseg.pipeline.products.stac_checks import check_stac_catalog

    fs = fsspec.filesystem("s3")
    root = f"s3://{BUCKET}/nightly"
    for name in ("a", "b", "c"):
        fs.pipe_file(f"{BUCKET}/nightly/{name}/item.json", json.dumps({"type": "Feature", "id": f"scene-{name}"}).encode())
    assert not catalog_exists(root)
    assert write_stac_catalog(root, [f"{root}/a/item.json", f"{root}/b/item.json"]) == f"{root}/catalog.json"

    def listed() -> list[tuple[str, str]]:
        catalog = json.loads(fs.cat_file(f"{BUCKET}/nightly/catalog.json"))
        check_stac_catalog(catalog)
        assert catalog["id"] == "fcnseg-nightly"
        return [(link["href"], link["title"]) for link in catalog["links"] if link["rel"] == "item"]

    assert listed() == [("./a/item.json", "scene-a"), ("./b/item.json", "scene-b")]
    fs.rm(f"{BUCKET}/nightly/a/item.json")  # a scene removed; the next night adds one
    write_stac_catalog(root, [f"{root}/c/item.json"])
    assert listed() == [("./b/item.json", "scene-b"), ("./c/item.json", "scene-c")]
    assert catalog_exists(root)
    with pytest.raises(FileNotFoundError, match="nightly/d/item.json"):
        write_stac_catalog(root, [f"{root}/d/item.json"])
