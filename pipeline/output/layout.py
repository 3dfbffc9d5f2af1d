"""The files of one output folder, by name: every stage and reader agrees on them here.

Kept free of heavy imports so that readers (STAC, query) can use the names without the
Dask/torch stack.
"""

STORE_NAME = "labels.zarr"
LABELS_COG = "labels.tif"
#: labels.tif's class names for GDAL (PAM: category names, attribute table) and QGIS (its default style).
LABELS_PAM = "labels.tif.aux.xml"
LABELS_QML = "labels.qml"
PROBABILITIES_COG = "probabilities.tif"
POLYGONS_PARQUET = "polygons.parquet"
POLYGONS_GPKG = "polygons.gpkg"
QUICKLOOK_PNG = "quicklook.png"
ITEM_JSON = "item.json"
RUN_JSON = "run.json"
#: Resume state: parameters.json and one marker per finished chunk.
STATE_DIR = ".fcnseg-run"

#: Every file a run may leave in OUT (a run with other parameters starts by removing them).
OUTPUT_FILES = (RUN_JSON, ITEM_JSON, STORE_NAME, LABELS_COG, LABELS_PAM, LABELS_QML, PROBABILITIES_COG, POLYGONS_PARQUET, POLYGONS_GPKG,
                QUICKLOOK_PNG)
