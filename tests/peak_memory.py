"""Peak memory of one output step on a synthetic store, measured in a fresh process.

The store holds blocky class cells (96 px, off the 512 px chunk grid, some nodata) computed from
global coordinates, so a larger store is the same map continued, and regions cross chunk borders.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
import numpy as np
from pathlib import Path
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from fcnseg.pipeline.store import create_store, finish_pyramid, write_chunk
out, side, step, pattern = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
group = create_store(out / "s.zarr", height=side, width=side, crs=CRS.from_epsg(32633),
                     transform=Affine(1, 0, 0, 0, -1, 0), chunk=512, class_names=list("abcdef"),
                     class_colors=[(0, 0, 0)] * 6, attrs={})
def cells(r, c):
    rows, cols = np.mgrid[r:r + 512, c:c + 512] // 96
    labels = ((rows * 7 + cols * 13 + (rows * cols) % 5) % 6).astype(np.uint8)
    labels[(rows * 31 + cols * 17) % 23 == 0] = 255
    if pattern == "percolating":  # class 0 everywhere, each 96 px cell with a 40 px blob of another class
        y, x = np.mgrid[r:r + 512, c:c + 512] % 96
        labels = np.where((y >= 28) & (y < 68) & (x >= 28) & (x < 68), labels % 5 + 1, np.where(labels == 255, 255, 0))
        labels = labels.astype(np.uint8)
    return labels
for r in range(0, side, 512):
    for c in range(0, side, 512):
        write_chunk(group, Window(c, r, 512, 512), cells(r, c))
finish_pyramid(group)  # as a finished run leaves the store: every overview level
def status(key):
    return int(Path("/proc/self/status").read_text().split(key + ":")[1].split()[0]) / 1024
if step == "cog":
    from fcnseg.pipeline.products.cog import export_labels_cog as run
    args = (out / "s.zarr", out / "s.tif")
else:
    from fcnseg.pipeline.products.vectorize import vectorize_store as run
    args = (out / "s.zarr", out / "p.parquet", out / "p.gpkg")
del group
Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark: measure the step alone
before = status("VmRSS")
run(*args)
print(status("VmHWM") - before)
"""


def step_extra_mb(folder: Path, side: int, step: str, pattern: str = "cells") -> float:
    """How far one step (``cog`` or ``vectorize``) on a side x side store raises a fresh process's peak (MB).

    ``pattern``: "cells" (blocky classes, regions cross chunk borders) or "percolating" (one class
    connected through the whole map, with a hole every 96 px: the hardest map for polygons)."""
    folder.mkdir()
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(side), step, pattern],
                            capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])
