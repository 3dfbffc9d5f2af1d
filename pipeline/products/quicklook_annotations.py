"""What a quicklook says on the picture: a title (scene, model, date), a scale bar and the legend.

They are drawn *on* the picture (dark boxes in its corners), never beside it, so the PNG keeps the
scene's aspect and stays a georeferenced overview. Apart from ``quicklook.py`` (which reads the
image and the labels at quicklook size and blends them) because none of this depends on the
pixels: only on the picture's size, the input's header, the model and the class table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import numpy as np
import pyproj
from affine import Affine
from PIL import Image, ImageDraw, ImageFont
from rasterio.crs import CRS

from fcnseg.errors import CheckpointError
from fcnseg.pipeline.analysis.areas import metres_per_unit
from fcnseg.pipeline.analysis.label_raster import is_store
from fcnseg.pipeline.io import open_raster
from fcnseg.pipeline.store import open_store

log = logging.getLogger(__name__)

#: Semi-transparent black under the title, the scale bar and the legend.
SHADE_RGBA = (0, 0, 0, 170)
WHITE = (255, 255, 255, 255)
#: The scale bar's target length, as a fraction of the picture's width (it is at most this long).
SCALE_BAR_FRACTION = 0.2


def scene_name(image_path: str | Path) -> str:
    """The input's file name, also for a URL (s3://bucket/scenes/x.tif: x.tif)."""
    text = str(image_path)
    path = urlsplit(text).path if "://" in text else text
    return PurePosixPath(path.replace("\\", "/")).name or text


def model_label(model: str | Path) -> str:
    """How the title names a model: a checkpoint file by its name and its card's architecture
    ("demo-fcn8s", "roofs-v2 (fcn16s)"); anything else as given."""
    path = Path(model)
    if not path.is_file():
        return str(model)
    from fcnseg.models.checkpoint import read_card  # torch (safetensors' reader imports it): only when a title needs it

    try:
        arch = read_card(path).arch
    except CheckpointError as exc:
        log.warning("quicklook title: %s", exc)
        return path.stem
    return checkpoint_label(path, arch)


def checkpoint_label(path: str | Path, arch: str) -> str:
    """A checkpoint named by its file's stem and architecture; ``segment`` names the model it
    planned so, not the file at the path when the quicklook is drawn."""
    stem = Path(path).stem
    return stem if arch in stem else f"{stem} ({arch})"


#: Hex digits of a model's sha256 shown when the title has nothing else to name it by.
MODEL_HASH_DIGITS = 12


def store_model(labels_path: str | Path) -> str | None:
    """The model a label store records (its file's sha256, shortened); None for a labels GeoTIFF."""
    if not is_store(labels_path):
        return None
    sha = open_store(labels_path, mode="r").attrs.get("model_sha256")
    return f"model {sha[:MODEL_HASH_DIGITS]}" if sha else None


def title_text(scene: str, model: str | None, processed: date) -> str:
    """"image.tif · demo-fcn8s · 2025-03-04": what was segmented, by what, and when (the model
    left out when unknown)."""
    return " · ".join(part for part in (scene, model, processed.isoformat()) if part)


@dataclass(frozen=True)
class ScaleBar:
    """A bar ``pixels`` long on the quicklook, standing for ``length`` of ``unit`` ("m" or "px")."""

    length: float
    unit: str
    pixels: int

    @property
    def text(self) -> str:
        """"500 m", "2 km", "100 px"."""
        if self.unit == "m" and self.length >= 1000:
            return f"{self.length / 1000:g} km"
        return f"{self.length:g} {self.unit}"


def round_length(limit: float) -> float:
    """The largest 1, 2 or 5 x 10^n not above ``limit`` (> 0): a length a reader takes in at once."""
    if not (math.isfinite(limit) and limit > 0):
        raise ValueError(f"a scale bar needs a positive length, got {limit}")  # e.g. a degenerate transform
    exponent = math.floor(math.log10(limit))
    for mantissa in (5, 2, 1):
        length = mantissa * 10.0**exponent
        if length <= limit * (1 + 1e-9):
            return float(f"{length:.12g}")  # 0.30000000000000004 -> 0.3
    return 10.0**exponent


def scale_bar(units_per_pixel: float, width: int, unit: str, fraction: float = SCALE_BAR_FRACTION) -> ScaleBar:
    """The bar for a picture ``width`` pixels wide whose pixels span ``units_per_pixel``: a round
    length at most ``fraction`` of the width, and its length in the picture's pixels."""
    length = round_length(units_per_pixel * width * fraction)
    return ScaleBar(length, unit, max(1, round(length / units_per_pixel)))


