"""Test-time augmentation (issue 26): mean IU and per-class IU with ``--tta none``, ``flip`` and ``d4``,
and the time factor against ``none``, in the same run.

- ``synthetic``: the shipped demo model (``models/weights/``, trained on synth's seed 1, validated on
  seed 2) scored on ``fcnseg synth`` scenes of seeds it never saw (default 11, 12, 13; ``--size`` px),
  with ``evaluate_raster`` (what ``fcnseg evaluate --tta`` runs: ``segment``'s tiles, halo and batches);
  the confusion matrices of the seeds summed per mode, and each seed's mean IU for the spread.
- ``real``: ``../shared/data/pan-buildings.tif`` is one panchromatic band; the demo model takes four
  (blue, green, red, NIR), so it cannot score it. With ``--real-steps N`` (> 0) a one-band FCN-8s
  (width 0.125) is trained for N steps on the scene's left half with its building footprints (as
  ``benchmarks/cross_scene.py`` does) and scored on the right half with each mode.

Seconds are wall time of ``evaluate_raster`` per mode over all scenes (reading included), on this
machine's CPU with torch's threads set to ``--threads``, and the process's CPU time (all its threads:
less disturbed by other jobs on a shared machine than the wall time): the least of ``--repeat`` rounds
in which the modes take turns; the factors are against ``none`` of the same run.
``--memory SIDE`` (default 1536; 0: skip): the peak memory of one forward pass of a SIDE² tile of the
demo model per mode (``tta_logits``), each in a fresh process (its RSS high-water mark over the pass,
as ``benchmarks/forward_memory.py`` measures): d4 runs its views one at a time, so it should cost
about one view's activations plus the input's copy and the sum, not eight.

    nice -n 10 .venv/bin/python benchmarks/tta.py                       # 768 px, seeds 11,12,13, no training
    nice -n 10 .venv/bin/python benchmarks/tta.py --real-steps 300      # and the real raster's one-band model
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

from fcnseg.models import DEMO_MODEL
from fcnseg.models.checkpoint import load_checkpoint
from fcnseg.models.metrics import metrics_from_confusion
from fcnseg.models.tta import TTA_MODES
from fcnseg.pipeline.synth import write_scene
from fcnseg.pipeline.training.evaluate import evaluate_raster

log = logging.getLogger("tta")

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "pan-buildings.tif"


def score(model_path: Path, tests: list[tuple[Path, Path]], tile: int | None, repeat: int = 1) -> list[dict]:
    """Per mode: mean IU and per-class IU over ``tests`` (confusions summed), each scene's mean IU, and the
    seconds over all scenes: the least of ``repeat`` rounds, the modes taking turns in each round (the
    machine is shared: the least is the figure least disturbed by other work)."""
    model, card = load_checkpoint(model_path)
    image, labels = tests[0]
    evaluate_raster(model, card, image, labels, device=torch.device("cpu"), tile=tile)  # warm-up, not timed
    rows = {mode: {"tta": mode, "rounds": []} for mode in TTA_MODES}
    for _ in range(repeat):
        for mode in TTA_MODES:
            confusion, per_scene = None, []
            started, cpu = time.perf_counter(), time.process_time()
            for image, labels in tests:
                metrics = evaluate_raster(model, card, image, labels, device=torch.device("cpu"), tile=tile, tta=mode)
                matrix = np.asarray(metrics["confusion"], np.int64)
                confusion = matrix if confusion is None else confusion + matrix
                per_scene.append(round(metrics["mean_iou"], 4))
            rows[mode]["rounds"].append(round(time.perf_counter() - started, 2))
            rows[mode].setdefault("cpu_rounds", []).append(round(time.process_time() - cpu, 2))
            metrics = metrics_from_confusion(confusion)
            per_class = zip(card.class_names, metrics["per_class_iou"], strict=True)
            rows[mode].update({"mean_iou": round(metrics["mean_iou"], 4), "pixel_acc": round(metrics["pixel_acc"], 4),
                               "per_scene_mean_iou": per_scene,
                               "per_class_iou": {n: None if v is None else round(v, 4) for n, v in per_class}})
            log.info("%s", json.dumps(rows[mode]))
    for row in rows.values():
        row["seconds"], row["cpu_seconds"] = min(row["rounds"]), min(row["cpu_rounds"])
        row["time_factor"] = round(row["seconds"] / rows["none"]["seconds"], 2)
        row["cpu_factor"] = round(row["cpu_seconds"] / rows["none"]["cpu_seconds"], 2)
    return list(rows.values())


def synthetic(out: Path, size: int, seeds: list[int], tile: int | None, repeat: int) -> list[dict]:
    tests = [write_scene(out / f"seed-{seed}", size, seed=seed, overwrite=True) for seed in seeds]
    return score(DEMO_MODEL, tests, tile, repeat)


def real_scores(out: Path, path: Path, steps: int, tile: int | None, repeat: int) -> list[dict]:
    """A one-band model trained on the left half (``cross_scene``'s halves and settings), scored on the right half."""
    import importlib.util

    from fcnseg.pipeline.training.request import AUGMENT_OFF, TrainRequest
    from fcnseg.pipeline.training.train import train_model

    spec = importlib.util.spec_from_file_location("cross_scene", Path(__file__).with_name("cross_scene.py"))
    cross_scene = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cross_scene)  # its halves of the real scene, one way of cutting them
    data = cross_scene.real_data(out / "real", path)
    request = TrainRequest(image=data["image"], labels=data["labels"], out=out / "real-1band.safetensors", steps=steps,
                           chip=128, batch_size=8, width=0.125, lr=1e-3, seed=0, val_every=100, progress=False,
                           **data["train"], **AUGMENT_OFF)  # as recorded: before augmentation was the default
    model_path, _, _ = train_model(request)
    return score(model_path, data["tests"]["right"], tile, repeat)


