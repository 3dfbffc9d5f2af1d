"""OUT/item.json: a STAC 1.1.0 Item that describes one fcnseg output folder.

Catalogues, QGIS and STAC browsers find an output by its footprint and time, and learn from the
item which files hold what (labels, probabilities, polygons, quicklook, run record), how the
labels are coded (classification extension: value, name, colour, nodata 255) and on which grid
(projection extension: code or WKT2, shape, transform, native bbox), without opening a raster.

Everything is read from what is already on disk, never from the full-resolution data: the grid
from the Zarr store's grid mapping (or labels.tif's header), the classes from the store's
attributes (or labels.tif's tags), the model and parameters from run.json (or the store's
attributes). The item is validated offline (``stac_checks``) before it is written, and it is
written atomically.

An output without a CRS (a scan or a microscopy mosaic segmented in pixel coordinates) gets no
item: STAC's footprint and bbox are places on the Earth, and a made-up one would mislead a
catalogue. ``write_stac_item`` then writes nothing and returns None.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.transform import array_bounds
from rasterio.warp import transform as warp_transform

from fcnseg.pipeline.classes import ClassTable, raster_classes, store_classes
from fcnseg.pipeline.io import atomic_write_text, open_raster
from fcnseg.pipeline.outputs import (
    ITEM_JSON,
    LABELS_COG,
    POLYGONS_GPKG,
    POLYGONS_PARQUET,
    PROBABILITIES_COG,
    QUICKLOOK_PNG,
    RUN_JSON,
    STORE_NAME,
)
from fcnseg.pipeline.products.stac_checks import CLASSIFICATION_EXTENSION, PROJECTION_EXTENSION, check_stac_item
from fcnseg.pipeline.store import LABELS, NODATA, open_store, require_complete, store_geometry

log = logging.getLogger(__name__)

STAC_VERSION = "1.1.0"

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: The STAC Zarr best practice (radiantearth/stac-best-practices, 2025): versioned ``application/vnd.zarr``.
ZARR_MEDIA_TYPE = "application/vnd.zarr; version=3"

#: Points per footprint edge (corners included): a projected edge is curved in lon/lat, so the
#: polygon follows it closely enough that the bbox computed from it contains the raster.
EDGE_POINTS = 21

ID_PATTERN = re.compile(r"[^0-9A-Za-z._-]+")


@dataclass(frozen=True)
class AssetSpec:
    """How one file of the output folder appears in the item, when it exists."""

    key: str
    filename: str
    media_type: str
    roles: tuple[str, ...]
    title: str
    classes: bool = False  # carries classification:classes (the label rasters)


ASSETS: tuple[AssetSpec, ...] = (
    AssetSpec("labels", LABELS_COG, COG_MEDIA_TYPE, ("data",),
              "Class labels (COG, uint8, 255 = nodata)", classes=True),
    AssetSpec("probabilities", PROBABILITIES_COG, COG_MEDIA_TYPE, ("data",),
              "Class probabilities (COG, one uint8 band per class, p * 254, 255 = nodata)"),
    AssetSpec("labels_zarr", STORE_NAME, ZARR_MEDIA_TYPE, ("data",),
              "Label store (Zarr v3, CF grid mapping)", classes=True),
    AssetSpec("polygons_parquet", POLYGONS_PARQUET, "application/vnd.apache.parquet", ("data",),
              "Class polygons (GeoParquet)"),
    AssetSpec("polygons_gpkg", POLYGONS_GPKG, "application/geopackage+sqlite3", ("data",),
              "Class polygons (GeoPackage)"),
    AssetSpec("quicklook", QUICKLOOK_PNG, "image/png", ("overview", "visual"),
              "Quicklook: image with the labels overlaid, and a legend"),
    AssetSpec("run", RUN_JSON, "application/json", ("metadata",), "fcnseg run record"),
)


@dataclass(frozen=True)
class Grid:
    """The output grid: every output shares the input's CRS, transform and shape."""

    crs: CRS | None  # None: pixel coordinates, no item
    transform: Affine
    height: int
    width: int


# --------------------------------------------------------------------------- public API


