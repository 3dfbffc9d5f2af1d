"""Do an output's polygons form a coverage? Overlapping pairs, area sum against union, GEOS validity.

    python benchmarks/polygon_coverage.py OUT [OUT ...]

OUT: folders ``fcnseg segment`` wrote (polygons.parquet, run.json). Prints one JSON line per
folder: polygons, overlapping pairs and their area, the polygons' area sum and their union's area
(m²), whether ``shapely.coverage_is_valid`` holds, and run.json's vectorize seconds.
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


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(json.dumps(coverage_figures(Path(folder))))
