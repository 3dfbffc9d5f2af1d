"""The class table of a label raster or label store (names and colours), read one way everywhere.

fcnseg writes the table into every label file it makes: JSON tags ``class_names`` and
``class_colors`` plus per-band ``CLASS_<id>`` tags and a colour table in GeoTIFFs, attributes of
the ``labels`` array in Zarr stores. Rasters from elsewhere may carry only some of it; this module
is the one place that decides what a file says about its classes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from rasterio.io import DatasetReader

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]

#: Colours for classes whose labels carry none (tab10-like, distinct on a map).
DEFAULT_COLORS: list[RGB] = [
    (31, 119, 180), (44, 160, 44), (255, 127, 14), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]
#: The colour of a class id that a colour table leaves out.
UNKNOWN_COLOR: RGB = (128, 128, 128)


def default_colors(count: int) -> list[RGB]:
    """``count`` colours from DEFAULT_COLORS, repeated when there are more classes."""
    return [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(count)]


@dataclass(frozen=True)
class ClassTable:
    """Class names by id, and their RGB colours when the file carries them (one per name)."""

    names: list[str]
    colors: list[RGB] | None = None

    def name(self, class_id: int) -> str:
        """The class's name, ``class_<id>`` for an id the table does not name."""
        return self.names[class_id] if 0 <= class_id < len(self.names) else f"class_{class_id}"


def raster_classes(src: DatasetReader) -> ClassTable:
    """The class table of a single-band label raster.

    Names: fcnseg's ``class_names`` tag, else the band's ``CLASS_<id>`` tags, else none. Colours:
    the ``class_colors`` tag, else the band's colour table for the named classes, else none.
    """
    tags = src.tags()
    names = _json_list(src.name, "class_names", tags.get("class_names"))
    if names is None:
        band = src.tags(1)
        ids = sorted(int(k[6:]) for k in band if k.startswith("CLASS_") and k[6:].isdigit())
        names = [band.get(f"CLASS_{i}", f"class_{i}") for i in range(ids[-1] + 1)] if ids else []
    names = [str(n) for n in names]
    colors = _json_list(src.name, "class_colors", tags.get("class_colors"))
    if colors is not None:
        return ClassTable(names, [_rgb(c) for c in colors])
    colormap = colour_table(src)
    if colormap and names:
        return ClassTable(names, [colormap.get(i, UNKNOWN_COLOR) for i in range(len(names))])
    return ClassTable(names)


def store_classes(labels_attrs: dict[str, Any]) -> ClassTable:
    """The class table of a label store, from the attributes of its ``labels`` array."""
    names = [str(n) for n in labels_attrs.get("class_names", [])]
    colors = labels_attrs.get("class_colors")
    return ClassTable(names, [_rgb(c) for c in colors] if colors else None)


def colour_table(src: DatasetReader) -> dict[int, RGB]:
    """The first band's colour table as RGB by value; empty when it has none."""
    try:
        return {value: _rgb(rgba) for value, rgba in src.colormap(1).items()}
    except ValueError:  # no colour table
        return {}


def _rgb(color: Any) -> RGB:
    r, g, b = (int(c) for c in list(color)[:3])
    return r, g, b


def _json_list(path: str, tag: str, text: str | None) -> list | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, list):
        return value
    log.warning("%s: the %s tag is not a JSON list; ignored", path, tag)
    return None
