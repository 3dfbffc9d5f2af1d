"""Print README's table: the paper's four metrics per architecture over all test scenes together.

Usage: python benchmarks/variants_table.py OUT_DIR fcn32s fcn16s fcn8s
Reads OUT_DIR/<arch>-test-*.json (from `fcnseg evaluate --json`) and sums their confusion matrices.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from fcnseg.models.checkpoint import read_card
from fcnseg.models.metrics import metrics_from_confusion


def main(out: Path, archs: list[str]) -> None:
    print("| model | pixel acc. | mean acc. | mean IU | f.w. IU | train seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for arch in archs:
        runs = sorted(out.glob(f"{arch}-test-*.json"))
        confusion = sum(np.array(json.loads(p.read_text())["confusion"]) for p in runs)
        m = metrics_from_confusion(confusion)
        seconds = read_card(out / f"{arch}.safetensors").training.seconds
        print(f"| {arch} | {m['pixel_acc']:.4f} | {m['mean_acc']:.4f} | {m['mean_iou']:.4f} | {m['fw_iou']:.4f} | {seconds:.0f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