def build_stac_item(
    out_dir: str | Path,
    *,
    input_path: str | Path,
    model_sha256: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    created: datetime | None = None,
    acquired: datetime | None = None,
    pending: Sequence[str] = (),
) -> dict[str, Any]:
    """The STAC Item (a JSON-ready dict) for the output folder ``out_dir``; validated.

    ``input_path`` names the segmented raster: the item id comes from its file stem (so a
    rerun gives the same id) and its TIFFTAG_DATETIME, when set, becomes ``datetime``.
    ``model_sha256`` and ``parameters`` default to run.json's (then to the store's attributes);
    ``created`` (default: now) is also the ``datetime`` when the input has no time of its own;
    ``acquired``, when given, is the ``datetime`` and the input is not opened at all.
    """
    out_dir = Path(out_dir)
    created = _utc(created or datetime.now(UTC))
    grid, table, store_attrs = _read_output(out_dir)
    if grid.crs is None:
        raise ValueError(f"{out_dir}: the labels have no CRS; a STAC item needs the raster's georeferencing")
    run = _read_run_json(out_dir / RUN_JSON)
    model_sha256 = model_sha256 or run.get("model_sha256") or store_attrs.get("model_sha256")
    if parameters is None:
        parameters = run.get("parameters") or store_attrs.get("parameters")

    geometry, bbox = footprint(grid)
    properties: dict[str, Any] = {
        "title": f"fcnseg segmentation of {_input_name(input_path)}",
        "datetime": _iso(acquired or _input_datetime(input_path) or created),
        "created": _iso(created),
        **_projection_fields(grid),
    }
    if model_sha256:
        properties["fcnseg:model_sha256"] = model_sha256
    if parameters is not None:
        properties["fcnseg:parameters"] = dict(parameters)

    classes = class_entries(table.names, table.colors) if table.names else None
    extensions = [PROJECTION_EXTENSION] + ([CLASSIFICATION_EXTENSION] if classes else [])
    item = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": extensions,
        "id": item_id(input_path),
        "geometry": geometry,
        "bbox": bbox,
        "properties": properties,
        "links": _links(input_path),
        "assets": _assets(out_dir, grid, classes, pending),
    }
    check_stac_item(item)
    return item


def write_stac_item(
    out_dir: str | Path,
    *,
    input_path: str | Path,
    model_sha256: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    created: datetime | None = None,
    acquired: datetime | None = None,
    pending: Sequence[str] = (),
) -> Path | None:
    """Build, validate and write ``out_dir/item.json`` atomically (a reader never sees half a file).

    Run it after the files it describes: the item lists those that exist, and ``pending``, the
    names of files written right after it (``segment`` writes run.json last, as the mark of a
    complete folder). Labels without a CRS get no item: nothing is written and None returned.
    """
    out_dir = Path(out_dir)
    if _read_output(out_dir)[0].crs is None:
        log.info("no CRS: no STAC item")
        return None
    item = build_stac_item(out_dir, input_path=input_path, model_sha256=model_sha256,
                           parameters=parameters, created=created, acquired=acquired, pending=pending)
    target = atomic_write_text(out_dir / ITEM_JSON, json.dumps(item, indent=2) + "\n")
    log.info("wrote STAC item %s (%d assets)", target, len(item["assets"]))
    return target


# --------------------------------------------------------------------------- pieces of the item


def item_id(input_path: str | Path) -> str:
    """The input's file stem, made URL- and file-name-safe: stable across reruns of one input."""
    stem = ID_PATTERN.sub("_", PurePosixPath(_input_name(input_path)).stem).strip("._-")
    return stem or "scene"


def footprint(grid: Grid, edge_points: int = EDGE_POINTS) -> tuple[dict[str, Any], list[float]]:
    """The raster's outline in EPSG:4326 (GeoJSON Polygon, counter-clockwise) and its bbox.

    Each edge is densified before reprojection, so the curved edges of a projected grid are
    followed and the bbox (from all points) contains the whole raster, not just its corners.
    """
    t = np.linspace(0.0, 1.0, edge_points)[:-1]
    w, h = grid.width, grid.height
    cols = np.concatenate([np.zeros_like(t), t * w, np.full_like(t, w), (1 - t) * w])
    rows = np.concatenate([t * h, np.full_like(t, h), (1 - t) * h, np.zeros_like(t)])
    xs, ys = grid.transform @ (cols, rows)
    lon, lat = warp_transform(grid.crs, "EPSG:4326", np.asarray(xs).tolist(), np.asarray(ys).tolist())
    ring = [[float(x), float(y)] for x, y in zip(lon, lat)]
    if not all(math.isfinite(v) for p in ring for v in p):
        raise ValueError(f"the raster footprint does not reproject to EPSG:4326 (CRS {grid.crs})")
    if _signed_area(ring) < 0:  # RFC 7946: exterior rings counter-clockwise
        ring.reverse()
    ring.append(ring[0])
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    if max(lons) - min(lons) > 180:
        log.warning("footprint spans %.0f degrees of longitude: it may cross the antimeridian, "
                    "which this item does not split", max(lons) - min(lons))
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def class_entries(names: Sequence[str], colors: Sequence[Sequence[int]] | None) -> list[dict[str, Any]]:
    """classification:classes: one entry per class (value = index) and the nodata value 255.

    ``name`` is the class name made to fit the extension's pattern (letters, digits, - and _);
    ``title`` and ``description`` keep the original name for legends.
    """
    used: set[str] = set()
    entries = []
    for value, label in enumerate(names):
        entry: dict[str, Any] = {"value": value, "name": _unique(_safe_name(label, value), used),
                                 "title": str(label), "description": str(label)}
        if colors is not None and value < len(colors):
            entry["color_hint"] = "".join(f"{int(c):02X}" for c in list(colors[value])[:3])
        entries.append(entry)
    entries.append({"value": NODATA, "name": _unique("nodata", used), "title": "no data",
                    "description": "No data: input nodata or outside the scene", "nodata": True})
    return entries


