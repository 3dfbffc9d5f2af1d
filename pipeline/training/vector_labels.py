"""Vector labels (anything OGR reads: GeoPackage, SpatiaLite, FlatGeobuf, GML, KML, Shapefile,
GeoJSON; GeoParquet through pyarrow), loaded once, reprojected to the image's CRS, indexed, and
burnt into each window on the fly: a window rasterises only the shapes that touch it, so memory
follows the vector data, never the raster's size.

geopandas, pyogrio and shapely are imported inside the functions that read vectors: a run on
raster labels (and ``fcnseg evaluate`` on a class raster) never loads them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize
from rasterio.io import DatasetReader
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from fcnseg.errors import InputError
from fcnseg.models.card import MAX_CLASSES, LabelMapping
from fcnseg.pipeline.io import crs_name, open_raster
from fcnseg.pipeline.training.label_values import (
    BACKGROUND,
    FOOTPRINT,
    UNLABELLED,
    identity_values,
    is_whole,
    natural_order,
    value_key,
)

log = logging.getLogger(__name__)

def ignore_burn_georeference_warning() -> None:
    """``rasterize`` burns into an in-memory raster georeferenced by the window's transform; called
    from training's read threads, rasterio warns now and then that such a raster "has no
    geotransform" (the labels burnt are right: tests/test_quiet_logs.py compares them with a
    one-thread burn), which reads as if the labels had lost their georeference. Only that module's
    warning is ignored; set when vector labels are opened (a filter set at import is undone by
    whoever restores the filters later, as pytest does), once: an equal filter replaces itself."""
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module=r"rasterio\.features")


class VectorLabels:
    """Polygons burnt into each window on the fly (later shapes win), their class from ``field``
    through ``lookup`` (builds value -> class id from the values; integer fields are the ids
    themselves with ``ints_are_ids``), or, without a field, every feature class 1; pixels outside
    every feature are ``outside_id`` (0 or 255)."""

    def __init__(
        self,
        path: str | Path,
        image: DatasetReader,
        field: str | None,
        lookup: Callable[[list[str | None]], tuple[list[str | None], dict[str, int] | None]] | None = None,
        *,
        outside: str = "unlabelled",
        ints_are_ids: bool = True,
        layer: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.ints_are_ids = ints_are_ids
        ignore_burn_georeference_warning()
        frame, self.layer = read_vectors(path, layer)
        if frame.crs is None:
            raise InputError(f"{path}: vector labels have no CRS")
        if field is not None and field not in frame.columns:
            fields = ", ".join(c for c in frame.columns if c != frame.geometry.name) or "none"
            raise InputError(f"{path}: no field {field!r} (--label-field; fields: {fields})")
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
        if len(frame) == 0:
            raise InputError(f"{path}: holds no feature with a geometry")
        frame = frame.to_crs(image.crs)
        self.image_box = _box(image.bounds)
        inside = frame.sindex.query(self.image_box, predicate="intersects")
        if len(inside) == 0:
            raise InputError(
                f"{path}: no feature lies within the image {Path(image.name).name}"
                f" (features in {crs_name(frame.crs)} reprojected; wrong file or wrong CRS?)"
            )
        self.field, self.outside = field, outside
        self.outside_id = BACKGROUND if outside == "background" else UNLABELLED
        self.class_names: list[str] | None = None
        self.class_colors: list[tuple[int, int, int]] | None = None
        self.lut: dict[str, int] | None = None
        if field is None:
            self.values: list[str | None] = ["0", "1"]
            ids = np.full(len(frame), FOOTPRINT, dtype=np.int64)
        else:
            keys = [value_key(v) for v in frame[field].tolist()]
            ids = self._ids(keys, frame[field], lookup)
        labelling = ids != UNLABELLED
        if not labelling.all():  # features without a value label nothing
            frame, ids = frame[labelling], ids[labelling]
        self.geometries = frame.geometry.to_numpy()
        self.ids = ids.astype(np.uint8)
        self.index = frame.sindex  # built once above for the check, unless features were dropped
        self.image_transform = image.transform

    def _ids(self, keys: list[str | None], column, lookup) -> np.ndarray:
        """Class ids of the features (255 for a missing value: that feature labels nothing)."""
        if any(k is None for k in keys):
            log.warning("%s: %d features have no %s value; they label nothing", self.path,
                        sum(k is None for k in keys), self.field)
        whole = all(is_whole(k) for k in keys if k is not None) and column.dtype.kind in "iuf"
        if (lookup is None or self.ints_are_ids) and whole:
            self.values = []  # integer values are the class ids
            bad = sorted({int(k) for k in keys if k is not None and not 0 <= int(k) < UNLABELLED})
            if bad:
                raise InputError(f"{self.path}: {self.field} values {bad[:5]} are not class ids (0..{MAX_CLASSES - 1})")
            return np.array([int(k) if k is not None else UNLABELLED for k in keys], dtype=np.int64)
        if lookup is None:
            raise InputError(f"{self.path}: {self.field} holds text; it needs a class list")  # never: see open_labels
        self.values, self.lut = lookup([k for k in keys if k is not None])
        unknown = natural_order(k for k in keys if k is not None and k not in self.lut)
        if unknown:
            shown = ", ".join(unknown[:8]) + (", ..." if len(unknown) > 8 else "")
            known = ", ".join(str(v) for v in self.values[:8] if v is not None)
            raise InputError(f"{self.path}: {self.field} values [{shown}] are none of the classes' values ({known})")
        return np.array([self.lut[k] if k is not None else UNLABELLED for k in keys], dtype=np.int64)

    def unknown_ids(self, num_classes: int) -> list[int]:
        """Class ids at or above ``num_classes`` among the shapes that reach the image."""
        ids = self.ids[self.index.query(self.image_box)]
        return sorted(int(i) for i in np.unique(ids[ids >= num_classes]))

    def present_ids(self) -> list[int]:
        """The class ids that reach the image, background included under ``--outside background``."""
        ids = {int(i) for i in np.unique(self.ids[self.index.query(self.image_box)])}
        return sorted(ids | ({BACKGROUND} if self.outside_id == BACKGROUND else set()))

    def mapping(self, num_classes: int) -> LabelMapping:
        """What training records in the card: the value of each class id, the field, the outside policy."""
        values = self.values or identity_values(num_classes)
        values = values + [None] * (num_classes - len(values))
        return LabelMapping(values=values[:num_classes], field=self.field, outside=self.outside, kind="vector")

    def read(self, window: Window) -> np.ndarray:
        shape = (int(window.height), int(window.width))
        hits = np.sort(self.index.query(_box(window_bounds(window, self.image_transform))))
        if len(hits) == 0:
            return np.full(shape, self.outside_id, np.uint8)
        shapes = zip(self.geometries[hits], self.ids[hits], strict=True)
        return rasterize(
            shapes, out_shape=shape, transform=window_transform(window, self.image_transform),
            fill=self.outside_id, dtype="uint8",
        )

    def close(self) -> None:
        pass


def is_parquet(path: str | Path) -> bool:
    """GeoParquet (which this GDAL build cannot read): by its magic bytes, whatever the suffix."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


