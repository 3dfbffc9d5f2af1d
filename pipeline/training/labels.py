"""Label sources for training and evaluation: a class raster, or vectors rasterised per window.

Either way a label window is (h, w) uint8 class ids on the image's grid, 255 where nothing is labelled.
This module reads class rasters and opens either kind (``open_labels``); vector labels (anything
OGR reads, burnt per window) are ``vector_labels.py``, and how a value becomes a class id is
``label_values.py``. A file is vector labels when ``--label-field`` is given or OGR opens it as vectors.

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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from rasterio.io import DatasetReader
from rasterio.windows import Window

from fcnseg.models.card import MAX_CLASSES, OUTSIDE_POLICIES, LabelMapping, ModelCard
from fcnseg.pipeline.classes import raster_classes
from fcnseg.pipeline.io import InputError, bounded_gdal_cache, crs_name, open_raster, read_pixels
from fcnseg.pipeline.training.label_values import (
    BACKGROUND,
    UNLABELLED,
    identity_values,
    is_whole,
    natural_order,
    value_key,
)
from fcnseg.pipeline.training.vector_labels import VectorLabels, is_vector

log = logging.getLogger(__name__)

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


def _as_id(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


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
            lut = {k: int(k) for k in keys if is_whole(k)}
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
    if not all(is_whole(v) for v in known) or mapping.values == identity_values(card.num_classes):
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
