"""OUTPUT_ROOT/catalog.json: a static STAC 1.1.0 Catalog listing every scene's item.json.

A flow over many scenes leaves one folder per scene; a STAC browser, QGIS or pystac opens the
catalog and walks to every item. Links are relative (``./scene-1a2b3c4d/item.json``), so the root
can be moved or synced whole, and the items are left as they are (a catalog linking them by
relative href is a valid static catalog; an item needs no link back).

A nightly run adds its scenes to those already listed: the catalog is merged, never rebuilt from
one run's scenes, and a listed item whose item.json is gone is dropped. It is validated offline
and written atomically. Two runs writing the same root at once can lose each other's additions
(the last write wins): call it once per root at the end of a flow, after its scenes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from fcnseg.pipeline.io import atomic_write_text
from fcnseg.pipeline.products.stac_checks import check_stac_catalog

log = logging.getLogger(__name__)

CATALOG_JSON = "catalog.json"
STAC_VERSION = "1.1.0"
ITEM_MEDIA_TYPE = "application/geo+json"
CATALOG_MEDIA_TYPE = "application/json"


def write_stac_catalog(output_root: Path, item_paths: list[Path]) -> Path:
    """Write ``output_root/catalog.json`` listing ``item_paths`` and the items it already listed
    whose file still exists; validated, atomic. Returns its path.

    Every item in ``item_paths`` must exist (a scene whose item was not written is left out by
    the caller, not linked to a missing file).
    """
    output_root = Path(output_root)
    catalog_path = output_root / CATALOG_JSON
    missing = [str(p) for p in item_paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"no item.json at {', '.join(missing)}")
    listed = listed_items(catalog_path)
    items = _unique_paths([*listed, *(Path(p).resolve() for p in item_paths)])
    catalog = build_stac_catalog(output_root, items, previous=_read_catalog(catalog_path))
    check_stac_catalog(catalog)
    atomic_write_text(catalog_path, json.dumps(catalog, indent=2) + "\n")
    log.info("wrote STAC catalog %s (%d items, %d new)", catalog_path, len(items), len(items) - len(listed))
    return catalog_path


def build_stac_catalog(output_root: Path, items: Sequence[Path], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Catalog: a root link to itself and one relative ``item`` link per item, sorted by href.
    Its id, title and description are kept from ``previous`` (a catalog someone may have edited)."""
    previous = previous or {}
    links: list[dict[str, Any]] = [{"rel": "root", "href": f"./{CATALOG_JSON}", "type": CATALOG_MEDIA_TYPE}]
    item_links = [_item_link(output_root, path) for path in items]
    _warn_duplicate_ids(item_links)
    links += sorted(item_links, key=lambda link: link["href"])
    catalog: dict[str, Any] = {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": previous.get("id") or _catalog_id(output_root),
        "title": previous.get("title") or f"fcnseg segmentations in {output_root.resolve().name}",
        "description": previous.get("description")
        or "Scenes segmented by fcnseg: one item per scene, with its labels, polygons and quicklook.",
        "links": links,
    }
    return catalog


def listed_items(catalog_path: Path) -> list[Path]:
    """The item files an existing catalog lists whose file is still there (others are dropped, logged)."""
    catalog = _read_catalog(catalog_path)
    kept = []
    for link in catalog.get("links", []) if catalog else []:
        if link.get("rel") != "item" or urlsplit(link.get("href", "")).scheme:
            continue
        path = (catalog_path.parent / link["href"]).resolve()
        if path.is_file():
            kept.append(path)
        else:
            log.info("%s: dropping item %s, its file is gone", catalog_path, link["href"])
    return kept


def _item_link(output_root: Path, item_path: Path) -> dict[str, Any]:
    """A relative item link, titled with the item's id (read from the item, left unmodified)."""
    href = PurePosixPath(Path(os.path.relpath(item_path, output_root.resolve())).as_posix())
    if href.parts and href.parts[0] == "..":
        log.warning("item %s lies outside %s; linked as %s", item_path, output_root, href)
    text = str(href) if str(href).startswith("..") else f"./{href}"
    link: dict[str, Any] = {"rel": "item", "href": text, "type": ITEM_MEDIA_TYPE}
    item_id = _item_id(item_path)
    if item_id:
        link["title"] = item_id
    return link


def _item_id(item_path: Path) -> str | None:
    try:
        return str(json.loads(item_path.read_text()).get("id") or "") or None
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{item_path}: not a readable STAC item: {e}") from e


def _warn_duplicate_ids(links: Iterable[dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for link in links:
        title = link.get("title")
        if title and title in seen:
            log.warning("two items share the id %s: %s and %s", title, seen[title], link["href"])
        elif title:
            seen[title] = link["href"]


def _read_catalog(catalog_path: Path) -> dict[str, Any] | None:
    if not catalog_path.is_file():
        return None
    try:
        catalog = json.loads(catalog_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{catalog_path}: exists but is not a readable catalog ({e}); move it away to start anew") from e
    if catalog.get("type") != "Catalog":
        raise ValueError(f"{catalog_path}: exists but is not a STAC Catalog (type {catalog.get('type')!r})")
    return catalog


def _unique_paths(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def _catalog_id(output_root: Path) -> str:
    name = output_root.resolve().name
    return f"fcnseg-{name}" if name else "fcnseg"
