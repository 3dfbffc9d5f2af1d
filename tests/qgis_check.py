"""Run by the system Python that has QGIS (Debian's python3-qgis), not by the project's: opens an
output folder as an analyst's QGIS would and prints what its legends show, as one JSON object.

Usage: QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_check.py OUT
"""

import json
import sys

from osgeo import gdal
from qgis.core import Qgis, QgsApplication, QgsRasterLayer, QgsVectorLayer


def main(out: str) -> dict:
    labels = QgsRasterLayer(f"{out}/labels.tif", "labels")
    polygons = QgsVectorLayer(f"{out}/polygons.gpkg|layername=polygons", "polygons", "ogr")
    dataset = gdal.Open(f"{out}/labels.tif")  # kept: its band dies with it
    band = dataset.GetRasterBand(1)
    table = band.GetDefaultRAT()
    renderer = polygons.renderer()
    return {
        "qgis": Qgis.QGIS_VERSION,
        "labels_valid": labels.isValid(),
        "labels_renderer": labels.renderer().type(),
        "labels_legend": [[label, color.name()] for label, color in labels.renderer().legendSymbologyItems()],
        "polygons_valid": polygons.isValid(),
        "polygons_count": polygons.featureCount(),
        "polygons_renderer": renderer.type(),
        "polygons_field": renderer.classAttribute() if renderer.type() == "categorizedSymbol" else None,
        "polygons_legend": [[c.label(), c.symbol().color().name()] for c in getattr(renderer, "categories", list)()],
        "gdal_category_names": band.GetCategoryNames(),
        "gdal_rat": [[table.GetValueAsString(row, col) for col in range(table.GetColumnCount())]
                     for row in range(table.GetRowCount())] if table is not None else None,
    }


if __name__ == "__main__":
    app = QgsApplication([], False)
    app.initQgis()
    try:
        print(json.dumps(main(sys.argv[1])))
    finally:
        app.exitQgis()
