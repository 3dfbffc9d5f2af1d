"""The inference engine: the pipelined tile loop equals the serial reference, its queues are
bounded, its threads' errors surface as themselves; devices and precision are chosen per worker;
tasks are sized to keep every worker busy."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fcnseg.models import DEMO_MODEL
from fcnseg.models.checkpoint import load_checkpoint
from fcnseg.models.inference import execution_of, precision_for
from fcnseg.pipeline import cluster
from fcnseg.pipeline.io import InputError, open_raster, read_model_input
from fcnseg.pipeline.segment import worker
from fcnseg.pipeline.output.ledger import ChunkLedger
from fcnseg.pipeline.engine.predict import predict_cores
from fcnseg.pipeline.engine.tile_source import TileSource
from fcnseg.pipeline.segment.worker import TileJob, predict_chunks, tiles_per_task
from fcnseg.pipeline.store import NODATA, PROBABILITY_SCALE, create_store
from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.tiles import iter_tiles


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    image, _ = write_scene(tmp_path_factory.mktemp("engine"), 320, seed=17, collar=30)
    return image


def test_the_pipelined_loop_equals_the_serial_reference(scene):
    model, card = load_checkpoint(DEMO_MODEL)
    tiles = list(iter_tiles(320, 320, 96, 64))
    with TileSource(str(scene), [1, 2, 3, 4], card, readers=3) as source:
        cores = {(c.tile.row, c.tile.col): c for c in predict_cores(model, torch.device("cpu"), source, tiles, 3, True)}
    assert len(cores) == len(tiles)
    with open_raster(scene) as src, torch.inference_mode():
        for tile in tiles:  # one tile at a time, read in this thread, everything on numpy
            x, valid = read_model_input(src, [1, 2, 3, 4], tile.read_window, card)
            core = cores[(tile.row, tile.col)]
            core_valid = valid[tile.core_in_read]
            if not core_valid.any():
                assert core.labels is None and core.valid_pixels == 0
                continue
            logits = model(torch.from_numpy(x[None]))[0][(slice(None), *tile.core_in_read)]
            labels = logits.argmax(0).numpy().astype(np.uint8)
            labels[~core_valid] = NODATA
            probs = np.rint(torch.softmax(logits, 0).numpy() * PROBABILITY_SCALE).astype(np.uint8)
            probs[:, ~core_valid] = NODATA
            assert np.array_equal(core.labels, labels) and np.array_equal(core.probabilities, probs)
            assert core.valid_pixels == int(core_valid.sum())


def test_read_ahead_is_bounded(scene):
    _, card = load_checkpoint(DEMO_MODEL)
    tiles = list(iter_tiles(320, 320, 32, 0))
    pulled, most_ahead = 0, 0

    def counted():
        nonlocal pulled
        for tile in tiles:
            pulled += 1
            yield tile

    with TileSource(str(scene), [1, 2, 3, 4], card) as source:
        for consumed, _ in enumerate(source.stream(counted(), depth=5), start=1):
            most_ahead = max(most_ahead, pulled - consumed)
    assert consumed == len(tiles) == 100 and most_ahead <= 5


def job_for(image: Path, tmp_path: Path) -> tuple[TileJob, str, ChunkLedger]:
    store = tmp_path / "labels.zarr"
    with open_raster(image) as src:
        create_store(store, height=src.height, width=src.width, crs=src.crs, transform=src.transform, chunk=128,
                     class_names=list("abcdef"), class_colors=[(0, 0, 0)] * 6, attrs={})
    _, card = load_checkpoint(DEMO_MODEL)
    from fcnseg.models.checkpoint import content_sha256

    job = TileJob(str(image), "-", str(DEMO_MODEL), content_sha256(DEMO_MODEL), "cpu fp32", (1, 2, 3, 4), "cpu", 2,
                  False)
    return job, str(store), ChunkLedger(str(tmp_path / "done"))


def test_a_reader_error_surfaces_as_the_clear_error(scene, tmp_path):
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(scene.read_bytes()[: scene.stat().st_size // 3])
    job, store, ledger = job_for(scene, tmp_path)
    (tmp_path / "done").mkdir()
    job = dataclasses.replace(job, input_path=str(truncated))
    with pytest.raises(InputError, match=r"truncated\.tif: cannot read window"):
        predict_chunks(job, store, ledger, list(iter_tiles(320, 320, 128, 64)))


def test_a_writer_error_surfaces_as_itself(scene, tmp_path):
    job, store, ledger = job_for(scene, tmp_path)  # the ledger's folder does not exist
    with pytest.raises(FileNotFoundError, match="done"):
        predict_chunks(job, store, ledger, list(iter_tiles(320, 320, 128, 64)))


def test_tasks_keep_every_worker_busy_and_the_scheduler_sane():
    assert tiles_per_task(4, workers=2, batch_size=4) == 1  # 4 tiles of 2048 px: both workers work
    assert tiles_per_task(30, workers=2, batch_size=2) == 2
    assert tiles_per_task(10_000, workers=8, batch_size=4) == 5  # 2000 tasks
    assert tiles_per_task(1_000_000, workers=8, batch_size=4) == 500


class FakeWorker:
    def __init__(self, name):
        self.name = name


@pytest.mark.parametrize(("name", "gpu"), [("3", 3), (5, 1), ("gpu-6", 2), ("node-a-worker-1", 1)])
def test_each_worker_takes_its_own_gpu(monkeypatch, name, gpu):
    import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(distributed, "get_worker", lambda: FakeWorker(name))
    assert worker.worker_device("auto") == torch.device("cuda", gpu)
    assert worker.worker_device("cuda:2") == torch.device("cuda", 2)


def test_a_worker_without_a_number_gets_a_stable_gpu_and_a_warning(monkeypatch, caplog):
    import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(distributed, "get_worker", lambda: FakeWorker("alpha"))
    with caplog.at_level(logging.WARNING):
        first, second = worker.worker_device("cuda"), worker.worker_device("cuda")
    assert first == second and first.type == "cuda" and "no number in its name" in caplog.text


@pytest.mark.parametrize(("capability", "precision"), [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_bf16_only_where_the_gpu_has_it(monkeypatch, capability, precision):
    """V100 (7.0) and T4 (7.5) emulate bf16: fp16 there; A100 (8.0) and H100 (9.0) run it natively."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch says on a T4
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert precision_for(torch.device("cuda", 1)) == precision
    assert execution_of(torch.device("cuda", 1)) == f"cuda {precision}"
    assert precision_for(torch.device("cpu")) == "fp32"


