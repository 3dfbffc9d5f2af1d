"""labels.tif from a label store: seconds and peak memory, assembled from the store's pyramid
against the way before it (the same store without its pyramid: staged DEFLATE, overviews by GDAL
with mode resampling, copied on one thread).

    .venv/bin/fcnseg synth /tmp/s4096 --size 4096 --seed 5
    .venv/bin/python benchmarks/cog_export.py /tmp/s4096/labels.tif 2048     # LABELS CHUNK

LABELS is a labels GeoTIFF (``fcnseg synth``'s ground truth) or a labels.zarr (a segment run's);
it is copied into a fresh store chunk by chunk through ``write_chunk`` (which writes the per-chunk
levels), then ``finish_pyramid``. Each export runs in a fresh process (its own peak).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rasterio

from fcnseg.pipeline.store import (
    LABELS,
    MULTISCALES,
    create_store,
    finish_pyramid,
    open_store,
    store_geometry,
    write_chunk,
)
from fcnseg.pipeline.tiles import chunk_windows

EXPORT = """
import sys, time
from pathlib import Path
from fcnseg.pipeline.products.cog import export_labels_cog
def status(key):
    return int(Path("/proc/self/status").read_text().split(key + ":")[1].split()[0]) / 1024
Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark: the export alone
before, started = status("VmRSS"), time.perf_counter()
export_labels_cog(sys.argv[1], sys.argv[2])
print(time.perf_counter() - started, status("VmHWM") - before)
"""


def copy_store(source: str, out: Path, chunk: int) -> float:
    """``source`` as a new store of ``chunk`` px chunks with its pyramid; the seconds the chunks took."""
    if Path(source).is_dir():
        group = open_store(source, mode="r")
        array = group[LABELS]
        crs, transform = store_geometry(group)
        names, colors, (height, width) = array.attrs["class_names"], array.attrs["class_colors"], array.shape
        read = lambda window: array[window.toslices()]  # noqa: E731
    else:
        src = rasterio.open(source)
        names, colors = json.loads(src.tags()["class_names"]), json.loads(src.tags()["class_colors"])
        crs, transform, height, width = src.crs, src.transform, src.height, src.width
        read = lambda window: src.read(1, window=window)  # noqa: E731
    store = create_store(out, height=height, width=width, crs=crs, transform=transform, chunk=chunk,
                         class_names=names, class_colors=colors, attrs={})
    started = time.perf_counter()
    for window in chunk_windows(height, width, (chunk, chunk)):
        write_chunk(store, window, read(window))
    finish_pyramid(store)
    return time.perf_counter() - started


def without_pyramid(store: Path) -> None:
    """The store as an earlier version left it: no multiscales layout (its levels are then ignored)."""
    del open_store(store).attrs[MULTISCALES]


def export(store: Path, out: Path) -> tuple[float, float]:
    result = subprocess.run([sys.executable, "-c", EXPORT, str(store), str(out)], capture_output=True, text=True,
                            check=True)
    seconds, peak = result.stdout.split()[-2:]
    return float(seconds), float(peak)


def main(source: str, chunk: int, repeats: int = 3) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "labels.zarr"
        written = copy_store(source, store, chunk)
        print(f"{source}, chunk {chunk}: store written in {written:.2f} s (chunks, their levels, finish_pyramid)")
        for name in ("pyramid", "before (GDAL overviews)"):
            if name != "pyramid":
                without_pyramid(store)
            runs = [export(store, Path(folder) / "labels.tif") for _ in range(repeats)]
            seconds = sorted(s for s, _ in runs)
            print(f"  {name}: {seconds[len(seconds) // 2]:.2f} s (median of {repeats}, "
                  f"{seconds[0]:.2f}-{seconds[-1]:.2f}), peak +{max(p for _, p in runs):.0f} MB")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
