"""Offline validation of fcnseg's STAC documents (item.json, catalog.json) against JSON Schemas.

Catalogues reject, or silently misread, items that break their extensions' schemas, so an item is
validated before it is written: the STAC 1.1.0 core schema and the schema of every extension it
names in ``stac_extensions``. Outputs are made on machines without network access, so the schemas
ship inside the package (``schemas/``, one file per published URL, see its SOURCES.md) and their
``$ref`` s resolve through a local registry; an extension without a shipped schema is refused
rather than skipped. A few rules that the schemas cannot express are checked here as well.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from fcnseg.pipeline.output.file_fields import SHA2_256_PREFIX

log = logging.getLogger(__name__)

STAC_SCHEMAS = "https://schemas.stacspec.org/v1.1.0"
ITEM_SCHEMA = f"{STAC_SCHEMAS}/item-spec/json-schema/item.json"
CATALOG_SCHEMA = f"{STAC_SCHEMAS}/catalog-spec/json-schema/catalog.json"

PROJECTION_EXTENSION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
CLASSIFICATION_EXTENSION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
MLM_EXTENSION = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
RASTER_EXTENSION = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"

#: The extensions an fcnseg item may name, by field prefix: a field with the prefix needs the extension.
EXTENSIONS: dict[str, str] = {
    "proj": PROJECTION_EXTENSION,
    "classification": CLASSIFICATION_EXTENSION,
    "file": FILE_EXTENSION,
    "mlm": MLM_EXTENSION,
    "processing": PROCESSING_EXTENSION,
    "raster": RASTER_EXTENSION,
}

#: Multihash codes of the digests ``file:checksum`` may carry, and their lengths in bytes.
MULTIHASH_LENGTHS = {0x11: 20, 0x12: 32, 0x13: 64, 0x14: 64, 0x16: 32, 0xB220: 32}
#: A schema error's message is cut here (it may quote a whole item).
MESSAGE_CHARS = 160
#: Failures that mostly say "this alternative did not apply" rather than what is wrong.
WEAK_VALIDATORS = {"type", "const", "enum", "not"}


# --------------------------------------------------------------------------- public API


def validate_stac_item(path: str | Path) -> None:
    """Validate a written item.json offline; ValueError says what is wrong.

    Beyond the schemas, every relative asset href must name a file beside the item (an item whose
    links dangle is worse than none), and a ``file:size`` must still be the file's size.
    """
    path = Path(path)
    item = _read_json(path)
    try:
        check_stac_item(item)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    for key, asset in item.get("assets", {}).items():
        href = asset["href"]
        if urlsplit(href).scheme:
            continue
        target = path.parent / href
        if not target.exists():
            raise ValueError(f"{path}: asset {key!r} points to {href}, which does not exist")
        size = asset.get("file:size")
        if size is not None and target.is_file() and target.stat().st_size != size:
            raise ValueError(f"{path}: asset {key!r} says file:size {size}, but {href} has "
                             f"{target.stat().st_size} bytes (the item is older than the file)")


def check_stac_item(item: Mapping[str, Any]) -> None:
    """The STAC 1.1.0 Item schema, each named extension's schema, and fcnseg's own rules; ValueError if not."""
    _check_schema(item, ITEM_SCHEMA, "STAC Item")
    extensions = list(item.get("stac_extensions") or [])
    for url in extensions:
        _check_schema(item, _known_extension(url), _extension_name(url))
    objects = [("properties", item["properties"])] + [(f"assets.{k}", a) for k, a in item["assets"].items()]
    for where, fields in objects:
        _check_declared(where, fields, extensions)
        _check_projection_code(where, fields)
        if "classification:classes" in fields:
            _check_unique_classes(where, fields["classification:classes"])
        if "file:checksum" in fields:
            _check_multihash(where, fields["file:checksum"])
    if item.get("bbox") is not None:
        _check_bbox(item["bbox"])


def validate_stac_catalog(path: str | Path) -> None:
    """Validate a written catalog.json offline: the schema, and every relative link names a file."""
    path = Path(path)
    catalog = _read_json(path)
    try:
        check_stac_catalog(catalog)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    for link in catalog["links"]:
        href = link["href"]
        if not urlsplit(href).scheme and not (path.parent / href).exists():
            raise ValueError(f"{path}: the {link['rel']} link points to {href}, which does not exist")


def check_stac_catalog(catalog: Mapping[str, Any]) -> None:
    """The STAC 1.1.0 Catalog schema (and any extension it names); ValueError if not."""
    _check_schema(catalog, CATALOG_SCHEMA, "STAC Catalog")
    for url in catalog.get("stac_extensions") or []:
        _check_schema(catalog, _known_extension(url), _extension_name(url))


# --------------------------------------------------------------------------- schemas


@cache
def schema_registry() -> Registry:
    """Every shipped schema, under the URL it is published at (and its ``$id`` where that differs)."""
    resources: list[tuple[str, Resource]] = []
    for relative, document in _schema_files(files(__package__) / "schemas", ""):
        resource = Resource.from_contents(document, default_specification=DRAFT7)
        url = f"https://{relative}"
        resources.append((url, resource))
        declared = str(document.get("$id", "")).rstrip("#")
        if declared.startswith("http") and declared != url:
            resources.append((declared, resource))
    return Registry().with_resources(resources).crawl()


@cache
def _validator(url: str) -> Draft7Validator:
    schema = schema_registry().contents(url)
    return Draft7Validator(schema, registry=schema_registry(), format_checker=Draft7Validator.FORMAT_CHECKER)


def _schema_files(folder: Traversable, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for entry in folder.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            yield from _schema_files(entry, f"{name}/")
        elif entry.name.endswith(".json"):
            yield name, json.loads(entry.read_text(encoding="utf-8"))


def _check_schema(document: Mapping[str, Any], url: str, name: str) -> None:
    """ValueError with the most telling error when ``document`` breaks the schema at ``url``."""
    errors = list(_validator(url).iter_errors(document))
    if not errors:
        return
    reasons = "; ".join(_describe(error) for error in _telling(errors))
    raise ValueError(f"not valid against the {name} schema: {reasons}")


def _telling(errors: Sequence[ValidationError], most: int = 3) -> list[ValidationError]:
    """The errors that say most. Extension schemas wrap everything in oneOf (Item, Catalog,
    Collection), whose own message names no field, so the failures inside them are searched:
    a missing field or a broken pattern before a mere type or constant mismatch of an alternative,
    then the deepest in the document; up to ``most`` of those that tie."""
    leaves = [leaf for error in errors for leaf in _leaves(error)]
    score = {id(leaf): (leaf.validator not in WEAK_VALIDATORS, len(leaf.absolute_path)) for leaf in leaves}
    top = max(score.values())
    chosen = [leaf for leaf in leaves if score[id(leaf)] == top]
    return list({_describe(leaf): leaf for leaf in chosen}.values())[:most]


def _describe(error: ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "the document"
    message = error.message if len(error.message) <= MESSAGE_CHARS else error.message[:MESSAGE_CHARS] + "..."
    return f"{where}: {message}"


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The innermost failures under ``error``, leaving out the alternatives meant for another kind
    of document (a oneOf branch whose ``type`` is Collection, when the document is an Item)."""
    if not error.context:
        yield error
        return
    branches: dict[Any, list[ValidationError]] = {}
    for child in error.context:
        branches.setdefault(child.relative_schema_path[0] if child.relative_schema_path else None, []).append(child)
    relevant = [b for b in branches.values() if not any(_other_kind(e) for c in b for e in _descendants(c))]
    for child in [c for b in relevant for c in b] or error.context:
        yield from _leaves(child)