# --------------------------------------------------------------------------- reading the output folder


def _read_output(out_dir: Path) -> tuple[Grid, ClassTable, dict[str, Any]]:
    """Grid, class table and store attributes: from labels.zarr, else labels.tif."""
    store = out_dir / STORE_NAME
    if store.is_dir():
        group = open_store(store, mode="r")
        require_complete(group, store)  # an item describes finished outputs only
        crs, transform = store_geometry(group)
        labels = group[LABELS]
        height, width = labels.shape
        return Grid(crs, transform, int(height), int(width)), store_classes(labels.attrs), dict(group.attrs)
    cog = out_dir / LABELS_COG
    if cog.is_file():
        with open_raster(cog) as src:  # labels in pixel coordinates open too: the caller decides (no item)
            return Grid(src.crs, src.transform, src.height, src.width), raster_classes(src), {}
    raise FileNotFoundError(f"{out_dir}: holds neither {STORE_NAME} nor {LABELS_COG}; nothing to describe")


def _read_run_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e


def _input_datetime(input_path: str | Path) -> datetime | None:
    """The input's TIFFTAG_DATETIME as UTC (TIFF stores no zone; UTC is the usual convention)."""
    try:
        with rasterio.open(input_path) as src:
            value = src.tags().get("TIFFTAG_DATETIME")
    except (RasterioError, OSError) as e:
        log.debug("cannot read the acquisition time of %s: %s", input_path, e)
        return None
    if not value:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value.strip().rstrip("Z"), fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    log.warning("%s: TIFFTAG_DATETIME %r is not a date; using the run's time", input_path, value)
    return None


# --------------------------------------------------------------------------- building blocks


def _projection_fields(grid: Grid) -> dict[str, Any]:
    """proj:code (or null + proj:wkt2), proj:shape, proj:transform, proj:bbox in the native CRS."""
    fields: dict[str, Any] = {}
    authority = grid.crs.to_authority(confidence_threshold=100)  # only an exact match: geo-metadata exact
    if authority:
        fields["proj:code"] = f"{authority[0]}:{authority[1]}"
    else:
        fields["proj:code"] = None
        fields["proj:wkt2"] = grid.crs.to_wkt(version="WKT2_2019")
    west, south, east, north = array_bounds(grid.height, grid.width, grid.transform)
    fields["proj:shape"] = [grid.height, grid.width]
    fields["proj:transform"] = [float(v) for v in tuple(grid.transform)[:6]]
    fields["proj:bbox"] = [float(west), float(south), float(east), float(north)]
    return fields


def _assets(out_dir: Path, grid: Grid, classes: list[dict[str, Any]] | None,
            pending: Sequence[str] = ()) -> dict[str, Any]:
    """One asset per output file that exists (or is ``pending``), with a relative href."""
    assets: dict[str, Any] = {}
    for spec in ASSETS:
        path = out_dir / spec.filename
        if not path.exists() and spec.filename not in pending:
            continue
        asset: dict[str, Any] = {"href": f"./{spec.filename}", "type": spec.media_type,
                                 "title": spec.title, "roles": list(spec.roles)}
        if spec.classes and classes:
            asset["classification:classes"] = classes
        if spec.key == "quicklook":
            asset.update(_quicklook_grid(path, grid))
        assets[spec.key] = asset
    return assets


def _quicklook_grid(path: Path, grid: Grid) -> dict[str, Any]:
    """The quicklook is the same area on a coarser grid: its own proj:shape and proj:transform."""
    with Image.open(path) as img:  # reads the header only
        width, height = img.size
    scaled = grid.transform @ Affine.scale(grid.width / width, grid.height / height)
    return {"proj:shape": [height, width], "proj:transform": [float(v) for v in tuple(scaled)[:6]]}


def _links(input_path: str | Path) -> list[dict[str, Any]]:
    """A derived_from link to the input when it has a URI that resolves (a URL or a local file)."""
    text = str(input_path)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        href = text
    elif Path(text).exists():
        href = Path(text).resolve().as_uri()
    else:  # e.g. a GDAL /vsi path: no URI that a STAC client could follow
        return []
    return [{"rel": "derived_from", "href": href, "title": "segmented input raster"}]


def _input_name(input_path: str | Path) -> str:
    text = str(input_path)
    path = urlsplit(text).path if "://" in text else text
    return PurePosixPath(path.replace("\\", "/")).name or text


def _safe_name(label: str, value: int) -> str:
    name = re.sub(r"[^0-9A-Za-z_-]+", "_", str(label)).strip("_")
    return name or f"class_{value}"


def _unique(name: str, used: set[str]) -> str:
    candidate, k = name, 2
    while candidate in used:
        candidate, k = f"{name}_{k}", k + 1
    used.add(candidate)
    return candidate


def _signed_area(ring: Sequence[Sequence[float]]) -> float:
    x = np.array([p[0] for p in ring])
    y = np.array([p[1] for p in ring])
    return float(0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return _utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")
