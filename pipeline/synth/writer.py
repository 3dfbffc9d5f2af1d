"""Writing a scene to disk: image.tif and labels.tif as tiled GeoTIFFs, streamed block by block."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.windows import Window

from fcnseg.pipeline.io import atomic_write
from fcnseg.pipeline.synth.render import check_window, render_window
from fcnseg.pipeline.synth.spec import BAND_NAMES, CLASSES, CRS, IMAGE_NODATA, LABEL_NODATA, ORIGIN, PIXEL_SIZE, TILE

logger = logging.getLogger(__name__)


def write_scene(
    out_dir: Path,
    size: int,
    seed: int = 0,
    *,
    collar: int = 0,
    block: int = 1024,
) -> tuple[Path, Path]:
    """Write ``image.tif`` and ``labels.tif`` of a scene, one block at a time.

    Memory is bounded by ``block`` (never by ``size``).  Both files are written under
    temporary names and renamed into place only when complete, so an interrupted run
    leaves no file that looks finished.  Returns (image path, labels path).
    """
    if block <= 0:
        raise ValueError(f"block must be positive, got {block}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = (out_dir / "image.tif", out_dir / "labels.tif")
    check_window(size, 0, 0, size, size, collar)
    started = time.perf_counter()
    # labels outermost: image.tif is renamed into place first, then labels.tif
    with atomic_write(final[1]) as lab_tmp, atomic_write(final[0]) as img_tmp:
        with (
            rasterio.open(img_tmp, "w", **_image_profile(size)) as img_ds,
            rasterio.open(lab_tmp, "w", **_label_profile(size)) as lab_ds,
        ):
            _describe_datasets(img_ds, lab_ds)
            for window in _blocks(size, block):
                image, labels = render_window(seed, size, *window, collar=collar)
                logger.debug("rendering block rows %d+%d cols %d+%d", *window)
                win = Window(window[1], window[0], window[3], window[2])
                img_ds.write(image, window=win)
                lab_ds.write(labels, 1, window=win)
    logger.info("wrote synthetic scene seed=%d size=%d to %s in %.1f s",
                seed, size, out_dir, time.perf_counter() - started)
    return final


def _image_profile(size: int) -> dict:
    """Creation options for image.tif: tiled, DEFLATE + horizontal predictor."""
    transform = Affine(PIXEL_SIZE, 0.0, ORIGIN[0], 0.0, -PIXEL_SIZE, ORIGIN[1])  # = from_origin(*ORIGIN, ...)
    return dict(
        driver="GTiff", width=size, height=size, count=len(BAND_NAMES), dtype="uint16",
        nodata=IMAGE_NODATA, crs=CRS, transform=transform,
        tiled=True, blockxsize=TILE, blockysize=TILE, compress="deflate", predictor=2,
        interleave="pixel", BIGTIFF="IF_SAFER",
    )


def _label_profile(size: int) -> dict:
    """Creation options for labels.tif: one uint8 band, nodata 255, tiled, DEFLATE."""
    profile = _image_profile(size)
    profile.update(count=1, dtype="uint8", nodata=LABEL_NODATA, predictor=1)
    profile.pop("interleave")
    return profile


def _describe_datasets(img_ds, lab_ds) -> None:
    """Band names, palette and class tags, so GIS tools show the data meaningfully."""
    img_ds.descriptions = BAND_NAMES
    lab_ds.set_band_description(1, "class")
    lab_ds.write_colormap(1, {i: (*c.color, 255) for i, c in enumerate(CLASSES)})
    lab_ds.update_tags(
        class_names=json.dumps([c.name for c in CLASSES]),
        class_colors=json.dumps([list(c.color) for c in CLASSES]),
    )


def _blocks(size: int, block: int):
    """Row-major (row_off, col_off, height, width) windows covering the scene."""
    for r in range(0, size, block):
        for c in range(0, size, block):
            yield r, c, min(block, size - r), min(block, size - c)