def test_local_gpus_for_each_device_request(monkeypatch):
    monkeypatch.setattr(cluster, "gpu_driver_present", lambda: True)  # torch is asked only where a driver loads
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert cluster.local_gpus("auto") == list(range(8))  # every GPU, not min(4, cores)
    assert cluster.local_gpus("cuda", workers=2) == [0, 1]
    assert cluster.local_gpus("cuda:5") == [5]
    assert cluster.local_gpus("cpu") == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cluster.local_gpus("auto") == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cluster, "gpu_driver_present", lambda: False)
    assert cluster.local_gpus("auto") == []  # no driver library: no GPU, whatever torch would say


def test_the_local_gpu_cluster_gives_each_worker_its_gpu_and_a_gate():
    """Real worker processes (on the CPU here): each sees only its GPU and advertises one GPU resource."""
    from distributed import Client

    from fcnseg.pipeline.cluster_specs import start_gpu_local

    with start_gpu_local([0, 1]) as gpu_cluster, Client(gpu_cluster) as client:
        client.wait_for_workers(2, timeout=60)
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(seen.values()) == ["0", "1"]
        assert cluster.gpu_resources(client)
        assert all(w["resources"] == {"GPU": 1} for w in client.scheduler_info()["workers"].values())


def test_bench_pipeline_reports_the_stage_against_the_model(tmp_path):
    import json
    import subprocess
    import sys

    fcnseg = str(Path(sys.executable).with_name("fcnseg"))
    done = subprocess.run([fcnseg, "bench-pipeline", "--size", "256", "--tile", "128", "--workers", "2"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["read_window"] == 128 + 2 * 256 and figures["halo_overhead"] > 1
    for key in ("bench_model_mps", "io_ceiling_output_mps"):
        assert figures[key] > 0
    assert figures["one_worker"]["model_equivalent_mps"] > figures["one_worker"]["output_mps"] > 0
    assert set(figures["ratios"]) == {"model_equivalent_vs_bench_model", "output_vs_bench_model", "workers_speedup"}


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "uint32", "float32", "float64"])
def test_normalising_on_the_device_equals_the_host_bit_for_bit(dtype):
    """Raw pixels cross to the device as stored; the normalisation there is the host's to the bit."""
    from fcnseg.models.checkpoint import NodataPolicy, Normalization
    from fcnseg.models.inference import normalize_on_device
    from fcnseg.pipeline.io import normalize
    from fcnseg.pipeline.engine.staging import staging_for, transferable

    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    low, high = (info.min, info.max) if info else (-1e4, 1e4)
    pixels = [rng.uniform(low, high, (3, 40, 56)).astype(dtype) for _ in range(2)]
    valid = [rng.random((40, 56)) > 0.2 for _ in range(2)]
    if info is None:
        pixels[0][1, 3, 4] = np.nan  # non-finite pixels are invalid, then filled
        valid[0][3, 4] = False
    normalization, nodata = Normalization(mean=[120.5, -7.25, 3000.0], std=[58.3, 0.7, 1234.5]), NodataPolicy(fill=0.5)
    staging = staging_for(torch.device("cpu"))
    on_device = normalize_on_device(staging.to_device([transferable(p) for p in pixels]), staging.to_device(valid),
                                    normalization, nodata)
    expected = np.stack([normalize(p, v, normalization, nodata) for p, v in zip(pixels, valid, strict=True)])
    assert on_device.dtype == torch.float32 and np.array_equal(on_device.numpy(), expected)


