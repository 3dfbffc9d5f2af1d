"""Label sources for training and evaluation: a class raster, or vectors rasterised per window.

Either way a label window is (h, w) uint8 class ids on the image's grid, 255 where nothing is labelled.
Vector labels (anything OGR reads: GeoPackage, SpatiaLite, FlatGeobuf, GML, KML, Shapefile,
GeoJSON; GeoParquet through pyarrow) are loaded once, reprojected to the image's CRS and indexed;
each window burns only the shapes that touch it, so memory follows the vector data, never the
raster's size. A file is vector labels when ``--label-field`` is given or OGR opens it as vectors.

Label values become class ids one way, recorded in the model card (``LabelMapping``) so that
evaluation maps its reference labels exactly as training did: integer values (raster pixels,
integer fields) are the class ids; text values are classes in ``--classes`` order, else sorted
(numerically when they are all whole numbers); ``"1"`` and ``1`` are the same value. A layer
without a class field is a footprint layer: every feature is class 1, named after the layer.
Pixels covered by no feature are class 0 "background" (``--outside background``, the default for
footprints) or unlabelled (``--outside unlabelled``, the default with a class field).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.io import DatasetReader
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from fcnseg.models.checkpoint import MAX_CLASSES, OUTSIDE_POLICIES, LabelMapping, ModelCard
from fcnseg.pipeline.classes import raster_classes
from fcnseg.pipeline.io import InputError, bounded_gdal_cache, open_raster, read_pixels

log = logging.getLogger(__name__)

UNLABELLED = 255
BACKGROUND = 0  #: the class id of pixels outside every feature under ``--outside background``
FOOTPRINT = 1  #: the class id of every feature of a layer without a class field
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


def value_key(value: Any) -> str | None:
    """A label value as the text the card records: whole numbers as their digits (``1``, ``1.0``,
    ``"1"`` and ``"01"`` are all ``"1"``), anything else as stripped text; None when missing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    try:
        return str(int(text))
    except ValueError:
        return text


def _is_whole(key: str | None) -> bool:
    try:
        int(key)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def natural_order(keys: Iterable[str]) -> list[str]:
    """Whole numbers first in numeric order (``"2"`` before ``"10"``), then text in text order."""
    return sorted(set(keys), key=lambda k: (0, int(k), "") if _is_whole(k) else (1, 0, k))


def identity_values(num_classes: int) -> list[str | None]:
    """The card's values of a model whose label values are its class ids."""
    return [str(i) for i in range(num_classes)]


def check_outside(outside: str | None) -> None:
    if outside is not None and outside not in OUTSIDE_POLICIES:
        raise InputError(f"--outside must be {' or '.join(OUTSIDE_POLICIES)}, got {outside!r}")


