"""Label sources for training and evaluation: a class raster, or vectors rasterised per window.

Either way a label window is (h, w) uint8 on the image's grid, 255 where nothing is labelled.
Vector labels (GeoPackage, GeoJSON, Shapefile, anything pyogrio reads) are loaded once,
reprojected to the image's CRS and indexed; each window burns only the shapes that touch it,
so memory follows the vector data, never the raster's size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.io import DatasetReader
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from fcnseg.pipeline.classes import raster_classes
from fcnseg.pipeline.io import InputError, bounded_gdal_cache, open_raster, read_pixels

UNLABELLED = 255
VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet"}
#: Pixels per window when a label raster is scanned for its class ids (bounded memory).
SCAN_PIXELS = 4 * 1024 * 1024
#: Distinct unknown ids a scan keeps (a raster of reflectances passed as labels would hold millions).
MAX_UNKNOWN_IDS = 64


class LabelSource(Protocol):
    class_names: list[str] | None
    class_colors: list[tuple[int, int, int]] | None

    def read(self, window: Window) -> np.ndarray: ...

    def unknown_ids(self, num_classes: int) -> list[int]: ...

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
        if self.src.crs and image.crs and self.src.crs != image.crs:
            label_crs, image_crs = crs_name(self.src.crs), crs_name(image.crs)
            self.src.close()
            raise InputError(f"{path}: label raster is in {label_crs}, the image in {image_crs}")
        table = raster_classes(self.src)
        self.class_names = table.names or None
        self.class_colors = table.colors

    def _read_valid(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        labels, valid = read_pixels(self.src, [1], window)
        return labels[0], valid

    def read(self, window: Window) -> np.ndarray:
        labels, valid = self._read_valid(window)
        out = np.where(valid, labels, UNLABELLED)
        return np.where((out >= 0) & (out <= 255), out, UNLABELLED).astype(np.uint8)

    def unknown_ids(self, num_classes: int) -> list[int]:
        """Labelled values at or above ``num_classes`` (255 and nodata are not labels), found by
        reading the raster window by window along its blocks: memory follows the window, not the raster."""
        with bounded_gdal_cache():
            if self.src.dtypes[0] == "uint8":
                counts = np.zeros(256, dtype=np.int64)
                for window in scan_windows(self.src):
                    labels, valid = self._read_valid(window)
                    counts += np.bincount(labels[valid], minlength=256)
                return [i for i in range(num_classes, UNLABELLED) if counts[i]]
            unknown: set[int] = set()
            for window in scan_windows(self.src):
                labels, valid = self._read_valid(window)
                values = labels[valid & (labels >= num_classes) & (labels != UNLABELLED)]
                unknown.update(_as_id(v) for v in np.unique(values)[: MAX_UNKNOWN_IDS - len(unknown)])
                if len(unknown) >= MAX_UNKNOWN_IDS:
                    break
            return sorted(unknown)

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
        self.image_box = _box(image.bounds)
        if class_names:
            check_class_ids(self, path, class_names)

    def unknown_ids(self, num_classes: int) -> list[int]:
        """Class ids at or above ``num_classes`` among the shapes that reach the image."""
        ids = self.ids[self.index.query(self.image_box)]
        return sorted(int(i) for i in np.unique(ids[ids >= num_classes]))

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


def _as_id(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def crs_name(crs: CRS) -> str:
    """``EPSG:32633`` where the CRS has an EPSG code, else its shortest description."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


def scan_windows(src: DatasetReader) -> Iterator[Window]:
    """Windows over the whole raster, each a whole number of blocks and about ``SCAN_PIXELS`` large."""
    block_h, block_w = src.block_shapes[0]
    width = min(src.width, max(block_w, 2048 // block_w * block_w))
    height = max(block_h, SCAN_PIXELS // width // block_h * block_h)
    for row in range(0, src.height, height):
        for col in range(0, src.width, width):
            yield Window(col, row, min(width, src.width - col), min(height, src.height - row))


def check_class_ids(labels: LabelSource, path: str | Path, class_names: Sequence[str]) -> None:
    """Refuse labels that hold class ids the model has no class for (they would crash training
    late, or silently drop out of an evaluation)."""
    unknown = labels.unknown_ids(len(class_names))
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (", ..." if len(unknown) > 10 else "")
        names = ", ".join(class_names[:6]) + (", ..." if len(class_names) > 6 else "")
        raise InputError(f"{path}: holds class ids [{shown}] but the model has {len(class_names)} classes ({names})")


def open_labels(
    path: str | Path, image: DatasetReader, field: str | None = None, class_names: list[str] | None = None
) -> RasterLabels | VectorLabels:
    """A label source for ``path``: vectors by file suffix (they need ``field``), else a raster."""
    if Path(path).suffix.lower() in VECTOR_SUFFIXES:
        if not field:
            raise InputError(f"{path}: vector labels need --label-field")
        return VectorLabels(path, image, field, class_names)
    return RasterLabels(path, image)