def test_weights_are_cast_once_to_the_devices_precision(monkeypatch, scene):
    """A bf16 device (run here on the CPU): the weights are bf16 after loading, the loop computes in
    them and still labels as fp32 does but for near ties."""
    from fcnseg.models import inference

    fp32_model, card = inference.load_for_inference(DEMO_MODEL, torch.device("cpu"))
    monkeypatch.setattr(inference, "precision_for", lambda device: "bf16")
    bf16_model, _ = inference.load_for_inference(DEMO_MODEL, torch.device("cpu"))
    assert {p.dtype for p in bf16_model.parameters()} == {torch.bfloat16}
    tiles = list(iter_tiles(320, 320, 160, 64))
    with TileSource(str(scene), [1, 2, 3, 4], card) as source:
        fp32 = [c.labels for c in predict_cores(fp32_model, torch.device("cpu"), source, tiles, 2, False)]
        bf16 = [c.labels for c in predict_cores(bf16_model, torch.device("cpu"), source, tiles, 2, False)]
    agree = np.mean([np.mean(a == b) for a, b in zip(fp32, bf16, strict=True) if a is not None])
    assert 0.95 < agree < 1.0  # bf16 did compute (not exactly fp32), and computed the same map


def test_the_cpu_computes_in_channels_last_format_with_the_same_labels(scene):
    """Twice as fast on the CPU (benchmarks/forward_speed.py); the labels are those of the contiguous format."""
    from fcnseg.models.inference import load_for_inference

    fast, card = load_for_inference(DEMO_MODEL, torch.device("cpu"))
    plain, _ = load_for_inference(DEMO_MODEL, torch.device("cpu"), channels_last=False)
    conv = next(p for p in fast.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    tiles = list(iter_tiles(320, 320, 160, 64))
    with TileSource(str(scene), [1, 2, 3, 4], card) as source:
        a = [c.labels for c in predict_cores(fast, torch.device("cpu"), source, tiles, 1, False)]
        b = [c.labels for c in predict_cores(plain, torch.device("cpu"), source, tiles, 1, False)]
    assert np.mean([np.mean(x == y) for x, y in zip(a, b, strict=True) if x is not None]) > 0.999


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu.sh runs it)")
def test_pinned_buffers_are_reused_only_after_their_copy(scene):
    from fcnseg.pipeline.engine.staging import DeviceStaging

    staging = DeviceStaging(torch.device("cuda"))
    batches = [[np.full((4, 512, 512), k * 10 + i, dtype=np.uint16) for i in range(2)] for k in range(5)]
    on_device = [staging.to_device(batch) for batch in batches]  # one buffer, five fills
    for k, tensor in enumerate(on_device):
        assert tensor.is_cuda and torch.equal(tensor.cpu(), torch.from_numpy(np.stack(batches[k])))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu.sh runs it)")
def test_the_gpu_loop_labels_as_the_cpu_loop(scene):
    from fcnseg.models.inference import load_for_inference

    tiles = list(iter_tiles(320, 320, 96, 64))
    labels = {}
    for name in ("cpu", "cuda"):
        model, card = load_for_inference(DEMO_MODEL, torch.device(name))
        with TileSource(str(scene), [1, 2, 3, 4], card) as source:
            labels[name] = [c.labels for c in predict_cores(model, torch.device(name), source, tiles, 3, True)]
    pairs = [(a, b) for a, b in zip(labels["cpu"], labels["cuda"], strict=True) if a is not None]
    assert np.mean([np.mean(a == b) for a, b in pairs]) > 0.98


