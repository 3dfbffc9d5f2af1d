"""``fcnseg query --aoi FILE --by FIELD`` on 10⁴ parcels: wall time and peak memory, 10³ against 10⁴.

The store: ``fcnseg synth --size 4096 --rotate 20`` (1 m pixels, EPSG:32633, valid data a square
turned 20 degrees in a stair-stepped nodata collar), then ``fcnseg segment`` with the demo model
(labels.zarr only: no COG, polygons, quicklook or STAC); both kept in OUT and reused by a rerun.

The parcels: Voronoi cells of 10⁴ random points (seed 0) over the scene's square, about 41 x 41 m
each, written in EPSG:4326 (the store is in UTM: every feature is reprojected); 41 % of them
have nodata pixels (37 % lie wholly in the collar: rows of zeros). 1 % are turned into bow-ties (the cell's four bounds corners in
crossed order, invalid), so the warnings path and make_valid are timed too. ``parcels-1000``
holds the first 10³ of the same cells: the same cell sizes, a tenth of the features;
``parcels-20000`` the 10⁴ twice (the second copy's ids end in "b"), twice the features.

Each measurement is a fresh ``fcnseg query`` process: wall seconds and its peak RSS
(``ru_maxrss`` of the child; the machine's other load is printed beside it). Per-feature answers
stream to the file in batches and the store is read through a cache of 4 chunks, so the peak
should be flat from 10⁴ to 2 x 10⁴ features (10³ is one batch: the allocator has not settled)
while the time grows with them (``--batches``: RSS and the Python heap after each batch of one
process). exactextract 0.3 (``unique`` and ``frac`` per feature, coverage-weighted: another rule,
timed as a peer) runs on labels.tif written from the same store, parcels in UTM.

    .venv/bin/python benchmarks/query_features.py [OUT]     # OUT=bench-query-features; 1 min (+1 min the first time)
    .venv/bin/python benchmarks/query_features.py --batches [OUT]   # RSS and Python heap after each batch of 10³
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

FCNSEG = str(Path(sys.executable).with_name("fcnseg"))
SIZE = 4096
FEATURES = 10_000


def run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")


def make_store(out: Path) -> Path:
    """The segmented 4096² scene (made once, then reused)."""
    seg = out / "seg"
    if not (seg / "run.json").exists():
        run([FCNSEG, "synth", str(out / "scene"), "--size", str(SIZE), "--seed", "3", "--rotate", "20"])
        run([FCNSEG, "segment", str(out / "scene" / "image.tif"), "--out", str(seg), "--no-cog", "--no-polygons",
             "--no-quicklook", "--no-stac"])
    return seg / "labels.zarr"


def make_parcels(out: Path, store: Path) -> dict[int, Path]:
    """Voronoi parcels over the scene, in EPSG:4326, 1 % bow-ties; all of them and the first 10³."""
    from fcnseg.pipeline.analysis.label_raster import open_labels

    with open_labels(store) as labels:
        crs, (minx, miny), (maxx, maxy) = labels.crs, labels.transform @ (0, labels.height), labels.transform @ (
            labels.width, 0)
    rng = np.random.default_rng(0)
    points = shapely.points(rng.uniform(minx, maxx, FEATURES), rng.uniform(miny, maxy, FEATURES))
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(points), extend_to=shapely.box(
        minx, miny, maxx, maxy)))
    cells = shapely.intersection(cells, shapely.box(minx, miny, maxx, maxy))
    order = np.argsort([shapely.get_coordinates(c)[:, 1].max() for c in cells], kind="stable")[::-1]
    cells = cells[order]  # north to south, as a parcel register often is
    bad = rng.random(len(cells)) < 0.01
    for i in np.flatnonzero(bad):
        x0, y0, x1, y1 = cells[i].bounds
        cells[i] = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])
    frame = gpd.GeoDataFrame({"parcel": [f"P{i:05d}" for i in range(len(cells))], "bowtie": bad}, geometry=cells,
                             crs=crs).to_crs("EPSG:4326")
    twice = gpd.GeoDataFrame(pd.concat([frame, frame.assign(parcel=frame["parcel"] + "b")], ignore_index=True),
                             crs=frame.crs)
    paths = {}
    for n in (1000, len(frame), 2 * len(frame)):
        paths[n] = out / f"parcels-{n}.gpkg"
        if not paths[n].exists():
            (frame.iloc[:n] if n <= len(frame) else twice).to_file(paths[n])
    utm = out / "parcels-utm.gpkg"
    if not utm.exists():
        frame.to_crs(crs).to_file(utm)
    paths[0] = utm
    return paths


def measured(args: list[str]) -> dict:
    """Wall seconds and peak RSS (MB) of one fresh process running ``args``."""
    code = ("import resource, subprocess, sys, time\n"
            "t = time.perf_counter(); done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "print(done.returncode, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.stderr.write(done.stderr[-2000:])\n")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    status, seconds, rss = done.stdout.split()
    if status != "0":
        sys.exit(f"{' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return {"seconds": round(float(seconds), 1), "peak_rss_mb": round(int(rss) / 1024), "load": os.getloadavg()[0]}


def exactextract_peer(out: Path, store: Path, parcels: Path) -> dict:
    """exactextract's unique/frac per feature on labels.tif from the same store, parcels in UTM."""
    import rasterio

    from fcnseg.pipeline.analysis.label_raster import open_labels
    from fcnseg.pipeline.tiles import chunk_windows

    tif = out / "labels.tif"
    if not tif.exists():
        with open_labels(store) as labels, rasterio.open(
                tif, "w", driver="GTiff", width=labels.width, height=labels.height, count=1, dtype="uint8",
                crs=labels.crs, transform=labels.transform, nodata=255, tiled=True, compress="deflate") as dst:
            for window in chunk_windows(labels.height, labels.width, labels.block):
                dst.write(labels.read(window)[0], 1, window=window)
    code = ("import sys, time, resource, geopandas, rasterio\nfrom exactextract import exact_extract\n"
            "t = time.perf_counter()\nparcels = geopandas.read_file(sys.argv[2])\n"
            "with rasterio.open(sys.argv[1]) as src:\n"
            "    r = exact_extract(src, parcels, ['unique', 'frac'], include_cols=['parcel'], output='pandas')\n"
            "print(len(r), time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tif), str(parcels)], capture_output=True, text=True,
                          check=True)
    rows, seconds, rss = done.stdout.split()
    return {"features": int(rows), "seconds": round(float(seconds), 1), "peak_rss_mb": round(int(rss) / 1024),
            "load": os.getloadavg()[0]}


