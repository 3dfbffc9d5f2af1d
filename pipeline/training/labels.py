"""Label sources for training and evaluation: a class raster, or vectors rasterised per window.

Either way a label window is (h, w) uint8 on the image's grid, 255 where nothing is labelled.
Vector labels (GeoPackage, GeoJSON, Shapefile, anything pyogrio reads) are loaded once,
reprojected to the image's CRS and indexed; each window burns only the shapes that touch it,
so memory follows the vector data, never the raster's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from rasterio.features import rasterize
from rasterio.io import DatasetReader
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from fcnseg.pipeline.classes import raster_classes
from fcnseg.pipeline.io import InputError, open_raster

UNLABELLED = 255
VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet"}


class LabelSource(Protocol):
    class_names: list[str] | None
    class_colors: list[tuple[int, int, int]] | None

    def read(self, window: Window) -> np.ndarray: ...

    def close(self) -> None: ...


class RasterLabels:
    """A class raster on exactly the image's grid; its nodata becomes 255."""

    def __init__(self, path: str | Path, image: DatasetReader) -> None:
        self.path = Path(path)
        self.src = open_raster(path)
        if (self.src.width, self.src.height) != (image.width, image.height) or (
            self.src.transform != image.transform
        ):
            self.src.close()
            raise InputError(f"{path}: label raster is not on the image's grid (size or transform differ)")
        table = raster_classes(self.src)
        self.class_names = table.names or None
        self.class_colors = table.colors

    def read(self, window: Window) -> np.ndarray:
        labels = self.src.read(1, window=window)
        valid = self.src.read_masks(1, window=window) > 0
        out = np.where(valid, labels, UNLABELLED)
        return np.where((out >= 0) & (out <= 255), out, UNLABELLED).astype(np.uint8)

    def close(self) -> None:
        self.src.close()


class VectorLabels:
    """Polygons with a class field, burnt into each window on the fly (later shapes win)."""

    def __init__(self, path: str | Path, image: DatasetReader, field: str, class_names: list[str] | None) -> None:
        import geopandas as gpd  # imported here: raster-only runs need not load it

        self.path = Path(path)
        try:
            frame = gpd.read_file(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure is one clear error
            raise InputError(f"{path}: cannot read as vector labels ({exc})") from None
        if field not in frame.columns:
            raise InputError(f"{path}: no field {field!r} (fields: {', '.join(c for c in frame.columns if c != 'geometry')})")
        if frame.crs is None:
            raise InputError(f"{path}: vector labels have no CRS")
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty].to_crs(image.crs)
        values = frame[field]
        if values.dtype.kind in "iu":
            self.class_names = class_names
            ids = values.to_numpy()
        else:
            self.class_names = class_names or sorted(values.astype(str).unique())
            lookup = {name: i for i, name in enumerate(self.class_names)}
            unknown = set(values.astype(str)) - set(lookup)
            if unknown:
                raise InputError(f"{path}: classes {sorted(unknown)[:5]} are not among {self.class_names}")
            ids = values.astype(str).map(lookup).to_numpy()
        if len(ids) and (ids.min() < 0 or ids.max() >= UNLABELLED):
            raise InputError(f"{path}: class ids must be in 0..254")
        self.class_colors: list[tuple[int, int, int]] | None = None
        self.geometries = frame.geometry.to_numpy()
        self.ids = ids.astype(np.uint8)
        self.index = frame.sindex
        self.image_transform = image.transform

    def read(self, window: Window) -> np.ndarray:
        shape = (int(window.height), int(window.width))
        hits = np.sort(self.index.query(_box(window_bounds(window, self.image_transform))))
        if len(hits) == 0:
            return np.full(shape, UNLABELLED, np.uint8)
        shapes = zip(self.geometries[hits], self.ids[hits], strict=True)
        return rasterize(
            shapes, out_shape=shape, transform=window_transform(window, self.image_transform),
            fill=UNLABELLED, dtype="uint8",
        )

    def close(self) -> None:
        pass


def _box(bounds: tuple[float, float, float, float]):
    from shapely.geometry import box

    return box(*bounds)


def open_labels(
    path: str | Path, image: DatasetReader, field: str | None = None, class_names: list[str] | None = None
) -> RasterLabels | VectorLabels:
    """A label source for ``path``: vectors by file suffix (they need ``field``), else a raster."""
    if Path(path).suffix.lower() in VECTOR_SUFFIXES:
        if not field:
            raise InputError(f"{path}: vector labels need --label-field")
        return VectorLabels(path, image, field, class_names)
    return RasterLabels(path, image)
