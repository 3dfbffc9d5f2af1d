"""The sha256 of a file's bytes, read in bounded pieces: the one hashing loop for a model's
checkpoint (which model made an output) and for each output file (STAC's ``file:checksum``,
``fcnseg verify``). Standard library only: it belongs to the foundation both stand on."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: Bytes read at once (memory stays at this, whatever the file's size).
HASH_BLOCK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
