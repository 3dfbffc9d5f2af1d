"""Peak memory of one forward pass per input pixel, on the CPU (the figures behind ``models/sizing.py``).

    .venv/bin/python benchmarks/forward_memory.py fcn8s 0.125 1536     # ARCH WIDTH SIDE
"""

import sys
from pathlib import Path

import torch

from fcnseg.models.fcn import build_model


def status_mb(key: str) -> float:
    return int(Path("/proc/self/status").read_text().split(key + ":")[1].split()[0]) / 1024


if __name__ == "__main__":
    torch.set_num_threads(1)
    arch, width, side = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    model = build_model(arch, 4, 6, width).eval()
    x = torch.randn(1, 4, side, side)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark: the pass alone
    before = status_mb("VmRSS")
    with torch.inference_mode():
        model(x).float().argmax(1)
    extra = status_mb("VmHWM") - before
    print(f"{arch} width {width} {side}²: +{extra:.0f} MB, {extra * 2**20 / side / side:.0f} B/px")
