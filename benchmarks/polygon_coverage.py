"""Do an output's polygons form a coverage? Overlapping pairs, area sum against union, GEOS validity.

    python benchmarks/polygon_coverage.py OUT [OUT ...]
    python benchmarks/polygon_coverage.py --specks DIR

OUT: folders ``fcnseg segment`` wrote (polygons.parquet, run.json). Prints one JSON line per
folder: polygons, overlapping pairs and their area, the polygons' area sum and their union's area
(m²), whether ``shapely.coverage_is_valid`` holds, and run.json's vectorize seconds.

``--specks DIR``: the sieve's cost where a cell holds tens of thousands of small regions: a 2048²
rotated synthetic label map (seed 9) with 1 % of its valid pixels set to a random class, in one
2048² cell, vectorised with ``--simplify 2 --min-area 50``; prints regions merged, seconds, peak MB.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely


def coverage_figures(out: Path) -> dict:
    """The figures of one output folder (why: the module's docstring)."""
    geometries = gpd.read_parquet(out / "polygons.parquet").geometry.values
    a, b = shapely.STRtree(geometries).query(geometries, predicate="intersects")
    pair = a < b
    shared = shapely.area(shapely.intersection(geometries[a[pair]], geometries[b[pair]]))
    seconds = json.loads((out / "run.json").read_text())["seconds"]
    return {
        "out": str(out), "polygons": len(geometries), "overlapping_pairs": int(np.count_nonzero(shared > 0)),
        "overlap_m2": round(float(shared.sum()), 1), "area_sum_m2": round(float(shapely.area(geometries).sum()), 1),
        "union_m2": round(float(shapely.area(shapely.union_all(geometries))), 1),
        "coverage_is_valid": bool(shapely.coverage_is_valid(geometries)),
        "vectorize_seconds": seconds.get("vectorize"),
    }


def speck_figures(folder: Path) -> dict:
    """The ``--specks`` figures (why: the module's docstring)."""
    import resource

    import rasterio

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from stores import store_from_array

    from fcnseg.pipeline.products.vectorize import VectorizeOptions, vectorize_store
    from fcnseg.pipeline.synth import write_scene

    folder.mkdir(parents=True, exist_ok=True)
    _, labels_tif = write_scene(folder, 2048, seed=9, rotate=15.0, overwrite=True)
    with rasterio.open(labels_tif) as src:
        labels = src.read(1)
    rng = np.random.default_rng(0)
    specks = (rng.random(labels.shape) < 0.01) & (labels != 255)
    labels[specks] = rng.integers(0, 6, int(specks.sum()))
    store = store_from_array(folder / "specks.zarr", labels, chunk=512, class_names=[str(k) for k in range(6)],
                             class_colors=[(0, 0, 0)] * 6)
    report = vectorize_store(store, folder / "specks.parquet", None, VectorizeOptions(simplify=2, min_area=50))
    return {"polygons": report.polygons, "merged_or_dropped": report.dropped, "seconds": round(report.seconds, 2),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--specks"]:
        print(json.dumps(speck_figures(Path(sys.argv[2]))))
    else:
        for folder in sys.argv[1:]:
            print(json.dumps(coverage_figures(Path(folder))))
