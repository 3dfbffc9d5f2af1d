"""One name per input scene: its STAC item id, and the folder a flow writes its outputs to.

A file stem alone collides (``a/x.tif`` and ``b/x.tif``, or every ``B04.tif`` of a tile grid), and
a catalogue keeps one item per id. So the name is the stem plus a short hash of the input's full
path or URI: stable from run to run for the same input, distinct for two inputs that share a
stem. ``orchestrator/scenes.py`` names the flow's scene folders by the same rule, so an item's
id is its folder's name.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

#: Characters kept in the stem (URL- and file-name-safe); others become "_".
UNSAFE = re.compile(r"[^0-9A-Za-z._-]+")
HASH_CHARS = 8


def scene_id(scene: str | Path) -> str:
    """``{stem}-{sha1(full path or URI)[:8]}``, e.g. ``image-1a2b3c4d``.

    A local path is made absolute (``Path.resolve``) before hashing, so ``x.tif`` and
    ``/data/x.tif`` name the same scene; a URI (``s3://``, ``https://``) or a GDAL ``/vsi`` path
    is hashed as written. The stem keeps letters, digits, ``.``, ``_`` and ``-`` (runs of other
    characters become ``_``).
    """
    name = str(scene).rstrip("/")
    digest = hashlib.sha1(full_name(name).encode()).hexdigest()[:HASH_CHARS]
    return f"{safe_stem(name)}-{digest}"


def full_name(scene: str) -> str:
    """The input as hashed: a URI or /vsi path as written, a local path absolute."""
    if "://" in scene or scene.startswith("/vsi"):
        return scene
    return str(Path(scene).resolve())


def safe_stem(scene: str) -> str:
    """The file stem of a path or URI, reduced to URL- and file-name-safe characters."""
    path = urlsplit(scene).path if "://" in scene else scene
    stem = PurePosixPath(path.replace("\\", "/")).stem
    return UNSAFE.sub("_", stem).strip("._-") or "scene"
