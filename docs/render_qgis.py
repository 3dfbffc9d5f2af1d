"""Render an output folder as QGIS shows it on open (its own styles, its own legend), for README.

Run with the system Python that has QGIS (Debian's python3-qgis), headless:
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 docs/render_qgis.py OUT docs/images
writes qgis_labels.png (labels.tif and its legend) and qgis_polygons.png (polygons.gpkg and its legend).
"""

import sys
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsLayout,
    QgsLayoutExporter,
    QgsLayoutItemLegend,
    QgsLayoutItemMap,
    QgsLayoutPoint,
    QgsLayoutSize,
    QgsProject,
    QgsRasterLayer,
    QgsUnitTypes,
    QgsVectorLayer,
)


def render(layer, path: Path) -> None:
    """One page: the layer at its full extent, its legend beside it."""
    project = QgsProject.instance()
    project.clear()
    project.addMapLayer(layer)
    layout = QgsLayout(project)
    layout.initializeDefaults()
    page = layout.pageCollection().page(0)
    page.setPageSize(QgsLayoutSize(190, 130, QgsUnitTypes.LayoutMillimeters))
    frame = QgsLayoutItemMap(layout)
    frame.attemptMove(QgsLayoutPoint(5, 5, QgsUnitTypes.LayoutMillimeters))
    frame.attemptResize(QgsLayoutSize(120, 120, QgsUnitTypes.LayoutMillimeters))
    frame.setLayers([layer])
    frame.setExtent(layer.extent())
    layout.addLayoutItem(frame)
    legend = QgsLayoutItemLegend(layout)
    legend.setLinkedMap(frame)
    legend.setTitle(layer.name())
    legend.attemptMove(QgsLayoutPoint(130, 5, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(legend)
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = 96
    QgsLayoutExporter(layout).exportToImage(str(path), settings)


def main(out: Path, images: Path) -> None:
    images.mkdir(parents=True, exist_ok=True)
    render(QgsRasterLayer(str(out / "labels.tif"), "labels.tif"), images / "qgis_labels.png")
    render(QgsVectorLayer(f"{out / 'polygons.gpkg'}|layername=polygons", "polygons.gpkg", "ogr"),
           images / "qgis_polygons.png")


if __name__ == "__main__":
    app = QgsApplication([], False)
    app.initQgis()
    try:
        main(Path(sys.argv[1]), Path(sys.argv[2]))
    finally:
        app.exitQgis()
