"""Sparse and imbalanced labels: today's trainer against the new defaults, same steps, several seeds (issue 14).

Two kinds of labels users bring, both on a synthetic scene, each model scored on an unseen scene:

- ``sparse``: hand-drawn samples. The scene's full labels are cut down to a few patches per class
  (the class's pixels within a disc around a random pixel of it), about 1 % of the pixels, one
  class (building) under 0.5 % of the labelled pixels; everything else unlabelled (255).
- ``footprints``: building outlines in a GeoPackage, no class field (background + building,
  building a few % of the pixels), read as vector labels as a user's file would be.

Ways: ``today`` (chips anywhere with >= 5 % labelled pixels, plain loss, no validation: the
options ``--sampling uniform --class-weights none --holdout 0``); ``uniform-any`` (the same, but a
chip needs only one labelled pixel, so that today's loss and chip placement can be scored at all
on sparse labels); ``new`` (the defaults: labelled-cell sampling, median frequency weights, 20 % of
the labels held out in blocks, best by mean IU); ``labelled``, ``labelled-median`` and ``labelled-sqrt``
(ablations: the new sampling without weights, with median frequency weights, with their square
root; nothing held out, the last weights kept). Rows of ways or seeds not rerun are kept in
``results.json``, so ``--ways new`` reruns just the defaults.
Each (scenario, way) trains once per seed; a seed draws the kept patches, the chips and the initial
weights.

    .venv/bin/python benchmarks/sparse_labels.py      # OUT=bench-sparse, 1024 px, 600 steps, seeds 0,1,2: ~25 min on 2 cores
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import torch
from rasterio.features import shapes
from shapely.geometry import shape

from fcnseg.models.checkpoint import load_checkpoint
from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.training import train as train_module
from fcnseg.pipeline.training.chips import ChipSampler
from fcnseg.pipeline.training.evaluate import evaluate_raster
from fcnseg.pipeline.training.request import AUGMENT_OFF
from fcnseg.pipeline.training.train import TrainRequest, train_model

log = logging.getLogger("sparse_labels")

#: Measured before photometric augmentation became the default (issue 27): every way trains without it.
TODAY = dict(AUGMENT_OFF, sampling="uniform", class_weights="none", holdout=0.0)
WAYS = {
    "today": TODAY,
    "uniform-any": TODAY,
    "new": AUGMENT_OFF,
    "labelled": dict(AUGMENT_OFF, class_weights="none", holdout=0.0),
    "labelled-median": dict(AUGMENT_OFF, class_weights="median", holdout=0.0),
    "labelled-sqrt": dict(AUGMENT_OFF, class_weights="sqrt", holdout=0.0),
}
SCENARIO_WAYS = {"sparse": list(WAYS), "footprints": ["today", "new", "labelled", "labelled-median", "labelled-sqrt"]}
BUILDING = 5  # the synthetic scenes' building class
# water, forest, cropland, grassland, road: 3 discs of 17 px; building: one disc of 4 px
PATCHES = {0: (3, 17), 1: (3, 17), 2: (3, 17), 3: (3, 17), 4: (3, 17), BUILDING: (1, 4)}


def sparse_copy(labels: Path, out: Path, patches: dict[int, tuple[int, int]], seed: int) -> dict[int, int]:
    """Keep, per class, ``count`` patches of ``radius``: its pixels within a disc around a random
    pixel of it; everything else becomes 255. Returns labelled pixels per class."""
    with rasterio.open(labels) as src:
        full, profile, tags = src.read(1), src.profile, src.tags()
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
        dst.update_tags(**{k: v for k, v in tags.items() if k.startswith("class_")})
    return {int(k): int(v) for k, v in zip(*np.unique(sparse[sparse != 255], return_counts=True), strict=True)}


def footprints(labels: Path, out: Path) -> float:
    """The scene's buildings as polygons in a GeoPackage layer "building" (no class field);
    returns the share of the scene's pixels they cover."""
    with rasterio.open(labels) as src:
        full, transform, crs = src.read(1), src.transform, src.crs
    mask = full == BUILDING
    polygons = [shape(g) for g, _ in shapes(mask.astype(np.uint8), mask=mask, transform=transform)]
    gpd.GeoDataFrame(geometry=polygons, crs=crs).to_file(out, layer="building", driver="GPKG")
    return float(mask.mean())


