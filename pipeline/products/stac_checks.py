"""Offline validation of fcnseg's STAC items: the core Item (stac-pydantic) and the rules of the
projection v2.0.0 and classification v2.0.0 extensions that the items use.

The extension schemas cannot be fetched at run time, so their rules for the fields fcnseg writes
are checked explicitly here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import stac_pydantic
from pydantic import ValidationError

PROJECTION_EXTENSION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
CLASSIFICATION_EXTENSION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"

#: classification v2.0.0: ``name`` must match this; ``color_hint`` is six hex digits.
CLASS_NAME_PATTERN = re.compile(r"^[0-9A-Za-z_-]+$")
COLOR_HINT_PATTERN = re.compile(r"^[0-9A-Fa-f]{6}$")


def validate_stac_item(path: str | Path) -> None:
    """Validate a written item.json offline; ValueError says what is wrong.

    Beyond the schema checks, every relative asset href must name a file beside the item: an
    item whose links dangle is worse than none.
    """
    path = Path(path)
    try:
        item = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file: {e}") from e
    try:
        check_stac_item(item)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    for key, asset in item.get("assets", {}).items():
        href = asset["href"]
        if not urlsplit(href).scheme and not (path.parent / href).exists():
            raise ValueError(f"{path}: asset {key!r} points to {href}, which does not exist")


def check_stac_item(item: Mapping[str, Any]) -> None:
    """Core STAC Item (stac-pydantic) plus the projection and classification rules; ValueError if not."""
    try:
        stac_pydantic.Item.model_validate(item)
    except ValidationError as e:
        raise ValueError(f"not a valid STAC Item: {e}") from e
    extensions = item.get("stac_extensions") or []
    objects = [("properties", item["properties"])] + [(f"assets.{k}", a) for k, a in item["assets"].items()]
    for where, fields in objects:
        if any(k.startswith("proj:") for k in fields) and PROJECTION_EXTENSION not in extensions:
            raise ValueError(f"{where} uses proj: fields but stac_extensions lacks {PROJECTION_EXTENSION}")
        _check_projection_fields(where, fields)
        if "classification:classes" in fields:
            if CLASSIFICATION_EXTENSION not in extensions:
                raise ValueError(f"{where} has classification:classes but stac_extensions lacks {CLASSIFICATION_EXTENSION}")
            _check_classes(where, fields["classification:classes"])
    _check_bbox(item["bbox"])


def _check_projection_fields(where: str, fields: Mapping[str, Any]) -> None:
    """The projection v2.0.0 rules for the fields this module writes."""
    if "proj:code" in fields:
        code = fields["proj:code"]
        if code is None and not (fields.get("proj:wkt2") or fields.get("proj:projjson")):
            raise ValueError(f"{where}: proj:code is null but neither proj:wkt2 nor proj:projjson is given")
        if code is not None and not (isinstance(code, str) and re.match(r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+$", code)):
            raise ValueError(f"{where}: proj:code {code!r} is not AUTHORITY:CODE")
    shape = fields.get("proj:shape")
    if shape is not None and not (len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise ValueError(f"{where}: proj:shape {shape!r} is not [height, width]")
    transform = fields.get("proj:transform")
    if transform is not None and not (len(transform) in (6, 9) and all(_is_number(v) for v in transform)):
        raise ValueError(f"{where}: proj:transform needs 6 or 9 numbers, got {transform!r}")
    bbox = fields.get("proj:bbox")
    if bbox is not None and not (len(bbox) in (4, 6) and all(_is_number(v) for v in bbox)):
        raise ValueError(f"{where}: proj:bbox needs 4 or 6 numbers, got {bbox!r}")


def _check_classes(where: str, classes: Any) -> None:
    """The classification v2.0.0 class-object rules: value, name pattern, color_hint, unique."""
    if not isinstance(classes, list) or not classes:
        raise ValueError(f"{where}: classification:classes must be a non-empty list")
    values, names = set(), set()
    for entry in classes:
        value, name = entry.get("value"), entry.get("name")
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{where}: class value {value!r} is not an integer")
        if not isinstance(name, str) or not CLASS_NAME_PATTERN.match(name):
            raise ValueError(f"{where}: class name {name!r} must match {CLASS_NAME_PATTERN.pattern}")
        hint = entry.get("color_hint")
        if hint is not None and not (isinstance(hint, str) and COLOR_HINT_PATTERN.match(hint)):
            raise ValueError(f"{where}: color_hint {hint!r} of class {name} is not six hex digits")
        if "nodata" in entry and not isinstance(entry["nodata"], bool):
            raise ValueError(f"{where}: nodata of class {name} must be true or false")
        if value in values or name in names:
            raise ValueError(f"{where}: class value {value} or name {name} appears twice")
        values.add(value)
        names.add(name)


def _check_bbox(bbox: Sequence[float]) -> None:
    west, south, east, north = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else bbox
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= north <= 90):
        raise ValueError(f"bbox {list(bbox)} is not in longitude/latitude (EPSG:4326)")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
