"""Sparse, imbalanced labels: today's trainer against the new defaults, same steps (issue 14, 5-8).

A synthetic scene's full labels are cut down to a few patches per class ("polygons": the class's
pixels within a disc around a random pixel of it) so that about 1 % of the pixels are labelled and
one class (building) holds under 0.5 % of the labelled pixels; the rest is 255. Each way trains on
that scene and is scored on an unseen scene (another seed) with full labels.

    .venv/bin/python benchmarks/sparse_labels.py            # OUT=bench-sparse, 300 steps, ~10 min on 2 cores

Ways: ``today`` (uniform chips with >= 5 % labelled pixels, plain loss, no validation: the options
``--sampling uniform --class-weights none --holdout 0``); ``uniform-any`` (the same but a chip needs
only one labelled pixel, so today's loss and chip placement can be scored at all); ``new`` (the
defaults: labelled-cell sampling, median frequency weights, 20 % of blocks held out, best by mean IU);
``labelled`` and ``labelled-median`` (ablations: the new sampling without / with the weights, nothing
held out, the last weights kept).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

from fcnseg.models.checkpoint import load_checkpoint
from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.training import train as train_module
from fcnseg.pipeline.training.chips import ChipSampler
from fcnseg.pipeline.training.evaluate import evaluate_raster
from fcnseg.pipeline.training.train import TrainRequest, train_model

log = logging.getLogger("sparse_labels")

WAYS = {
    "today": dict(sampling="uniform", class_weights="none", holdout=0.0),
    "uniform-any": dict(sampling="uniform", class_weights="none", holdout=0.0),
    "new": dict(),
    # ablations of the new defaults, no held-out blocks (last weights kept)
    "labelled": dict(class_weights="none", holdout=0.0),
    "labelled-median": dict(holdout=0.0),
}


def sparse_copy(labels: Path, out: Path, patches: dict[int, tuple[int, int]], seed: int) -> dict[int, int]:
    """Keep, per class, ``count`` patches of ``radius``: its pixels within a disc around a random
    pixel of it; everything else becomes 255. Returns labelled pixels per class."""
    with rasterio.open(labels) as src:
        full, profile = src.read(1), src.profile
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: full.shape[0], : full.shape[1]]
    keep = np.zeros(full.shape, bool)
    for cls, (count, radius) in patches.items():
        r, c = np.nonzero(full == cls)
        for i in rng.choice(len(r), size=count, replace=False):
            keep |= (full == cls) & ((rows - r[i]) ** 2 + (cols - c[i]) ** 2 <= radius**2)
    sparse = np.where(keep, full, 255).astype(np.uint8)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(sparse[None])
        dst.update_tags(**{k: v for k, v in rasterio.open(labels).tags().items() if k.startswith("class_")})
    return {int(k): int(v) for k, v in zip(*np.unique(sparse[sparse != 255], return_counts=True), strict=True)}


def run_way(way: str, image: Path, labels: Path, test: tuple[Path, Path], out: Path, steps: int) -> dict:
    """Train one way, score it on the unseen scene; 'refused' where training refuses the data."""
    request = TrainRequest(image=image, labels=labels, out=out / f"{way}.safetensors", steps=steps, chip=128,
                           batch_size=8, width=0.125, lr=1e-3, seed=0, val_every=50, progress=False, **WAYS[way])
    original = train_module.ChipSampler
    if way == "uniform-any":
        train_module.ChipSampler = functools.partial(ChipSampler, min_labelled=1e-9)
    started = time.perf_counter()
    try:
        path, result, card = train_model(request)
    except Exception as exc:  # noqa: BLE001 - a refusal is a result here
        return {"way": way, "refused": str(exc)}
    finally:
        train_module.ChipSampler = original
    model, card = load_checkpoint(path)
    metrics = evaluate_raster(model, card, test[0], test[1], device=torch.device("cpu"))
    return {
        "way": way, "seconds": round(time.perf_counter() - started, 1), "best_step": result.best_step,
        "mean_iou": round(metrics["mean_iou"], 4),
        "per_class_iou": {
            name: None if v is None else round(v, 4)
            for name, v in zip(card.class_names, metrics["per_class_iou"], strict=True)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-sparse"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--patch-seed", type=int, default=0, help="seed of the labelled patches kept")
    parser.add_argument("--ways", default=",".join(WAYS), help="comma-separated, of: " + ", ".join(WAYS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(2)
    image, full = write_scene(args.out / "train", args.size, seed=1)
    test = write_scene(args.out / "test", args.size, seed=3)
    # water, forest, cropland, grassland, road: 3 patches; building: one small patch
    patches = {0: (3, 9), 1: (3, 9), 2: (3, 9), 3: (3, 9), 4: (3, 9), 5: (1, 2)}
    counts = sparse_copy(full, args.out / "train" / "sparse.tif", patches, seed=args.patch_seed)
    total = sum(counts.values())
    log.info("labelled %d px (%.2f %%), per class %s", total, 100 * total / args.size**2, counts)
    sparse = args.out / "train" / "sparse.tif"
    rows = [run_way(w, image, sparse, test, args.out, args.steps) for w in args.ways.split(",")]
    print(json.dumps({"labelled": counts, "fraction": total / args.size**2, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