def batch_memory(store: Path, parcels: Path) -> list[dict]:
    """In this process: RSS and the Python heap (tracemalloc) after each batch of 1000 features of
    the 10⁴, the rows dropped as a writer drops them: what fcnseg holds must stay flat."""
    import logging
    import tracemalloc

    import psutil

    from fcnseg.pipeline.analysis.features import iter_feature_batches

    logging.getLogger("fcnseg").setLevel(logging.ERROR)  # the bow-ties' warnings
    tracemalloc.start()
    series = []
    for i, _ in enumerate(iter_feature_batches(store, parcels, "parcel")):
        series.append({"batch": i, "rss_mb": round(psutil.Process().memory_info().rss / 2**20),
                       "python_heap_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 1)})
    return series


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = Path(args[0] if args else "bench-query-features")
    out.mkdir(parents=True, exist_ok=True)
    store = make_store(out)
    parcels = make_parcels(out, store)
    if "--batches" in sys.argv:
        print(json.dumps({"batches": batch_memory(store, parcels[FEATURES]), "load": os.getloadavg()[0]}))
        return
    rows = []
    for n in (1000, FEATURES, 2 * FEATURES):
        for suffix in ("parquet", "gpkg"):
            table = out / f"answers-{n}.{suffix}"
            figures = measured([FCNSEG, "query", str(store), "--aoi", str(parcels[n]), "--by", "parcel",
                                "--output", str(table), "--overwrite"])
            rows.append({"features": n, "output": suffix, **figures})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"peer": "exactextract 0.3 unique+frac", **exactextract_peer(out, store, parcels[0])}))


if __name__ == "__main__":
    main()
