"""The ``segment-scene`` flow's scene helpers, without Prefect: which scenes an input names, the
output folder of each, and the STAC catalog of an output root.

Here, not in the flow, because they name things by the products' rules (``products.scene_id``,
``products.stac_catalog``) and the orchestrator is the one importer of ``products/``; and as plain
functions they are tested without a Prefect server.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from fcnseg.errors import InputError
from fcnseg.pipeline.output.layout import ITEM_JSON
from fcnseg.pipeline.output.object_store import is_object_store
from fcnseg.pipeline.output.record import RunReport
from fcnseg.pipeline.products.scene_id import full_name, scene_id
from fcnseg.pipeline.products.stac_catalog import catalog_exists, write_stac_catalog

#: Raster files a folder input is searched for.
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


def find_scenes(inputs: str | list[str]) -> list[str]:
    """Paths, folders, globs and URIs -> the scenes, in a stable order, each once: two spellings of
    one file (``inc/a.tif``, ``./inc/a.tif``, a link to it) are one scene, as they are one output
    folder (``scene_id`` hashes the resolved path; URIs as written), and the second would wait on
    the first's lock. Nothing found is an error."""
    scenes: list[str] = []
    for item in [inputs] if isinstance(inputs, str) else inputs:
        if "://" in item or item.startswith("/vsi"):
            scenes.append(item)  # a URI: GDAL reads it, checked when planned
        elif Path(item).is_dir():
            scenes += sorted(str(p) for p in Path(item).iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
        elif glob.has_magic(item):
            scenes += sorted(glob.glob(item))
        else:
            scenes.append(item)  # a missing file fails its scene with the clear error, not the run
    if not scenes:
        raise InputError(f"{inputs}: no rasters found")
    unique: dict[str, str] = {}
    for scene in scenes:
        unique.setdefault(full_name(scene), scene)  # the first spelling given
    return list(unique.values())


def scene_folder(output_root: str, scene: str) -> Path | str:
    """One output folder per scene, named as its STAC item (``scene_id``: the file stem and a short
    hash of its full path or URI), so ``a/x.tif`` and ``b/x.tif`` never share a folder and a scene
    keeps its folder from run to run. Under an object-store root (``s3://bucket/nightly``) a URI."""
    folder = scene_id(scene)
    return f"{output_root.rstrip('/')}/{folder}" if is_object_store(output_root) else Path(output_root) / folder


def catalog_reports(output_root: str, reports: Iterable[RunReport]) -> str | Path | None:
    """``output_root/catalog.json``: a STAC catalog of every scene's item there (these reports' and
    earlier runs'), in a folder or under an object-store prefix alike; None when there is neither
    an item nor a catalog to keep up to date."""
    items = [report.location(ITEM_JSON) for report in reports if ITEM_JSON in report.files]
    if items or catalog_exists(output_root):
        return write_stac_catalog(output_root, items)
    return None