class RasterLabels:
    """A class raster on exactly the image's grid; its nodata becomes 255.

    Pixel values are class ids, unless ``lut`` maps them (value -> id, from a model card whose
    training labels had other values); values the lut leaves out are refused by ``check_class_ids``.
    """

    def __init__(self, path: str | Path, image: DatasetReader, lut: dict[int, int] | None = None) -> None:
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
        self.lut = lut
        self.outside: str | None = None  # every pixel of a raster says what it is

    def _read_valid(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        labels, valid = read_pixels(self.src, [1], window)
        return labels[0], valid

    def read(self, window: Window) -> np.ndarray:
        labels, valid = self._read_valid(window)
        if self.lut is not None:
            out = np.full(labels.shape, UNLABELLED, np.uint8)
            for value, class_id in self.lut.items():
                out[valid & (labels == value)] = class_id
            return out
        out = np.where(valid, labels, UNLABELLED)
        return np.where((out >= 0) & (out <= 255), out, UNLABELLED).astype(np.uint8)

    def _distinct(self, keep: Callable[[np.ndarray], np.ndarray], limit: int) -> list[int | float]:
        """The distinct labelled values (nodata excluded) that ``keep`` keeps, read window by window
        along the raster's blocks (memory follows the window, not the raster), at most ``limit``."""
        with bounded_gdal_cache():
            if self.src.dtypes[0] == "uint8":
                counts = np.zeros(256, dtype=np.int64)
                for window in scan_windows(self.src):
                    labels, valid = self._read_valid(window)
                    counts += np.bincount(labels[valid], minlength=256)
                present = np.flatnonzero(counts)
                return [int(v) for v in present[keep(present)]][:limit]
            found: set[int | float] = set()
            for window in scan_windows(self.src):
                labels, valid = self._read_valid(window)
                values = labels[valid]
                values = np.unique(values[keep(values)])
                found.update(_as_id(v) for v in values[: limit - len(found)])
                if len(found) >= limit:
                    break
            return sorted(found)

    def unknown_ids(self, num_classes: int) -> list[int]:
        """Labelled values with no class: at or above ``num_classes`` (255 and nodata are not labels),
        or, with a lut, every value it does not map."""
        if self.lut is not None:
            known = np.array([*self.lut, UNLABELLED])
            return self._distinct(lambda v: ~np.isin(v, known), MAX_UNKNOWN_IDS)
        return self._distinct(lambda v: (v >= num_classes) & (v != UNLABELLED), MAX_UNKNOWN_IDS)

    def present_ids(self) -> list[int]:
        """The class ids the raster holds (what names default to when it names none)."""
        values = self._distinct(lambda v: (v >= 0) & (v < UNLABELLED), MAX_CLASSES + 1)
        ids = [int(v) for v in values if float(v).is_integer()]
        if len(values) > MAX_CLASSES or len(ids) != len(values):
            raise InputError(f"{self.path}: not a class raster (holds more than {MAX_CLASSES} values, or fractions)")
        if self.lut is not None:
            return sorted({self.lut[v] for v in ids if v in self.lut})
        return ids

    def mapping(self, num_classes: int) -> LabelMapping:
        """What training records in the card: raster values are the class ids, or, read through a
        card's lut (training on from ``--init``), the values that card's training had."""
        if self.lut is None:
            return LabelMapping(values=identity_values(num_classes), kind="raster")
        values: list[str | None] = [None] * num_classes
        for value, class_id in self.lut.items():
            if values[class_id] is None:
                values[class_id] = str(value)
        return LabelMapping(values=values, kind="raster")

    def close(self) -> None:
        self.src.close()


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
        whole = all(_is_whole(k) for k in keys if k is not None) and column.dtype.kind in "iuf"
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


def is_vector(path: str | Path) -> bool:
    """Whether OGR opens ``path`` as vectors (or it is GeoParquet): rasters are not."""
    import pyogrio

    if is_parquet(path):
        return True
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
        if getattr(labels, "lut", None) is not None and isinstance(labels, RasterLabels):
            known = ", ".join(f"{v}={class_names[i]}" for v, i in sorted(labels.lut.items())[:8])
            raise InputError(f"{path}: holds values [{shown}] that the model's card maps to no class ({known})")
        raise InputError(f"{path}: holds class ids [{shown}] but the model has {len(class_names)} classes ({names})")


def training_lookup(class_names: Sequence[str] | None, outside: str):
    """Text values to class ids for training: ``--classes`` order, else sorted (a value named
    "background" is the background class 0 under ``--outside background``)."""

    def build(keys: list[str | None]) -> tuple[list[str | None], dict[str, int]]:
        if class_names:
            values: list[str | None] = [value_key(n) for n in class_names]
        else:
            order = natural_order(k for k in keys if k is not None)
            if outside == "background":
                values = ["background" if "background" in order else None] + [k for k in order if k != "background"]
            else:
                values = list(order)
        return values, {v: i for i, v in enumerate(values) if v is not None}

    return build


def card_lookup(card: ModelCard):
    """Values to class ids as the card's training mapped them; class names are accepted too.
    A card from before the mapping was recorded: whole numbers are the ids, text the class names."""

    def build(keys: list[str | None]) -> tuple[list[str | None], dict[str, int]]:
        if card.labels is not None:
            values = list(card.labels.values)
            lut = {v: i for i, v in enumerate(values) if v is not None}
        else:
            values = identity_values(card.num_classes)
            lut = {k: int(k) for k in keys if _is_whole(k)}
        for i, name in enumerate(card.class_names):
            lut.setdefault(value_key(name), i)
        return values, lut

    return build


def raster_lut(card: ModelCard | None) -> dict[int, int] | None:
    """Pixel value -> class id for reference rasters of ``card``'s model: None where pixel values
    are the class ids (the card's values are the ids, text, or not recorded)."""
    mapping = card.labels if card is not None else None
    if mapping is None:
        return None
    known = [v for v in mapping.values if v is not None]
    if not all(_is_whole(v) for v in known) or mapping.values == identity_values(card.num_classes):
        return None
    lut = {int(v): i for i, v in enumerate(mapping.values) if v is not None}
    if mapping.outside == "background" and mapping.values[BACKGROUND] is None:
        lut.setdefault(0, BACKGROUND)  # a reference raster's 0 is the background that had no value
    return lut


def open_labels(
    path: str | Path,
    image: DatasetReader,
    field: str | None = None,
    class_names: list[str] | None = None,
    *,
    outside: str | None = None,
    class_name: str | None = None,
    card: ModelCard | None = None,
    layer: str | None = None,
) -> RasterLabels | VectorLabels:
    """A label source for ``path``: vectors when ``field`` or ``layer`` is given or OGR opens the
    file as vectors, else a raster. With ``card`` (evaluation, validation, training on from
    ``--init``) values map to class ids as the card's training mapped them, and ``field`` and
    ``outside`` default to the card's."""
    check_outside(outside)
    recorded = card.labels if card is not None else None
    if field is None and layer is None and not is_vector(path):
        return RasterLabels(path, image, raster_lut(card))
    if field is None and recorded is not None:
        field = recorded.field
    if outside is None:
        outside = recorded.outside if recorded is not None else ("unlabelled" if field else "background")
    if card is not None:
        return VectorLabels(path, image, field, card_lookup(card), outside=outside, ints_are_ids=False, layer=layer)
    return training_vectors(path, image, field, class_names, outside, class_name, layer)


def training_vectors(
    path: str | Path, image: DatasetReader, field: str | None, class_names: list[str] | None,
    outside: str, class_name: str | None, layer: str | None = None,
) -> VectorLabels:
    """Vector labels for training, with the class names they imply (``--classes`` first)."""
    if field is None:
        if outside == "unlabelled":
            raise InputError(f"{path}: --outside unlabelled with a layer without --label-field labels one class only;"
                             " give --label-field, or use --outside background")
        if class_names and len(class_names) != 2:
            raise InputError(f"{path}: a layer without --label-field has 2 classes (background, its features),"
                             f" --classes names {len(class_names)}")
    labels = VectorLabels(path, image, field, training_lookup(class_names, outside), outside=outside, layer=layer)
    if class_names:
        labels.class_names = list(class_names)
    elif field is None:
        labels.class_names = ["background", class_name or labels.layer]
    elif labels.lut is not None:
        labels.class_names = [v if v is not None else "background" for v in labels.values]
    if class_names:
        check_class_ids(labels, path, class_names)
    return labels


def default_class_names(labels: LabelSource, path: str | Path) -> list[str]:
    """``class_0`` … ``class_N`` for labels that name no class, from the ids they hold (class 0 is
    "background" under ``--outside background``), with a warning."""
    present = labels.present_ids() if hasattr(labels, "present_ids") else []
    count = max(2, max(present, default=0) + 1)
    names = [f"class_{i}" for i in range(count)]
    if getattr(labels, "outside", None) == "background":
        names[BACKGROUND] = "background"
    log.warning("%s: names no classes (no class tags, category names or attribute table); class ids 0..%d"
                " are called %s (name them with --classes)", path, count - 1, ", ".join(names))
    return names
