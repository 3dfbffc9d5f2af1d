"""Zarr label store -> Cloud-Optimized GeoTIFF, streamed chunk by chunk.

GDAL's COG driver wants a whole dataset to copy from, and GDAL (3.10 here) cannot read the Zarr v3
store, so the labels are staged, window by window, as tiled GeoTIFFs beside the target: full
resolution, and each of the store's overview levels (*mode* overviews made chunk by chunk on the
workers, ``pyramid``; a class map is never averaged). A VRT declares the levels as the overviews
of full resolution, and the COG driver copies it block by block, compressing on every core and
taking those overviews as they are (nothing is resampled again). The colour table and the class
names travel inside the TIFF, so the single file is self-describing in QGIS and GDAL. The result
appears under its final name only when complete.

A store written before pyramids (or any store without all its levels) is exported as it was then:
staged once, overviews built by GDAL with mode resampling. probabilities.tif and confidence.tif are
made that way too, with *average* overviews.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.etree import ElementTree

import rasterio
import rasterio.shutil
import zarr
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import DatasetWriter

from fcnseg.atomic import partial_path
from fcnseg.pipeline.classes import store_classes
from fcnseg.pipeline.io import atomic_write, atomic_write_text, bounded_gdal_cache
from fcnseg.pipeline.products.styles import labels_pam, labels_qml
from fcnseg.pipeline.pyramid import Level, overview_factors
from fcnseg.pipeline.store import (
    CONFIDENCE,
    LABELS,
    NODATA,
    PROBABILITIES,
    PROBABILITY_SCALE,
    level_path,
    open_store,
    require_complete,
    store_geometry,
    store_levels,
)
from fcnseg.pipeline.tiles import chunk_windows

BLOCK = 512
#: The staged GeoTIFFs are read once, by the COG driver. PACKBITS (run lengths) writes and reads as
#: fast as no compression (DEFLATE, ZSTD, LZW: slower to stage) and takes a label map to a small
#: part of its size on disk (measured: docs/benchmarks.md#figures-quoted-in-code-comments).
STAGING_COMPRESS = "packbits"
#: Side (pixels) of the windows copied from the store at once: whole chunks, about this many.
STAGE_WINDOW = 2048


def export_labels_cog(store_path: str | Path, out_path: str | Path) -> Path:
    """labels.zarr -> labels.tif (COG: uint8, nodata 255, DEFLATE, mode overviews, colour table, class names)
    and its sidecars for GDAL and QGIS (``write_label_styles``)."""
    group = open_store(store_path, mode="r")
    require_complete(group, store_path)  # never a product of an interrupted run
    labels = group[LABELS]
    levels = store_levels(group)
    table = store_classes(labels.attrs)
    describe = class_description(table.names, table.colors)
    if levels is None:  # a store from before pyramids: GDAL makes the overviews, as it did then
        def write_bands(dst) -> None:
            _copy_windows(labels, dst)
            describe(dst)

        _write_cog(group, out_path, 1, "uint8", write_bands)
    else:
        _assemble_cog(group, levels, out_path, describe)
    write_label_styles(out_path, table.names, table.colors)
    return Path(out_path)


def write_label_styles(cog_path: str | Path, names: list[str], colors: Sequence[Sequence[int]]) -> list[Path]:
    """The sidecars that name labels.tif's classes for GDAL and QGIS (``styles``), beside it:
    ``labels.tif.aux.xml`` and ``labels.qml``; each appears whole."""
    cog_path = Path(cog_path)
    rgb = [tuple(map(int, c)) for c in colors]
    sidecars = {Path(f"{cog_path}.aux.xml"): labels_pam(names, rgb), cog_path.with_suffix(".qml"): labels_qml(names, rgb)}
    for path, text in sidecars.items():
        atomic_write_text(path, text)
    return list(sidecars)


def class_description(names: list[str], colors: Sequence[Sequence[int]]) -> Callable[[DatasetWriter], None]:
    """What labels.tif says about its classes: colour table (255 transparent), band description
    "class", class names and colours as dataset tags and per-band ``CLASS_<id>`` tags."""
    colormap = {i: (*map(int, c), 255) for i, c in enumerate(colors)}
    colormap[NODATA] = (0, 0, 0, 0)

    def describe(dst: DatasetWriter) -> None:
        dst.write_colormap(1, colormap)
        dst.set_band_description(1, "class")
        dst.update_tags(class_names=json.dumps(names), class_colors=json.dumps(colors))
        dst.update_tags(1, **{f"CLASS_{i}": n for i, n in enumerate(names)})

    return describe


def export_probabilities_cog(store_path: str | Path, out_path: str | Path) -> Path:
    """probabilities in the store -> probabilities.tif (COG, one uint8 band per class, value = p * 254)."""
    group = open_store(store_path, mode="r")
    require_complete(group, store_path)  # never a product of an interrupted run
    probs = group[PROBABILITIES]
    names = store_classes(probs.attrs).names

    def write_bands(dst) -> None:
        for window in chunk_windows(*probs.shape[1:], probs.chunks[1:]):
            rows, cols = window.toslices()
            dst.write(probs[:, rows, cols], window=window)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
            dst.update_tags(i, scale=str(1 / PROBABILITY_SCALE))
        dst.update_tags(class_names=json.dumps(names), scale_factor=str(1 / PROBABILITY_SCALE))

    return _write_cog(group, out_path, len(names), "uint8", write_bands, resampling=Resampling.average)


def export_confidence_cog(store_path: str | Path, out_path: str | Path) -> Path:
    """confidence in the store -> confidence.tif (COG, one uint8 band: the top class's p * 254, 255 = nodata)."""
    group = open_store(store_path, mode="r")
    require_complete(group, store_path)  # never a product of an interrupted run
    band = group[CONFIDENCE]

    def write_bands(dst) -> None:
        _copy_windows(band, dst)
        dst.set_band_description(1, "confidence")
        dst.scales, dst.offsets = (1 / PROBABILITY_SCALE,), (0.0,)  # GDAL's unscale gives p
        dst.update_tags(1, scale=str(1 / PROBABILITY_SCALE))
        dst.update_tags(scale_factor=str(1 / PROBABILITY_SCALE),
                        meaning="probability of the pixel's class (the top class), p * 254")

    return _write_cog(group, out_path, 1, "uint8", write_bands, resampling=Resampling.average)


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


def _assemble_cog(group: zarr.Group, levels: list[Level], out_path: str | Path,
                  describe: Callable[[DatasetWriter], None]) -> Path:
    """labels.tif from the store's labels and its overview levels, staged and copied by the COG driver."""
    out_path = Path(out_path)
    crs, transform = store_geometry(group)
    # hidden names of the target's own kind: what a killed export leaves, the next one removes (guard)
    staging, vrt, *level_files = (partial_path(out_path) for _ in range(2 + len(levels)))
    try:
        with atomic_write(out_path) as partial, bounded_gdal_cache(), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a raster in pixel coordinates is fine
            _stage(group[LABELS], staging, crs, transform, describe)
            for level, path in zip(levels, level_files):
                _stage(group[level_path(level)], path, crs, transform @ Affine.scale(level.factor))
            overviews_vrt(staging, level_files, vrt)
            rasterio.shutil.copy(
                vrt, partial, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=BLOCK, OVERVIEWS="FORCE_USE_EXISTING",
                NUM_THREADS="ALL_CPUS", BIGTIFF="IF_SAFER",
            )
    finally:
        for path in (staging, vrt, *level_files):
            path.unlink(missing_ok=True)
    return out_path


def _stage(array: zarr.Array, path: Path, crs: CRS | None, transform: Affine,
           describe: Callable[[DatasetWriter], None] | None = None) -> None:
    """One level of the store as a tiled GeoTIFF (STAGING_COMPRESS), written window by window."""
    height, width = array.shape
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8", nodata=NODATA, crs=crs,
                   transform=transform, tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress=STAGING_COMPRESS,
                   BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        if describe is not None:  # before the pixels: the colour table sets a tag GDAL cannot change once writing
            describe(dst)
        _copy_windows(array, dst)


def _copy_windows(array: zarr.Array, dst: DatasetWriter) -> None:
    """Copy a 2-D store array into band 1 of ``dst`` in windows of whole chunks (about STAGE_WINDOW px a side)."""
    step = tuple(c * max(1, STAGE_WINDOW // c) for c in array.chunks)
    for window in chunk_windows(*array.shape, step):
        rows, cols = window.toslices()
        dst.write(array[rows, cols], 1, window=window)


def overviews_vrt(full: Path, overviews: list[Path], vrt: Path) -> None:
    """A VRT of ``full`` (with its georeferencing, colour table and tags) whose band declares
    ``overviews`` (finest first) as its overviews: what the COG driver copies."""
    rasterio.shutil.copy(full, vrt, driver="VRT")
    tree = ElementTree.parse(vrt)
    band = tree.getroot().find("VRTRasterBand")
    for path in overviews:
        overview = ElementTree.SubElement(band, "Overview")
        ElementTree.SubElement(overview, "SourceFilename", relativeToVRT="1").text = path.name
        ElementTree.SubElement(overview, "SourceBand").text = "1"
    tree.write(vrt)
