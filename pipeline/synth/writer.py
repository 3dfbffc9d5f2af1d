"""Writing a scene to disk: image.tif and labels.tif as GeoTIFFs, streamed window by window.

``tiled`` files (the default) are 256 px DEFLATE tiles written block by block;
``stripped`` ones are untiled and uncompressed, ``STRIP_ROWS`` rows a strip, as many
deliveries come, written in full-width bands of rows so that every strip is written
whole, once.  Either way memory is bounded by ``block``, never by ``size``.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import rasterio
from rasterio.windows import Window

from fcnseg.pipeline.io import atomic_write
from fcnseg.pipeline.overwrite import check_target
from fcnseg.pipeline.synth.options import check_layout, check_pixels, grid_for
from fcnseg.pipeline.synth.radiometry import Radiometry
from fcnseg.pipeline.synth.render import check_window, render_window
from fcnseg.pipeline.synth.spec import (
    BAND_SETS,
    CLASSES,
    CRS,
    ENCODINGS,
    GRIDS,
    LABEL_NODATA,
    STRIP_ROWS,
    TILE,
    Grid,
)

logger = logging.getLogger(__name__)

#: The tag (default domain) of both files, a JSON object: which file it is and the options that made the
#: scene. It is how synth recognises its own earlier output, which it replaces without --overwrite.
SYNTH_TAG = "fcnseg_synth"
#: The files of a scene folder, by the ``file`` their tag names.
SCENE_FILES = {"image": "image.tif", "labels": "labels.tif"}


def write_scene(
    out_dir: Path,
    size: int,
    seed: int = 0,
    *,
    collar: int = 0,
    rotate: float = 0.0,
    bands: int = 4,
    dtype: str = "uint16",
    crs: str = CRS,
    layout: str = "tiled",
    block: int = 1024,
    overwrite: bool = False,
    radiometry: Radiometry | None = None,
) -> tuple[Path, Path]:
    """Write ``image.tif`` and ``labels.tif`` of a scene, one window at a time.

    ``collar``, ``rotate``, ``bands`` and ``dtype`` shape the pixels (see ``render_window``),
    ``crs`` the georeferencing (``GRIDS``) and ``layout`` the file (``LAYOUTS``); every
    option is checked before anything is written.  ``radiometry`` shifts the scene's radiometry
    (recorded in the tag when not the identity).  Memory is bounded by ``block`` (never
    by ``size``).  Both files are written under temporary names and renamed into place
    only when complete, so an interrupted run leaves no file that looks finished.
    An image.tif or labels.tif already in ``out_dir`` is replaced only when synth wrote it
    (``SYNTH_TAG``) or with ``overwrite`` (``check_scene_folder``); other files there are left alone.
    Returns (image path, labels path).
    """
    if block <= 0:
        raise ValueError(f"block must be positive, got {block}")
    check_window(size, 0, 0, size, size, collar)
    check_pixels(collar, rotate, bands, dtype)
    check_layout(layout)
    grid = grid_for(crs)
    out_dir = Path(out_dir)
    check_scene_folder(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = (out_dir / SCENE_FILES["image"], out_dir / SCENE_FILES["labels"])
    look = dict(collar=collar, rotate=rotate, bands=bands, dtype=dtype)
    made = dict(seed=seed, size=size, **look, crs=grid.crs, layout=layout)
    if radiometry is not None and not radiometry.is_identity:  # a default scene's tag stays as it was
        made["radiometry"] = radiometry.tag()
    started = time.perf_counter()
    # labels outermost: image.tif is renamed into place first, then labels.tif
    with atomic_write(final[1]) as lab_tmp, atomic_write(final[0]) as img_tmp:
        with (
            rasterio.open(img_tmp, "w", **_image_profile(size, bands=bands, dtype=dtype, grid=grid, layout=layout)) as img_ds,
            rasterio.open(lab_tmp, "w", **_label_profile(size, grid=grid, layout=layout)) as lab_ds,
        ):
            _describe_datasets(img_ds, lab_ds, bands, dtype, made)
            for window in _windows(size, block, layout):
                image, labels = render_window(seed, size, *window, **look, radiometry=radiometry)
                logger.debug("rendering block rows %d+%d cols %d+%d", *window)
                win = Window(window[1], window[0], window[3], window[2])
                img_ds.write(image, window=win)
                lab_ds.write(labels, 1, window=win)
        check_scene_folder(out_dir, overwrite)  # again: a file may have appeared there while rendering
    logger.info("wrote synthetic scene seed=%d size=%d to %s in %.1f s",
                seed, size, out_dir, time.perf_counter() - started)
    return final


def check_scene_folder(out_dir: Path, overwrite: bool = False) -> None:
    """Refuse, before anything is written, an image.tif or labels.tif in ``out_dir`` that synth
    did not write (unless ``overwrite``), or a folder in their place: the rule of ``pipeline.overwrite``."""
    for file, name in SCENE_FILES.items():
        check_target(out_dir / name, option="OUT_DIR", kind=f"synth's own {name} (one with its {SYNTH_TAG} tag)",
                     is_own=lambda path, file=file: is_synth_file(path, file), overwrite=overwrite)


def is_synth_file(path: Path, file: str) -> bool:
    """True when ``path`` is a raster whose ``SYNTH_TAG`` says synth wrote it as ``file`` (image, labels)."""
    try:
        with warnings.catch_warnings():  # a probe: a file without georeferencing is simply not synth's
            warnings.simplefilter("ignore")
            with rasterio.open(path) as src:
                tag = src.tags().get(SYNTH_TAG)
    except (rasterio.errors.RasterioError, OSError):
        return False
    try:
        return tag is not None and json.loads(tag).get("file") == file
    except (ValueError, AttributeError):  # not JSON, or not an object
        return False


def _image_profile(
    size: int, *, bands: int = 4, dtype: str = "uint16", grid: Grid = GRIDS[CRS], layout: str = "tiled",
) -> dict:
    """Creation options for image.tif: pixel-interleaved, in ``layout`` (tiled: DEFLATE + predictor)."""
    return dict(
        driver="GTiff", width=size, height=size, count=len(BAND_SETS[bands]), dtype=dtype,
        nodata=ENCODINGS[dtype].nodata, crs=grid.crs, transform=grid.transform,
        **_layout_options(layout, predictor=3 if dtype == "float32" else 2),
        interleave="pixel", BIGTIFF="IF_SAFER",
    )


def _label_profile(size: int, *, grid: Grid = GRIDS[CRS], layout: str = "tiled") -> dict:
    """Creation options for labels.tif: one uint8 band, nodata 255, on the image's grid and in its layout."""
    profile = _image_profile(size, grid=grid, layout=layout)
    profile.update(count=1, dtype="uint8", nodata=LABEL_NODATA, **_layout_options(layout, predictor=1))
    profile.pop("interleave")
    return profile


