"""OUTPUT_ROOT/catalog.json: a static STAC 1.1.0 Catalog listing every scene's item.json.

A flow over many scenes leaves one folder per scene; a STAC browser, QGIS or pystac opens the
catalog and walks to every item. Links are relative (``./scene-1a2b3c4d/item.json``), so the root
can be moved or synced whole. Each listed item gets ``root`` and ``parent`` links back to the
catalog (relative: ``../catalog.json``), rewritten atomically, so pystac, STAC browsers and
``stac-validator`` walk up from an item as well as down from the catalog; its other links and
its assets are left as they are.

The root is a folder or an object-store prefix (``s3://bucket/nightly``, through fsspec): the
same catalog either way. A nightly run adds its scenes to those already listed: the catalog is merged, never rebuilt from
one run's scenes, and a listed item whose item.json is gone is dropped. It is validated offline
and written atomically. Two runs writing the same root at once can lose each other's additions
(the last write wins): call it once per root at the end of a flow, after its scenes.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fcnseg.pipeline.io import atomic_write_text
from fcnseg.pipeline.output.object_store import ObjectStoreOutput, is_object_store
from fcnseg.pipeline.products.stac_checks import check_stac_catalog

log = logging.getLogger(__name__)

CATALOG_JSON = "catalog.json"
STAC_VERSION = "1.1.0"
ITEM_MEDIA_TYPE = "application/geo+json"
CATALOG_MEDIA_TYPE = "application/json"


class CatalogRoot:
    """The folder or object-store prefix a catalog lies in: where its files are, as posix paths
    (a bucket's keys through fsspec), so that links are the same relative hrefs either way."""

    def __init__(self, root: str | Path) -> None:
        self.remote = is_object_store(root)
        if self.remote:
            store = ObjectStoreOutput(str(root))  # its fsspec handle, cache refreshed, one line if s3fs is missing
            self.uri, self.fs, self.path = store.uri, store.fs, store.path
        else:
            self.fs, self.path = None, str(Path(root).resolve())
        self.catalog = posixpath.join(self.path, CATALOG_JSON)

    def key(self, location: str | Path) -> str:
        """``location`` (a path, or a URI under an object-store root) as a posix path of this root's kind."""
        if self.remote:
            import fsspec

            return fsspec.url_to_fs(str(location))[1]
        return str(Path(location).resolve())

    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def location(self, key: str) -> str | Path:
        """What callers see: a Path for a folder, a URI under an object store."""
        return f"{self.uri.split('://', 1)[0]}://{key}" if self.remote else Path(key)

    def exists(self, key: str) -> bool:
        if self.remote:
            return self.fs.isfile(key)
        return Path(key).is_file()

    def read_text(self, key: str) -> str:
        return self.fs.cat_file(key).decode() if self.remote else Path(key).read_text()

    def write_text(self, key: str, text: str) -> None:
        if self.remote:
            self.fs.pipe_file(key, text.encode())  # one PUT: the object appears whole
        else:
            atomic_write_text(key, text)


def catalog_exists(output_root: str | Path) -> bool:
    """Whether ``output_root`` holds a catalog.json (to keep it current though a run added nothing)."""
    root = CatalogRoot(output_root)
    return root.exists(root.catalog)


def write_stac_catalog(output_root: str | Path, item_paths: Sequence[str | Path]) -> str | Path:
    """Write ``output_root/catalog.json`` listing ``item_paths`` and the items it already listed
    whose file still exists; validated, atomic (one PUT under an object store). Returns where.

    Every item in ``item_paths`` must exist (a scene whose item was not written is left out by
    the caller, not linked to a missing file).
    """
    root = CatalogRoot(output_root)
    new = [root.key(p) for p in item_paths]
    missing = [str(p) for p, key in zip(item_paths, new, strict=True) if not root.exists(key)]
    if missing:
        raise FileNotFoundError(f"no item.json at {', '.join(missing)}")
    previous = _read_catalog(root)
    listed = listed_items(root, previous)
    items = list(dict.fromkeys([*listed, *new]))
    catalog = build_stac_catalog(root, items, previous=previous)
    check_stac_catalog(catalog)
    for key in items:
        link_item_to_catalog(root, key)
    root.write_text(root.catalog, json.dumps(catalog, indent=2) + "\n")
    where = root.location(root.catalog)
    log.info("wrote STAC catalog %s (%d items, %d new)", where, len(items), len(items) - len(listed))
    return where


def build_stac_catalog(root: CatalogRoot, items: Sequence[str], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Catalog: a root link to itself and one relative ``item`` link per item, sorted by href.
    Its id, title and description are kept from ``previous`` (a catalog someone may have edited)."""
    previous = previous or {}
    links: list[dict[str, Any]] = [{"rel": "root", "href": f"./{CATALOG_JSON}", "type": CATALOG_MEDIA_TYPE}]
    item_links = [_item_link(root, key) for key in items]
    _warn_duplicate_ids(item_links)
    links += sorted(item_links, key=lambda link: link["href"])
    name = root.name()
    catalog: dict[str, Any] = {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": previous.get("id") or (f"fcnseg-{name}" if name else "fcnseg"),
        "title": previous.get("title") or f"fcnseg segmentations in {name}",
        "description": previous.get("description")
        or "Scenes segmented by fcnseg: one item per scene, with its labels, polygons and quicklook.",
        "links": links,
    }
    return catalog


def listed_items(root: CatalogRoot, catalog: dict[str, Any] | None) -> list[str]:
    """The item files an existing catalog lists whose file is still there (others are dropped, logged)."""
    kept = []
    for link in catalog.get("links", []) if catalog else []:
        if link.get("rel") != "item" or urlsplit(link.get("href", "")).scheme:
            continue
        key = posixpath.normpath(posixpath.join(root.path, link["href"]))
        if root.exists(key):
            kept.append(key)
        else:
            log.info("%s: dropping item %s, its file is gone", root.location(root.catalog), link["href"])
    return kept


def link_item_to_catalog(root: CatalogRoot, key: str) -> None:
    """Give the item at ``key`` relative ``root`` and ``parent`` links to the catalog (replacing
    any it had), written atomically; an item that already has them is not rewritten."""
    href = posixpath.relpath(root.catalog, posixpath.dirname(key))
    try:
        item = json.loads(root.read_text(key))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{root.location(key)}: not a readable STAC item: {e}") from e
    others = [link for link in item.get("links", []) if link.get("rel") not in ("root", "parent")]
    back = [{"rel": rel, "href": href, "type": CATALOG_MEDIA_TYPE} for rel in ("root", "parent")]
    if item.get("links") == [*back, *others]:
        return
    item["links"] = [*back, *others]
    root.write_text(key, json.dumps(item, indent=2) + "\n")


def _item_link(root: CatalogRoot, key: str) -> dict[str, Any]:
    """A relative item link, titled with the item's id (read from the item, left unmodified)."""
    href = posixpath.relpath(key, root.path)
    if href.startswith(".."):
        log.warning("item %s lies outside %s; linked as %s", root.location(key), root.location(root.path), href)
    link: dict[str, Any] = {"rel": "item", "href": href if href.startswith("..") else f"./{href}",
                            "type": ITEM_MEDIA_TYPE}
    item_id = _item_id(root, key)
    if item_id:
        link["title"] = item_id
    return link


def _item_id(root: CatalogRoot, key: str) -> str | None:
    try:
        return str(json.loads(root.read_text(key)).get("id") or "") or None
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{root.location(key)}: not a readable STAC item: {e}") from e


def _warn_duplicate_ids(links: Iterable[dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for link in links:
        title = link.get("title")
        if title and title in seen:
            log.warning("two items share the id %s: %s and %s", title, seen[title], link["href"])
        elif title:
            seen[title] = link["href"]


def _read_catalog(root: CatalogRoot) -> dict[str, Any] | None:
    where = root.location(root.catalog)
    if not root.exists(root.catalog):
        return None
    try:
        catalog = json.loads(root.read_text(root.catalog))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: exists but is not a readable catalog ({e}); move it away to start anew") from e
    if catalog.get("type") != "Catalog":
        raise ValueError(f"{where}: exists but is not a STAC Catalog (type {catalog.get('type')!r})")
    return catalog
