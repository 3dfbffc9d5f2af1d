"""OUT/quicklook.png: the input image with the labels overlaid in their class colours, and a legend.

A quicklook is for a glance (a STAC browser, a report, a ticket), so it is small: its long side
is at most ``max_size`` pixels. The labels come from a label store (labels.zarr) or a labels
GeoTIFF. From a store they are read *nearest* from its coarsest overview level that is still at
least the quicklook's size (levels are *mode* overviews, so no class is invented), only the
pixels that are shown; from a GeoTIFF with ``out_shape=``, which lets GDAL answer from its
overviews the same way. The image is read *average* at that size, from its overviews when it
has some. Memory depends on the quicklook's size only; without overviews the decimation still
streams (the store chunk by chunk, GDAL through its capped block cache).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFont
from rasterio.enums import Resampling
from rasterio.windows import Window

from fcnseg.pipeline.analysis.label_raster import is_store
from fcnseg.pipeline.classes import UNKNOWN_COLOR, colour_table, raster_classes, store_classes
from fcnseg.pipeline.io import atomic_write, open_raster
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


def write_quicklook(
    image_path: str | Path,
    labels_path: str | Path,
    out_png: str | Path,
    *,
    max_size: int = 2048,
    alpha: float = 0.45,
    client: Client | None = None,
) -> Path:
    """Write an RGBA PNG quicklook of ``image_path`` with ``labels_path`` (labels.zarr, or a labels
    GeoTIFF such as labels.tif) overlaid.

    ``max_size`` bounds the long side (the raster's own size when smaller; aspect kept);
    ``alpha`` is the opacity of the class colours over the image (0 = image only). With a Dask
    ``client``, the image is read in bands of rows on its workers (the one read of the whole
    input after inference, so it scales out with the cluster).
    The PNG appears under its final name only when complete.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be positive, got {max_size}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    out_png = Path(out_png)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        labels, names, colors, shape = read_labels(labels_path, max_size)
        rgb, valid = read_image_bands(image_path, labels.shape, shape, client)
    picture = overlay(stretch(rgb, valid), labels, colors, alpha)
    rgba = np.dstack([picture, np.where(valid, 255, 0).astype(np.uint8)])
    rgba[~valid, :3] = NODATA_RGB
    img = Image.fromarray(np.ascontiguousarray(rgba))  # (h, w, 4) uint8: RGBA
    draw_legend(img, names, colors)
    _save_png(img, out_png)
    log.info("wrote quicklook %s (%dx%d)", out_png, img.width, img.height)
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


def read_image(image_path: str | Path, out_shape: tuple[int, int], grid_shape: tuple[int, int],
               rows: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First three bands (one band: grey) at quicklook size, float32 (3, h, w), and where they are
    valid; ``rows`` (first, stop) reads only those quicklook rows (their fractional source window)."""
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), open_raster(image_path) as src:
        if (src.height, src.width) != grid_shape:
            raise ValueError(
                f"{image_path}: {src.width}x{src.height} px, but the labels are {grid_shape[1]}x{grid_shape[0]} px; "
                "a quicklook needs the labels of this image"
            )
        indexes = [1, 2, 3] if src.count >= 3 else [1]
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


#: Quicklook rows read at a time. In bands, GDAL's decimation keeps to its block cache: a
#: 16384² 4-band input read whole at 2048² took 12.4 s, in bands of 128 rows 5 s (2.7 s on 2 workers).
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
        out[..., i] = np.clip((band - low) * (255.0 / span), 0, 255).round().astype(np.uint8)
    return out


def overlay(rgb: np.ndarray, labels: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    """Blend each labelled pixel toward its class colour; nodata (255) and unknown values stay as they are.

    ``rgb`` is uint8, so every result is looked up in a table (class, channel, value), computed
    once: 10x faster than blending the picture in floats."""
    n = min(len(colors), NODATA)
    values = np.arange(256, dtype=np.float32)
    table = np.broadcast_to(np.arange(256, dtype=np.uint8), (256, 3, 256)).copy()  # unknown: unchanged
    blended = (1.0 - alpha) * values[None, None, :] + alpha * np.asarray(colors[:n], np.float32)[:, :, None]
    table[:n] = np.clip(blended.round(), 0, 255).astype(np.uint8)
    out = np.empty(labels.shape + (3,), np.uint8)
    for channel in range(3):
        out[..., channel] = table[labels, channel, rgb[..., channel]]
    return out


def draw_legend(img: Image.Image, names: Sequence[str], colors: np.ndarray) -> None:
    """Class swatches and names in the lower-left corner, on a dark box, in as many columns as needed."""
    if not names:
        return
    font_size = max(10, min(18, round(max(img.size) / 60)))
    font = ImageFont.load_default(size=font_size)
    draw = ImageDraw.Draw(img)
    line = font_size + max(2, font_size // 3)
    swatch, pad = font_size, max(3, font_size // 3)
    text_w = max(draw.textlength(str(n), font=font) for n in names)
    col_w = int(swatch + pad + text_w + 2 * pad)
    rows = max(1, min(len(names), (img.height - 2 * pad) // line))
    cols = -(-len(names) // rows)
    box_w, box_h = min(img.width, cols * col_w + pad), min(img.height, rows * line + pad)
    top = img.height - box_h
    shade = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 170))
    img.alpha_composite(shade, (0, top))
    for k, (name, color) in enumerate(zip(names, colors)):
        x = pad + (k // rows) * col_w
        y = top + pad + (k % rows) * line
        rgb = tuple(int(c) for c in color[:3])
        draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=(*rgb, 255), outline=(255, 255, 255, 255))
        draw.text((x + swatch + pad, y + swatch / 2), str(name), font=font, fill=(255, 255, 255, 255), anchor="lm")


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
        img.save(tmp, format="PNG", compress_level=1)  # level 6 (the default) took 2.3 s at 2048², level 1 0.2 s
