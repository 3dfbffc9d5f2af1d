"""Do chip reads or the model bound a training step? (issue 14, throughput)

Vector labels are the costly case: every chip rasterises the polygons that touch it. A synthetic
scene's labels become a GeoPackage of polygons with a class field; then, with FCN-8s width 0.125,
chip 256, batch 8: the seconds to read a batch alone (no model), and training steps per second
with ``--read-threads 0`` (reads in the training thread) and 4 (the next batch read while the
model trains).

    .venv/bin/python benchmarks/chip_reads.py            # OUT=bench-reads, 2048 px, 60 steps: ~5 min on 2 cores
    .venv/bin/python benchmarks/chip_reads.py --device cuda --steps 300   # benchmarks/gpu.sh
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import geopandas as gpd
import rasterio
import torch
from rasterio.features import shapes
from shapely.geometry import shape

from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.training.request import AUGMENT_OFF
from fcnseg.pipeline.training.train import TrainRequest, train_model

log = logging.getLogger("chip_reads")


def vector_labels(labels: Path, out: Path) -> int:
    """The label raster as polygons with the class id in ``cid``; returns how many."""
    with rasterio.open(labels) as src:
        data, transform, crs = src.read(1), src.transform, src.crs
    rows = [(shape(g), int(v)) for g, v in shapes(data, transform=transform)]
    gpd.GeoDataFrame({"cid": [v for _, v in rows]}, geometry=[g for g, _ in rows], crs=crs).to_file(out)
    return len(rows)


def batch_read_seconds(image: Path, labels: Path, field: str | None, batches: int) -> float:
    """Seconds per batch of the sampler alone, read in the calling thread."""
    from fcnseg.models.checkpoint import ClassInfo, ModelCard, Normalization
    from fcnseg.pipeline.training.chips import ChipSampler
    from fcnseg.pipeline.training.labels import open_labels

    card = ModelCard("fcn8s", 0.125, 4, [ClassInfo(f"c{i}", (i, i, i)) for i in range(6)],
                     Normalization([1000.0] * 4, [500.0] * 4))
    with rasterio.open(image) as src:
        source = open_labels(labels, src, field, [f"c{i}" for i in range(6)] if field else None)
        with ChipSampler(src, [1, 2, 3, 4], source, card, chip=256, batch_size=8, seed=0) as sampler:
            sampler()
            started = time.perf_counter()
            for _ in range(batches):
                sampler()
            return (time.perf_counter() - started) / batches


def steps_per_second(image: Path, labels: Path, out: Path, steps: int, threads: int, device: str) -> float:
    request = TrainRequest(image=image, labels=labels, out=out / f"t{threads}.safetensors", label_field="cid",
                           steps=steps, chip=256, batch_size=8, device=device, progress=False, read_threads=threads,
                           holdout=0.0, **AUGMENT_OFF)  # as recorded, before augmentation was the default
    _, result, _ = train_model(request)
    return steps / result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-reads"))
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (mixed precision there, as training runs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    image, raster = write_scene(args.out, args.size, seed=1)
    polygons = vector_labels(raster, args.out / "labels.gpkg")
    result: dict = {"device": args.device, "polygons": polygons, "torch_threads": torch.get_num_threads(), "batch_read_s": {
        "raster": round(batch_read_seconds(image, raster, None, 20), 3),
        "vector": round(batch_read_seconds(image, args.out / "labels.gpkg", "cid", 20), 3),
    }}
    for threads in (0, 4):
        result[f"steps_per_s_read_threads_{threads}"] = round(
            steps_per_second(image, args.out / "labels.gpkg", args.out, args.steps, threads, args.device), 3)
    result["step_s_read_threads_4"] = round(1 / result["steps_per_s_read_threads_4"], 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
