"""The class table of a label raster or label store (names and colours), read one way everywhere.

fcnseg writes the table into every label file it makes: JSON tags ``class_names`` and
``class_colors`` plus per-band ``CLASS_<id>`` tags and a colour table in GeoTIFFs, attributes of
the ``labels`` array in Zarr stores. Rasters from elsewhere may carry only some of it; this module
is the one place that decides what a file says about its classes.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterio.io import DatasetReader

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]
#: GDAL's field types and usages in a raster attribute table (``GDALRATFieldType``, ``GDALRATFieldUsage``):
#: written by ``products.styles``, read here.
RAT_INTEGER, RAT_STRING = 0, 2
RAT_GENERIC, RAT_NAME, RAT_MINMAX, RAT_RED, RAT_GREEN, RAT_BLUE, RAT_ALPHA = 0, 2, 5, 6, 7, 8, 9

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

    Names: fcnseg's ``class_names`` tag, else the band's ``CLASS_<id>`` tags, else the category
    names or the attribute table's name column of the GDAL ``.aux.xml`` sidecar (what GIS tools
    write, and rasterio cannot read), else none. Colours: the ``class_colors`` tag, else the band's
    colour table for the named classes, else none.
    """
    tags = src.tags()
    names = _json_list(src.name, "class_names", tags.get("class_names"))
    if names is None:
        band = src.tags(1)
        ids = sorted(int(k[6:]) for k in band if k.startswith("CLASS_") and k[6:].isdigit())
        names = [band.get(f"CLASS_{i}", f"class_{i}") for i in range(ids[-1] + 1)] if ids else []
    if not names:
        names = names_by_value(pam_classes(src.name))
    names = [str(n) for n in names]
    colors = _json_list(src.name, "class_colors", tags.get("class_colors"))
    if colors is not None:
        return ClassTable(names, [_rgb(c) for c in colors])
    colormap = colour_table(src)
    if colormap and names:
        return ClassTable(names, [colormap.get(i, UNKNOWN_COLOR) for i in range(len(names))])
    return ClassTable(names)


def names_by_value(named: dict[int, str]) -> list[str]:
    """Names for ids 0..max of ``named``, ``class_<id>`` for the ids it leaves out."""
    return [named.get(i, f"class_{i}") for i in range(max(named) + 1)] if named else []


def pam_classes(path: str) -> dict[int, str]:
    """Class names by value from band 1 of the raster's GDAL PAM sidecar (``<path>.aux.xml``):
    its ``CategoryNames`` (the name of value i is the i-th category; empty ones skipped), else its
    attribute table's name column (usage 2) by the value column (usage 5 or 0, or named Value).
    Empty when there is no readable sidecar or it names nothing."""
    sidecar = Path(f"{path}.aux.xml")
    if not sidecar.is_file():
        return {}
    try:
        root = ET.parse(sidecar).getroot()
    except (ET.ParseError, OSError) as exc:
        log.warning("%s: unreadable (%s); its class names are ignored", sidecar, exc)
        return {}
    band = next((b for b in root.iter("PAMRasterBand") if b.get("band", "1") == "1"), None)
    if band is None:
        return {}
    categories = band.find("CategoryNames")
    if categories is not None:
        named = {i: (c.text or "").strip() for i, c in enumerate(categories.findall("Category"))}
        named = {i: n for i, n in named.items() if n}
        if named:
            return named
    table = band.find("GDALRasterAttributeTable")
    return _rat_names(table) if table is not None else {}


def _rat_names(table: ET.Element) -> dict[int, str]:
    """Names by value from a PAM raster attribute table (GDAL's usages: 2 name, 5 min-max, 0 generic)."""
    fields = {}
    for definition in table.findall("FieldDefn"):
        usage, name = definition.findtext("Usage", str(RAT_GENERIC)).strip(), definition.findtext("Name", "").strip()
        fields[int(definition.get("index", len(fields)))] = (usage, name.lower())
    name_col = next((i for i, (usage, _) in fields.items() if usage == str(RAT_NAME)), None)
    value_col = next((i for i, (usage, _) in fields.items() if usage == str(RAT_MINMAX)), None)
    if value_col is None:
        value_col = next((i for i, (usage, n) in fields.items() if usage == str(RAT_GENERIC) and n == "value"), None)
    if name_col is None:
        return {}
    named: dict[int, str] = {}
    for position, row in enumerate(table.findall("Row")):
        cells = [f.text or "" for f in row.findall("F")]
        try:
            value = int(float(cells[value_col])) if value_col is not None else int(row.get("index", position))
            name = cells[name_col].strip()
        except (IndexError, ValueError):
            continue
        if name:
            named[value] = name
    return named


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