def test_a_batch_too_large_for_the_device_runs_in_halves(monkeypatch, scene, caplog):
    """Out of memory (simulated: batches over 1 tile) halves the batch; the labels do not change;
    one tile too large is one clear error."""
    from fcnseg.pipeline.engine import predict

    model, card = load_checkpoint(DEMO_MODEL)
    tiles = list(iter_tiles(320, 320, 160, 64))
    with TileSource(str(scene), [1, 2, 3, 4], card) as source:
        whole = [c.labels for c in predict_cores(model, torch.device("cpu"), source, tiles, 4, False)]
        real_forward = predict.tta_logits

        def small_device(m, x, *tta):
            if x.shape[0] > 1:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return real_forward(m, x, *tta)

        monkeypatch.setattr(predict, "tta_logits", small_device)
        monkeypatch.setattr(predict, "_FITTING_BATCH", {})
        with caplog.at_level(logging.WARNING):
            halved = [c.labels for c in predict_cores(model, torch.device("cpu"), source, tiles, 4, False)]
        assert caplog.text.count("running 2 at a time") == 1 and caplog.text.count("running 1 at a time") == 1
        assert predict._FITTING_BATCH == {("cpu", (4, 224, 224)): 1}  # later batches go in parts that fit
        assert all(np.array_equal(a, b) for a, b in zip(whole, halved, strict=True))
        monkeypatch.setattr(predict, "tta_logits", lambda m, x, *tta: small_device(m, x.expand(2, -1, -1, -1), *tta))
        with pytest.raises(predict.DeviceMemoryError, match=r"out of memory for one tile of 224x224 px.*--tile"):
            list(predict_cores(model, torch.device("cpu"), source, tiles, 1, False))


@pytest.mark.parametrize(("device", "memory", "width", "expected"), [
    ("cpu", 24e9 / 2, 0.125, (2048, 1)),  # this machine, per core: the demo model at 2048, a tile at a time
    ("cpu", 24e9 / 2, 1.0, (1024, 1)),  # full width: a 2560² window would need 13 GB
    ("cpu", 2e9, 1.0, (512, 1)),
    ("cuda", 141e9, 1.0, (2048, 5)),  # an H200: as many 2560² windows as half its memory holds
    ("cuda", 141e9, 0.125, (2048, 8)),  # ... at most 8
    ("cuda", 16e9, 1.0, (1024, 1)),  # a T4: a smaller tile
])
def test_default_tile_and_batch_follow_the_devices_memory(monkeypatch, device, memory, width, expected):
    from fcnseg.models import sizing

    monkeypatch.setattr(sizing, "device_budget", lambda d: memory * (sizing.GPU_SHARE if d.type == "cuda" else sizing.CPU_SHARE))
    assert sizing.default_tiling(width, 256, torch.device(device)) == expected
    tile, _ = expected
    assert sizing.default_tiling(width, 256, torch.device(device), tile=512)[0] == 512  # a given tile is kept


def test_segment_sizes_tiles_for_the_device_and_records_them(scene, tmp_path):
    from fcnseg.pipeline.orchestrator import SegmentOptions
    from fcnseg.pipeline.output.hold import output_lock
    from fcnseg.pipeline.segment.plan import plan_run

    with output_lock(tmp_path / "out"):
        plan = plan_run(scene, DEMO_MODEL, tmp_path / "out", SegmentOptions(device="cpu"))
    assert (plan.options.tile, plan.options.batch_size, plan.parameters.tile) == (2048, 1, 2048)


def test_local_cpu_workers_share_every_core_among_their_torch_threads(monkeypatch):
    """Real worker processes: one worker on this machine computes on every core, and on a machine
    of 16 cores 4 workers compute on 4 threads each."""
    from distributed import Client

    from fcnseg.pipeline.cluster_specs import LOCAL_DEFAULTS, ClusterSpec, start_local, torch_threads

    monkeypatch.delenv("FCNSEG_TORCH_THREADS", raising=False)
    with start_local(ClusterSpec(Path("<default>"), "local"), 1) as one, Client(one) as client:
        seen = client.run(lambda: os.environ.get("FCNSEG_TORCH_THREADS"))
    assert list(seen.values()) == [str(os.cpu_count())]
    assert "FCNSEG_TORCH_THREADS" not in os.environ  # Dask's nanny put it there too: taken back
    assert LOCAL_DEFAULTS["threads_per_worker"] == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert (torch_threads(4), torch_threads(32)) == (4, 1)
    monkeypatch.setenv("FCNSEG_TORCH_THREADS", "3")
    assert torch_threads(4) == 3
    with start_local(ClusterSpec(Path("<default>"), "local"), 1) as again, Client(again) as client:
        assert list(client.run(lambda: os.environ.get("FCNSEG_TORCH_THREADS")).values()) == ["3"]
    assert os.environ["FCNSEG_TORCH_THREADS"] == "3"  # the user's own value, untouched