def image_scale_bar(image_path: str | Path, width: int) -> ScaleBar:
    """The scale bar of a quicklook ``width`` pixels wide of the image: in metres on the ground
    when the image has a CRS with a known unit, else in the full-resolution image's pixels."""
    with open_raster(image_path) as src:  # the header only
        crs, transform, full_height, full_width = src.crs, src.transform, src.height, src.width
    step = full_width / width  # full-resolution pixels per quicklook pixel
    if crs is not None:
        try:
            return scale_bar(ground_metres_per_pixel(crs, transform, full_height, full_width) * step, width, "m")
        except ValueError as exc:  # e.g. an engineering CRS without a unit
            log.warning("quicklook scale bar in pixels: %s", exc)
    return scale_bar(step, width, "px")


def ground_metres_per_pixel(crs: CRS, transform: Affine, height: int, width: int) -> float:
    """Metres on the ground along one pixel of a row, at the scene's centre: the geodesic on the
    CRS's ellipsoid for a geographic CRS (a degree of longitude shrinks with latitude), the
    plane's length in metres for a projected one."""
    col, row = width / 2, height / 2
    (x0, y0), (x1, y1) = transform @ (col, row), transform @ (col + 1, row)
    if crs.is_geographic:
        to_degrees = crs.units_factor[1] / (math.pi / 180)  # a CRS in grads: its unit in degrees
        geod = pyproj.CRS.from_wkt(crs.to_wkt()).get_geod()
        _, _, metres = geod.inv(x0 * to_degrees, y0 * to_degrees, x1 * to_degrees, y1 * to_degrees)
        return float(metres)
    return math.hypot(x1 - x0, y1 - y0) * metres_per_unit(crs)


def _font(img: Image.Image) -> tuple[ImageFont.FreeTypeFont, int]:
    """Pillow's bundled font at a size for the picture (no font is looked up or downloaded), and a padding."""
    size = max(10, min(18, round(max(img.size) / 60)))
    return ImageFont.load_default(size=size), max(3, size // 3)


def draw_title(img: Image.Image, title: str) -> None:
    """The title in the upper-left corner, white on a dark box."""
    font, pad = _font(img)
    draw = ImageDraw.Draw(img)
    box_w = min(img.width, int(draw.textlength(title, font=font)) + 2 * pad)
    box_h = min(img.height, font.size + 2 * pad)
    img.alpha_composite(Image.new("RGBA", (box_w, box_h), SHADE_RGBA), (0, 0))
    draw.text((pad, box_h / 2), title, font=font, fill=WHITE, anchor="lm")


def draw_scale_bar(img: Image.Image, bar: ScaleBar) -> None:
    """The bar in the lower-right corner on a dark box: a white bar with end ticks, its length above."""
    font, pad = _font(img)
    draw = ImageDraw.Draw(img)
    text_w = int(draw.textlength(bar.text, font=font))
    thick = max(2, font.size // 4)
    box_w = min(img.width, max(bar.pixels, text_w) + 2 * pad)
    box_h = min(img.height, font.size + 3 * pad + thick)
    left, top = img.width - box_w, img.height - box_h
    img.alpha_composite(Image.new("RGBA", (box_w, box_h), SHADE_RGBA), (left, top))
    x0 = img.width - pad - bar.pixels  # the bar's first pixel; it ends ``pad`` from the right edge
    y = img.height - pad - thick
    draw.rectangle((x0, y, x0 + bar.pixels - 1, y + thick - 1), fill=WHITE)
    for x in (x0, x0 + bar.pixels - 1):  # end ticks
        draw.line((x, y - pad, x, y + thick - 1), fill=WHITE)
    draw.text((x0 + bar.pixels / 2, y - pad), bar.text, font=font, fill=WHITE, anchor="md")


def draw_legend(img: Image.Image, names: Sequence[str], colors: np.ndarray) -> None:
    """Class swatches and names in the lower-left corner, on a dark box, in as many columns as needed."""
    if not names:
        return
    font, pad = _font(img)
    font_size = font.size
    draw = ImageDraw.Draw(img)
    line = font_size + max(2, font_size // 3)
    swatch = font_size
    text_w = max(draw.textlength(str(n), font=font) for n in names)
    col_w = int(swatch + pad + text_w + 2 * pad)
    title_h = font_size + 2 * pad  # the title's box, above: left free
    rows = max(1, min(len(names), (img.height - title_h - 2 * pad) // line))
    cols = -(-len(names) // rows)
    box_w, box_h = min(img.width, cols * col_w + pad), min(img.height, rows * line + pad)
    top = img.height - box_h
    shade = Image.new("RGBA", (box_w, box_h), SHADE_RGBA)
    img.alpha_composite(shade, (0, top))
    for k, (name, color) in enumerate(zip(names, colors)):
        x = pad + (k // rows) * col_w
        y = top + pad + (k % rows) * line
        rgb = tuple(int(c) for c in color[:3])
        draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=(*rgb, 255), outline=WHITE)
        draw.text((x + swatch + pad, y + swatch / 2), str(name), font=font, fill=WHITE, anchor="lm")
