"""Is the confidence band calibrated? Expected calibration error of the top-class probability.

    .venv/bin/python benchmarks/confidence_calibration.py --seeds 11 12 13 --size 1024 [--stitch blend --tile 256]
    .venv/bin/python benchmarks/confidence_calibration.py --seeds 11 12 13 --gain 1.3 --haze 0.1   # another sensor

Each seed is a synthetic scene the shipped demo model never saw (docs/training.md: it trained on
seed 1 and validated on seed 2). Each is segmented by ``fcnseg.segment`` with ``confidence=True``
(``--stitch``, ``--tile``: default, the tiling ``segment`` chooses on this machine) and the band in labels.zarr is compared with
the scene's ground truth (labels.tif), valid pixels only: in 15 equal-width bins of confidence,
ECE = sum over bins of (pixels in bin / pixels) x |accuracy in bin - mean confidence in bin|.
``--gain``/``--haze`` shift the scenes' radiometry (``synth.Radiometry``): how calibration holds
on data unlike the training's. Prints one row per scene and for all of them pooled, then the pooled reliability table, as
Markdown (docs/benchmarks.md holds the table).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import zarr

BINS = 15


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> tuple[float, list[tuple]]:
    """ECE and the reliability rows (low, high, pixels, mean confidence, accuracy) of probabilities
    ``confidence`` (floats in [0, 1]) against ``correct`` (bool), in ``bins`` equal-width bins."""
    index = np.minimum((confidence * bins).astype(np.intp), bins - 1)
    rows, ece, total = [], 0.0, len(confidence)
    for b in range(bins):
        mine = index == b
        n = int(mine.sum())
        if not n:
            continue
        mean, accuracy = float(confidence[mine].mean()), float(correct[mine].mean())
        ece += n / total * abs(accuracy - mean)
        rows.append((b / bins, (b + 1) / bins, n, mean, accuracy))
    return ece, rows


def scene_pixels(seed: int, size: int, work: Path, client, stitch: str, tile: int | None,
                 radiometry) -> tuple[np.ndarray, np.ndarray, float]:
    """(confidence as probabilities, correct) over the scene's valid pixels, and the run's seconds."""
    import fcnseg
    from fcnseg.pipeline.synth import write_scene

    image, labels_tif = write_scene(work / f"scene{seed}", size, seed, radiometry=radiometry)
    out = work / f"out{seed}"
    started = time.perf_counter()
    fcnseg.segment(image, out, client=client, stitch=stitch, tile=tile, confidence=True, cog=False, polygons=False, quicklook=False, stac=False)
    seconds = time.perf_counter() - started
    group = zarr.open_group(str(out / "labels.zarr"), mode="r")
    predicted, codes = group["labels"][:], group["confidence"][:]
    with rasterio.open(labels_tif) as src:
        truth, truth_nodata = src.read(1), src.nodata
    valid = (predicted != 255) & (truth != truth_nodata)
    return codes[valid] / 254.0, predicted[valid] == truth[valid], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--stitch", choices=["crop", "blend"], default="crop")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--gain", type=float, default=1.0, help="Sensor gain, all bands.")
    parser.add_argument("--haze", type=float, default=0.0, help="Haze (0..0.5).")
    args = parser.parse_args()
    from fcnseg.pipeline.cluster import in_process_client
    from fcnseg.pipeline.cluster_specs import torch_threads
    from fcnseg.pipeline.synth.radiometry import Radiometry

    radiometry = Radiometry(gain=(args.gain,) * 4, haze=args.haze)

    pooled_conf, pooled_correct = [], []
    print(f"| scene (seed, {args.size} px, {args.stitch}, tile {args.tile or 'default'}, gain {args.gain}, haze {args.haze}) | pixels | accuracy | mean confidence | ECE ({BINS} bins) | segment s |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp, in_process_client(torch_threads(1)) as client:
        for seed in args.seeds:
            confidence, correct, seconds = scene_pixels(seed, args.size, Path(tmp), client, args.stitch, args.tile, radiometry)
            ece, _ = calibration(confidence, correct)
            print(f"| {seed} | {len(correct):,} | {correct.mean():.4f} | {confidence.mean():.4f} | {ece:.4f} | {seconds:.1f} |")
            pooled_conf.append(confidence)
            pooled_correct.append(correct)
    confidence, correct = np.concatenate(pooled_conf), np.concatenate(pooled_correct)
    ece, rows = calibration(confidence, correct)
    print(f"| all | {len(correct):,} | {correct.mean():.4f} | {confidence.mean():.4f} | {ece:.4f} | |")
    print("\n| confidence bin | pixels | mean confidence | accuracy |\n|---|---:|---:|---:|")
    for low, high, n, mean, accuracy in rows:
        print(f"| {low:.3f}-{high:.3f} | {n:,} | {mean:.4f} | {accuracy:.4f} |")


if __name__ == "__main__":
    main()