def status_mb(key: str) -> float:
    return int(Path("/proc/self/status").read_text().split(key + ":")[1].split()[0]) / 1024


def forward_memory(mode: str, side: int) -> tuple[float, float]:
    """In this process: MB the RSS high-water mark rises by over one ``tta_logits`` pass of a side² tile,
    and the least CPU seconds of three more passes (one thread: the model's cost alone, no reading)."""
    from fcnseg.models.inference import load_for_inference
    from fcnseg.models.tta import tta_logits

    torch.set_num_threads(1)
    model, card = load_for_inference(DEMO_MODEL, torch.device("cpu"))
    x = torch.randn(1, card.bands, side, side)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark: the pass alone
    before = status_mb("VmRSS")
    with torch.inference_mode():
        tta_logits(model, x, mode, card.nodata.fill).argmax(1)
        extra = status_mb("VmHWM") - before
        times = []
        for _ in range(3):
            started = time.process_time()
            tta_logits(model, x, mode, card.nodata.fill).argmax(1)
            times.append(time.process_time() - started)
    return extra, min(times)


def memory(side: int) -> dict[str, dict[str, float]]:
    """``forward_memory`` of each mode, each in a fresh process; the time factor against none."""
    found = {}
    for mode in TTA_MODES:
        line = subprocess.run([sys.executable, __file__, "--forward-memory", mode, str(side)], check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
        extra, seconds = (float(v) for v in line.split())
        found[mode] = {"mb": round(extra, 1), "seconds": round(seconds, 3),
                       "time_factor": round(seconds / found["none"]["seconds"], 2) if found else 1.0}
        log.info("forward pass %s %d²: %s", mode, side, found[mode])
    return found


def table(rows: list[dict]) -> str:
    names = list(rows[0]["per_class_iou"])
    lines = ["| tta | mean IU | per scene | " + " | ".join(names) + " | seconds (CPU) | time factor (CPU) |",
             "|---|---:|---|" + "---:|" * len(names) + "---:|---:|"]
    for r in rows:
        classes = " | ".join("-" if r["per_class_iou"][n] is None else f"{r['per_class_iou'][n]:.3f}" for n in names)
        scenes = ", ".join(f"{v:.3f}" for v in r["per_scene_mean_iou"])
        lines.append(f"| {r['tta']} | {r['mean_iou']:.4f} | {scenes} | {classes} | {r['seconds']:.1f}"
                     f" ({r['cpu_seconds']:.1f}) | {r['time_factor']:.2f} ({r['cpu_factor']:.2f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-tta"))
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--seeds", default="11,12,13")
    parser.add_argument("--tile", type=int, default=None, help="default: what segment picks on the CPU")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds; the least is reported")
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--real-steps", type=int, default=0, help="train a one-band model on the real scene (0: skip)")
    parser.add_argument("--memory", type=int, default=1536, help="tile side for the forward-pass memory (0: skip)")
    parser.add_argument("--forward-memory", nargs=2, metavar=("MODE", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.forward_memory:
        print(*forward_memory(args.forward_memory[0], int(args.forward_memory[1])))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    results: dict = {"load_before": os.getloadavg()}
    seeds = [int(s) for s in args.seeds.split(",")]
    results["synthetic"] = synthetic(args.out, args.size, seeds, args.tile, args.repeat)
    with rasterio.open(args.real) as src:
        bands = src.count
    results["real_bands"] = bands
    if args.real_steps > 0:
        results["real"] = real_scores(args.out, args.real, args.real_steps, args.tile, args.repeat)
    if args.memory:
        results["forward_pass"] = memory(args.memory)
    results["load_after"] = os.getloadavg()
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"synthetic ({args.size} px, seeds {args.seeds}, demo model):\n{table(results['synthetic'])}")
    print(f"\nreal ({args.real.name}): {bands} band(s); the demo model takes 4" + (
        f"; one-band model trained {args.real_steps} steps on the left half, scored on the right:\n"
        f"{table(results['real'])}"
        if "real" in results else ": not scored (--real-steps 0)"))
    if args.memory:
        print(f"\none forward pass of a {args.memory}² tile, demo model, one thread: MB above the process before it,"
              " CPU seconds (least of 3), factor: "
              + ", ".join(f"{m} +{v['mb']:.0f} MB {v['seconds']:.2f} s x{v['time_factor']:.2f}"
                          for m, v in results["forward_pass"].items()))
    print(f"\nload average before {results['load_before']}, after {results['load_after']}")


if __name__ == "__main__":
    main()