def _descendants(error: ValidationError) -> Iterator[ValidationError]:
    yield error
    for child in error.context or ():
        yield from _descendants(child)


def _other_kind(error: ValidationError) -> bool:
    return error.validator == "const" and list(error.absolute_path) == ["type"]


def _known_extension(url: str) -> str:
    if url not in schema_registry():
        raise ValueError(f"stac_extensions names {url}, whose schema is not shipped with fcnseg: "
                         "it cannot be validated offline")
    return url


def _extension_name(url: str) -> str:
    parts = urlsplit(url).path.strip("/").split("/")
    return " ".join(parts[:2]) + " extension" if len(parts) >= 2 else url


# --------------------------------------------------------------------------- rules beyond the schemas


def _check_declared(where: str, fields: Mapping[str, Any], extensions: Sequence[str]) -> None:
    """A prefixed field without its extension in stac_extensions escapes that extension's schema."""
    for key in fields:
        prefix = key.split(":", 1)[0] if ":" in key else None
        if prefix in EXTENSIONS and EXTENSIONS[prefix] not in extensions:
            raise ValueError(f"{where} uses {key} but stac_extensions lacks {EXTENSIONS[prefix]}")


def _check_projection_code(where: str, fields: Mapping[str, Any]) -> None:
    """projection v2.0.0: a null proj:code needs the CRS another way (the schema allows either alone)."""
    if "proj:code" in fields and fields["proj:code"] is None:
        if not (fields.get("proj:wkt2") or fields.get("proj:projjson")):
            raise ValueError(f"{where}: proj:code is null but neither proj:wkt2 nor proj:projjson is given")


def _check_unique_classes(where: str, classes: Sequence[Mapping[str, Any]]) -> None:
    """Class values and names are keys: the schema only forbids two identical class objects."""
    values, names = set(), set()
    for entry in classes:
        value, name = entry.get("value"), entry.get("name")
        if value in values or name in names:
            raise ValueError(f"{where}: class value {value} or name {name} appears twice")
        values.add(value)
        names.add(name)


def _check_multihash(where: str, checksum: str) -> None:
    """file:checksum is a multihash (hex of code, length, digest): the schema only asks for hex."""
    try:
        data = bytes.fromhex(checksum)
        code, rest = _varint(data)
        length, digest = _varint(rest)
    except ValueError:
        raise ValueError(f"{where}: file:checksum {checksum!r} is not a hex multihash") from None
    if MULTIHASH_LENGTHS.get(code) != length or len(digest) != length:
        raise ValueError(f"{where}: file:checksum {checksum!r} is not a multihash of a known digest "
                         f"(sha2-256: {SHA2_256_PREFIX} and 64 hex digits)")


def _varint(data: bytes) -> tuple[int, bytes]:
    value = 0
    for i, byte in enumerate(data[:9]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, data[i + 1:]
    raise ValueError("truncated varint")


def _check_bbox(bbox: Sequence[float]) -> None:
    west, south, east, north = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 else bbox
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= north <= 90):
        raise ValueError(f"bbox {list(bbox)} is not in longitude/latitude (EPSG:4326)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file: {e}") from e