#: GDAL raster drivers whose files hold no vectors (OGR opens none of them): a file GDAL opens as
#: a raster of one of these is not vector labels, and ``is_vector`` says so without asking OGR.
RASTER_ONLY_DRIVERS = frozenset({"GTiff", "PNG", "JPEG", "VRT", "HFA", "ENVI", "EHdr", "AAIGrid"})


def is_raster_only(path: str | Path) -> bool:
    """Whether GDAL opens ``path`` as a raster of a RASTER_ONLY_DRIVERS format: the common case
    (a labels GeoTIFF) answered without pyogrio, which imports geopandas, shapely and pyarrow
    (``fcnseg evaluate`` on a class raster loads none of them)."""
    try:
        with open_raster(path) as src:
            return src.driver in RASTER_ONLY_DRIVERS
    except InputError:
        return False


def is_vector(path: str | Path) -> bool:
    """Whether OGR opens ``path`` as vectors (or it is GeoParquet): rasters are not."""
    if is_parquet(path):
        return True
    if is_raster_only(path):
        return False
    import pyogrio  # here: it imports geopandas, shapely and pyarrow

    try:
        info = pyogrio.list_layers(path)
    except Exception:  # noqa: BLE001 - "not a vector file" comes in many shapes
        return False
    return len(info) > 0


def vector_layer(path: str | Path, layer: str | None) -> str:
    """The layer to read: ``layer`` (``--label-layer``) when given, else the file's only layer with
    geometries (a GeoPackage's style or attribute tables do not count); a file of several such
    layers names them in the error rather than training on whichever comes first."""
    import pyogrio

    layers = [(str(name), kind) for name, kind in pyogrio.list_layers(path)]
    if layer is not None:
        if layer not in [name for name, _ in layers]:
            raise InputError(f"{path}: no layer {layer!r} (--label-layer; layers: {', '.join(n for n, _ in layers)})")
        return layer
    spatial = [name for name, kind in layers if kind is not None]
    if len(spatial) > 1:
        shown = ", ".join(spatial[:8]) + (", ..." if len(spatial) > 8 else "")
        raise InputError(f"{path}: holds {len(spatial)} layers with geometries ({shown}); name one with --label-layer")
    return spatial[0] if spatial else (layers[0][0] if layers else Path(path).stem)


def read_vectors(path: str | Path, layer: str | None = None):
    """One layer of a vector file (see ``vector_layer``) as a GeoDataFrame, and the layer's name."""
    import geopandas as gpd  # imported here: raster-only runs need not load it

    try:
        if is_parquet(path):
            return gpd.read_parquet(path), Path(path).stem
        name = vector_layer(path, layer)
        return gpd.read_file(path, layer=name, engine="pyogrio"), name
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is one clear error
        raise InputError(f"{path}: cannot read as vector labels ({' '.join(str(exc).split())})") from None


def _box(bounds: tuple[float, float, float, float]):
    from shapely.geometry import box

    return box(*bounds)
