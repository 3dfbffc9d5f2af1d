"""How the outputs look when opened: the class names and colours where GDAL and QGIS read them.

A GeoTIFF's colour table has 256 entries and no names, so QGIS's legend for labels.tif would be
256 rows "0" … "255". Two sidecars fix that, each for the readers that look there:

* ``labels.tif.aux.xml`` (GDAL PAM): the band's category names and a thematic raster attribute
  table (value, class, red, green, blue, alpha). GDAL, ArcGIS and QGIS read them (QGIS labels its
  palette entries with the category names; 3.30 and later also show the table).
* ``labels.qml``: the QGIS style that QGIS loads by itself with the layer (same folder, same
  stem): a paletted renderer with one entry per class, nodata left out.

polygons.gpkg carries its style inside, in the ``layer_styles`` table QGIS reads on open (QML,
and SLD for other clients): categories by ``class_name`` in the class colours.
"""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

from fcnseg.pipeline.classes import (
    RAT_ALPHA,
    RAT_BLUE,
    RAT_GREEN,
    RAT_INTEGER,
    RAT_MINMAX,
    RAT_NAME,
    RAT_RED,
    RAT_STRING,
    RGB,
)

QGIS_VERSION = "3.22.0"  # the oldest QGIS the styles are written for (and checked with)
#: QGIS's own layout of the table (``QgsOgrProviderUtils``): the same columns, so QGIS and GDAL
#: clients that manage styles find and update it.
LAYER_STYLES_DDL = """CREATE TABLE layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
    f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
    useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"""


def hex_color(color: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def _text(element: ET.Element) -> str:
    ET.indent(element)
    return ET.tostring(element, encoding="unicode") + "\n"


def labels_pam(names: list[str], colors: list[RGB]) -> str:
    """labels.tif.aux.xml: category names and a thematic attribute table for band 1."""
    dataset = ET.Element("PAMDataset")
    band = ET.SubElement(dataset, "PAMRasterBand", band="1")
    categories = ET.SubElement(band, "CategoryNames")
    for name in names:
        ET.SubElement(categories, "Category").text = name
    table = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    fields = [("Value", RAT_INTEGER, RAT_MINMAX), ("Class", RAT_STRING, RAT_NAME), ("Red", RAT_INTEGER, RAT_RED),
              ("Green", RAT_INTEGER, RAT_GREEN), ("Blue", RAT_INTEGER, RAT_BLUE), ("Alpha", RAT_INTEGER, RAT_ALPHA)]
    for index, (name, kind, usage) in enumerate(fields):
        field = ET.SubElement(table, "FieldDefn", index=str(index))
        ET.SubElement(field, "Name").text = name
        ET.SubElement(field, "Type").text = str(kind)
        ET.SubElement(field, "Usage").text = str(usage)
    for value, (name, color) in enumerate(zip(names, colors)):
        row = ET.SubElement(table, "Row", index=str(value))
        for cell in (value, name, *color, 255):
            ET.SubElement(row, "F").text = str(cell)
    return _text(dataset)


def _qgis_root() -> ET.Element:
    return ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")


def labels_qml(names: list[str], colors: list[RGB]) -> str:
    """labels.qml: QGIS's paletted renderer with one legend entry per class."""
    qgis = _qgis_root()
    pipe = ET.SubElement(qgis, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1",
                             nodataColor="")
    palette = ET.SubElement(renderer, "colorPalette")
    for value, (name, color) in enumerate(zip(names, colors)):
        ET.SubElement(palette, "paletteEntry", value=str(value), color=hex_color(color), alpha="255", label=name)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + _text(qgis)


def polygons_qml(names: list[str], colors: list[RGB], field: str = "class_name") -> str:
    """QGIS's categorised renderer: one fill per class in its colour, no outline."""
    qgis = _qgis_root()
    renderer = ET.SubElement(qgis, "renderer-v2", type="categorizedSymbol", attr=field, symbollevels="0",
                             forceraster="0", enableorderby="0")
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for index, (name, color) in enumerate(zip(names, colors)):
        ET.SubElement(categories, "category", value=name, label=name, symbol=str(index), render="true")
        symbol = ET.SubElement(symbols, "symbol", type="fill", name=str(index), alpha="1", clip_to_extent="1",
                               force_rhr="0")
        layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"})
        options = ET.SubElement(layer, "Option", type="Map")
        for key, value in (("color", "{},{},{},255".format(*color)), ("style", "solid"), ("outline_style", "no")):
            ET.SubElement(options, "Option", name=key, value=value, type="QString")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + _text(qgis)


def polygons_sld(names: list[str], colors: list[RGB], layer: str, field: str = "class_name") -> str:
    """The same categories as an OGC SLD 1.1 (GeoServer, MapServer, QGIS)."""
    ns = {"sld": "http://www.opengis.net/sld", "se": "http://www.opengis.net/se", "ogc": "http://www.opengis.net/ogc"}
    for prefix, uri in ns.items():
        ET.register_namespace("" if prefix == "sld" else prefix, uri)
    sld, se, ogc = (f"{{{ns[p]}}}" for p in ("sld", "se", "ogc"))
    root = ET.Element(f"{sld}StyledLayerDescriptor", version="1.1.0")
    named = ET.SubElement(root, f"{sld}NamedLayer")
    ET.SubElement(named, f"{se}Name").text = layer
    style = ET.SubElement(named, f"{sld}UserStyle")
    ET.SubElement(style, f"{se}Name").text = layer
    features = ET.SubElement(style, f"{se}FeatureTypeStyle")
    for name, color in zip(names, colors):
        rule = ET.SubElement(features, f"{se}Rule")
        ET.SubElement(rule, f"{se}Name").text = name
        equal = ET.SubElement(ET.SubElement(rule, f"{ogc}Filter"), f"{ogc}PropertyIsEqualTo")
        ET.SubElement(equal, f"{ogc}PropertyName").text = field
        ET.SubElement(equal, f"{ogc}Literal").text = name
        fill = ET.SubElement(ET.SubElement(rule, f"{se}PolygonSymbolizer"), f"{se}Fill")
        ET.SubElement(fill, f"{se}SvgParameter", name="fill").text = hex_color(color)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + _text(root)


def add_gpkg_style(path: Path, layer: str, names: list[str], colors: list[RGB]) -> None:
    """The default style of ``layer`` in the GeoPackage at ``path`` (written before it is renamed
    into place): the ``layer_styles`` table, registered as attributes as QGIS registers it."""
    db = sqlite3.connect(path)
    with db:
        (geometry_column,) = db.execute(
            "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)).fetchone()
        db.execute(LAYER_STYLES_DDL)
        db.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName,"
            " styleQML, styleSLD, useAsDefault, description, owner, ui) VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', NULL)",
            (layer, geometry_column, layer, polygons_qml(names, colors), polygons_sld(names, colors, layer),
             "fcnseg: polygons by class, in the class colours"),
        )
        db.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change)"
            " VALUES ('layer_styles', 'attributes', 'layer_styles', '', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
        )
    db.close()
