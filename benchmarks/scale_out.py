"""The stages after inference at scale: a 256-megapixel scene end to end, against a 4096² one.

    .venv/bin/python benchmarks/scale_out.py [--work DIR] [--workers 2] [--tiles 4]

The large scene is a VRT mosaic of the 4096² synthetic scene, 4 x 4 (no synthesis cost). Both run
``fcnseg segment`` with the default outputs on local workers. Printed per scene: the seconds and
megapixels per second of each stage, the run's peak memory (driver + workers, from run.json), and
the targets of issue 12: stages after inference <= 0.25 x inference, peak memory of the large run
<= 1.5 x the small one's, polygons valid with per-class area = pixels x pixel area.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import rasterio
import shapely

FCNSEG = str(Path(sys.executable).with_name("fcnseg"))
AFTER_INFERENCE = ("export", "vectorize", "publish")


def mosaic_vrt(tile_path: Path, out: Path, tiles: int) -> Path:
    """A VRT that repeats ``tile_path`` tiles x tiles times (same pixel size, origin of the first)."""
    with rasterio.open(tile_path) as src:
        width, height, count, dtype, nodata = src.width, src.height, src.count, src.dtypes[0], src.nodata
        t, crs = src.transform, src.crs
    geotransform = ", ".join(str(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    bands = []
    for band in range(1, count + 1):
        sources = "".join(
            f"<SimpleSource><SourceFilename relativeToVRT=\"0\">{tile_path}</SourceFilename>"
            f"<SourceBand>{band}</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{width}\" ySize=\"{height}\"/>"
            f"<DstRect xOff=\"{c * width}\" yOff=\"{r * height}\" xSize=\"{width}\" ySize=\"{height}\"/></SimpleSource>"
            for r in range(tiles) for c in range(tiles)
        )
        nodata_xml = "" if nodata is None else f"<NoDataValue>{nodata}</NoDataValue>"
        bands.append(f"<VRTRasterBand dataType=\"{gdal_type(dtype)}\" band=\"{band}\">{nodata_xml}{sources}</VRTRasterBand>")
    out.write_text(
        f"<VRTDataset rasterXSize=\"{width * tiles}\" rasterYSize=\"{height * tiles}\">"
        f"<SRS>{crs.to_wkt()}</SRS><GeoTransform>{geotransform}</GeoTransform>{''.join(bands)}</VRTDataset>"
    )
    return out


def gdal_type(dtype: str) -> str:
    return {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "float32": "Float32"}[dtype]


def segment(image: Path, out: Path, workers: int) -> dict:
    """One segment run with the default outputs; its run.json, with the wall time added."""
    shutil.rmtree(out, ignore_errors=True)  # a complete output would be skipped
    started = time.perf_counter()
    subprocess.run([FCNSEG, "segment", str(image), "--out", str(out), "--workers", str(workers)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = json.loads((out / "run.json").read_text())
    run["wall"] = time.perf_counter() - started
    return run


def check_polygons(out: Path, run: dict) -> str:
    """Every polygon valid; per class, pixels and m² of the polygons equal the run's class areas."""
    pixels: dict[int, int] = {}
    area: dict[int, float] = {}
    invalid = 0
    for batch in pq.ParquetFile(out / "polygons.parquet").iter_batches(columns=["class_id", "pixels", "area_m2", "geometry"]):
        geometries = shapely.from_wkb(batch.column("geometry").to_numpy(zero_copy_only=False))
        invalid += int((~shapely.is_valid(geometries)).sum())
        for class_id, p, a in zip(batch.column("class_id").to_pylist(), batch.column("pixels").to_pylist(),
                                  batch.column("area_m2").to_pylist()):
            pixels[class_id] = pixels.get(class_id, 0) + p
            area[class_id] = area.get(class_id, 0.0) + a
    wrong = [c["class_name"] for c in run["class_areas"]
             if pixels.get(c["class_id"], 0) != c["pixels"]
             or not np.isclose(area.get(c["class_id"], 0.0), c["area_m2"], rtol=1e-9)]
    return f"{invalid} invalid polygons; classes whose polygons' pixels or m² differ from the counts: {wrong or 'none'}"


def report(name: str, run: dict, megapixels: float) -> None:
    seconds = run["seconds"]
    after = sum(seconds.get(s, 0.0) for s in AFTER_INFERENCE)
    stages = "  ".join(f"{s} {seconds[s]:.1f} s ({megapixels / max(seconds[s], 1e-9):.1f} MP/s)"
                       for s in ("infer", *AFTER_INFERENCE) if s in seconds)
    print(f"{name}: {megapixels:.0f} MP, wall {run['wall']:.1f} s, peak memory {run['peak_memory_mb']:.0f} MB, "
          f"{run['polygons']} polygons")
    print(f"  {stages}")
    print(f"  after inference / inference = {after / seconds['infer']:.2f} (target <= 0.25)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench-scale"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tiles", type=int, default=4, help="the large scene is TILES x TILES of the 4096² one")
    args = parser.parse_args()
    scene = args.work / "scene" / "image.tif"
    if not scene.exists():
        subprocess.run([FCNSEG, "synth", str(scene.parent), "--size", "4096", "--seed", "5"], check=True,
                       stdout=subprocess.DEVNULL)
    large = mosaic_vrt(scene.resolve(), args.work / "mosaic.vrt", args.tiles)
    small_run = segment(scene, args.work / "out-small", args.workers)
    report("4096²", small_run, 4096**2 / 1e6)
    large_run = segment(large, args.work / "out-large", args.workers)
    report(f"{4096 * args.tiles}² mosaic", large_run, (4096 * args.tiles) ** 2 / 1e6)
    ratio = large_run["peak_memory_mb"] / small_run["peak_memory_mb"]
    print(f"peak memory large / small = {ratio:.2f} (target <= 1.5)")
    print(f"polygons of the large run: {check_polygons(args.work / 'out-large', large_run)}")


if __name__ == "__main__":
    main()
