"""OUT/quicklook.png: the input image with the labels overlaid in their class colours, a legend, a
title (scene, model, date) and a scale bar.

A quicklook is for a glance (a STAC browser, a report, a ticket), so it is small: its long side
is at most ``max_size`` pixels. The labels come from a label store (labels.zarr) or a labels
GeoTIFF. From a store they are read *nearest* from its coarsest overview level that is still at
least the quicklook's size (levels are *mode* overviews, so no class is invented), only the
pixels that are shown; from a GeoTIFF with ``out_shape=``, which lets GDAL answer from its
overviews the same way. The image is read *average* at that size, from its overviews when it
has some. Memory depends on the quicklook's size only; without overviews the decimation still
streams (the store chunk by chunk, GDAL through its capped block cache).

Classes must read apart over any image: under the labels the image is drawn grey (its own greens
would otherwise blend with cropland's or grassland's tint) and every class region is outlined in
BOUNDARY_RGB, so even two classes of near-equal colour are told apart. The title, the scale bar and
the legend are drawn *on* the picture (``quicklook_annotations.py``), never beside it: the PNG keeps
the scene's aspect and stays a georeferenced overview (item.json gives its proj:transform).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.windows import Window

from fcnseg.pipeline.analysis.label_raster import is_store
from fcnseg.pipeline.classes import UNKNOWN_COLOR, colour_table, raster_classes, store_classes
from fcnseg.pipeline.io import atomic_write, open_raster
from fcnseg.pipeline.products.quicklook_annotations import (  # the rest for importers of this module
    SHADE_RGBA,  # noqa: F401
    ScaleBar,  # noqa: F401
    _font,  # noqa: F401
    checkpoint_label,  # noqa: F401
    draw_legend,
    draw_scale_bar,
    draw_title,
    ground_metres_per_pixel,  # noqa: F401
    image_scale_bar,
    model_label,
    round_length,  # noqa: F401
    scale_bar,  # noqa: F401
    scene_name,
    store_model,
    title_text,
)
from fcnseg.pipeline.pyramid import FULL, Level, level_shape
from fcnseg.pipeline.store import LABELS, NODATA, level_path, open_store, require_complete, store_levels

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

#: GDAL's block cache while reading: bounded whatever the scene size, and larger than the pipeline's
#: (reading.GDAL_CACHE_BYTES) because a decimated read of an input without overviews needs a whole
#: row of its multi-band blocks in cache (32 blocks of 512² x 4 bands x uint16 = 64 MB at 16384 px).
GDAL_CACHE_BYTES = 64 * 1024 * 1024
#: Percentiles of the valid pixels that map to black and white, per band.
STRETCH_PERCENTILES = (2.0, 98.0)
#: Where the input has no data: dark, and transparent in the PNG's alpha.
NODATA_RGB = (16, 16, 16)
#: Opacity of the class colours over the greyed image: enough for cropland's yellow and grassland's
#: green to read apart at a glance, while the image's texture still shows through.
DEFAULT_ALPHA = 0.55
#: Under the labels the image's luminance is squeezed into this range: no black or white left for a
#: tint to vanish in, and a little dim, so bright class colours (cropland, grassland) stand out.
GREY_RANGE = (40, 200)
#: The outline of every class region (the pixel on one side of each edge between two labels).
BOUNDARY_RGB = (0, 0, 0)


def write_quicklook(
    image_path: str | Path,
    labels_path: str | Path,
    out_png: str | Path,
    *,
    max_size: int = 2048,
    alpha: float = DEFAULT_ALPHA,
    client: Client | None = None,
    model: str | Path | None = None,
    processed: date | None = None,
) -> Path:
    """Write an RGBA PNG quicklook of ``image_path`` with ``labels_path`` (labels.zarr, or a labels
    GeoTIFF such as labels.tif) overlaid.

    ``max_size`` bounds the long side (the raster's own size when smaller; aspect kept);
    ``alpha`` is the opacity of the class colours over the greyed image (0 = the image alone, in
    colour, without outlines). With a Dask ``client``, the image is read in bands of rows on its
    workers (the one read of the whole input after inference, so it scales out with the cluster).
    The title names the scene, the model (``model``: a checkpoint, shown by its name and
    architecture, or a name; None: the model hash a label store records) and ``processed`` (the
    UTC date today when None). The PNG appears under its final name only when complete.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be positive, got {max_size}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    out_png = Path(out_png)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        labels, names, colors, shape = read_labels(labels_path, max_size)
        rgb, valid = read_image_bands(image_path, labels.shape, shape, client)
        bar = image_scale_bar(image_path, labels.shape[1])
    picture = overlay(stretch(rgb, valid), labels, colors, alpha)
    rgba = np.dstack([picture, np.where(valid, 255, 0).astype(np.uint8)])
    rgba[~valid, :3] = NODATA_RGB
    img = Image.fromarray(np.ascontiguousarray(rgba))  # (h, w, 4) uint8: RGBA
    label = model_label(model) if model is not None else store_model(labels_path)
    title = title_text(scene_name(image_path), label, processed or datetime.now(UTC).date())
    draw_title(img, title)
    draw_scale_bar(img, bar)
    draw_legend(img, names, colors)
    _save_png(img, out_png)
    log.info("wrote quicklook %s (%dx%d): %s", out_png, img.width, img.height, title)
    return out_png


def quicklook_shape(height: int, width: int, max_size: int) -> tuple[int, int]:
    """(height, width) with the long side min(max_size, long side), the other in proportion."""
    long_side = max(height, width)
    target = min(max_size, long_side)
    scale = target / long_side
    if height >= width:
        return target, max(1, round(width * scale))
    return max(1, round(height * scale)), target


#: Labels at quicklook size, class names, RGB colours (n, 3), and the labels' full size.
QuicklookLabels = tuple[np.ndarray, list[str], np.ndarray, tuple[int, int]]


def read_labels(labels_path: str | Path, max_size: int) -> QuicklookLabels:
    """Labels at quicklook size (nearest, from mode overviews), class names, RGB colours (n, 3), full shape."""
    if is_store(labels_path):
        return read_store_labels(labels_path, max_size)
    with open_raster(labels_path) as src:  # labels in pixel coordinates (no CRS) open without a warning
        shape = quicklook_shape(src.height, src.width, max_size)
        labels = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        names, colors = _classes(src)
        return labels, names, colors, (src.height, src.width)


def read_store_labels(store_path: str | Path, max_size: int) -> QuicklookLabels:
    """The same from a label store: the pixels under the quicklook's pixel centres, on the coarsest
    level at least the quicklook's size (full resolution for a store without overviews)."""
    group = open_store(store_path, mode="r")
    require_complete(group, store_path)  # never a product of an interrupted run
    array = group[LABELS]
    height, width = array.shape
    shape = quicklook_shape(height, width, max_size)
    level = quicklook_level(store_levels(group) or [], height, width, shape)
    source = array if level.factor == 1 else group[level_path(level)]
    rows, cols = (sample_indices(n, size, level.factor, limit) for n, size, limit in
                  zip(shape, (height, width), source.shape))
    labels = np.asarray(source.get_orthogonal_selection((rows, cols)))
    table = store_classes(array.attrs)
    colors = table.colors or [UNKNOWN_COLOR] * len(table.names)
    return labels, table.names, np.array(colors, np.float32).reshape(-1, 3), (height, width)


def quicklook_level(levels: list[Level], height: int, width: int, shape: tuple[int, int]) -> Level:
    """The coarsest of full resolution and ``levels`` whose size is still at least ``shape``."""
    fitting = [lv for lv in levels if all(s >= q for s, q in zip(level_shape(height, width, lv.factor), shape))]
    return fitting[-1] if fitting else FULL


def sample_indices(count: int, size: int, factor: int, limit: int) -> np.ndarray:
    """Indices, on a level of ``factor``, of the pixels under ``count`` evenly spaced centres over
    ``size`` full-resolution pixels (GDAL's nearest sampling)."""
    centres = (np.arange(count) + 0.5) * (size / count)
    return np.minimum((centres // factor).astype(np.intp), limit - 1)


def rgb_bands(src: rasterio.DatasetReader) -> list[int]:
    """The bands shown as red, green, blue: those the raster names so (band descriptions
    ``red``/``green``/``blue``, as in a B, G, R, NIR scene, else its colour interpretation), else the
    first three; one band: grey. Descriptions first: GDAL gives any 3-band byte GeoTIFF an RGB
    interpretation by default, whatever its bands hold."""
    if src.count < 3:
        return [1]
    for names in ([(d or "").strip().lower() for d in src.descriptions], [c.name for c in src.colorinterp]):
        if all(colour in names for colour in ("red", "green", "blue")):
            return [names.index(colour) + 1 for colour in ("red", "green", "blue")]
    return [1, 2, 3]


def read_image(image_path: str | Path, out_shape: tuple[int, int], grid_shape: tuple[int, int],
               rows: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The red, green and blue bands (``rgb_bands``; one band: grey) at quicklook size, float32 (3, h, w), and where they are
    valid; ``rows`` (first, stop) reads only those quicklook rows (their fractional source window)."""
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), open_raster(image_path) as src:
        if (src.height, src.width) != grid_shape:
            raise ValueError(
                f"{image_path}: {src.width}x{src.height} px, but the labels are {grid_shape[1]}x{grid_shape[0]} px; "
                "a quicklook needs the labels of this image"
            )
        indexes = rgb_bands(src)
        first, stop = rows or (0, out_shape[0])
        scale = src.height / out_shape[0]
        window = Window(0, first * scale, src.width, (stop - first) * scale)
        data = src.read(indexes, window=window, out_shape=(len(indexes), stop - first, out_shape[1]),
                        resampling=Resampling.average, masked=True)
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    values = np.ma.getdata(data).astype(np.float32)
    if len(indexes) == 1:
        values = np.repeat(values, 3, axis=0)
    return values, valid


#: Quicklook rows read at a time. In bands, GDAL's decimation keeps to its block cache (a large input
#: read whole took more than twice as long) and the bands spread over the workers (measured:
#: docs/benchmarks.md#figures-quoted-in-code-comments).
ROWS_PER_BAND = 128


def read_image_bands(image_path: str | Path, out_shape: tuple[int, int], grid_shape: tuple[int, int],
                     client: Client | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``read_image`` in bands of ROWS_PER_BAND quicklook rows: here, or as tasks on ``client``'s workers."""
    bands = [(r, min(r + ROWS_PER_BAND, out_shape[0])) for r in range(0, out_shape[0], ROWS_PER_BAND)]
    if client is None:
        parts = [read_image(image_path, out_shape, grid_shape, band) for band in bands]
    else:
        parts = client.gather([client.submit(read_image, str(image_path), out_shape, grid_shape, band, pure=False)
                               for band in bands])
    return np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts], axis=0)


def stretch(bands: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per band, the 2nd..98th percentile of the valid pixels to 0..255: (h, w, 3) uint8."""
    out = np.zeros((*bands.shape[1:], 3), np.uint8)
    if not valid.any():
        return out
    for i, band in enumerate(bands[:3]):
        low, high = np.percentile(band[valid], STRETCH_PERCENTILES)
        span = float(high - low) or 1.0
        offset = np.where(valid, band - low, 0)  # nodata may be NaN (a float input's): never cast it
        out[..., i] = np.clip(offset * (255.0 / span), 0, 255).round().astype(np.uint8)
    return out


def overlay(rgb: np.ndarray, labels: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    """Each pixel of a known class: the image's grey blended toward the class colour, its region
    outlined in BOUNDARY_RGB; nodata (255) and unknown values stay the image as it is, in colour.

    ``rgb`` is uint8, so every blend is looked up in a table (class, channel, grey), computed once:
    much faster than blending the picture in floats (measured: docs/benchmarks.md#figures-quoted-in-code-comments)."""
    n = min(len(colors), NODATA)
    if alpha == 0.0 or n == 0:
        return rgb
    values = np.arange(256, dtype=np.float32)
    blended = (1.0 - alpha) * values[None, None, :] + alpha * np.asarray(colors[:n], np.float32)[:, :, None]
    table = np.clip(blended.round(), 0, 255).astype(np.uint8)  # (class, channel, grey)
    known = labels < n
    index, grey = np.where(known, labels, 0), greyed(rgb)
    out = np.empty_like(rgb)
    for channel in range(3):
        out[..., channel] = np.where(known, table[index, channel, grey], rgb[..., channel])
    out[class_boundaries(labels, n)] = BOUNDARY_RGB
    return out


def greyed(rgb: np.ndarray) -> np.ndarray:
    """The image's luminance (ITU-R BT.601) squeezed into GREY_RANGE, (h, w) uint8: the ground
    under a tint keeps its texture but loses the hue that would mix with the class colours."""
    luminance = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    low, high = GREY_RANGE
    return (low + luminance * ((high - low) / 255.0)).round().astype(np.uint8)


def class_boundaries(labels: np.ndarray, n: int) -> np.ndarray:
    """Where to draw an outline: a pixel of a known class (< ``n``) with a 4-neighbour of a larger
    label, another class, nodata or an unknown value. One pixel wide, on the side of the smaller
    label, so a region's edge is drawn once and never over nodata."""
    edge = np.zeros(labels.shape, bool)
    edge[:, :-1] |= labels[:, 1:] > labels[:, :-1]
    edge[:, 1:] |= labels[:, :-1] > labels[:, 1:]
    edge[:-1, :] |= labels[1:, :] > labels[:-1, :]
    edge[1:, :] |= labels[:-1, :] > labels[1:, :]
    return edge & (labels < n)


def _classes(src) -> tuple[list[str], np.ndarray]:
    """Class names and RGB colours (n, 3) of labels.tif.

    Without names (a labels.tif from elsewhere) the colour table still tints, but no legend is drawn.
    """
    table = raster_classes(src)
    if table.colors is not None:
        return table.names, np.array(table.colors, np.float32).reshape(-1, 3)
    colormap = colour_table(src)  # grey where it has no entry (or there is none)
    n = len(table.names) or NODATA
    return table.names, np.array([colormap.get(v, UNKNOWN_COLOR) for v in range(n)], np.float32)


def _save_png(img: Image.Image, out_png: Path) -> None:
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_png) as tmp:
        # level 1: much faster than the default, level 6, at a quicklook's size
        # (measured: docs/benchmarks.md#figures-quoted-in-code-comments)
        img.save(tmp, format="PNG", compress_level=1)
