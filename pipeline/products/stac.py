"""OUT/item.json: a STAC 1.1.0 Item that describes one fcnseg output folder.

Catalogues, QGIS and STAC browsers find an output by its footprint and time, and learn from the
item which files hold what (labels, probabilities, polygons, quicklook, run record), how the
labels are coded (classification: value, name, colour, nodata 255), on which grid (projection),
each file's size and sha256 (file), which model made them and how it reads the input (mlm, the
checkpoint as the ``mlm:model`` asset) and with which software, when (processing).

* ``geometry`` / ``bbox``: the outline of the valid labels (``stac_footprint``), not the raster's
  rectangle, which over-claims a scene with a nodata collar.
* ``datetime``: the input's acquisition time when its metadata has one (``stac_time``: tags that
  mean acquisition, never TIFFTAG_DATETIME, the file's creation), else the processing time;
  ``fcnseg:datetime_source`` says which. ``created`` and ``processing:datetime`` are always the
  processing time.
* ``id``: ``scene_id`` (file stem + hash of the input's full path), unique per input, and the
  name ``flows/segment_scene.py`` gives the scene's folder.
* asset hrefs are relative (``./labels.tif``): the folder can be moved or uploaded whole. The
  checkpoint and the input (``derived_from``) are relative when they lie inside the folder, else
  absolute: they live elsewhere, and a relative ``../`` path would dangle once the folder is copied
  (the checkpoint's ``file:checksum`` lets a copy elsewhere be checked). A flow's catalog adds the
  item's ``root``/``parent`` links (``stac_catalog``).
* raster assets (labels, probabilities, confidence, the Zarr store) carry ``raster:bands`` (raster
  v1.1.0: data_type, nodata, spatial_resolution, the probabilities' and confidence's scale) and STAC 1.1's ``bands``
  (name, data_type, nodata), so odc-stac and stackstac load uint8 with nodata 255, not float.

Everything is read from what is already on disk, never the full-resolution data: the grid from
the Zarr store's grid mapping (or labels.tif's header), the classes from the store's attributes
(or labels.tif's tags), the footprint from a coarse pyramid level, the model from its card. The
item is validated offline against the shipped JSON Schemas (``stac_checks``) before it is written
atomically.

An output without a CRS (a scan or a microscopy mosaic segmented in pixel coordinates) gets no
item: STAC's footprint and bbox are places on the Earth, and a made-up one would mislead a
catalogue. ``write_stac_item`` then writes nothing and returns None.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from affine import Affine
from PIL import Image
from rasterio.transform import array_bounds

from fcnseg.pipeline.classes import ClassTable, raster_classes, store_classes
from fcnseg.pipeline.io import atomic_write_text, open_raster
from fcnseg.pipeline.output.file_fields import file_fields
from fcnseg.pipeline.output.layout import (
    CONFIDENCE_COG,
    CONFIDENCE_PNG,
    ITEM_JSON,
    LABELS_COG,
    LABELS_PAM,
    LABELS_QML,
    POLYGONS_GPKG,
    POLYGONS_PARQUET,
    PROBABILITIES_COG,
    QUICKLOOK_PNG,
    RUN_JSON,
    STORE_NAME,
)
from fcnseg.pipeline.products.scene_id import scene_id
from fcnseg.pipeline.products.stac_checks import EXTENSIONS, check_stac_item
from fcnseg.pipeline.products.stac_footprint import Grid, data_footprint
from fcnseg.pipeline.products.stac_model import (
    ModelSource,
    architecture_name,
    local_href,
    mlm_properties,
    model_asset,
    read_model,
)
from fcnseg.pipeline.products.stac_time import input_datetime, iso, utc
from fcnseg.pipeline.store import NODATA, PROBABILITY_SCALE, open_store, require_complete, store_geometry
from fcnseg.pipeline.versions import software_versions

log = logging.getLogger(__name__)

STAC_VERSION = "1.1.0"

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: The STAC Zarr best practice (radiantearth/stac-best-practices, 2025): versioned ``application/vnd.zarr``.
ZARR_MEDIA_TYPE = "application/vnd.zarr; version=3"

@dataclass(frozen=True)
class AssetSpec:
    """How one file of the output folder appears in the item, when it exists."""

    key: str
    filename: str
    media_type: str
    roles: tuple[str, ...]
    title: str
    classes: bool = False  # carries classification:classes (the label rasters)
    raster: str | None = None  # "labels" (one uint8 band), "probabilities" (one scaled band per class) or "confidence"


ASSETS: tuple[AssetSpec, ...] = (
    AssetSpec("labels", LABELS_COG, COG_MEDIA_TYPE, ("data",),
              "Class labels (COG, uint8, 255 = nodata)", classes=True, raster="labels"),
    AssetSpec("probabilities", PROBABILITIES_COG, COG_MEDIA_TYPE, ("data",),
              "Class probabilities (COG, one uint8 band per class, p * 254, 255 = nodata)", raster="probabilities"),
    AssetSpec("confidence", CONFIDENCE_COG, COG_MEDIA_TYPE, ("data",),
              "Confidence: the probability of each pixel's class (COG, uint8, p * 254, 255 = nodata)",
              raster="confidence"),
    AssetSpec("labels_zarr", STORE_NAME, ZARR_MEDIA_TYPE, ("data",),
              "Label store (Zarr v3, CF grid mapping)", classes=True, raster="labels"),
    AssetSpec("polygons_parquet", POLYGONS_PARQUET, "application/vnd.apache.parquet", ("data",),
              "Class polygons (GeoParquet)"),
    AssetSpec("polygons_gpkg", POLYGONS_GPKG, "application/geopackage+sqlite3", ("data",),
              "Class polygons (GeoPackage)"),
    AssetSpec("quicklook", QUICKLOOK_PNG, "image/png", ("overview", "visual"),
              "Quicklook: image with the labels overlaid, and a legend"),
    AssetSpec("confidence_view", CONFIDENCE_PNG, "image/png", ("overview",),
              "Confidence at quicklook size, in five bins, with a legend"),
    AssetSpec("labels_pam", LABELS_PAM, "application/xml", ("metadata",),
              "labels.tif's class names and raster attribute table (GDAL PAM)"),
    AssetSpec("labels_style", LABELS_QML, "application/xml", ("style",), "labels.tif's QGIS style (one entry per class)"),
    AssetSpec("run", RUN_JSON, "application/json", ("metadata",), "fcnseg run record"),
)


# --------------------------------------------------------------------------- public API


def build_stac_item(
    out_dir: str | Path,
    *,
    input_path: str | Path,
    model_path: str | Path | None = None,
    model_sha256: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    created: datetime | None = None,
    acquired: datetime | None = None,
    pending: Sequence[str] = (),
    model: ModelSource | None = None,
) -> dict[str, Any]:
    """The STAC Item (a JSON-ready dict) for the output folder ``out_dir``; validated.

    ``input_path`` names the segmented raster: the id is ``scene_id(input_path)`` and its
    acquisition time, when its metadata has one, becomes ``datetime``. ``model_path`` (default:
    run.json's ``model``) is the checkpoint whose card gives the MLM fields; without one the item
    has none. ``model_sha256`` and ``parameters`` default to run.json's (then to the store's
    attributes). ``created`` (default: now) is the processing time, also the ``datetime`` when the
    input has no time of its own; ``acquired``, when given, is the ``datetime`` and the input is
    not opened for it. ``pending``: files written right after the item (listed, not yet hashed).
    ``model``: the checkpoint as the run verified it (``segment`` passes its plan's), described
    instead of what ``model_path`` holds now.
    """
    out_dir = Path(out_dir)
    created = utc(created or datetime.now(UTC))
    grid, table, store_attrs = _read_output(out_dir)
    if grid.crs is None:
        raise ValueError(f"{out_dir}: the labels have no CRS; a STAC item needs the raster's georeferencing")
    run = _read_run_json(out_dir / RUN_JSON)
    model_sha256 = model_sha256 or run.get("model_sha256") or store_attrs.get("model_sha256")
    if parameters is None:
        parameters = run.get("parameters") or store_attrs.get("parameters")
    if model is None:
        model = read_model(model_path or run.get("model"), model_sha256)
    bands = _input_bands(parameters)

    geometry, bbox = data_footprint(out_dir, grid)
    classes = class_entries(table.names, table.colors) if table.names else None
    acquired = acquired or input_datetime(input_path)
    properties: dict[str, Any] = {
        "title": f"fcnseg segmentation of {_input_name(input_path)}",
        "datetime": iso(acquired or created),
        "fcnseg:datetime_source": "acquisition" if acquired else "processing",
        "created": iso(created),
        **_projection_fields(grid),
        **processing_fields(created, model, input_path),
    }
    if model_sha256:
        properties["fcnseg:model_sha256"] = model_sha256
    if parameters is not None:
        properties["fcnseg:parameters"] = dict(parameters)
    assets = _assets(out_dir, grid, classes, table.names, pending)
    if model is not None:
        properties.update(mlm_properties(model, model_classes(model), software_versions().get("torch"), bands,
                                         (parameters or {}).get("tta", "none"), (parameters or {}).get("normalization")))
        assets["model"] = model_asset(model, bands, out_dir)

    item = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": used_extensions(properties, assets),
        "id": item_id(input_path),
        "geometry": geometry,
        "bbox": bbox,
        "properties": properties,
        "links": _links(input_path, out_dir),
        "assets": assets,
    }
    check_stac_item(item)
    return item


def write_stac_item(
    out_dir: str | Path,
    *,
    input_path: str | Path,
    model_path: str | Path | None = None,
    model_sha256: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    created: datetime | None = None,
    acquired: datetime | None = None,
    pending: Sequence[str] = (),
    model: ModelSource | None = None,
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
    item = build_stac_item(out_dir, input_path=input_path, model_path=model_path, model_sha256=model_sha256,
                           parameters=parameters, created=created, acquired=acquired, pending=pending, model=model)
    target = atomic_write_text(out_dir / ITEM_JSON, json.dumps(item, indent=2) + "\n")
    log.info("wrote STAC item %s (%d assets)", target, len(item["assets"]))
    return target


# --------------------------------------------------------------------------- pieces of the item


def item_id(input_path: str | Path) -> str:
    """``scene_id``: the input's stem and a hash of its full path, stable across reruns of one input."""
    return scene_id(input_path)


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


def model_classes(model: ModelSource) -> list[dict[str, Any]]:
    """The classes the model predicts (the card's), as class objects without the nodata entry."""
    card = model.card
    return class_entries(card.class_names, [c.color for c in card.classes])[:-1]


def processing_fields(created: datetime, model: ModelSource | None, input_path: str | Path) -> dict[str, Any]:
    """processing:datetime (the run's time), :software (versions of what made the files), :lineage."""
    versions = dict(software_versions())
    if model is not None:
        made_by = f"the {architecture_name(model.card.arch)} model {Path(model.path).name}"
    else:
        made_by = "an FCN model"
    lineage = (f"Labels predicted tile by tile by {made_by} with fcnseg {versions.get('fcnseg', '')} from "
               f"{_input_name(input_path)}: each pixel the class of highest score, 255 where the input has no data; "
               "COG, polygons and quicklook derived from the label store.")
    return {"processing:datetime": iso(created), "processing:software": versions,
            "processing:lineage": re.sub(r"\s+", " ", lineage)}


def used_extensions(properties: Mapping[str, Any], assets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The schema URL of every extension whose fields the item uses, in a fixed order."""
    keys = set(properties) | {key for asset in assets.values() for key in asset}
    prefixes = {key.split(":", 1)[0] for key in keys if ":" in key}
    return [url for prefix, url in EXTENSIONS.items() if prefix in prefixes]


# --------------------------------------------------------------------------- reading the output folder


def _read_output(out_dir: Path) -> tuple[Grid, ClassTable, dict[str, Any]]:
    """Grid, class table and store attributes: from labels.zarr, else labels.tif."""
    store = out_dir / STORE_NAME
    if store.is_dir():
        group = open_store(store, mode="r")
        require_complete(group, store)  # an item describes finished outputs only
        crs, transform = store_geometry(group)
        labels = group["labels"]
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


def _input_bands(parameters: Mapping[str, Any] | None) -> list[int] | None:
    """The 1-based input band numbers the run read (run parameters' ``bands``), if recorded."""
    bands = (parameters or {}).get("bands")
    if isinstance(bands, list) and bands and all(isinstance(b, int) for b in bands):
        return bands
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


def _assets(out_dir: Path, grid: Grid, classes: list[dict[str, Any]] | None, names: Sequence[str],
            pending: Sequence[str] = ()) -> dict[str, Any]:
    """One asset per output file that exists (or is ``pending``), with a relative href; files on
    disk get file:size and file:checksum (not the Zarr store, a folder)."""
    assets: dict[str, Any] = {}
    for spec in ASSETS:
        path = out_dir / spec.filename
        if not path.exists() and spec.filename not in pending:
            continue
        asset: dict[str, Any] = {"href": f"./{spec.filename}", "type": spec.media_type,
                                 "title": spec.title, "roles": list(spec.roles)}
        if spec.classes and classes:
            asset["classification:classes"] = classes
        if spec.raster:
            asset.update(raster_bands(spec.raster, grid, names))
        if spec.key in ("quicklook", "confidence_view"):
            asset.update(_quicklook_grid(path, grid))
        if path.is_file():
            asset.update(file_fields(path))
        assets[spec.key] = asset
    return assets


def raster_bands(kind: str, grid: Grid, names: Sequence[str]) -> dict[str, Any]:
    """``raster:bands`` and STAC 1.1 ``bands`` of a label or probability raster.

    Loaders (odc-stac, stackstac) take the array's dtype and fill value from these; without them
    they load float with NaN. Probabilities are p * 254 in uint8: scale 1/254, offset 0 gives p.
    """
    band: dict[str, Any] = {"data_type": "uint8", "nodata": NODATA}
    resolution = _spatial_resolution(grid)
    if resolution is not None:
        band["spatial_resolution"] = resolution
    if kind == "labels":
        raster, core = [{**band, "sampling": "area"}], [{"name": "labels", "data_type": "uint8", "nodata": NODATA}]
    elif kind == "confidence":
        raster = [{**band, "sampling": "area", "scale": 1 / PROBABILITY_SCALE, "offset": 0.0}]
        core = [{"name": "confidence", "description": f"probability of the pixel's class (p * {PROBABILITY_SCALE})",
                 "data_type": "uint8", "nodata": NODATA}]
    else:
        scaled = {**band, "sampling": "area", "scale": 1 / PROBABILITY_SCALE, "offset": 0.0}
        raster = [dict(scaled) for _ in names]
        core = [{"name": f"p_{_safe_name(name, i)}", "description": f"probability of {name} (p * {PROBABILITY_SCALE})",
                 "data_type": "uint8", "nodata": NODATA} for i, name in enumerate(names)]
    return {"raster:bands": raster, "bands": core}


def _spatial_resolution(grid: Grid) -> float | None:
    """The pixel size in metres (raster v1.1.0 asks for metres): None in a CRS of other units."""
    if not grid.crs.is_projected or grid.crs.linear_units not in ("metre", "meter", "m"):
        return None
    return float(abs(grid.transform.determinant) ** 0.5)  # a square pixel's side; the mean of a rectangle's


def _quicklook_grid(path: Path, grid: Grid) -> dict[str, Any]:
    """The quicklook is the same area on a coarser grid: its own proj:shape and proj:transform."""
    with Image.open(path) as img:  # reads the header only
        width, height = img.size
    scaled = grid.transform @ Affine.scale(grid.width / width, grid.height / height)
    return {"proj:shape": [height, width], "proj:transform": [float(v) for v in tuple(scaled)[:6]]}


def _links(input_path: str | Path, out_dir: Path) -> list[dict[str, Any]]:
    """A derived_from link to the input when it has a URI that resolves (a URL or a local file):
    relative when the input lies inside the output folder (it travels with it), else absolute."""
    text = str(input_path)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        href = text
    elif Path(text).exists():
        href = local_href(Path(text), out_dir)
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