def run_way(scenario: str, way: str, seed: int, data: dict, out: Path, steps: int) -> dict:
    """Train one way, score it on the unseen scene; 'refused' where training refuses the data."""
    request = TrainRequest(
        image=data["image"], labels=data["labels"], out=out / f"{scenario}-{way}-{seed}.safetensors", steps=steps,
        chip=128, batch_size=8, width=0.125, lr=1e-3, seed=seed, val_every=100, progress=False, **WAYS[way],
    )
    row: dict = {"scenario": scenario, "way": way, "seed": seed}
    original = train_module.ChipSampler
    if way == "uniform-any":
        train_module.ChipSampler = functools.partial(ChipSampler, min_labelled=1e-9)
    started = time.perf_counter()
    try:
        path, result, card = train_model(request)
    except Exception as exc:  # noqa: BLE001 - a refusal is a result here
        return row | {"refused": str(exc)}
    finally:
        train_module.ChipSampler = original
    model, card = load_checkpoint(path)
    metrics = evaluate_raster(model, card, data["test_image"], data["test_labels"], device=torch.device("cpu"))
    return row | {
        "seconds": round(time.perf_counter() - started, 1), "best_step": result.best_step,
        "mean_iou": round(metrics["mean_iou"], 4),
        "per_class_iou": {
            name: None if v is None else round(v, 4)
            for name, v in zip(card.class_names, metrics["per_class_iou"], strict=True)
        },
    }


def summary(rows: list[dict]) -> str:
    """A markdown table: per scenario and way, mean IU and each class's IU, mean over the seeds (min-max)."""
    lines = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        done = [r for r in rows if r["scenario"] == scenario and "mean_iou" in r]
        if not done:
            continue
        names = list(done[0]["per_class_iou"])
        lines += ["", f"{scenario}:", "", "| way | mean IU | " + " | ".join(names) + " |",
                  "|---|" + "---:|" * (len(names) + 1)]
        for way in dict.fromkeys(r["way"] for r in rows if r["scenario"] == scenario):
            runs = [r for r in rows if r["scenario"] == scenario and r["way"] == way]
            if any("refused" in r for r in runs):
                lines.append(f"| {way} | refused: {runs[0].get('refused', '')[:60]} |")
                continue

            def cell(values: list[float]) -> str:
                return f"{np.mean(values):.3f} ({min(values):.2f}-{max(values):.2f})"

            classes = [cell([r["per_class_iou"][n] or 0.0 for r in runs]) for n in names]
            lines.append(f"| {way} | {cell([r['mean_iou'] for r in runs])} | " + " | ".join(classes) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-sparse"))
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scenarios", default=",".join(SCENARIO_WAYS), help="of: " + ", ".join(SCENARIO_WAYS))
    parser.add_argument("--ways", default=",".join(WAYS), help="comma-separated, of: " + ", ".join(WAYS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(2)
    image, full = write_scene(args.out / "train", args.size, seed=1)
    test_image, test_full = write_scene(args.out / "test", args.size, seed=3)
    ways = args.ways.split(",")
    rows, data_info = [], {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for scenario in args.scenarios.split(","):
            if scenario == "sparse":
                labels = args.out / "train" / f"sparse-{seed}.tif"
                counts = sparse_copy(full, labels, PATCHES, seed=seed)
                total = sum(counts.values())
                data_info[f"sparse-{seed}"] = {"labelled": counts, "fraction": round(total / args.size**2, 5),
                                               "building_share": round(counts.get(BUILDING, 0) / total, 5)}
                data = dict(image=image, labels=labels, test_image=test_image, test_labels=test_full)
            else:
                labels, test_labels = args.out / "train" / "buildings.gpkg", args.out / "test" / "buildings.gpkg"
                if not labels.exists():
                    data_info["footprints"] = {"building_share": round(footprints(full, labels), 5),
                                               "test_building_share": round(footprints(test_full, test_labels), 5)}
                data = dict(image=image, labels=labels, test_image=test_image, test_labels=test_labels)
            log.info("%s seed %d: %s", scenario, seed, data_info.get(f"sparse-{seed}", data_info.get("footprints")))
            for way in SCENARIO_WAYS[scenario]:
                if way in ways:
                    rows.append(run_way(scenario, way, seed, data, args.out, args.steps))
                    log.info("%s", json.dumps(rows[-1]))
    results = args.out / "results.json"  # rows of earlier runs of other ways or seeds are kept
    if results.exists():
        ran = {(r["scenario"], r["way"], r["seed"]) for r in rows}
        earlier = json.loads(results.read_text())["results"]
        rows = [r for r in earlier if (r["scenario"], r["way"], r["seed"]) not in ran] + rows
    results.write_text(json.dumps({"data": data_info, "results": rows}, indent=1))
    print(json.dumps(data_info, indent=1))
    print(summary(sorted(rows, key=lambda r: (list(SCENARIO_WAYS).index(r["scenario"]), list(WAYS).index(r["way"])))))


if __name__ == "__main__":
    main()
