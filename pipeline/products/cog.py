"""Zarr label store -> Cloud-Optimized GeoTIFF, streamed chunk by chunk.

GDAL's COG driver wants a whole dataset to copy from, so the labels are first written window by
window into a tiled GeoTIFF beside the target, overviews are built on it with *mode* resampling
(a class map must never be averaged), and the COG driver then copies it (reusing those overviews)
block by block. The colour table and the class names travel inside the TIFF, so the single file
is self-describing in QGIS and GDAL. The result appears under its final name only when complete.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

from fcnseg.atomic import partial_path
from fcnseg.pipeline.io import atomic_write, bounded_gdal_cache
from fcnseg.pipeline.store import (
    LABELS,
    NODATA,
    PROBABILITIES,
    PROBABILITY_SCALE,
    open_store,
    require_complete,
    store_geometry,
)
from fcnseg.pipeline.tiles import chunk_windows

BLOCK = 512


def overview_factors(height: int, width: int, smallest: int = 256) -> list[int]:
    """2, 4, 8 ... until the overview fits in ``smallest`` pixels."""
    factors, factor = [], 2
    while max(height, width) / factor >= smallest / 2 and factor <= 2**12:
        factors.append(factor)
        factor *= 2
    return factors


def export_labels_cog(store_path: str | Path, out_path: str | Path) -> Path:
    """labels.zarr -> labels.tif (COG: uint8, nodata 255, DEFLATE, mode overviews, colour table, class names)."""
    group = open_store(store_path, mode="r")
    require_complete(group, store_path)  # never a product of an interrupted run
    labels = group[LABELS]
    names = labels.attrs["class_names"]
    colors = labels.attrs["class_colors"]
    colormap = {i: (*map(int, c), 255) for i, c in enumerate(colors)}
    colormap[NODATA] = (0, 0, 0, 0)

    def write_bands(dst) -> None:
        for window in chunk_windows(*labels.shape, labels.chunks):
            rows, cols = window.toslices()
            dst.write(labels[rows, cols], 1, window=window)
        dst.write_colormap(1, colormap)
        dst.set_band_description(1, "class")
        dst.update_tags(class_names=json.dumps(names), class_colors=json.dumps(colors))
        dst.update_tags(1, **{f"CLASS_{i}": n for i, n in enumerate(names)})

    return _write_cog(group, out_path, 1, "uint8", write_bands)


def export_probabilities_cog(store_path: str | Path, out_path: str | Path) -> Path:
    """probabilities in the store -> probabilities.tif (COG, one uint8 band per class, value = p * 254)."""
    group = open_store(store_path, mode="r")
    require_complete(group, store_path)  # never a product of an interrupted run
    probs = group[PROBABILITIES]
    names = probs.attrs["class_names"]

    def write_bands(dst) -> None:
        for window in chunk_windows(*probs.shape[1:], probs.chunks[1:]):
            rows, cols = window.toslices()
            dst.write(probs[:, rows, cols], window=window)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
            dst.update_tags(i, scale=str(1 / PROBABILITY_SCALE))
        dst.update_tags(class_names=json.dumps(names), scale_factor=str(1 / PROBABILITY_SCALE))

    return _write_cog(group, out_path, len(names), "uint8", write_bands, resampling=Resampling.average)


def _write_cog(group, out_path, count: int, dtype: str, write_bands, resampling: Resampling = Resampling.mode) -> Path:
    out_path = Path(out_path)
    crs, transform = store_geometry(group)
    height, width = group[LABELS].shape
    staging = partial_path(out_path.with_name(f"{out_path.stem}.staging.tif"))
    profile = dict(
        driver="GTiff", width=width, height=height, count=count, dtype=dtype, nodata=NODATA, crs=crs,
        transform=transform, tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate", BIGTIFF="IF_SAFER",
    )
    try:
        with atomic_write(out_path) as partial, bounded_gdal_cache(), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a raster in pixel coordinates is fine
            with rasterio.open(staging, "w", **profile) as dst:
                write_bands(dst)
            with rasterio.open(staging, "r+") as dst:
                dst.build_overviews(overview_factors(height, width), resampling)
            rasterio.shutil.copy(
                staging, partial, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=BLOCK, OVERVIEWS="FORCE_USE_EXISTING",
                RESAMPLING=resampling.name.upper(), BIGTIFF="IF_SAFER",
            )
    finally:
        staging.unlink(missing_ok=True)
        Path(f"{staging}.ovr").unlink(missing_ok=True)
    return out_path