def _layout_options(layout: str, predictor: int) -> dict:
    """Tiled: 256 px tiles, DEFLATE with ``predictor``; stripped: no tiles, no compression, STRIP_ROWS-row strips."""
    if layout == "stripped":
        return dict(tiled=False, blockysize=STRIP_ROWS)
    return dict(tiled=True, blockxsize=TILE, blockysize=TILE, compress="deflate", predictor=predictor)


def _describe_datasets(img_ds, lab_ds, bands: int, dtype: str, made: dict) -> None:
    """Band names, scale/offset, palette and class tags, so GIS tools show the data meaningfully;
    and ``SYNTH_TAG`` (``made``: the options), so synth knows the files for its own next time."""
    img_ds.descriptions = BAND_SETS[bands]
    img_ds.update_tags(**{SYNTH_TAG: json.dumps({"file": "image", **made})})
    lab_ds.update_tags(**{SYNTH_TAG: json.dumps({"file": "labels", **made})})
    if dtype == "int16":  # uint16 stays as it always was; float32 is reflectance itself
        encoding = ENCODINGS[dtype]
        img_ds.scales = (encoding.scale,) * img_ds.count
        img_ds.offsets = (encoding.offset,) * img_ds.count
    lab_ds.set_band_description(1, "class")
    lab_ds.write_colormap(1, {i: (*c.color, 255) for i, c in enumerate(CLASSES)})
    lab_ds.update_tags(
        class_names=json.dumps([c.name for c in CLASSES]),
        class_colors=json.dumps([list(c.color) for c in CLASSES]),
    )


def _windows(size: int, block: int, layout: str) -> Iterator[tuple[int, int, int, int]]:
    """The windows to render, in file order: blocks for tiles, full-width bands of whole strips for strips."""
    if layout == "stripped":
        return _row_bands(size, block)
    return _blocks(size, block)


def _blocks(size: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    """Row-major (row_off, col_off, height, width) windows covering the scene."""
    for r in range(0, size, block):
        for c in range(0, size, block):
            yield r, c, min(block, size - r), min(block, size - c)


def _row_bands(size: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    """Full-width windows of whole strips, about block x block pixels each (at least one strip)."""
    rows = max(STRIP_ROWS, block * block // size // STRIP_ROWS * STRIP_ROWS)
    for r in range(0, size, rows):
        yield r, 0, min(rows, size - r), size
