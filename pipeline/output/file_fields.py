"""What a file of OUT is, byte for byte: its size and sha256 as STAC's file extension records them
(``file:size``, ``file:checksum`` as a multihash).

Here, in the output folder's layer, because two sides need the one rule: ``products.stac`` writes
the fields into item.json, and ``verify`` (which stands below the products) reads each file again
and compares. The foundation's hashing only, so ``fcnseg verify`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fcnseg.digest import file_sha256
SHA2_256_PREFIX = "1220"  # multihash: code 0x12 (sha2-256), 32 bytes


def sha256_multihash(hex_digest: str) -> str:
    """A sha256 hex digest as ``file:checksum`` wants it: a multihash, code 0x12, length 32."""
    if len(hex_digest) != 64:
        raise ValueError(f"not a sha256 hex digest: {hex_digest!r}")
    return SHA2_256_PREFIX + hex_digest.lower()


def file_fields(path: Path) -> dict[str, Any]:
    """file:size and file:checksum (sha2-256 multihash) of one output file (its bytes hashed in bounded pieces)."""
    return {"file:size": path.stat().st_size, "file:checksum": sha256_multihash(file_sha256(path))}
