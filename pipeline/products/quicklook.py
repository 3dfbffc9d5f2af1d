"""OUT/quicklook.png: the input image with the labels overlaid in their class colours, and a legend.

A quicklook is for a glance (a STAC browser, a report, a ticket), so it is small: its long side
is at most ``max_size`` pixels. Both rasters are read straight at that size with ``out_shape=``,
which lets GDAL answer from overviews when the file has them (labels.tif always does, built with
*mode* resampling; labels are read *nearest* so no class is invented, the image *average*): the
full-resolution data is never read then, and memory depends on the quicklook's size only. Without
overviews GDAL still streams the decimation through its (capped) block cache.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFont
from rasterio.enums import Resampling

from fcnseg.pipeline.classes import UNKNOWN_COLOR, colour_table, raster_classes
from fcnseg.pipeline.io import atomic_write, open_raster
from fcnseg.pipeline.store import NODATA

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
) -> Path:
    """Write an RGBA PNG quicklook of ``image_path`` with ``labels_path`` (labels.tif) overlaid.

    ``max_size`` bounds the long side (the raster's own size when smaller; aspect kept);
    ``alpha`` is the opacity of the class colours over the image (0 = image only).
    The PNG appears under its final name only when complete.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be positive, got {max_size}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    out_png = Path(out_png)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        labels, names, colors, shape = read_labels(labels_path, max_size)
        rgb, valid = read_image(image_path, labels.shape, shape)
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


def read_labels(labels_path: str | Path, max_size: int) -> tuple[np.ndarray, list[str], np.ndarray, tuple[int, int]]:
    """Labels at quicklook size (nearest: from the mode overviews), class names, RGB colours (n, 3), full shape."""
    with open_raster(labels_path) as src:  # labels in pixel coordinates (no CRS) open without a warning
        shape = quicklook_shape(src.height, src.width, max_size)
        labels = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        names, colors = _classes(src)
        return labels, names, colors, (src.height, src.width)


def read_image(image_path: str | Path, out_shape: tuple[int, int], grid_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """First three bands (one band: grey) at quicklook size, float32 (3, h, w), and where they are valid."""
    with open_raster(image_path) as src:
        if (src.height, src.width) != grid_shape:
            raise ValueError(
                f"{image_path}: {src.width}x{src.height} px, but the labels are {grid_shape[1]}x{grid_shape[0]} px; "
                "a quicklook needs the labels of this image"
            )
        indexes = [1, 2, 3] if src.count >= 3 else [1]
        data = src.read(indexes, out_shape=(len(indexes), *out_shape), resampling=Resampling.average, masked=True)
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    values = np.ma.getdata(data).astype(np.float32)
    if len(indexes) == 1:
        values = np.repeat(values, 3, axis=0)
    return values, valid


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
    """Blend each labelled pixel toward its class colour; nodata (255) and unknown values stay as they are."""
    lut = np.zeros((256, 3), np.float32)
    known = np.zeros(256, bool)
    n = min(len(colors), NODATA)
    lut[:n] = colors[:n]
    known[:n] = True
    tint = known[labels]
    out = rgb.astype(np.float32)
    out[tint] = (1.0 - alpha) * out[tint] + alpha * lut[labels[tint]]
    return np.clip(out.round(), 0, 255).astype(np.uint8)


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
        img.save(tmp, format="PNG", optimize=False)
